"""Runs brought back from the Hub after a Space's restart with an empty disk (publishing/backup.py pushed them):
`list_backups` reads the visitor's backup repo and `restore` brings a run into the runs folder (the checkpoint as
checkpoints/checkpoint-N), owned by that visitor, ready to resume. What comes from the Hub is checked as a fresh
Start checks a visitor's choices (runs/choices.py, host/limits.py)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from .. import rundir
from ..hub import hub_endpoint
from ..publishing.backup import CHECKPOINT, repo_for


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

    from ..config import RunConfig
    from ..host import limits
    from ..models import check_model_choice
    from ..runs.choices import allowed_dataset, allowed_model
    from ..training.estimates import planned_steps

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
