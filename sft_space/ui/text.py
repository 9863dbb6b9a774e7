"""Run state as words for the page: durations, the one-line status of a run."""

from __future__ import annotations

from ..runs import lifecycle as runs
from ..runs import liveness
from ..runs import queue as run_queue
from ..training import slots


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def status_line(status: dict) -> str:
    """'running · step 34/60 · 312 tok/s · ETA 0:41' for the run bar."""
    if not status:
        return "No run yet"
    parts = [status.get("state", "unknown")]
    if runs.is_waiting(status) and status.get("run_id"):
        place = run_queue.queue_position(status["run_id"])
        if place:
            wait = "measuring…" if place[2] is None else format_duration(place[2])
            parts.append(f"position {place[0]} of {place[1]} in the queue · estimated wait {wait}")
    if status.get("phase") and status.get("state") in runs.ACTIVE_STATES:
        parts.append(status["phase"])
    if slots.is_slot_run(status) and status.get("slot"):  # 'slot 2 of about 3 · 41 s of GPU used'
        planned = status.get("slots_planned")
        shown = status["slot"] if status.get("state") in runs.ACTIVE_STATES else len(status.get("slot_log") or [])
        about = f" of about {max(planned, shown)}" if planned and status.get("state") in runs.ACTIVE_STATES else ""
        parts.append(
            f"{'slot' if about or shown == 1 else 'slots'} {shown}{about} · {status.get('gpu_seconds') or 0:.0f} s "
            "of GPU used"
        )
    if status.get("max_steps"):
        parts.append(f"step {status.get('step', 0)}/{status['max_steps']}")
    if status.get("tokens_per_second"):
        parts.append(f"{status['tokens_per_second']:.0f} tok/s")
    if status.get("state") in runs.ACTIVE_STATES and status.get("eta_seconds") is not None:
        parts.append(f"ETA {format_duration(status['eta_seconds'])}")
    elif status.get("state") in runs.ACTIVE_STATES and status.get("phase") == "training":
        parts.append("ETA measuring…")  # the first steps, before the run's own pace is known
    if status.get("state") in liveness.FINAL_STATES and status.get("elapsed_seconds"):
        parts.append(f"took {format_duration(status['elapsed_seconds'])}")
    if status.get("state") in runs.ACTIVE_STATES and status.get("time_budget_seconds"):
        parts.append(f"time limit {format_duration(status['time_budget_seconds'])}")
    if status.get("state") in liveness.FINAL_STATES and status.get("note"):
        parts.append(status["note"])
    if status.get("state") in ("failed", "interrupted") and status.get("error"):
        parts.append(status["error"])
    if status.get("state") in ("stopped", "failed", "interrupted") and status.get("last_checkpoint"):
        parts.append(f"resumable from step {status['last_checkpoint']}")
    backup = status.get("backup") or {}
    if backup.get("error"):
        parts.append(f"backup to the Hub: {backup['error']} (retried; training goes on)")
    elif backup.get("step"):
        parts.append(f"backed up to {backup['repo']} at step {backup['step']}")
    if status.get("chatml_added"):
        parts.append("base model: ChatML template and tokens added")
    ends = status.get("end_of_turn")
    if ends and ends.get("checked"):
        parts.append(
            f"ends its turn on all {ends['checked']} probe prompts"
            if ends["ended"] == ends["checked"]
            else f"warning: did not end its turn on {ends['checked'] - ends['ended']} of {ends['checked']} "
            f"probe prompts"
        )
    return " · ".join(parts)
