"""The queue: one training job holds the device at a time, the others wait first come, first served; a worker
thread of the app starts the next (`python -m sft_space.train RUN_DIR`, its own process group) when the device
frees up, enforces stop deadlines and cleans up hourly. Also what a run's process is handed: the app's
environment without the owner's secrets on a public host, a signed-in visitor's own token (kept in memory until
launch, never on disk). No torch or Gradio here.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..host import limits
from ..host.process import start_time
from ..hub import public
from ..publishing.backup import REPO_VARIABLE as BACKUP_REPO_VARIABLE
from ..rundir import QUEUE_LOCK, clear_cancel, list_run_dirs, log_path, read_status, run_path, runs_root, write_status
from ..training import estimates
from . import idle_pause
from .cleanup import clean_up
from .liveness import ACTIVE_STATES, FINAL_STATES, STOP_GRACE_SECONDS, _children, enforce_deadlines, is_waiting, refresh

_thread_lock = threading.Lock()


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
                idle_pause.check()  # a Space on paid hardware, opted in: paused after its idle minutes
            except Exception:  # the Hub unreachable or refusing: training goes on regardless
                logging.getLogger(__name__).exception("pause when idle")
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


def slot_environment(run_id: str) -> tuple[dict, dict | None]:
    """What a GPU slot of this run sets and removes in its worker's environment (slot_worker.run_slot): like
    training_env, the owner's token stays out on a public host and the visitor's own goes in. And where the run's
    checkpoints are backed up ({"repo", "token"}, or None): on ZeroGPU the driver pushes them between slots, in this
    process, so the repo never enters a worker. Taken once per driver: the token then lives in that request's
    memory until the run's slots end."""
    handed = _tokens.pop(run_id, {})
    repo = handed.pop(BACKUP_REPO_VARIABLE, None)
    backup = {"repo": repo, "token": handed["HF_TOKEN"]} if repo and handed.get("HF_TOKEN") else None
    # a slot never pushes (BACKUP_REPO_VARIABLE out): its GPU time is for training
    unset = [*(OWNER_TOKEN_VARIABLES if public() else ()), "SFT_SPACE_SECRET", BACKUP_REPO_VARIABLE]
    return {"unset": [name for name in unset if name not in handed], "set": handed}, backup


def _launch(run_id: str, arguments: list[str]) -> None:
    run_dir = runs_root() / run_id
    clear_cancel(run_dir)
    with open(log_path(run_dir), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_space.train", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=training_env(run_id),
            start_new_session=True,  # its own process group: a Ctrl-C in the app's terminal does not kill it
        )
    _children[run_id] = proc
    # recorded at once, under the queue lock: from here on a pid with another start time is not this run's. Marked
    # launched only now that its process is known: a status check without the lock (a visitor's Start checking
    # their share) between the two once found a launched run without a process, marked it interrupted, and let
    # the same visitor start a second run beside it
    write_status(run_dir, launched_at=time.time(), pid=proc.pid, pid_started=start_time(proc.pid))


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
