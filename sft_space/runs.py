"""The training processes behind the runs: start, queue, stop, cancel, resume, notice a dead one, list.

One training job holds the device at a time; the others wait in a first-come
queue that a worker thread of the app advances. Each job is `python -m
sft_space.train RUN_DIR` in its own process (and process group), so Stop works
at any moment and a crash cannot take the app down. While a training process
lives, only that process writes its run's progress into status.json. The
files of a run are the business of `rundir`; durations and disk needs of
`estimates`. This module imports neither torch nor Gradio.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import estimates, limits, slots
from .backup import REPO_VARIABLE as BACKUP_REPO_VARIABLE
from .cleanup import clean_up
from .config import RunConfig
from .hardware import device_kind, on_zerogpu
from .hub import on_a_space, public
from .models import check_model_choice, model_max_length
from .process import pid_alive, start_time
from .rundir import (
    QUEUE_LOCK,
    cancel_requested,
    clear_cancel,
    clear_stop,
    has_adapter,
    is_run,
    is_run_id,
    last_complete_checkpoint,
    list_run_dirs,
    log_path,
    new_run_id,
    read_config,
    read_config_dict,
    read_metrics,
    read_owner,
    read_status,
    request_cancel,
    request_stop,
    run_path,
    runs_root,
    visible_to,
    write_config,
    write_owner,
    write_status,
)

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "cancelled", "failed", "interrupted")
STOP_GRACE_SECONDS = 120  # a step on CPU plus saving the adapter; then the process is killed
# Before the first step a stop ends the process at once (run_writer.StopBeforeTraining); one that has not ended
# in this time is stuck in native code (a tokenizer, a template engine) and is killed.
LOADING_GRACE_SECONDS = 15
TRAINING_PHASES = ("training", "saving adapter")  # where a stop finishes the step and saves

_children: dict[str, subprocess.Popen] = {}  # processes started by this app, so they can be reaped
_stop_sent: dict[tuple, float] = {}  # (run id, its process's start) -> when this app asked it to stop (SIGTERM)
_thread_lock = threading.Lock()


# ------------------------------------------------------------- processes
def process_alive(run: str | Path, status: dict) -> bool:
    """Is the run's training process still there? Our own children are polled (which also reaps them). A run
    trained in GPU slots has no process of its own between slots: a page of this app drives it (slots.driven)."""
    if slots.is_slot_run(status):
        return slots.driven(run_path(run).name)
    child = _children.get(run_path(run).name)
    if child is not None:
        return child.poll() is None
    return pid_alive(status.get("pid"), status.get("pid_started"))


def is_waiting(status: dict) -> bool:
    """Queued and not yet handed to a training process."""
    return status.get("state") == "queued" and not status.get("launched_at")


def refresh(run: str | Path) -> dict:
    """The run's status, marking it interrupted when its process is gone without saying so."""
    status = read_status(run)
    if is_waiting(status):
        return status
    if status.get("state") in ACTIVE_STATES and not process_alive(run, status):
        status = read_status(run)  # it may have written its final state just before exiting
    if status.get("state") in ACTIVE_STATES and slots.is_slot_run(status) and not process_alive(run, status):
        return slots.end_between_slots(  # no slot runs now and no page asks for the next: paused, not lost
            run_path(run),
            "cancelled" if cancel_requested(run) else "stopped",
            note="paused between GPU slots (the page asking for them was closed, or the app restarted); Resume "
            f"continues from step {status.get('last_checkpoint') or 0}",
        )
    if status.get("state") in ACTIVE_STATES and not process_alive(run, status):
        status = write_status(
            run,
            state="interrupted",
            ended_at=time.time(),
            error="The training process ended unexpectedly (killed, out of memory, or the app restarted). "
            "Open the log for details.",
        )
    return status


def generation_threads() -> int | None:
    """Threads the app's own model work (chat, evaluation) may use: one while a run this app started trains on
    the CPU, so training keeps the other cores; else torch's default (None: every core)."""
    if device_kind() == "cpu" and any(child.poll() is None for child in list(_children.values())):
        return 1
    return None


def active_run() -> str | None:
    """The id of the run holding the device now, if any (one training job per device)."""
    for run_dir in list_run_dirs():
        status = refresh(run_dir)
        if status.get("state") in ACTIVE_STATES and not is_waiting(status):
            return run_dir.name
    return None


def waiting_runs() -> list[str]:
    """Queued runs in the order they will start (first come, first served)."""
    statuses = [(read_status(d), d.name) for d in list_run_dirs()]
    return [name for _, name in sorted((s.get("queued_at", 0), name) for s, name in statuses if is_waiting(s))]


@contextlib.contextmanager
def _queue_lock():
    """One scheduler decision at a time, across threads and processes sharing SFT_SPACE_HOME."""
    with _thread_lock, open(runs_root() / QUEUE_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def advance_queue() -> str | None:
    """Start the first waiting run when the device is free; return its id."""
    with _queue_lock():
        if active_run():
            return None
        waiting = waiting_runs()
        if not waiting:
            return None
        run_id = waiting[0]
        status = read_status(run_id)
        _launch(run_id, ["--resume", str(run_path(run_id))] if status.get("resume") else [str(run_path(run_id))])
        return run_id


CLEAN_UP_EVERY_SECONDS = 3600


def start_queue_worker(interval: float = 2.0) -> threading.Thread:
    """A daemon thread that starts queued runs as the device frees up (the app runs one), and once an hour
    removes old runs, uploads and models (cleanup; only where limits.keep_days is set)."""

    def work() -> None:
        cleaned = 0.0
        while True:
            try:
                enforce_deadlines()
            except Exception:  # a run it cannot mark (a full disk) must not hold the queue
                logging.getLogger(__name__).exception("deadlines")
            try:
                advance_queue()
                if time.time() - cleaned > CLEAN_UP_EVERY_SECONDS:
                    cleaned = time.time()
                    clean_up(limits.current().keep_days, ACTIVE_STATES)
            except Exception:  # a bad run directory must not stop the queue
                logging.getLogger(__name__).exception("queue worker")
            time.sleep(interval)

    thread = threading.Thread(target=work, name="sft-space-queue", daemon=True)
    thread.start()
    return thread


def visible_run(run_id, owner: str | None) -> bool:
    """A run id a visitor may look at: a plain id of a run in the runs folder that is theirs (rundir.visible_to)."""
    return is_run_id(run_id) and visible_to(run_id, owner, public())


def check_owner(run: str | Path, owner: str | None) -> dict:
    """The run's status, if `owner` may see and act on it; runs started from the command line have no owner."""
    status = refresh(run)
    if not is_run(run_path(run)):
        raise FileNotFoundError(f"There is no run {run_path(run).name}.")
    if not visible_to(run, owner, public()):
        raise PermissionError("This run belongs to another visitor.")
    return status


def active_runs_of(owner: str | None, address: str | None) -> tuple[list[str], list[str]]:
    """(this visitor's runs training or waiting, those of all anonymous visitors from the same address)."""
    mine, neighbours = [], []
    anonymous = not str(owner or "").startswith("hf:")
    for run_dir in list_run_dirs():
        if refresh(run_dir).get("state") not in ACTIVE_STATES:
            continue
        recorded = read_owner(run_dir)
        if owner is not None and recorded.get("owner") == owner:
            mine.append(run_dir.name)
        if anonymous and address and recorded.get("address") == address:
            if not str(recorded.get("owner") or "").startswith("hf:"):
                neighbours.append(run_dir.name)
    return mine, neighbours


def check_fair_share(owner: str | None, address: str | None = None, quota: limits.Limits | None = None) -> None:
    """A visitor has a bounded number of runs training or waiting, and the queue has room: one script cannot fill
    the machine for everyone. Runs from the command line (no owner) are the machine owner's and are not limited."""
    if owner is None:
        return
    quota = quota or limits.current()
    mine, neighbours = active_runs_of(owner, address)
    if quota.runs_per_visitor and len(mine) >= quota.runs_per_visitor:
        raise RuntimeError(
            f"You already have a run training or waiting ({mine[0]}): stop or cancel it, or wait for it to "
            "finish, before starting another."
        )
    if quota.runs_per_address and len(neighbours) >= quota.runs_per_address:
        raise RuntimeError(
            "A run started from your address without signing in is training or waiting; this "
            f"Space allows {quota.runs_per_address} per address: wait for it to finish"
            + (", or sign in with Hugging Face to get a share of your own." if on_a_space() else ".")
        )
    waiting = waiting_runs()
    if quota.queue_size and len(waiting) >= quota.queue_size:
        busy = active_run()
        wait = (read_status(busy).get("eta_seconds") or estimates.expected_seconds(busy)) if busy else None
        when = f"try again in about {max(1, round(wait / 60))} minutes" if wait else "try again later"
        raise RuntimeError(
            f"The Space is busy: {len(waiting) + (1 if busy else 0)} runs ahead of yours and the queue is full; "
            f"{when} (a place frees up when the run training now finishes)."
        )


def time_budget(quota: limits.Limits, owner: str | None) -> float | None:
    """A visitor's run's wall-time limit on this host (command-line runs have none)."""
    return quota.run_minutes * 60 if quota.run_minutes and owner is not None else None


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
    if owner is not None:  # the command line's runs are the machine owner's
        limits.check_run(config, facts.parameters, quota)
    estimates.check_disk(config, facts)
    run_id = run_id or new_run_id(config)
    run_dir = runs_root() / run_id
    planned = estimates.planned_steps(config)
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
            time_budget_seconds=time_budget(quota, owner),
            host_time_budget_seconds=time_budget(quota, owner),  # the host's alone (train_minutes may lower the other)
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
        limits.check_run(config, facts.parameters, quota)
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
            time_budget_seconds=time_budget(quota, owner),
            host_time_budget_seconds=time_budget(quota, owner),
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


OWNER_TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # a Space owner's secrets
_tokens: dict[str, dict[str, str]] = {}  # run id -> a visitor's token (and backup repo), in memory until launch


def _hand_token(run_id: str, token: str | None, backup_repo: str | None) -> None:
    """Keep a visitor's token for their run's process, in this process's memory only (never on disk)."""
    if token:
        _tokens[run_id] = {"HF_TOKEN": token, **({BACKUP_REPO_VARIABLE: backup_repo} if backup_repo else {})}
    else:
        _tokens.pop(run_id, None)


def training_env(run_id: str | None = None) -> dict[str, str]:
    """The training process's environment: the app's, except that on a public host the owner's Hub token stays
    behind (a visitor's run reads the Hub as nobody, like the visitor's page does), and a signed-in visitor's own
    token (and backup repo) goes in for their run."""
    env = {**os.environ, "SFT_SPACE_LOG_CAPTURED": "1", "PYTHONUNBUFFERED": "1"}
    env.pop(BACKUP_REPO_VARIABLE, None)
    env.pop("SFT_SPACE_SECRET", None)  # signs visitor ids: the app's alone
    if public():
        for name in OWNER_TOKEN_VARIABLES:
            env.pop(name, None)
    env.update(_tokens.pop(run_id, {}) if run_id else {})
    return env


def slot_environment(run_id: str) -> dict:
    """What a GPU slot of this run sets and removes in its worker's environment (slots.run_slot): like
    training_env, the owner's token stays out on a public host and the visitor's own goes in. Taken once per
    driver: the token then lives in that request's memory until the run's slots end."""
    handed = _tokens.pop(run_id, {})
    handed.pop(BACKUP_REPO_VARIABLE, None)  # backups are pushed by the training process; slots have none yet
    unset = [*OWNER_TOKEN_VARIABLES, "SFT_SPACE_SECRET", BACKUP_REPO_VARIABLE] if public() else ["SFT_SPACE_SECRET"]
    return {"unset": [name for name in unset if name not in handed], "set": handed}


def _launch(run_id: str, arguments: list[str]) -> None:
    run_dir = runs_root() / run_id
    clear_cancel(run_dir)
    with open(log_path(run_dir), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_space.train", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
            env=training_env(run_id),
            start_new_session=True,  # its own process group: a Ctrl-C in the app's terminal does not kill it
        )
    _children[run_id] = proc
    # recorded at once, under the queue lock: from here on a pid with another start time is not this run's. Marked
    # launched only now that its process is known: a status check without the lock (a visitor's Start checking
    # their share) between the two once found a launched run without a process, marked it interrupted, and let
    # the same visitor start a second run beside it
    write_status(run_dir, launched_at=time.time(), pid=proc.pid, pid_started=start_time(proc.pid))


def _signal(run: str | Path, status: dict, signum: int) -> bool:
    """Send `signum` to the run's own training process group, only while it is the process recorded for the run
    (its own session: a push process it started goes too). False when there is no such process."""
    child = _children.get(run_path(run).name)
    pid = child.pid if child is not None else status.get("pid")
    alive = child.poll() is None if child is not None else pid_alive(pid, status.get("pid_started"))
    if not alive:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum) if child is not None or _leads_group(pid) else os.kill(pid, signum)
    return True


def _leads_group(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        return os.getpgid(pid) == pid
    return False


def _signal_stop(run: str | Path, status: dict) -> None:
    """SIGTERM the run's own training process; enforce_deadlines kills it if it does not end in its grace."""
    if _signal(run, status, signal.SIGTERM):
        _stop_sent.setdefault((run_path(run).name, status.get("pid_started")), time.time())


def stop_grace(status: dict) -> float:
    """How long a process may take to end after SIGTERM: a step and a save while training, little before."""
    return STOP_GRACE_SECONDS if status.get("phase") in TRAINING_PHASES else LOADING_GRACE_SECONDS


def enforce_deadlines(now: float | None = None) -> list[str]:
    """Stop, Cancel and the host's time limit reach a training process in any phase (the queue worker calls this
    every tick): a run past its time budget that has not begun training gets SIGTERM (in training the trainer
    keeps its own budget), and a process still alive its grace after SIGTERM is killed, its run marked with what
    happened, so the queue moves on. Returns the runs killed."""
    now = now or time.time()
    killed = []
    for run_dir in list_run_dirs():
        status = read_status(run_dir)
        run_id = run_dir.name
        if slots.is_slot_run(status):  # its slots end at their own duration; no process of the app to signal
            continue
        key = (run_id, status.get("pid_started"))  # a resumed run's new process is not the one asked to stop
        if status.get("state") not in ("running", "stopping") or not status.get("launched_at"):
            for old in [k for k in _stop_sent if k[0] == run_id]:
                _stop_sent.pop(old, None)
            continue
        # the host's own limit (written with the run, kept by train.fit_to_minutes): a timed run's minutes are its
        # training, which the trainer ends itself, not its model's download
        budget = status.get("host_time_budget_seconds")
        training = status.get("phase") in TRAINING_PHASES
        over = budget and now - status["launched_at"] > budget + (STOP_GRACE_SECONDS if training else 0)
        if over and key not in _stop_sent:
            when = "in a step that did not end" if training else "before training"
            write_status(run_dir, stop_reason=f"the time budget of {budget / 60:g} min was spent {when}")
            _signal_stop(run_dir, status)
            continue
        asked = _stop_sent.get(key)
        if asked is None or now - asked < stop_grace(status):
            continue
        if _signal(run_dir, status, signal.SIGKILL):
            child = _children.get(run_id)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=10)
            state = "cancelled" if cancel_requested(run_dir) else "stopped"
            write_status(
                run_dir,
                state=state,
                ended_at=time.time(),
                note=f"{state}: the training process did not end within {stop_grace(status):g} s of the stop "
                f"(it was {status.get('phase') or 'starting'}) and was ended; "
                + ("resume from its last checkpoint" if last_complete_checkpoint(run_dir) else "no adapter"),
            )
            killed.append(run_id)
        _stop_sent.pop(key, None)
    return killed


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


def wait_for(run: str | Path, states=FINAL_STATES, timeout: float = STOP_GRACE_SECONDS, poll: float = 0.5) -> dict:
    """Block until the run reaches one of `states`, moving the queue along meanwhile."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        enforce_deadlines()
        advance_queue()
        status = refresh(run)
        if status.get("state") in states:
            return status
        time.sleep(poll)
    return refresh(run)


# ------------------------------------------------------------- listing
def visible_runs(owner: str | None) -> list[tuple[Path, dict]]:
    """Newest first, (run directory, status) of the runs `owner` may see; reads status files only."""
    statuses = [(run_dir, refresh(run_dir)) for run_dir in list_run_dirs()]
    shared = public()
    return [(run_dir, status) for run_dir, status in statuses if visible_to(run_dir, owner, shared)]


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


def _first_active(runs: list[tuple[Path, dict]]) -> str | None:
    return next((run_dir.name for run_dir, status in runs if status.get("state") in ACTIVE_STATES), None)


def own_active_run(owner: str | None) -> str | None:
    """The visitor's run that is training or waiting, if any (called by every page poll: status files only)."""
    return _first_active(visible_runs(owner))


def latest_run(owner: str | None = None) -> str | None:
    """The run a fresh page should show: the visitor's active one, else their newest."""
    runs = visible_runs(owner)
    return _first_active(runs) or (runs[0][0].name if runs else None)


def queue_position(run: str | Path) -> tuple[int, int, float | None] | None:
    """(position from 1, runs waiting, estimated seconds until it starts or None while unmeasured) for a waiting
    run."""
    waiting = waiting_runs()
    name = run_path(run).name
    if name not in waiting:
        return None
    wait: float | None = 0.0
    paces: dict = {}  # one scan of the runs per model, whatever the length of the queue
    busy = active_run()
    if busy:
        remaining = read_status(busy).get("eta_seconds")
        wait = estimates.expected_seconds(busy, paces) if remaining is None else remaining
    for ahead in waiting[: waiting.index(name)]:
        expected = estimates.expected_seconds(ahead, paces)
        wait = None if wait is None or expected is None else wait + expected
    return waiting.index(name) + 1, len(waiting), wait
