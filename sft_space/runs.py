"""Runs on disk and the training processes behind them.

Owns the run directory layout ($SFT_SPACE_HOME/runs/<run_id>/: config.json,
status.json, metrics.jsonl, train.log, checkpoints/, adapter/), atomic writes,
reading status and metrics back, and the job runner: start the training process
(`python -m sft_space.train RUN_DIR`), stop it, find runs again after a restart.
While a training process lives, only that process writes status.json. This
module imports neither torch nor Gradio.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from . import home
from .config import BUNDLED_MODEL, RunConfig
from .models import check_model_choice, model_max_length

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "cancelled", "failed", "interrupted")
STOP_GRACE_SECONDS = 120  # a step on CPU plus saving the adapter; then the process is killed

_children: dict[str, subprocess.Popen] = {}  # processes started by this app, so they can be reaped
_thread_lock = threading.Lock()


# ----------------------------------------------------------------- paths
def runs_root() -> Path:
    root = home() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_path(run: str | Path) -> Path:
    """A run id or a run directory path -> the run directory."""
    path = Path(run)
    return path if path.is_absolute() or path.exists() else runs_root() / str(run)


def new_run_id(config: RunConfig) -> str:
    label = config.run_name or f"{Path(config.model).name}-{config.dataset.replace('demo:', '')}"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:40] or "run"
    # the random tail keeps ids apart when several visitors start the same thing in the same second
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{uuid.uuid4().hex[:4]}"


# -------------------------------------------------------------- file I/O
def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    # unique per writer: the app's threads (queue worker, page polls) may write the same status at once
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def read_status(run: str | Path) -> dict:
    return read_json(run_path(run) / "status.json")


def write_status(run: str | Path, **fields: Any) -> dict:
    path = run_path(run) / "status.json"
    status = {**read_json(path), **fields}
    write_json_atomic(path, status)
    return status


def append_metric(run: str | Path, record: dict) -> None:
    with open(run_path(run) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_metrics(run: str | Path) -> list[dict]:
    """Every complete line of metrics.jsonl (a line being written right now is skipped)."""
    return read_jsonl_records(run_path(run) / "metrics.jsonl")


def read_jsonl_records(path: Path) -> list[dict]:
    """Every complete line of a jsonl file the trainer appends to (a line being written now is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_probes(run: str | Path) -> list[dict]:
    """Probe replies by step, oldest first; a step answered twice (the end-of-turn check re-asks with a longer
    budget) keeps its later answers."""
    by_step = {record.get("step"): record for record in read_jsonl_records(run_path(run) / "probes.jsonl")}
    return sorted(by_step.values(), key=lambda record: record.get("step", 0))


def read_config(run: str | Path) -> RunConfig:
    return RunConfig.from_json_file(run_path(run) / "config.json")


def tail_log(run: str | Path, lines: int = 60) -> str:
    path = run_path(run) / "train.log"
    if not path.is_file():
        return "(no log yet)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200_000))
        text = f.read().decode("utf-8", errors="replace")
    # progress bars redraw with carriage returns; keep only their last state
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


# ------------------------------------------------------------- processes
def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0); its state letter says it is gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_alive(run: str | Path, status: dict) -> bool:
    """Is the run's training process still there? Our own children are polled (which also reaps them)."""
    child = _children.get(run_path(run).name)
    if child is not None:
        return child.poll() is None
    return pid_alive(status.get("pid"))


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
    if status.get("state") in ACTIVE_STATES and not process_alive(run, status):
        status = write_status(
            run, state="interrupted", ended_at=time.time(),
            error="The training process ended unexpectedly (killed, out of memory, or the app restarted). "
                  "Open the log for details.",
        )
    return status


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
    with _thread_lock, open(runs_root() / ".queue.lock", "w") as lock:
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
        write_status(run_id, launched_at=time.time())
        _launch(run_id, ["--resume", str(run_path(run_id))] if status.get("resume") else [str(run_path(run_id))])
        return run_id


def start_queue_worker(interval: float = 2.0) -> threading.Thread:
    """A daemon thread that starts queued runs as the device frees up (the app runs one)."""
    def work() -> None:
        while True:
            try:
                advance_queue()
            except Exception:  # a bad run directory must not stop the queue
                pass
            time.sleep(interval)

    thread = threading.Thread(target=work, name="sft-space-queue", daemon=True)
    thread.start()
    return thread


def check_owner(run: str | Path, owner: str | None) -> dict:
    """The run's status, if `owner` may see and act on it; runs started from the command line have no owner."""
    status = refresh(run)
    if not (run_path(run) / "config.json").is_file():
        raise FileNotFoundError(f"There is no run {run_path(run).name}.")
    if status.get("owner") and status["owner"] != owner:
        raise PermissionError("This run belongs to another visitor.")
    return status


def start_run(config: RunConfig, run_id: str | None = None, owner: str | None = None) -> str:
    """Validate, check the disk, write the run directory and queue the run; return the run id."""
    facts = check_model_choice(config)  # refusals (missing, gated, pickle-only, custom code) before anything is queued
    config.validate(facts.max_length or model_max_length(config.model))
    check_disk(config)
    run_id = run_id or new_run_id(config)
    run_dir = runs_root() / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    # written before any process starts; from then on only the training process writes status.json
    now = time.time()
    write_status(run_dir, state="queued", created_at=now, queued_at=now, run_id=run_id, owner=owner,
                 planned_steps=planned_steps(config))
    advance_queue()
    return run_id


CHECKPOINT_MARK = "sft_space_complete.json"  # written by the trainer after a checkpoint is fully saved
CANCEL_MARK = "cancel_requested"  # present when a stop should discard the adapter


def last_complete_checkpoint(run: str | Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing (a kill mid-save leaves one without the mark)."""
    marked = [p for p in (run_path(run) / "checkpoints").glob("checkpoint-*") if (p / CHECKPOINT_MARK).is_file()]
    return max(marked, key=lambda p: int(p.name.split("-")[-1])) if marked else None


def resume_run(run: str | Path, owner: str | None = None) -> str:
    """Queue a stopped, failed or interrupted run to continue from its last complete checkpoint."""
    status = check_owner(run, owner)
    if status.get("state") in ACTIVE_STATES:
        raise RuntimeError("This run is still going: there is nothing to resume.")
    if status.get("state") == "completed":
        raise RuntimeError("This run completed: start a new run to train further.")
    if last_complete_checkpoint(run) is None:
        raise RuntimeError("This run has no complete checkpoint yet (one is written every save_steps): start it again.")
    write_status(run, state="queued", queued_at=time.time(), launched_at=None, resume=True, error=None, pid=None)
    advance_queue()
    return run_path(run).name


def retry_config(run: str | Path) -> RunConfig | None:
    """After an out-of-memory failure: the same run with half the batch and twice the accumulation."""
    retry = read_status(run).get("retry")
    if not retry:
        return None
    return RunConfig.from_dict({**read_config(run).to_dict(), **retry})


def _launch(run_id: str, arguments: list[str]) -> None:
    run_dir = runs_root() / run_id
    (run_dir / CANCEL_MARK).unlink(missing_ok=True)
    with open(run_dir / "train.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_space.train", *arguments],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
            env={**os.environ, "SFT_SPACE_LOG_CAPTURED": "1", "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: a Ctrl-C in the app's terminal does not kill it
        )
    _children[run_id] = proc


def _signal_stop(run: str | Path, status: dict) -> None:
    child = _children.get(run_path(run).name)
    pid = status.get("pid") or (child.pid if child else None)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def stop_run(run: str | Path, owner: str | None = None) -> dict:
    """Stop & save: the process stops after the current step and saves the adapter (SIGTERM)."""
    status = check_owner(run, owner)
    if is_waiting(status):
        return cancel_run(run, owner)
    if status.get("state") in ACTIVE_STATES:
        _signal_stop(run, status)
    return refresh(run)


def cancel_run(run: str | Path, owner: str | None = None) -> dict:
    """Cancel: a waiting run leaves the queue; a training one stops without saving an adapter."""
    status = check_owner(run, owner)
    with _queue_lock():
        status = refresh(run)
        if is_waiting(status):
            return write_status(run, state="cancelled", ended_at=time.time(), note="cancelled while waiting in the queue")
    if status.get("state") in ACTIVE_STATES:
        (run_path(run) / CANCEL_MARK).touch()
        _signal_stop(run, status)
    return refresh(run)


def wait_for(run: str | Path, states=FINAL_STATES, timeout: float = STOP_GRACE_SECONDS, poll: float = 0.5) -> dict:
    """Block until the run reaches one of `states`, moving the queue along meanwhile."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        advance_queue()
        status = refresh(run)
        if status.get("state") in states:
            return status
        time.sleep(poll)
    return refresh(run)


# ------------------------------------------------------------ estimates
MEASURED_AFTER_STEPS = 3  # a run's own pace is trusted for its ETA after this many steps (the first ones warm up)
PACE_MIN_STEPS = 5  # a finished run predicts later runs when it trained at least this many steps


def planned_steps(config: RunConfig) -> int | None:
    """Optimizer steps the run will take (max_steps, or epochs over the training rows)."""
    if config.max_steps > 0:
        return config.max_steps
    try:
        from .data import load_for_run

        rows = len(load_for_run(config).train)
    except (ValueError, FileNotFoundError):
        return None
    batches = math.ceil(rows / config.per_device_train_batch_size)
    return max(1, math.ceil(batches / config.gradient_accumulation_steps * config.num_train_epochs))


def measured_pace(model: str | None, device: str | None = None) -> dict | None:
    """How the newest finished run of `model` on this device went: start-up seconds (process start, model and data
    loading), wall seconds per step (evaluations included) and finishing seconds (adapter, last probes).
    None until such a run trained PACE_MIN_STEPS steps: then estimates say 'measuring'."""
    from .models import device_name

    device = device or device_name()
    for run_dir in list_run_dirs():
        status = read_status(run_dir)
        if (status.get("state") in ("completed", "stopped") and status.get("device") == device
                and (status.get("steps_measured") or 0) >= PACE_MIN_STEPS and status.get("seconds_per_step")
                and read_json(run_dir / "config.json").get("model") == model):
            return {"startup_seconds": status.get("startup_seconds") or 0.0,
                    "seconds_per_step": status["seconds_per_step"],
                    "finish_seconds": status.get("finish_seconds") or 0.0, "run_id": run_dir.name}
    return None


def estimate_seconds(model: str | None, steps: int | None, device: str | None = None) -> float | None:
    """Wall seconds a run of `steps` steps of `model` takes on this device, from its measured pace; None if unknown."""
    pace = measured_pace(model, device)
    if pace is None or not steps:
        return None
    return pace["startup_seconds"] + steps * pace["seconds_per_step"] + pace["finish_seconds"]


def _expected_seconds(run_id: str) -> float | None:
    status = read_status(run_id)
    return estimate_seconds(read_json(run_path(run_id) / "config.json").get("model"), status.get("planned_steps"))


def queue_position(run: str | Path) -> tuple[int, int, float] | None:
    """(position from 1, runs waiting, estimated seconds until it starts or None while unmeasured) for a waiting
    run."""
    waiting = waiting_runs()
    name = run_path(run).name
    if name not in waiting:
        return None
    wait: float | None = 0.0
    busy = active_run()
    if busy:
        remaining = read_status(busy).get("eta_seconds")
        wait = _expected_seconds(busy) if remaining is None else remaining
    for ahead in waiting[: waiting.index(name)]:
        expected = _expected_seconds(ahead)
        wait = None if wait is None or expected is None else wait + expected
    return waiting.index(name) + 1, len(waiting), wait


# ----------------------------------------------------------------- disk
DISK_MARGIN_BYTES = 100 * 2**20  # logs, tokenised data caches and the unexpected


def free_bytes() -> int:
    return shutil.disk_usage(home()).free


def needed_bytes(config: RunConfig) -> int:
    """Checkpoints (LoRA weights + Adam moments) x kept + the adapter, + the bundled model's conversion."""
    from .bundled import bundled_model_dir, is_converted

    need = DISK_MARGIN_BYTES
    folder = bundled_model_dir() if config.model == BUNDLED_MODEL else Path(config.model).expanduser()
    if config.model == BUNDLED_MODEL and not is_converted():
        need += 600 * 2**20  # the float32 safetensors copy of SmolLM2-135M
    model_config = read_json(folder / "config.json")
    hidden = model_config.get("hidden_size", 1024)
    inner = model_config.get("intermediate_size", 4 * hidden)
    layers = model_config.get("num_hidden_layers", 24)
    lora_params = layers * config.lora_r * (4 * 2 * hidden + 3 * (hidden + inner))
    per_checkpoint = lora_params * 4 * 3 + 2**20  # float32 weights + two Adam moments + tokenizer/state files
    return need + per_checkpoint * (config.save_total_limit + 1)


def check_disk(config: RunConfig) -> None:
    need, free = needed_bytes(config), free_bytes()
    if free < need:
        raise RuntimeError(
            f"Not enough disk space: this run needs about {need / 2**20:.0f} MB (checkpoints and adapter) and "
            f"{free / 2**20:.0f} MB is free under {home()}. Delete old runs or lower save_total_limit."
        )


# ------------------------------------------------------------- listing
def list_run_dirs() -> list[Path]:
    return sorted((p for p in runs_root().iterdir() if (p / "config.json").is_file()), reverse=True)


def visible_to(status: dict, owner: str | None) -> bool:
    return not status.get("owner") or status.get("owner") == owner


def visible_runs(owner: str | None) -> list[tuple[Path, dict]]:
    """Newest first, (run directory, status) of the runs `owner` may see; reads status files only."""
    statuses = [(run_dir, refresh(run_dir)) for run_dir in list_run_dirs()]
    return [(run_dir, status) for run_dir, status in statuses if visible_to(status, owner)]


def list_runs(owner: str | None = None) -> list[dict]:
    """Newest first, the runs `owner` may see: name, model, dataset, state, steps, best validation loss, age."""
    runs = []
    for run_dir, status in visible_runs(owner):
        config = read_json(run_dir / "config.json")
        eval_losses = [m["eval_loss"] for m in read_metrics(run_dir) if isinstance(m.get("eval_loss"), (int, float))]
        runs.append({
            "run_id": run_dir.name,
            "model": config.get("model"),
            "dataset": config.get("dataset"),
            "state": status.get("state", "unknown"),
            "step": status.get("step", 0),
            "max_steps": status.get("max_steps") or status.get("planned_steps"),
            "best_eval_loss": min(eval_losses) if eval_losses else None,
            "age_seconds": time.time() - status.get("created_at", time.time()),
            "has_adapter": (run_dir / "adapter" / "adapter_model.safetensors").is_file(),
        })
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


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def status_line(status: dict) -> str:
    """'running · step 34/60 · 312 tok/s · ETA 0:41' for the run bar."""
    if not status:
        return "No run yet"
    parts = [status.get("state", "unknown")]
    if is_waiting(status) and status.get("run_id"):
        place = queue_position(status["run_id"])
        if place:
            wait = "measuring…" if place[2] is None else format_duration(place[2])
            parts.append(f"position {place[0]} of {place[1]} in the queue · estimated wait {wait}")
    if status.get("phase") and status.get("state") in ACTIVE_STATES:
        parts.append(status["phase"])
    if status.get("max_steps"):
        parts.append(f"step {status.get('step', 0)}/{status['max_steps']}")
    if status.get("tokens_per_second"):
        parts.append(f"{status['tokens_per_second']:.0f} tok/s")
    if status.get("state") in ACTIVE_STATES and status.get("eta_seconds") is not None:
        parts.append(f"ETA {format_duration(status['eta_seconds'])}")
    elif status.get("state") in ACTIVE_STATES and status.get("phase") == "training":
        parts.append("ETA measuring…")  # the first steps, before the run's own pace is known
    if status.get("state") in FINAL_STATES and status.get("elapsed_seconds"):
        parts.append(f"took {format_duration(status['elapsed_seconds'])}")
    if status.get("state") in ("failed", "interrupted") and status.get("error"):
        parts.append(status["error"])
    if status.get("state") in ("stopped", "failed", "interrupted") and status.get("last_checkpoint"):
        parts.append(f"resumable from step {status['last_checkpoint']}")
    if status.get("chatml_added"):
        parts.append("base model: ChatML template and tokens added")
    ends = status.get("end_of_turn")
    if ends and ends.get("checked"):
        parts.append(f"ends its turn on all {ends['checked']} probe prompts" if ends["ended"] == ends["checked"] else
                     f"warning: did not end its turn on {ends['checked'] - ends['ended']} of {ends['checked']} probe prompts")
    return " · ".join(parts)
