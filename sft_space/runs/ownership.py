"""Whose runs are whose: which runs a visitor may see and act on (rundir.visible_to: owner.json, fail closed), the
runs a visitor has going, and their share of the machine (judged by limits.check_share on the facts gathered
here). No torch or Gradio here.
"""

from __future__ import annotations

from pathlib import Path

from ..host import limits
from ..hub import public
from ..rundir import is_run, is_run_id, list_run_dirs, read_owner, read_status, run_path, visible_to
from ..training import estimates
from .liveness import ACTIVE_STATES, refresh
from .queue import active_run, waiting_runs


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
    """This visitor's share of the machine (limits.check_share), judged on the runs going now."""
    if owner is None:
        return
    mine, neighbours = active_runs_of(owner, address)

    def ahead() -> tuple[bool, float | None]:  # only when the queue is full: the run holding the device, its ETA
        busy = active_run()
        return busy is not None, (
            read_status(busy).get("eta_seconds") or estimates.expected_seconds(busy)
        ) if busy else None

    limits.check_share(owner, mine, neighbours, len(waiting_runs()), ahead, quota)


def visible_runs(owner: str | None) -> list[tuple[Path, dict]]:
    """Newest first, (run directory, status) of the runs `owner` may see; reads status files only."""
    statuses = [(run_dir, refresh(run_dir)) for run_dir in list_run_dirs()]
    shared = public()
    return [(run_dir, status) for run_dir, status in statuses if visible_to(run_dir, owner, shared)]


def _first_active(runs: list[tuple[Path, dict]]) -> str | None:
    return next((run_dir.name for run_dir, status in runs if status.get("state") in ACTIVE_STATES), None)


def own_active_run(owner: str | None) -> str | None:
    """The visitor's run that is training or waiting, if any (called by every page poll: status files only)."""
    return _first_active(visible_runs(owner))


def latest_run(owner: str | None = None) -> str | None:
    """The run a fresh page should show: the visitor's active one, else their newest."""
    runs = visible_runs(owner)
    return _first_active(runs) or (runs[0][0].name if runs else None)
