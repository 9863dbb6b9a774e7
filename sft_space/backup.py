"""Runs backed up on the Hub, so they survive a Space's restart with an empty disk.

A signed-in visitor's run can push, at every checkpoint, the newest complete checkpoint with the run's
config.json, status.json, metrics.jsonl and probes.jsonl into a private model repo of theirs,
`<username>/sft-space-runs`, under a folder named after the run (one commit per save), and the adapter at the
end. The training process stages the files (a copy of a LoRA checkpoint: milliseconds) and a background thread
commits them through a push process at the lowest CPU priority (`python -m sft_space.backup`), retrying with
backoff; a failed push is recorded in status.json (`backup`) and never fails the run
or holds up training. After a restart, `list_backups` reads the visitor's repo and `restore` brings a run back
into the runs folder (the checkpoint as checkpoints/checkpoint-N), owned by that visitor, ready to resume.

The token travels to the training process in its environment only (HF_TOKEN: the visitor's own, so their Hub
reads use it too); it is never written to disk, a log, status.json or a message.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import rundir
from .hub import hub_endpoint

log = logging.getLogger("sft_space.train")

REPO_NAME = "sft-space-runs"
REPO_VARIABLE = "SFT_SPACE_BACKUP_REPO"  # set by the app for a run it backs up; the token is HF_TOKEN
RUN_FILES = (rundir.CONFIG, rundir.STATUS, rundir.METRICS, rundir.PROBES)
CHECKPOINT = "checkpoint"  # in the repo: the newest complete checkpoint of the run, replaced at each save
RETRY_SECONDS = (2, 8, 30)  # waits before the 2nd, 3rd and 4th attempt of a push


def repo_for(username: str) -> str:
    return f"{username}/{REPO_NAME}"


def scrub(text: str, token: str | None) -> str:
    from .publish import scrub as publish_scrub

    return publish_scrub(text, token)


class Backup:
    """The training process's pusher: stage at each save, commit in the background, retry, record the outcome."""

    def __init__(self, run_dir: Path, repo_id: str, token: str, status: dict) -> None:
        self.run_dir, self.repo_id, self.token, self.status = Path(run_dir), repo_id, token, status
        self.pending: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="sft-space-backup", daemon=True)
        self.thread.start()

    @classmethod
    def from_environment(cls, run_dir: Path, status: dict) -> Backup | None:
        repo_id, token = os.environ.get(REPO_VARIABLE), os.environ.get("HF_TOKEN")
        return cls(run_dir, repo_id, token, status) if repo_id and token else None

    def _stage(self, checkpoint: Path | None, adapter: Path | None) -> Path:
        staging = Path(tempfile.mkdtemp(prefix="sft-space-backup-"))
        for name in RUN_FILES:
            if (self.run_dir / name).is_file():
                shutil.copy2(self.run_dir / name, staging / name)
        if checkpoint is not None:
            shutil.copytree(checkpoint, staging / CHECKPOINT)
        if adapter is not None and adapter.is_dir():
            shutil.copytree(adapter, staging / rundir.ADAPTER)
        return staging

    def save(self, checkpoint: Path, step: int) -> float:
        """Queue a push of this checkpoint and the run's files; returns the seconds staging took (what a save
        waits for the backup)."""
        started = time.time()
        self.pending.put((self._stage(checkpoint, None), f"checkpoint {step}", step))
        return time.time() - started

    def finish(self, adapter: Path | None, timeout: float = 300) -> None:
        """Push the final files (and the adapter), then wait for the queue to empty, at most `timeout` seconds."""
        self.pending.put((self._stage(None, adapter), "final" if adapter else "final status", None))
        self.pending.put(None)
        self.thread.join(timeout)
        if self.thread.is_alive():
            self._record(error=f"the backup to {self.repo_id} was still pushing when the run ended")

    def _record(self, **fields) -> None:
        backup = {**(self.status.get("backup") or {}), "repo": self.repo_id, **fields}
        self.status["backup"] = backup
        rundir.write_status(self.run_dir, backup=backup)

    def _work(self) -> None:
        while True:
            item = self.pending.get()
            if item is None:
                return
            staging, what, step = item
            try:
                self._push(staging, what, step)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

    def _push(self, staging: Path, what: str, step: int | None) -> None:
        run_id = self.run_dir.name
        for attempt, wait in enumerate((0, *RETRY_SECONDS)):
            time.sleep(wait)
            started = time.time()
            # a child process at the lowest CPU priority: hashing and sending a checkpoint must not take the
            # training's cores (a 2-vCPU Space has no spare one); the token travels in its environment only
            result = subprocess.run(
                [sys.executable, "-m", "sft_space.backup", str(staging), self.repo_id, run_id, f"{run_id}: {what}"],
                env={**os.environ, "HF_TOKEN": self.token},
                capture_output=True,
                text=True,
                preexec_fn=lambda: os.nice(19),
                timeout=PUSH_TIMEOUT_SECONDS,
            )
            if result.returncode != 0:
                lines = (result.stderr or "").strip().splitlines() or ["the push process failed"]
                message = scrub(lines[-1].removeprefix("error: "), self.token)
                log.warning("Backup of %s to %s failed (attempt %d): %s", what, self.repo_id, attempt + 1, message)
                self._record(error=f"push of {what} failed: {message[:200]}", failures=attempt + 1)
                continue
            fields = dict(pushed_at=time.time(), push_seconds=round(time.time() - started, 2), error=None)
            if step is not None:
                fields["step"] = step
            else:  # the run's final state is on the Hub (its process may still have been finishing until now)
                fields["final"] = True
            self._record(**fields)
            log.info("Backed up %s to %s in %.1f s", what, self.repo_id, fields["push_seconds"])
            return


PUSH_TIMEOUT_SECONDS = 1800


def push_folder(staging: str, repo_id: str, run_id: str, message: str) -> None:
    """One commit of a staged folder under the run's folder of the (private) backup repo; HF_TOKEN is the
    visitor's own."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=os.environ["HF_TOKEN"])
    api.create_repo(repo_id, private=True, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=staging, path_in_repo=run_id, commit_message=message)


def main(argv: list[str]) -> int:
    """`python -m sft_space.backup STAGING REPO RUN_ID MESSAGE`: the push process Backup starts."""
    try:
        push_folder(*argv)
    except Exception as error:  # network, server, permissions: one line for the run's status, never the token
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: {scrub(text, os.environ.get('HF_TOKEN'))}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------- after a restart
def list_backups(token: str, username: str) -> list[dict]:
    """The visitor's runs on the Hub: run id, state, step of the pushed checkpoint, model, dataset. [] when the
    repo does not exist yet."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id = repo_for(username)
    try:
        files = HfApi(endpoint=hub_endpoint(), token=token).list_repo_files(repo_id)
    except RepositoryNotFoundError:
        return []

    def read(path: str) -> dict:
        return json.loads(Path(hf_hub_download(repo_id, path, token=token, endpoint=hub_endpoint())).read_text())

    found = []
    for run_id in sorted({f.split("/")[0] for f in files if f.endswith("/" + rundir.STATUS)}, reverse=True):
        if not rundir.RUN_ID.match(run_id):
            continue
        status, config = read(f"{run_id}/{rundir.STATUS}"), read(f"{run_id}/{rundir.CONFIG}")
        mark = f"{run_id}/{CHECKPOINT}/{rundir.CHECKPOINT_MARK}"
        step = None
        if mark in files:
            step = read(mark).get("step")
        found.append(
            {
                "run_id": run_id,
                "state": status.get("state"),
                "step": status.get("step"),
                "checkpoint_step": step,
                "has_adapter": f"{run_id}/{rundir.ADAPTER}/{rundir.ADAPTER_WEIGHTS}" in files,
                "model": config.get("model"),
                "dataset": config.get("dataset"),
            }
        )
    return found


MAX_RESTORE_BYTES = 2 * 2**30  # a LoRA run's files are megabytes; more is not one of our backups
# what a restored status.json may bring, with its type; everything else (pids, times, the pace measured on
# another machine, the time budget) is this machine's to write
RESTORED_FIELDS = {
    "state": str,
    "step": int,
    "max_steps": int,
    "planned_steps": int,
    "last_checkpoint": int,
    "data_revision": str,
    "chatml_added": bool,
    "resumed_from": int,
    "error": str,
    "note": str,
}
RESTORED_STATES = ("completed", "stopped", "cancelled", "failed", "interrupted")


def check_adapter_configs(source: Path, config) -> None:
    """Every adapter_config.json a backup carries (the adapter's, the checkpoint's) is the LoRA its settings describe:
    a planted rank of millions would be loaded by chat and Evaluate in the app."""
    for path in source.rglob("adapter_config.json"):
        adapter = rundir.read_json(path)
        found = (adapter.get("peft_type"), adapter.get("r"), adapter.get("lora_alpha"))
        patterns = adapter.get("rank_pattern") or adapter.get("alpha_pattern")  # per-layer ranks: never ours
        if found != ("LORA", config.lora_r, config.lora_alpha) or patterns:
            raise ValueError(
                f"its {path.parent.name}/adapter_config.json describes {found}, not the LoRA of its settings "
                f"(LORA, r {config.lora_r}, alpha {config.lora_alpha})."
            )


def restore(run_id: str, token: str, username: str) -> Path:
    """Bring a backed-up run into the runs folder, owned by `hf:<username>`: its files, its checkpoint as
    checkpoints/checkpoint-N, its adapter. The files come from outside, so they are checked: the size, a
    config that is valid settings, a status reduced to known fields of the right types. A run still on this
    disk is left as it is."""
    from huggingface_hub import HfApi, snapshot_download

    from . import limits
    from .choices import allowed_dataset, allowed_model
    from .config import RunConfig
    from .estimates import planned_steps
    from .models import check_model_choice

    if not isinstance(run_id, str) or not rundir.RUN_ID.match(run_id):
        raise ValueError(f"There is no backed-up run {str(run_id)[:80]}.")
    target = rundir.runs_root() / run_id
    if target.exists():
        raise RuntimeError(f"Run {run_id} is already on this Space: open it on the Runs tab.")
    repo_id = repo_for(username)
    api = HfApi(endpoint=hub_endpoint(), token=token)
    commit = api.repo_info(repo_id).sha  # sized and downloaded at one commit: a push between cannot grow it
    tree = api.list_repo_tree(repo_id, path_in_repo=run_id, recursive=True, revision=commit)
    size = sum(getattr(f, "size", 0) or 0 for f in tree)
    if size > MAX_RESTORE_BYTES:
        raise ValueError(f"{run_id} in {repo_id} holds {size / 2**30:.1f} GB: more than a run's backup, not restored.")
    cache = Path(tempfile.mkdtemp(prefix="sft-space-restore-"))
    staging = rundir.runs_root() / f".{run_id}.restoring"  # not a run id: invisible until it is complete
    try:
        download = Path(
            snapshot_download(repo_id, allow_patterns=[f"{run_id}/*"], token=token, endpoint=hub_endpoint(),
                              cache_dir=str(cache), revision=commit)
        )  # fmt: skip
        source = download / run_id
        if not (source / rundir.CONFIG).is_file():
            raise ValueError(f"There is no backed-up run {run_id} in {repo_id}.")
        try:
            config = RunConfig.from_dict(rundir.read_json(source / rundir.CONFIG))
            config.validate()
        except (ValueError, TypeError) as error:
            raise ValueError(f"{run_id} in {repo_id} has settings that are not valid: {error}") from None
        try:  # a visitor's choices and this host's limits, as a fresh Start checks them: no server file or folder
            # comes back with a run, nor a model or adapter bigger than this host loads for chat and Evaluate
            allowed_dataset(config.dataset)
            allowed_model(config.model)
            facts = check_model_choice(config)
            limits.check_run(config, planned_steps(config), facts.parameters)
            check_adapter_configs(source, config)
        except ValueError as error:
            raise ValueError(f"{run_id} in {repo_id} was not restored: {error}") from None
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=False)
        checkpoint = staging / CHECKPOINT
        mark = rundir.read_json(checkpoint / rundir.CHECKPOINT_MARK)
        if isinstance(mark.get("step"), int) and mark["step"] >= 0:
            (staging / rundir.CHECKPOINTS).mkdir()
            checkpoint.rename(staging / rundir.CHECKPOINTS / f"checkpoint-{mark['step']}")
        else:
            shutil.rmtree(checkpoint, ignore_errors=True)
        pushed = rundir.read_json(staging / rundir.STATUS)
        status = {k: v for k, v in pushed.items() if k in RESTORED_FIELDS and type(v) is RESTORED_FIELDS[k]}
        if status.get("state") not in RESTORED_STATES:  # queued or running: its process died with the old machine
            status["state"] = "interrupted"
        now = time.time()
        status.update(run_id=run_id, created_at=now, restored_at=now, backup={"repo": repo_id})
        for name in (rundir.STATUS, rundir.OWNER):
            (staging / name).unlink(missing_ok=True)
        rundir.write_json_atomic(staging / rundir.STATUS, status)
        with open(staging / rundir.OWNER, "x", encoding="utf-8") as f:
            json.dump({"owner": f"hf:{username}", "address": None}, f)
        staging.rename(target)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    return target


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
