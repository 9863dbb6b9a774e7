"""Is a run's training process alive, and ending one: the run states, a dead process noticed (refresh marks its
run interrupted), Stop's SIGTERM to the process group and the kill after its grace (enforce_deadlines, every tick
of the queue worker), and how many threads the app's own model work may use while a run trains.

A run in GPU slots has no process of its own: it is alive while a page of this app drives its slots (training/slots.py).
No torch or Gradio here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from ..host.hardware import device_kind
from ..host.process import pid_alive
from ..rundir import cancel_requested, last_complete_checkpoint, list_run_dirs, read_status, run_path, write_status
from ..training import slots

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "cancelled", "failed", "interrupted")
STOP_GRACE_SECONDS = 120  # a step on CPU plus saving the adapter; then the process is killed
# Before the first step a stop ends the process at once (run_writer.StopBeforeTraining); one that has not ended
# in this time is stuck in native code (a tokenizer, a template engine) and is killed.
LOADING_GRACE_SECONDS = 15
TRAINING_PHASES = ("training", "saving adapter")  # where a stop finishes the step and saves

_children: dict[str, subprocess.Popen] = {}  # processes started by this app, so they can be reaped
_stop_sent: dict[tuple, float] = {}  # (run id, its process's start) -> when this app asked it to stop (SIGTERM)


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
