"""A run's life as a visitor drives it: Start (validate, check the disk, the visitor's share and this host's
limits, write the run directory, queue it), Resume, Stop & save, Cancel, Delete, and the list of runs.

Its neighbours in runs/ hold the rest of a run's life, and callers import from them directly:
- liveness.py: the run states, a dead process noticed, SIGTERM and the kill after its grace;
- queue.py: the queue and its worker thread, the training process's launch and environment (tokens);
- ownership.py: who may see and act on a run, the runs a visitor has going, their fair share (limits.check_share).
The files of a run are the business of `rundir`; durations and disk needs of `training/estimates`. This module imports
neither torch nor Gradio.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import RunConfig
from ..host import limits
from ..host.hardware import on_zerogpu
from ..models import check_model_choice, model_max_length
from ..rundir import (
    clear_cancel,
    clear_stop,
    has_adapter,
    last_complete_checkpoint,
    new_run_id,
    read_config,
    read_config_dict,
    read_metrics,
    read_status,
    request_cancel,
    request_stop,
    run_path,
    runs_root,
    write_config,
    write_owner,
    write_status,
)
from ..training import estimates, slots
from .liveness import (
    ACTIVE_STATES,
    _signal_stop,
    is_waiting,
    refresh,
)
from .ownership import (
    check_fair_share,
    check_owner,
    visible_runs,
)
from .queue import (
    _hand_token,
    _queue_lock,
    advance_queue,
)


def start_run(
    config: RunConfig,
    run_id: str | None = None,
    owner: str | None = None,
    address: str | None = None,
    hub_token: str | None = None,
    backup_repo: str | None = None,
) -> str:
    """Validate, check the disk, the visitor's share and this host's limits, write the run directory and queue the
    run; return its id. hub_token: the signed-in visitor's own token, handed to the training process in its
    environment only (their Hub reads; with backup_repo, checkpoints pushed there: see backup)."""
    if on_zerogpu() and config.train_minutes:
        raise ValueError(
            "On ZeroGPU a run trains in GPU slots, so its length is counted in steps, not minutes: clear "
            "train_minutes and set max_steps or num_train_epochs (the '(GPU slots)' presets do)."
        )
    quota = limits.current()
    check_fair_share(owner, address, quota)
    facts = check_model_choice(config)  # refusals (missing, gated, pickle-only, custom code) before anything is queued
    config.validate(facts.max_length or model_max_length(config.model))
    planned = estimates.planned_steps(config)  # once per Start: it may read the dataset
    if owner is not None:  # the command line's runs are the machine owner's
        limits.check_run(config, planned, facts.parameters, quota)
    estimates.check_disk(config, facts)
    run_id = run_id or new_run_id(config)
    run_dir = runs_root() / run_id
    with _queue_lock():  # checked again with the run's creation, so parallel starts cannot all pass
        check_fair_share(owner, address, quota)
        run_dir.mkdir(parents=True, exist_ok=False)
        _hand_token(run_id, hub_token, backup_repo)
        write_config(run_dir, config)
        write_owner(run_dir, owner, address)
        # written before any process starts; from then on only the training process writes status.json
        now = time.time()
        if on_zerogpu():  # no process of its own: the visitor's page asks for its GPU slots (slots.drive)
            write_status(
                run_dir,
                state="running",
                phase="waiting for a GPU slot",
                created_at=now,
                launched_at=now,
                run_id=run_id,
                planned_steps=planned,
                max_steps=planned,
                gpu_slots=True,
                slot_requested_at=now,
            )
            return run_id
        write_status(
            run_dir,
            state="queued",
            created_at=now,
            queued_at=now,
            run_id=run_id,
            planned_steps=planned,
            time_budget_seconds=limits.time_budget(quota, owner),
            host_time_budget_seconds=limits.time_budget(
                quota, owner
            ),  # the host's alone (train_minutes may lower the other)
        )
    advance_queue()
    return run_id


def resume_run(
    run: str | Path,
    owner: str | None = None,
    address: str | None = None,
    hub_token: str | None = None,
    backup_repo: str | None = None,
) -> str:
    """Queue a stopped, failed or interrupted run to continue from its last complete checkpoint."""
    status = check_owner(run, owner)
    if status.get("state") in ACTIVE_STATES or slots.driving(run_path(run).name):
        raise RuntimeError("This run is still going: there is nothing to resume.")
    if status.get("state") == "completed":
        raise RuntimeError("This run completed: start a new run to train further.")
    in_slots = on_zerogpu() or slots.is_slot_run(status)  # a run restored on ZeroGPU trains in slots there too
    if last_complete_checkpoint(run) is None and not in_slots:
        raise RuntimeError("This run has no complete checkpoint yet (one is written every save_steps): start it again.")
    quota = limits.current()
    config = read_config(run)
    if owner is not None:  # its settings pass today's limits, like a new run's (its files may have been restored)
        facts = check_model_choice(config)
        config.validate(facts.max_length or model_max_length(config.model))
        limits.check_run(config, estimates.planned_steps(config), facts.parameters, quota)
        estimates.check_disk(config, facts)
    with _queue_lock():
        check_fair_share(owner, address, quota)
        _hand_token(run_path(run).name, hub_token, backup_repo)
        if in_slots:  # its page drives the slots again from the last checkpoint
            clear_stop(run), clear_cancel(run)
            write_status(
                run,
                gpu_slots=True,
                state="running",
                phase="waiting for a GPU slot",
                launched_at=time.time(),
                slot_requested_at=time.time(),
                resume=True,
                error=None,
                note=None,
                ended_at=None,
            )
            return run_path(run).name
        write_status(
            run,
            state="queued",
            time_budget_seconds=limits.time_budget(quota, owner),
            host_time_budget_seconds=limits.time_budget(quota, owner),
            queued_at=time.time(),
            launched_at=None,
            resume=True,
            error=None,
            stop_reason=None,  # the last process's, if the app stopped it
            pid=None,
            pid_started=None,
        )
    advance_queue()
    return run_path(run).name


def retry_config(run: str | Path) -> RunConfig | None:
    """After an out-of-memory failure: the same run with half the batch and twice the accumulation."""
    retry = read_status(run).get("retry")
    if not retry:
        return None
    return RunConfig.from_dict({**read_config(run).to_dict(), **retry})


def stop_run(run: str | Path, owner: str | None = None) -> dict:
    """Stop & save: the process stops after the current step and saves the adapter (SIGTERM)."""
    status = check_owner(run, owner)
    if is_waiting(status):
        return cancel_run(run, owner)
    if status.get("state") in ACTIVE_STATES and slots.is_slot_run(status):
        request_stop(run)  # the slot training now saves after its step; the driver asks for no other
        if not slots.driving(run_path(run).name):
            slots.end_between_slots(run_path(run), "stopped")
    elif status.get("state") in ACTIVE_STATES:
        _signal_stop(run, status)
    return refresh(run)


def cancel_run(run: str | Path, owner: str | None = None) -> dict:
    """Cancel: a waiting run leaves the queue; a training one stops without saving an adapter."""
    status = check_owner(run, owner)
    with _queue_lock():
        status = refresh(run)
        if is_waiting(status):
            return write_status(
                run, state="cancelled", ended_at=time.time(), note="cancelled while waiting in the queue"
            )
    if status.get("state") in ACTIVE_STATES:
        request_cancel(run)
        if not slots.is_slot_run(status):
            _signal_stop(run, status)
        elif not slots.driving(run_path(run).name):
            slots.end_between_slots(run_path(run), "cancelled", note="cancelled between GPU slots")
    return refresh(run)


def delete_run(run: str | Path, owner: str | None = None) -> None:
    """Remove a finished run and everything in its folder (its owner's choice; a live run is stopped first)."""
    status = check_owner(run, owner)
    with _queue_lock():
        status = refresh(run)
        if status.get("state") in ACTIVE_STATES:
            raise RuntimeError("This run is still training or waiting: stop or cancel it before deleting it.")
        shutil.rmtree(run_path(run))


def list_runs(owner: str | None = None) -> list[dict]:
    """Newest first, the runs `owner` may see: name, model, dataset, state, steps, best validation loss, age."""
    runs = []
    for run_dir, status in visible_runs(owner):
        config = read_config_dict(run_dir)
        eval_losses = [m["eval_loss"] for m in read_metrics(run_dir) if isinstance(m.get("eval_loss"), (int, float))]
        runs.append(
            {
                "run_id": run_dir.name,
                "model": config.get("model"),
                "dataset": config.get("dataset"),
                "state": status.get("state", "unknown"),
                "step": status.get("step", 0),
                "max_steps": status.get("max_steps") or status.get("planned_steps"),
                "best_eval_loss": min(eval_losses) if eval_losses else None,
                "age_seconds": time.time() - status.get("created_at", time.time()),
                "has_adapter": has_adapter(run_dir),
            }
        )
    return runs
