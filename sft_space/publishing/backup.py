"""Runs backed up on the Hub, so they survive a Space's restart with an empty disk.

A signed-in visitor's run can push, at every checkpoint, the newest complete checkpoint with the run's
config.json, status.json, metrics.jsonl and probes.jsonl into a private model repo of theirs,
`<username>/sft-space-runs`, under a folder named after the run (one commit per save), and the adapter at the
end. The training process stages the files (a copy of a LoRA checkpoint: milliseconds) and a background thread
commits them through a push process at the lowest CPU priority (`python -m sft_space.publishing.backup`), retrying with
backoff; a failed push is recorded in status.json (`backup`) and never fails the run
or holds up training. After a restart, runs/restore.py lists and restores them.

The token travels to the training process in its environment only (HF_TOKEN: the visitor's own, so their Hub
reads use it too); it is never written to disk, a log, status.json or a message.
"""

from __future__ import annotations

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

from .. import rundir
from ..hub import hub_endpoint

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
            # a child process at the lowest CPU priority (it lowers its own: no preexec_fn in a threaded app):
            # hashing and sending a checkpoint must not take the training's cores (a 2-vCPU Space has no spare
            # one); the token travels in its environment only
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "sft_space.publishing.backup",
                    str(staging),
                    self.repo_id,
                    run_id,
                    f"{run_id}: {what}",
                ],
                env={**push_environment(), "HF_TOKEN": self.token},
                capture_output=True,
                text=True,
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
SECRET_VARIABLES = ("HUGGING_FACE_HUB_TOKEN", "SFT_SPACE_SECRET")  # the owner's; OAUTH_* too (the Space's app)


def push_environment() -> dict[str, str]:
    """The push process's environment: this process's without the owner's secrets (a run in GPU slots is pushed
    from the app process, whose environment holds them); HF_TOKEN is set to the visitor's own by the caller."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in SECRET_VARIABLES and not name.startswith("OAUTH_")
    }


def push_folder(staging: str, repo_id: str, run_id: str, message: str) -> None:
    """One commit of a staged folder under the run's folder of the (private) backup repo; HF_TOKEN is the
    visitor's own."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=os.environ["HF_TOKEN"])
    api.create_repo(repo_id, private=True, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=staging, path_in_repo=run_id, commit_message=message)


def main(argv: list[str]) -> int:
    """`python -m sft_space.publishing.backup STAGING REPO RUN_ID MESSAGE`: the push process Backup starts."""
    try:
        os.nice(19)
    except OSError:
        pass
    try:
        push_folder(*argv)
    except Exception as error:  # network, server, permissions: one line for the run's status, never the token
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"error: {scrub(text, os.environ.get('HF_TOKEN'))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
