"""Pause when idle: a Space on paid hardware pauses itself once nothing has trained or waited to train for the
minutes its owner set (SFT_SPACE_PAUSE_WHEN_IDLE), so it stops billing by the hour while nobody uses it.

Opt-in, and only where it saves money: on a Space (SPACE_ID), never on ZeroGPU, and only when the Space's runtime
(asked of the Hub with the owner's token) says its hardware is a paid one, not the free CPU. Idle means no run
queued, running or stopping in this Space's runs folder: a run's checkpoints are pushed by its own training process
(publishing/backup), so when no process is left, the last backup is pushed. The pause is one call of
huggingface_hub's pause_space with the Space's own secret (HF_TOKEN); the owner restarts the Space from its page.
The page says beforehand when it will pause (note()). Checked by the queue worker every few seconds (check()).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Callable

from ..hub import hub_endpoint
from ..rundir import list_run_dirs
from .liveness import ACTIVE_STATES, refresh

VARIABLE = "SFT_SPACE_PAUSE_WHEN_IDLE"
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # the Space owner's secret
FREE_HARDWARE = {"cpu-basic"}  # and every ZeroGPU flavour (zero-*)
MOST_MINUTES = 7 * 24 * 60
RETRY_SECONDS = 300  # after the Hub failed to answer or to pause: ask again this much later, not every tick

# Work the page is doing besides training (a chat reply, an export, a push): set by the page (ui), which knows its
# event queue; the Space must not pause under a visitor's push either.
activity: Callable[[], bool] = lambda: False  # noqa: E731

_state = {"idle_since": time.time(), "paused": False, "hardware": None, "refused": None, "retry_at": 0.0}
_lock = threading.Lock()  # one decision at a time (the queue worker; tests may start several)
log = logging.getLogger(__name__)


def minutes() -> float | None:
    """The owner's setting in minutes, or None when unset, not a number or not positive."""
    try:
        value = float(os.environ.get(VARIABLE, ""))
    except ValueError:
        return None
    return min(value, MOST_MINUTES) if math.isfinite(value) and value > 0 else None


def _token() -> str | None:
    return next((os.environ[name] for name in TOKEN_VARIABLES if os.environ.get(name)), None)


def enabled() -> bool:
    from ..host import hardware

    return bool(minutes() and os.environ.get("SPACE_ID") and not hardware.on_zerogpu() and not _state["refused"])


def busy() -> bool:
    if any(refresh(run_dir).get("state") in ACTIVE_STATES for run_dir in list_run_dirs()):
        return True
    try:
        return bool(activity())
    except Exception:  # the page's own bookkeeping changed: training is what counts
        return False


def space_hardware() -> str | None:
    """The Space's hardware as its runtime reports it (cached); None when it cannot be asked."""
    if _state["hardware"] is None:
        from huggingface_hub import HfApi

        runtime = HfApi(endpoint=hub_endpoint(), token=_token() or False).get_space_runtime(os.environ["SPACE_ID"])
        _state["hardware"] = str(runtime.hardware or runtime.requested_hardware or "")
    return _state["hardware"] or None


def paid(name: str | None) -> bool:
    return bool(name) and name not in FREE_HARDWARE and not name.startswith("zero")


def pause_at() -> float | None:
    """When the Space pauses if nothing starts before (epoch seconds); None when it will not."""
    if not enabled() or _state["paused"]:
        return None
    return _state["idle_since"] + minutes() * 60


def note() -> str | None:
    """For the page: the rule, and the time it applies next."""
    if not enabled():
        return None
    at = pause_at()
    when = (
        " Nothing is training now: it pauses at **" + time.strftime("%H:%M UTC", time.gmtime(at)) + "** unless a "
        "run starts."
        if at and not busy()
        else " A run is training or waiting: it stays awake."
    )
    return (
        f"This Space pauses itself after {minutes():g} minutes without training (its owner's setting, "
        f"{VARIABLE}), so its paid hardware stops billing; its owner restarts it from the Space's page.{when}"
    )


def check(now: float | None = None) -> bool:
    """Pause the Space when it has been idle long enough; True when it asked the Hub to pause it."""
    with _lock:
        return _check(time.time() if now is None else now)


def _check(now: float) -> bool:
    if not enabled() or _state["paused"]:
        return False
    if busy():
        _state["idle_since"] = now
        return False
    if now - _state["idle_since"] < minutes() * 60:
        return False
    if now < _state["retry_at"]:
        return False
    token = _token()
    if not token:
        _state["refused"] = f"{VARIABLE} is set but the Space has no HF_TOKEN secret to pause itself with"
        log.warning(_state["refused"])
        return False
    try:
        hardware_name = space_hardware()
    except Exception as error:  # the Hub unreachable: ask again later
        log.warning("pause when idle: the Space's hardware could not be read (%s)", type(error).__name__)
        _state["retry_at"] = now + RETRY_SECONDS
        return False
    if not paid(hardware_name):
        _state["refused"] = f"{VARIABLE} ignored: {hardware_name or 'unknown'} hardware is free"
        log.info(_state["refused"])
        return False
    from huggingface_hub import HfApi

    try:
        HfApi(endpoint=hub_endpoint(), token=token).pause_space(os.environ["SPACE_ID"])
    except Exception as error:
        code = getattr(getattr(error, "response", None), "status_code", None)
        if code in (401, 403):  # the token may not pause this Space: say so once, stop asking
            _state["refused"] = f"{VARIABLE}: the HF_TOKEN secret may not pause this Space (HTTP {code})"
            log.warning(_state["refused"])
        else:
            log.warning("pause when idle: the pause failed (%s); trying again later", type(error).__name__)
            _state["retry_at"] = now + RETRY_SECONDS
        return False
    _state["paused"] = True
    log.warning("pause when idle: nothing trained for %g minutes on %s: Space paused", minutes(), hardware_name)
    return True


def reset(now: float | None = None) -> None:
    """Forget what was learnt (tests; a new process starts so)."""
    _state.update(
        idle_since=time.time() if now is None else now, paused=False, hardware=None, refused=None, retry_at=0.0
    )
