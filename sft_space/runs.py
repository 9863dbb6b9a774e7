"""Runs on disk and the training processes behind them.

Owns the run directory layout ($SFT_SPACE_HOME/runs/<run_id>/: config.json,
status.json, metrics.jsonl, train.log, checkpoints/, adapter/), atomic writes,
reading status and metrics back, and the job runner: start the training process
(`python -m sft_space.train RUN_DIR`), stop it, find runs again after a restart.
While a training process lives, only that process writes status.json. This
module imports neither torch nor Gradio.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import home
from .config import RunConfig
from .models import model_max_length

ACTIVE_STATES = ("queued", "running", "stopping")
FINAL_STATES = ("completed", "stopped", "failed", "interrupted")
STOP_GRACE_SECONDS = 120  # a step on CPU plus saving the adapter; then the process is killed

_children: dict[str, subprocess.Popen] = {}  # processes started by this app, so they can be reaped


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
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


# -------------------------------------------------------------- file I/O
def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
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
    """Probe prompts' replies: one record per evaluation (step 0 = the base model)."""
    return read_jsonl_records(run_path(run) / "probes.jsonl")


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


def refresh(run: str | Path) -> dict:
    """The run's status, marking it interrupted when its process is gone without saying so."""
    status = read_status(run)
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
    """The id of the run that is training now, if any (one job per device)."""
    for run_dir in list_run_dirs():
        if refresh(run_dir).get("state") in ACTIVE_STATES:
            return run_dir.name
    return None


def start_run(config: RunConfig, run_id: str | None = None) -> str:
    """Validate, write the run directory, start the training process; return the run id."""
    config.validate(model_max_length(config.model))
    _refuse_if_busy()
    run_id = run_id or new_run_id(config)
    run_dir = runs_root() / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    write_json_atomic(run_dir / "config.json", config.to_dict())
    # written before the process starts; from then on only the process writes status.json
    write_status(run_dir, state="queued", created_at=time.time(), run_id=run_id)
    _launch(run_id, [str(run_dir)])
    return run_id


def _refuse_if_busy() -> None:
    busy = active_run()
    if busy:
        raise RuntimeError(f"Run {busy} is still training: stop it or wait for it to finish, then start again.")


CHECKPOINT_MARK = "sft_space_complete.json"  # written by the trainer after a checkpoint is fully saved


def last_complete_checkpoint(run: str | Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing (a kill mid-save leaves one without the mark)."""
    marked = [p for p in (run_path(run) / "checkpoints").glob("checkpoint-*") if (p / CHECKPOINT_MARK).is_file()]
    return max(marked, key=lambda p: int(p.name.split("-")[-1])) if marked else None


def resume_run(run: str | Path) -> str:
    """Continue a stopped, failed or interrupted run from its last complete checkpoint."""
    status = refresh(run)
    if status.get("state") in ACTIVE_STATES:
        raise RuntimeError("This run is still going: there is nothing to resume.")
    if status.get("state") == "completed":
        raise RuntimeError("This run completed: start a new run to train further.")
    if last_complete_checkpoint(run) is None:
        raise RuntimeError("This run has no complete checkpoint yet (one is written every save_steps): start it again.")
    _refuse_if_busy()
    run_id = run_path(run).name
    write_status(run, state="queued", error=None, resumed_at=time.time())
    _launch(run_id, ["--resume", str(run_path(run))])
    return run_id


def retry_config(run: str | Path) -> RunConfig | None:
    """After an out-of-memory failure: the same run with half the batch and twice the accumulation."""
    retry = read_status(run).get("retry")
    if not retry:
        return None
    return RunConfig.from_dict({**read_config(run).to_dict(), **retry})


def _launch(run_id: str, arguments: list[str]) -> None:
    run_dir = runs_root() / run_id
    with open(run_dir / "train.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_space.train", *arguments],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parent.parent),
            env={**os.environ, "SFT_SPACE_LOG_CAPTURED": "1", "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # its own process group: a Ctrl-C in the app's terminal does not kill it
        )
    _children[run_id] = proc


def stop_run(run: str | Path) -> dict:
    """Ask the training process to stop after the current step and save the adapter (SIGTERM)."""
    status = refresh(run)
    if status.get("state") not in ACTIVE_STATES:
        return status
    child = _children.get(run_path(run).name)
    pid = status.get("pid") or (child.pid if child else None)
    if not pid:
        return status
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return refresh(run)
    return status


def wait_for(run: str | Path, states=FINAL_STATES, timeout: float = STOP_GRACE_SECONDS, poll: float = 0.5) -> dict:
    """Block until the run reaches one of `states`; kill it if it overstays a stop request."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = refresh(run)
        if status.get("state") in states:
            return status
        time.sleep(poll)
    return refresh(run)


def list_run_dirs() -> list[Path]:
    return sorted((p for p in runs_root().iterdir() if (p / "config.json").is_file()), reverse=True)


def list_runs() -> list[dict]:
    """Newest first: id, state, step and best validation loss of every run on disk."""
    runs = []
    for run_dir in list_run_dirs():
        status = refresh(run_dir)
        eval_losses = [m["eval_loss"] for m in read_metrics(run_dir) if "eval_loss" in m]
        runs.append({
            "run_id": run_dir.name,
            "state": status.get("state", "unknown"),
            "step": status.get("step", 0),
            "max_steps": status.get("max_steps"),
            "best_eval_loss": min(eval_losses) if eval_losses else None,
            "has_adapter": (run_dir / "adapter" / "adapter_model.safetensors").is_file(),
        })
    return runs


def latest_run() -> str | None:
    """The run a fresh page should show: the active one, else the newest."""
    dirs = list_run_dirs()
    return active_run() or (dirs[0].name if dirs else None)


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
    if status.get("phase") and status.get("state") in ACTIVE_STATES:
        parts.append(status["phase"])
    if status.get("max_steps"):
        parts.append(f"step {status.get('step', 0)}/{status['max_steps']}")
    if status.get("tokens_per_second"):
        parts.append(f"{status['tokens_per_second']:.0f} tok/s")
    if status.get("state") in ACTIVE_STATES and status.get("eta_seconds") is not None:
        parts.append(f"ETA {format_duration(status['eta_seconds'])}")
    if status.get("state") in FINAL_STATES and status.get("elapsed_seconds"):
        parts.append(f"took {format_duration(status['elapsed_seconds'])}")
    if status.get("state") in ("failed", "interrupted") and status.get("error"):
        parts.append(status["error"])
    if status.get("state") in ("stopped", "failed", "interrupted") and status.get("last_checkpoint"):
        parts.append(f"resumable from step {status['last_checkpoint']}")
    return " · ".join(parts)
