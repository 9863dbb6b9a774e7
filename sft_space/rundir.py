"""The run directory: the one contract between the app, the training process and every reader of a run.

Owns every file name inside $SFT_SPACE_HOME/runs/<run_id>/ and how each is read
and written:

    config.json     the RunConfig (never a token)
    owner.json      who started the run from the app: {"owner": visitor key or null, "address": keyed hash},
                    created once, never rewritten
    status.json     state, pid and its start time, times, progress, errors, the data revision trained on
    metrics.jsonl   one JSON object per log line of the trainer (step, losses, lr, grad norm, tokens/s)
    probes.jsonl    replies to the probe prompts at each evaluation
    train.log       the training process's stdout and stderr
    checkpoints/    Trainer checkpoints, each marked complete once fully saved
    adapter/        the final LoRA adapter and tokenizer
    eval.json       evaluation and prompting-baseline results
    published.json  where the run was pushed (never the token)
    jobs.json       Hugging Face Jobs submitted for the run
    export/         the exported script, settings and data
    gguf/           the GGUF export: <name>-<type>.gguf, Modelfile, README.md and gguf.json (its check)

JSON files are written atomically (temp file, then rename); status updates are
read-modify-write under a file lock, so the app's threads and the training
process never lose each other's fields. Ownership fails closed: an unreadable
owner file makes the run nobody's; a run without one (started from the command
line) is the machine owner's, visible in the app only when it is not public. This module
knows nothing about processes, queues, the Hub or Gradio, and imports neither
torch nor transformers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from . import home
from .config import RunConfig

CONFIG = "config.json"
OWNER = "owner.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
PROBES = "probes.jsonl"
LOG = "train.log"
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
EVAL = "eval.json"
PUBLISHED = "published.json"
JOBS = "jobs.json"
EXPORT = "export"
GGUF = "gguf"  # the GGUF export's folder
GGUF_REPORT = "gguf.json"  # in it: files, sizes, times and how the files answered when loaded back
MODELFILE = "Modelfile"  # in it: Ollama's recipe for the exported file
CHECKPOINT_MARK = "sft_space_complete.json"  # written into a checkpoint once it is fully saved
CANCEL_MARK = "cancel_requested"  # present when a stop should discard the adapter
STOP_MARK = "stop_requested"  # a run trained in GPU slots (ZeroGPU): Stop asks its slot through this file
STATUS_LOCK = ".status.lock"
QUEUE_LOCK = ".queue.lock"  # in the runs folder: one scheduler decision at a time


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


def is_run(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


RUN_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")  # what new_run_id makes: no slash, no leading dot


def is_run_id(run_id) -> bool:
    """A run of this app: a plain id naming a run directory in the runs folder (never a path, however typed)."""
    return isinstance(run_id, str) and bool(RUN_ID.match(run_id)) and is_run(runs_root() / run_id)


def list_run_dirs() -> list[Path]:
    """Every run directory, newest first (ids start with their creation time)."""
    return sorted((p for p in runs_root().iterdir() if RUN_ID.match(p.name) and is_run(p)), reverse=True)


def adapter_dir(run: str | Path) -> Path:
    return run_path(run) / ADAPTER


def has_adapter(run: str | Path) -> bool:
    return (adapter_dir(run) / ADAPTER_WEIGHTS).is_file()


def checkpoints_dir(run: str | Path) -> Path:
    return run_path(run) / CHECKPOINTS


def log_path(run: str | Path) -> Path:
    return run_path(run) / LOG


def export_dir(run: str | Path) -> Path:
    return run_path(run) / EXPORT


def gguf_dir(run: str | Path) -> Path:
    return run_path(run) / GGUF


def gguf_file_name(run: str | Path, kind: str) -> str:
    """The GGUF file of one type (f16, q8_0, ...): named after the run, so a downloaded file says where it is from."""
    return f"{run_path(run).name}-{kind}.gguf"


def read_gguf_report(run: str | Path) -> dict:
    return read_json(gguf_dir(run) / GGUF_REPORT)


def write_gguf_report(run: str | Path, report: dict) -> None:
    write_json_atomic(gguf_dir(run) / GGUF_REPORT, report)


def export_archive_stem(run: str | Path) -> Path:
    """Where the export's zip goes, without its .zip: beside the export folder."""
    return run_path(run) / f"{run_path(run).name}-export"


# -------------------------------------------------------------- JSON files
def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    # unique per writer: the app's threads (queue worker, page polls) may write the same file at once
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk mid-write: no temp file is left behind
        Path(tmp).unlink(missing_ok=True)
        raise


def _rewrite_in_place(path: Path, data: Any) -> None:
    """The last resort of a status write on a full disk: the file's own blocks are reused (truncate, then write),
    where a temp file beside it found no room; compact JSON, so it needs no more room than before."""
    text = json.dumps(data, separators=(",", ":")).encode()
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> dict:
    """A JSON object file as a dict; {} when missing, unreadable or not an object (a run's files may come from
    outside, e.g. restored from a Hub backup)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_jsonl_records(path: Path) -> list[dict]:
    """Every complete line of a jsonl file the trainer appends to (a line being written now is skipped)."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


# ------------------------------------------------------------------ config
def read_config(run: str | Path) -> RunConfig:
    return RunConfig.from_json_file(run_path(run) / CONFIG)


def read_config_dict(run: str | Path) -> dict:
    """The raw config.json (for listings: no validation, {} when missing)."""
    return read_json(run_path(run) / CONFIG)


def write_config(run: str | Path, config: RunConfig) -> None:
    write_json_atomic(run_path(run) / CONFIG, config.to_dict())


# ------------------------------------------------------------------ status
@contextlib.contextmanager
def _status_lock(run: str | Path):
    with open(run_path(run) / STATUS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_status(run: str | Path) -> dict:
    return read_json(run_path(run) / STATUS)


def write_status(run: str | Path, **fields: Any) -> dict:
    """Merge `fields` into status.json under the run's lock; the owner, once set, never changes."""
    path = run_path(run) / STATUS
    with _status_lock(run):
        current = read_json(path)
        if current.get("owner") and fields.get("owner", current["owner"]) != current["owner"]:
            raise PermissionError("A run's owner is written once and never changes.")
        status = {**current, **fields}
        try:
            write_json_atomic(path, status)
        except OSError as error:
            if error.errno != errno.ENOSPC or not path.is_file():
                raise
            _rewrite_in_place(path, status)
    return status


def write_owner(run: str | Path, owner: str | None, address: str | None = None) -> None:
    """Record who started the run (and the keyed hash of their address), once: a second write fails
    (FileExistsError), whoever asks."""
    with open(run_path(run) / OWNER, "x", encoding="utf-8") as f:
        json.dump({"owner": owner, "address": address}, f)


def read_owner(run: str | Path) -> dict:
    """owner.json as written, {} when missing or unreadable."""
    data = read_json(run_path(run) / OWNER)
    return data if isinstance(data, dict) else {}


def visible_to(run: str | Path, owner: str | None, public: bool = False) -> bool:
    """May `owner` see and act on the run? Their own run, yes. A run without an owner (started from the command
    line, or by the app for nobody) is everyone's on a private machine and nobody's on a public one. A run whose
    owner cannot be read is nobody's: ownership fails closed."""
    path = run_path(run) / OWNER
    if not path.exists():
        recorded = read_status(run).get("owner")  # runs made before owner.json kept it in status.json
        return recorded == owner if recorded else not public
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))["owner"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if recorded is None:
        return not public
    return isinstance(recorded, str) and recorded == owner


# ------------------------------------------------------------ logs of a run
def append_metric(run: str | Path, record: dict) -> None:
    _append_jsonl(run_path(run) / METRICS, record)


def read_metrics(run: str | Path) -> list[dict]:
    """Every complete line of metrics.jsonl (a line being written right now is skipped)."""
    return read_jsonl_records(run_path(run) / METRICS)


def append_probe(run: str | Path, record: dict) -> None:
    _append_jsonl(run_path(run) / PROBES, record)


def read_probes(run: str | Path) -> list[dict]:
    """Probe replies by step, oldest first; a step answered twice (the end-of-turn check re-asks with a longer
    budget) keeps its later answers."""
    by_step = {record.get("step"): record for record in read_jsonl_records(run_path(run) / PROBES)}
    return sorted(by_step.values(), key=lambda record: record.get("step", 0))


def forget_after(run: str | Path, step: int) -> None:
    """Drop metric and probe lines past `step` (a resumed run trains those steps again)."""
    for name in (METRICS, PROBES):
        path = run_path(run) / name
        records = read_jsonl_records(path)
        kept = [json.dumps(r) for r in records if r.get("step", 0) <= step]
        if len(kept) != len(records):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, path)


def tail_log(run: str | Path, lines: int = 60) -> str:
    path = log_path(run)
    if not path.is_file():
        return "(no log yet)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 200_000))
        text = f.read().decode("utf-8", errors="replace")
    # progress bars redraw with carriage returns; keep only their last state
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


# ------------------------------------------------------------- checkpoints
def mark_checkpoint_complete(folder: Path, step: int) -> None:
    write_json_atomic(Path(folder) / CHECKPOINT_MARK, {"step": step, "saved_at": time.time()})


def checkpoint_step(checkpoint: Path) -> int:
    """The step a checkpoint folder (checkpoint-N) was saved at."""
    return int(checkpoint.name.split("-")[-1])


def last_complete_checkpoint(run: str | Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing (a kill mid-save leaves one without the mark)."""
    marked = [p for p in checkpoints_dir(run).glob("checkpoint-*") if (p / CHECKPOINT_MARK).is_file()]
    return max(marked, key=checkpoint_step) if marked else None


def last_checkpoint_step(run: str | Path) -> int:
    """The step of the newest complete checkpoint; 0 when there is none (a run resumes from its start)."""
    checkpoint = last_complete_checkpoint(run)
    return checkpoint_step(checkpoint) if checkpoint else 0


def request_cancel(run: str | Path) -> None:
    (run_path(run) / CANCEL_MARK).touch()


def clear_cancel(run: str | Path) -> None:
    (run_path(run) / CANCEL_MARK).unlink(missing_ok=True)


def cancel_requested(run: str | Path) -> bool:
    return (run_path(run) / CANCEL_MARK).exists()


def request_stop(run: str | Path) -> None:
    """Stop & save for a run trained in GPU slots: no process of the app to signal, its slot reads this file."""
    (run_path(run) / STOP_MARK).touch()


def clear_stop(run: str | Path) -> None:
    (run_path(run) / STOP_MARK).unlink(missing_ok=True)


def stop_requested(run: str | Path) -> bool:
    return (run_path(run) / STOP_MARK).exists()


# ------------------------------------------------------- results of a run
def read_eval(run: str | Path) -> dict:
    return read_json(run_path(run) / EVAL)


def write_eval(run: str | Path, result: dict) -> None:
    write_json_atomic(run_path(run) / EVAL, result)


def read_published(run: str | Path) -> dict:
    return read_json(run_path(run) / PUBLISHED)


def write_published(run: str | Path, record: dict) -> None:
    write_json_atomic(run_path(run) / PUBLISHED, record)


def read_jobs(run: str | Path) -> dict:
    return read_json(run_path(run) / JOBS)


def write_jobs(run: str | Path, record: dict) -> None:
    write_json_atomic(run_path(run) / JOBS, record)
