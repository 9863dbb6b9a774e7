"""Clean-up of a shared machine's disk: old runs, uploads, downloaded models and handed-out copies.

A public host removes, once an hour (see runs.start_queue_worker), finished runs whose last activity is older
than the keep age (limits.keep_days), uploads and Hub model downloads nobody used for that long, and the copies
of export zips handed to visitors more than an hour ago. A run that is queued, running or newer than the age is
never touched, nor a model or an upload a live run names. A private machine cleans nothing unless
SFT_SPACE_KEEP_DAYS asks for it. Imports neither torch nor Gradio.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from .. import home, rundir

log = logging.getLogger(__name__)

UPLOADS = "uploads"  # in $SFT_SPACE_HOME: the Data tab's uploads, content-addressed
HANDED_OUT = "sft-space-handed-out"  # in the temp folder (which Gradio serves from): copies given to a visitor
HANDED_OUT_HOURS = 1


def uploads_dir() -> Path:
    return home() / UPLOADS


def handed_out_dir() -> Path:
    path = Path(tempfile.gettempdir()) / HANDED_OUT
    path.mkdir(parents=True, exist_ok=True)
    return path


def _last_activity(run_dir: Path, status: dict) -> float:
    times = [status.get(k) for k in ("ended_at", "last_step_at", "queued_at", "created_at")]
    return max([t for t in times if isinstance(t, (int, float))] or [run_dir.stat().st_mtime])


def _remove(path: Path, removed: list[str]) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    removed.append(str(path.relative_to(home())) if path.is_relative_to(home()) else str(path))


def clean_up(keep_days: float | None, active_states=("queued", "running", "stopping"), now: float | None = None):
    """Remove what is older than `keep_days` (see the module's docstring); returns the removed paths, relative to
    $SFT_SPACE_HOME. Runs' liveness is read from their status files (runs.refresh has marked dead ones)."""
    now = now or time.time()
    removed: list[str] = []
    for path in handed_out_dir().iterdir():
        if path.stat().st_mtime < now - HANDED_OUT_HOURS * 3600:
            _remove(path, removed)
    if not keep_days:
        return removed
    cutoff = now - keep_days * 86400
    in_use: set[str] = set()
    for run_dir in rundir.list_run_dirs():
        status = rundir.read_status(run_dir)
        config = rundir.read_config_dict(run_dir)
        if status.get("state") in active_states or _last_activity(run_dir, status) >= cutoff:
            in_use.update(str(config.get(k) or "") for k in ("dataset", "model"))
            continue
        _remove(run_dir, removed)
    if uploads_dir().is_dir():
        for path in uploads_dir().iterdir():
            if path.stat().st_mtime < cutoff and str(path) not in in_use:
                _remove(path, removed)
    removed += _clean_models(cutoff, in_use)
    if removed:
        log.info("Clean-up removed %d paths: %s", len(removed), ", ".join(removed[:20]))
    return removed


def _clean_models(cutoff: float, in_use: set[str]) -> list[str]:
    """Hub model downloads not used since `cutoff` and not named by a run that is live or recent."""
    from huggingface_hub import scan_cache_dir

    from ..models.cache import model_cache_dir

    if not model_cache_dir().is_dir():
        return []
    removed: list[str] = []
    for repo in scan_cache_dir(model_cache_dir()).repos:
        if repo.repo_type == "model" and repo.last_accessed < cutoff and repo.repo_id not in in_use:
            _remove(Path(repo.repo_path), removed)
    return removed
