"""Inside a GPU slot (ZeroGPU): the function `spaces.GPU` runs in its forked worker, one slot of a run.

slots.py drives a run slot after slot from the visitor's request; this module is what each slot does: set the
visitor's environment for the slot only, train from the last complete checkpoint until just before the slot's
time is up (train.train_slot), save, put everything back. It imports the trainer, which the driver must not.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

from .. import rundir
from . import slots
from .slots import save_every


def run_slot(run_dir: str, seconds: float, env: dict | None = None) -> dict:
    """The work of one GPU slot (the function spaces.GPU runs in its forked worker): train the run from its last
    complete checkpoint until shortly before `seconds` are up, save, and say how far it got. `env`: variables to
    set ("set") and remove ("unset") for this slot only (the visitor's own Hub token, never the owner's); the
    worker may serve other visitors' calls afterwards, so everything is put back."""
    started = time.time()
    slots.IN_SLOT = True
    if rundir.stop_requested(run_dir) or rundir.cancel_requested(run_dir):  # Stop came while it waited for a card
        return {"state": "stopping", "step": rundir.read_status(run_dir).get("step"), "seconds": 0.0}
    env = env or {}
    changed = {name: os.environ.get(name) for name in [*env.get("unset", []), *env.get("set", {})]}
    try:
        for name in env.get("unset", []):
            os.environ.pop(name, None)
        os.environ.update(env.get("set", {}))
        _fresh_device_facts()
        from .run import train_slot

        try:
            outcome = train_slot(Path(run_dir), deadline=started + seconds, save_every=save_every())
        except pickle.PicklingError as error:  # raised in the slot: not the package's failure to send a result
            raise RuntimeError(f"PicklingError in the slot: {error}") from None
    finally:
        for name, value in changed.items():  # only what this slot changed: the worker serves other calls next
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _release_device()
    return {**outcome, "seconds": round(time.time() - started, 2)}


def _fresh_device_facts() -> None:
    """A worker forked from the app inherits what the app cached about its device (the CPU): in a slot the device is
    the lent card, for the run's pace records and peak memory too; a reused worker starts each slot's peak afresh."""
    from ..models import device

    device.device_name.cache_clear()  # the one device fact cached per process (detect_device reads afresh)
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - a fact for the record only
        pass


def _release_device() -> None:
    """What the slot's model held goes back before the call ends (a reused worker keeps its process)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


def slot_duration(run_dir: str, seconds: float, env: dict | None = None) -> float:
    """spaces.GPU's duration for a call of run_slot: the seconds the driver asked for."""
    return seconds
