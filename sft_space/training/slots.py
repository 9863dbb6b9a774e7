"""Training in GPU slots (ZeroGPU): a run is a series of `spaces.GPU` calls, one continuous run across them.

On ZeroGPU a Space gets a GPU only for the length of one call of a function decorated with `spaces.GPU`, run in a
process forked from the app, its arguments and result pickled across, ended when it outlives the duration it asked
for; every call spends the visitor's own daily GPU quota (the request's headers say whose). So a run here is
driven from the visitor's page: `drive` asks for one slot after another, each `slot_worker.run_slot` trains from
the run's last complete checkpoint (adapter, optimizer, scheduler, RNG and data position: the Trainer's own
checkpoint) until just before its time is up, saves, and returns; between slots the GPU goes back to the pool, so other
visitors' chats and runs get theirs. One loss curve, one step count, one learning-rate schedule across slots.

A quota error pauses the run (state "stopped", the message and the time to retry in its note, no step lost):
Resume continues it. A slot ended at its duration loses only the steps since its last save (one every
SAVE_EVERY_SECONDS) and the next slot continues. The slot's length is the run's remaining steps at its measured
pace, capped by the host (SFT_SPACE_SLOT_SECONDS) and by what the quota error says is left.

No Gradio and no torch here: the page hands `drive` the decorated call (ui/train_tab.py); what runs inside the
slot is slot_worker.py's.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from .. import rundir
from .slot_backup import SlotBackup, scrubbed

SLOT_SECONDS_VARIABLE = "SFT_SPACE_SLOT_SECONDS"
DEFAULT_SLOT_SECONDS = 120  # two minutes: a free visitor's quota lasts a few of them, a PRO one many
MIN_SLOT_SECONDS = 20  # below this a slot is mostly loading the model: the quota's last seconds are not asked for
SAVE_EVERY_VARIABLE = "SFT_SPACE_SLOT_SAVE_SECONDS"
SAVE_EVERY_SECONDS = 30  # a slot ended at its duration loses at most this much training
END_MARGIN_SECONDS = 3.0  # kept free at a slot's end besides the last step and the save
PICKUP_SECONDS = 600  # a run just started or resumed counts as driven this long, while its page's driver waits its turn
LEASE_GRACE_SECONDS = 60  # a slot's driver counts as alive until its slot's duration and this much more have passed
DRIVERS = 16  # slot drivers at once (each holds one of Gradio's worker threads for its slot): the others wait
FINAL = ("completed", "stopped", "cancelled", "failed", "interrupted")

_driving: dict[str, float] = {}  # run id -> when this process began driving it
# True in a process forked for a GPU slot: torch's CPU thread pool does not survive a fork (torch.set_num_threads
# there fails "Invalid thread pool!"), so nothing may change the thread count (callbacks, chat check this);
# slot_worker.run_slot sets it
IN_SLOT = False
_lock = threading.Lock()


def slot_cap() -> float:
    """The host's longest slot, in seconds (SFT_SPACE_SLOT_SECONDS)."""
    try:
        return max(1.0, float(os.environ.get(SLOT_SECONDS_VARIABLE, DEFAULT_SLOT_SECONDS)))
    except ValueError:
        return float(DEFAULT_SLOT_SECONDS)


def save_every() -> float:
    try:
        return max(1.0, float(os.environ.get(SAVE_EVERY_VARIABLE, SAVE_EVERY_SECONDS)))
    except ValueError:
        return float(SAVE_EVERY_SECONDS)


def is_slot_run(status: dict) -> bool:
    return bool(status.get("gpu_slots"))


# ------------------------------------------------------------------ the driver (the visitor's request)
def driving(run_id: str) -> bool:
    """Is a driver in this process asking for the run's slots now, within its slot's lease (a call that outlived
    its duration and a minute more is not coming back: ZeroGPU ends a slot at its duration)?"""
    with _lock:
        if run_id not in _driving:
            return False
    lease = rundir.read_status(run_id).get("slot_lease_until")
    return lease is None or time.time() < lease


def driven(run_id: str) -> bool:
    """Is a page of this app driving the run's slots now (or about to: just started or resumed, its driver
    waiting for its turn)?"""
    with _lock:
        registered = run_id in _driving
    if registered:
        return driving(run_id)
    asked = rundir.read_status(run_id).get("slot_requested_at") or 0
    return time.time() - asked < PICKUP_SECONDS


@contextlib.contextmanager
def _registered(run_id: str) -> Iterator[bool]:
    with _lock:
        mine = run_id not in _driving
        if mine:
            _driving[run_id] = time.time()
    try:
        yield mine
    finally:
        if mine:
            with _lock:
                _driving.pop(run_id, None)


QUOTA_NUMBERS = re.compile(r"\((\d+)s requested vs\.? (\d+)s left\)")


def classify(error: BaseException) -> str:
    """What a failed spaces.GPU call means for the run: quota, aborted (the slot ended at its duration or its
    worker died), no-gpu (none free now), duration (more than the maximum asked), arguments / result (what crosses
    between the app and the worker did not pickle), or other."""
    title = str(getattr(error, "title", "") or "").lower()
    message = str(getattr(error, "message", "") or error).lower()
    if isinstance(error, pickle.PicklingError):  # raised in the caller: the arguments, before the worker ran
        return "arguments"
    if "worker error" in title and message.strip() == "picklingerror":  # the worker ran; its return value did not
        return "result"
    if "no gpu was available" in message or "queue timeout" in title:  # titled a quota error when there is no token
        return "no-gpu"
    if "quota" in title or "exceeded your" in message or "reached its gpu limit" in message:
        return "quota"
    if "illegal duration" in title or "larger than the maximum" in message:
        return "duration"
    if "aborted" in message or "worker error" in title and "abort" in message:
        return "aborted"
    return "other"


def quota_left(error: BaseException) -> float | None:
    """The seconds a quota error says are left, as a duration to ask for: ZeroGPU charges a call its duration times
    the card's duration_factor (1.5 on an RTX Pro 6000; the `spaces` package's config)."""
    match = QUOTA_NUMBERS.search(str(getattr(error, "message", "") or error))
    return float(match.group(2)) / duration_factor() if match else None


def duration_factor() -> float:
    try:
        from spaces.zero import config

        return float(config.get_config().get("duration_factor") or 1.0)
    except Exception:  # noqa: BLE001 - not on ZeroGPU, or another version of the package
        return 1.0


def next_slot_seconds(status: dict, limit: float | None = None) -> float:
    """The next slot's length: the run's remaining steps at its measured pace, plus loading and saving, at most the
    host's cap (and `limit`, what the quota has left); the cap while the pace is unknown."""
    cap = slot_cap() if limit is None else min(slot_cap(), limit)
    pace, step, total = status.get("seconds_per_step"), status.get("step") or 0, status.get("max_steps")
    if not pace or not total:
        return round(cap)
    need = (status.get("startup_seconds") or 0) + (total - step) * pace * 1.25 + save_margin(status) + 5
    if status.get("run_id"):
        need += finish_seconds(rundir.run_path(status["run_id"]), status)
    return round(max(min(MIN_SLOT_SECONDS, cap), min(cap, need)))


def finish_seconds(run_dir: Path, status: dict) -> float:
    """What a run's end takes after its last step: the end-of-turn check (probe replies up to twice as long as the
    probes'), a last evaluation and saving the adapter, from this run's own probe rounds; 10 s before any."""
    rounds = [r.get("seconds") or 0 for r in rundir.read_probes(run_dir) if not r.get("cached")]
    probes = max(rounds) if rounds else 4.0
    return 2.5 * probes + 2 * float(status.get("save_seconds") or 0.5) + 2.0


def save_margin(status: dict) -> float:
    return END_MARGIN_SECONDS + 2 * float(status.get("save_seconds") or 0.5)


def planned_slots(status: dict) -> int | None:
    """About how many slots the whole run takes: those used, and the rest at this run's measured pace."""
    done = len(status.get("slot_log") or [])
    pace, step, total = status.get("seconds_per_step"), status.get("step") or 0, status.get("max_steps")
    if not pace or not total:
        return None
    usable = max(1.0, slot_cap() - (status.get("startup_seconds") or 0) - save_margin(status))
    left = (total - step) * pace
    return done + max(0 if step >= total else 1, math.ceil(left / usable)) if left > 0 else max(done, 1)


def drive(
    run_id: str,
    call: Callable[[str, float, dict], dict],
    env: dict | Callable[[], tuple[dict, dict | None]] | None = None,
    backup_to: dict | None = None,
) -> Iterator[dict]:
    """Ask for GPU slots one after another until the run completes, fails, is stopped or cancelled, or the quota
    pauses it; yields the run's status between slots. `call` is run_slot decorated with spaces.GPU (the page's
    request: the visitor's quota). env: what a slot sets and unsets (or a function giving (env, backup_to), called
    once this driver is the run's). backup_to ({"repo", "token"}: a signed-in visitor's backups): each new
    checkpoint pushed between slots, from this process (not in GPU time), and the run's end. A second driver of
    the same run yields nothing."""
    run_dir = rundir.run_path(run_id)
    with _registered(run_id) as mine:
        if not mine:
            return
        if callable(env):  # the visitor's handover, taken only by the driver that registered (not by one that
            env, backup_to = env()  # returns at once: it would take a token and a backup choice meant for the run)
        prefetch(run_dir)
        aborted, limit, allowed = 0, None, None  # limit: what the quota has left; allowed: the longest call allowed
        pusher = SlotBackup(run_dir, backup_to) if backup_to else None  # slot_backup.py
        try:
            while True:
                if pusher is not None:
                    pusher.checkpoint()  # what the last slot saved, pushed while the next one trains
                status = rundir.read_status(run_dir)
                if status.get("state") in FINAL:  # the slot ended the run (completed, or a Stop it obeyed)
                    rundir.clear_stop(run_dir)
                    return
                if rundir.cancel_requested(run_dir) or rundir.stop_requested(run_dir):
                    end_between_slots(run_dir, "cancelled" if rundir.cancel_requested(run_dir) else "stopped")
                    return
                seconds = next_slot_seconds(status, min((x for x in (limit, allowed) if x), default=None))
                log = list(status.get("slot_log") or [])
                rundir.write_status(
                    run_dir,
                    state="running",
                    phase="waiting for a GPU slot",
                    slot=len(log) + 1,
                    slots_planned=planned_slots(status),
                    slot_requested_at=time.time(),
                    eta_seconds=None,
                )
                yield rundir.read_status(run_dir)
                if rundir.cancel_requested(run_dir) or rundir.stop_requested(run_dir):  # pressed meanwhile
                    continue
                rundir.write_status(run_dir, slot_lease_until=time.time() + seconds + LEASE_GRACE_SECONDS)
                began, before = time.time(), rundir.last_checkpoint_step(run_dir)  # where this slot starts from
                try:
                    outcome = call(str(run_dir), seconds, env or {})
                except Exception as error:  # what the GPU call raised: the quota, an abort, no card
                    kind = classify(error)
                    after = rundir.read_status(run_dir)
                    kept = rundir.last_checkpoint_step(run_dir)
                    message = scrubbed(" ".join(str(getattr(error, "message", "") or error).split()), env, backup_to)
                    if kind == "aborted":  # it held the card to its end; refusals (quota, no card) never began
                        _record(run_dir, after, seconds, time.time() - began, before, kept, kind, message)
                    if kind == "quota":
                        left = quota_left(error)
                        if limit is None and left is not None and left >= MIN_SLOT_SECONDS and left < seconds:
                            limit = left  # a shorter slot fits what is left of the quota: ask once more
                            continue
                        end_between_slots(
                            run_dir,
                            "stopped",
                            note=f"paused: {message} Resume continues from step {kept} (no step lost)",
                        )
                        return
                    if kind == "duration" and seconds / 2 >= MIN_SLOT_SECONDS:  # more than this visitor may ask
                        allowed = seconds / 2
                        rundir.write_status(
                            run_dir,
                            slot_note=f"a {seconds:g} s slot is more than ZeroGPU allows here: asking for "
                            f"{allowed:g} s",
                        )
                        continue
                    if kind == "aborted":
                        aborted += 1
                        lost = max(0, (after.get("step") or 0) - kept)
                        if aborted < 2:
                            rundir.write_status(
                                run_dir,
                                step=kept,
                                slot_note=f"slot {len(log) + 1} ({seconds:g} s asked) ended after "
                                f"{time.time() - began:.0f} s before it saved: {lost} steps to train again from "
                                f"step {kept}",
                            )
                            continue
                        end_between_slots(
                            run_dir,
                            "stopped",
                            note="paused: two GPU slots in a row ended at their "
                            f"duration before saving; Resume continues from step {kept}",
                        )
                        return
                    if kind in ("arguments", "result"):  # a fault of this app, not of the platform: say so
                        what = (
                            "the slot's settings could not be sent to the GPU worker"
                            if kind == "arguments"
                            else "the GPU worker trained and saved, but its answer could not be sent back"
                        )
                        if kind == "result":
                            _record(run_dir, after, seconds, time.time() - began, before, kept, kind, message)
                            if after.get("state") in FINAL:  # the slot ended the run itself: nothing to pause
                                return
                        end_between_slots(
                            run_dir,
                            "stopped",
                            note=f"paused: {what} (they do not pickle: {message[:200]}). This is a fault of SFT "
                            f"Space, not of your settings or quota; please report it. Resume continues from step "
                            f"{kept} (no saved step lost)",
                        )
                        return
                    if kind == "no-gpu":
                        end_between_slots(
                            run_dir, "stopped", note=f"paused: {message}; Resume continues from step {kept}"
                        )
                        return
                    # anything else the call raised is the platform's (training errors end the run inside the slot):
                    # the connection closed while queueing, credits pending, an expired token, a 5xx
                    end_between_slots(
                        run_dir,
                        "stopped",
                        note=f"paused: the GPU slot could not run ({message[:300]}); Resume continues from step {kept}",
                    )
                    return
                aborted, limit = 0, None
                after = rundir.read_status(run_dir)
                state = after.get("state") or ""
                _record(
                    run_dir,
                    after,
                    seconds,
                    outcome.get("seconds") or time.time() - began,
                    before,
                    after.get("step") or 0,
                    "saved" if state in ("running", "stopping") else state,  # saved: the next slot goes on
                    None,
                )
        finally:
            status = rundir.read_status(run_dir)
            if status.get("state") not in FINAL:  # the page went away between slots (the request was closed)
                end_between_slots(
                    run_dir,
                    "stopped",
                    note="paused: the page asking for its GPU slots was closed; Resume continues from step "
                    f"{rundir.last_checkpoint_step(run_dir)}",
                )
            if pusher is not None:
                pusher.finish()


def prefetch(run_dir: Path) -> None:
    """The run's model fetched (downloaded, converted) in the app before its first slot, not in the slot's time."""
    from ..models import resolve_model

    try:
        resolve_model(rundir.read_config(run_dir).model)
    except Exception:  # noqa: BLE001 - the slot meets the same error and says it in the run's status
        pass


def _record(
    run_dir: Path,
    status: dict,
    requested: float,
    used: float,
    before: int,
    after: int,
    outcome: str,
    message: str | None,
) -> None:
    log = list(status.get("slot_log") or [])
    log.append(
        {
            "slot": len(log) + 1,
            "requested_seconds": round(requested, 1),
            "seconds": round(used, 1),
            "from_step": before,
            "to_step": after,
            "outcome": outcome,
            **({"message": message} if message else {}),
        }
    )
    used = round(sum(s["seconds"] for s in log), 1)
    final = {"elapsed_seconds": used} if status.get("state") in FINAL else {}  # a finished run took its GPU time
    rundir.write_status(
        run_dir,
        **final,
        slot_log=log,
        gpu_seconds=round(sum(s["seconds"] for s in log), 1),
        slots_planned=planned_slots({**status, "slot_log": log}),
    )


def end_between_slots(run_dir: Path, state: str, note: str | None = None, error: str | None = None) -> dict:
    """End (or pause) a slot run while no slot runs: its state, and its last checkpoint's adapter as the run's
    adapter, so chat and Evaluate have what it learned so far (a cancelled run keeps none)."""
    fields = dict(state=state, phase=None, ended_at=time.time(), eta_seconds=None, slot_requested_at=None)
    rundir.write_status(run_dir, state=state)  # first: a driver starting meanwhile sees a final state
    rundir.clear_stop(run_dir)
    adapter = None if state == "cancelled" else adapter_from_checkpoint(run_dir)
    rundir.clear_cancel(run_dir)
    if note:
        fields["note"] = note + ("" if adapter or state == "cancelled" else "; no checkpoint yet, so no adapter")
    if error:
        fields["error"] = error
    status = rundir.read_status(run_dir)
    if status.get("gpu_seconds"):
        fields["elapsed_seconds"] = status["gpu_seconds"]
    return rundir.write_status(run_dir, **fields)


ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def adapter_from_checkpoint(run_dir: Path) -> Path | None:
    """The last complete checkpoint's adapter and tokenizer files copied into adapter/ (staged, then renamed)."""
    checkpoint = rundir.last_complete_checkpoint(run_dir)
    if checkpoint is None or not (checkpoint / ADAPTER_FILES[0]).is_file():
        return None
    target = rundir.adapter_dir(run_dir)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in checkpoint.iterdir():
        if path.is_file() and (path.name in ADAPTER_FILES or "token" in path.name or path.name.startswith("chat_")):
            shutil.copy2(path, staging / path.name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
