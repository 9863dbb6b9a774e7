"""(Run by tests/test_zerogpu.py in a fresh interpreter.)

Training on ZeroGPU: a run as a series of GPU slots (sft_space/training/slots.py), against the stand-in `spaces`
package (tests/standin/spaces: each call forked, arguments and results pickled, ended at its duration, one card
first come first served, a quota; the real scheduler cannot exist here). The tiny model trains on the CPU inside
each "slot"; the same run in one process is the reference.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import ROOT, TINY_FAST, run_cli

STANDIN = ROOT / "tests" / "standin"
STEPS = 120


@pytest.fixture
def zerogpu(monkeypatch, tmp_path):
    """ZeroGPU switched on for this test: the stand-in `spaces` (its switch read at each decoration), short slots,
    a save every 2 s, and the stand-in's record of calls."""
    monkeypatch.syspath_prepend(str(STANDIN))
    import spaces

    monkeypatch.setattr(spaces, "ZERO_GPU", True)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "4")
    monkeypatch.setenv("SFT_SPACE_SLOT_SAVE_SECONDS", "2")
    monkeypatch.setenv("SPACES_STANDIN_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("SPACES_STANDIN_QUOTA_SECONDS", raising=False)
    spaces._spent.clear()
    # the app generating beside the run, as when a visitor chats meanwhile: on a CPU a training process would give
    # up a thread; a forked slot keeps the threads it has (slots.IN_SLOT)
    from sft_space import GENERATING_MARK, home

    (home() / GENERATING_MARK).touch()
    yield spaces, tmp_path / "calls.jsonl"
    (home() / GENERATING_MARK).unlink(missing_ok=True)


def config_for(tiny_model, **changes):
    from sft_space.config import RunConfig

    settings = dict(
        model=str(tiny_model),
        dataset="demo:json-extract",
        max_steps=STEPS,
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=8,
        eval_max_rows=4,
        save_steps=1000,
        learning_rate=0.005,
        train_minutes=0,
    )
    return RunConfig(**{**settings, **changes})


def drive(spaces, run_id, duration=None):
    from sft_space.runs import queue as run_queue
    from sft_space.training import slot_worker, slots

    call = spaces.GPU(slot_worker.run_slot, duration=duration or slot_worker.slot_duration)
    return list(slots.drive(run_id, call, run_queue.slot_environment(run_id)))


def metrics(run_id) -> list[dict]:
    from sft_space import rundir

    return rundir.read_metrics(run_id)


def losses(records) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if isinstance(r.get("loss"), float)}


def assert_one_curve(records, steps: int) -> None:
    """One continuous, finite curve: every step once, in order, from 1 to the last."""
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == list(range(1, steps + 1)), logged
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)


def test_a_run_across_slots_is_the_same_run_as_in_one_process(zerogpu, tiny_model, tmp_path):
    """Several slots give the run of one process: the same steps, losses and learning rates (the schedule of the
    whole run, not restarted per slot), one curve; and the page's words for it."""
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs
    from sft_space.ui.text import status_line

    spaces, calls = zerogpu
    reference = tmp_path / "one-process"
    result = run_cli(
        "--model",
        str(tiny_model),
        "--max_steps",
        str(STEPS),
        "--output_dir",
        str(reference),
        *TINY_FAST,
        "--eval_steps",
        "8",
    )
    assert result.returncode == 0, result.stderr[-2000:]

    run_id = runs.start_run(config_for(tiny_model), owner=None)
    seen = drive(spaces, run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    assert status["step"] == STEPS and rundir.has_adapter(run_id)
    log = status["slot_log"]
    assert len(log) >= 2, log  # the 4 s slots could not hold the whole run
    assert [entry["outcome"] for entry in log] == ["saved"] * (len(log) - 1) + ["completed"]
    assert [entry["from_step"] for entry in log[1:]] == [entry["to_step"] for entry in log[:-1]]  # no step lost
    assert status["gpu_seconds"] == pytest.approx(sum(entry["seconds"] for entry in log), abs=0.2)
    assert len([json.loads(line) for line in calls.read_text().splitlines()]) == len(log)  # one GPU call a slot

    records, expected = metrics(run_id), rundir.read_metrics(reference)
    assert_one_curve(records, STEPS)
    ours, theirs = losses(records), losses(expected)
    assert ours.keys() == theirs.keys()
    # the same batches in the same order (another batch moves the loss by far more): equal up to float noise that
    # grows across a resume (thread counts, reduction order)
    for step in ours:
        assert ours[step] == pytest.approx(theirs[step], rel=2e-2), step
    assert sum(ours.values()) == pytest.approx(sum(theirs.values()), rel=5e-3)
    # the data position: the tokens trained on by each step are the one-process run's, step for step
    tokens = {r["step"]: r["tokens_seen"] for r in records if "loss" in r}
    assert tokens == {r["step"]: r["tokens_seen"] for r in expected if "loss" in r}
    rates = {r["step"]: r["learning_rate"] for r in records if "learning_rate" in r}
    assert rates == pytest.approx({r["step"]: r["learning_rate"] for r in expected if "learning_rate" in r})
    # between slots the page said which slot, of about how many, and the GPU seconds used so far
    waiting = [s for s in seen if s.get("slot") == 2]
    assert waiting and "slot 2 of about" in status_line(waiting[0]) and "s of GPU used" in status_line(waiting[0])
    assert f"slots {len(log)}" in status_line(status) or len(log) == 1


def test_a_slot_ended_at_its_duration_loses_only_the_steps_since_its_last_save(zerogpu, tiny_model, monkeypatch):
    """The first call asks for 30 s but the card is taken back after 6 (the stand-in kills its process, as the
    real scheduler does): the run continues from its last checkpoint in the next slot and completes."""
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs

    spaces, calls = zerogpu
    durations = iter([6.0])
    monkeypatch.setenv("SFT_SPACE_SLOT_SAVE_SECONDS", "1")

    def duration(run_dir, seconds, env=None):
        return next(durations, seconds)

    run_id = runs.start_run(config_for(tiny_model, max_steps=300), owner=None)
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "30")  # what the run believes it has
    drive(spaces, run_id, duration)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    first = status["slot_log"][0]
    assert first["outcome"] == "aborted" and "GPU task aborted" in first["message"], first
    kept = first["to_step"]  # the last complete checkpoint when the card was taken back
    assert kept > 0, first  # saved every second: the slot had saved before it was ended
    assert status["slot_log"][1]["from_step"] == kept
    assert first["seconds"] < 15  # about the 6 s it held the card (and its ending), not the 30 it asked for
    assert_one_curve(metrics(run_id), 300)
    outcomes = [json.loads(line)["outcome"] for line in calls.read_text().splitlines()]
    assert outcomes[0] == "aborted" and outcomes[-1] == "ok"


def test_a_quota_error_pauses_the_run_and_resume_completes_it(zerogpu, tiny_model, monkeypatch):
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs

    spaces, calls = zerogpu
    monkeypatch.setenv("SPACES_STANDIN_QUOTA_SECONDS", "10")  # two 4 s slots, then 2 s left: less than asked
    run_id = runs.start_run(config_for(tiny_model, max_steps=200), owner=None)
    drive(spaces, run_id)
    paused = rundir.read_status(run_id)
    assert paused["state"] == "stopped", paused
    assert "exceeded your free ZeroGPU quota" in paused["note"] and "Try again in" in paused["note"], paused["note"]
    kept = rundir.last_complete_checkpoint(run_id)
    assert kept is not None and f"from step {kept.name.split('-')[-1]}" in paused["note"]
    assert paused["step"] == int(kept.name.split("-")[-1])  # the slot saved its last step: none lost
    assert rundir.has_adapter(run_id)  # what it learned so far can be chatted with meanwhile

    monkeypatch.setenv("SPACES_STANDIN_QUOTA_SECONDS", "0")  # the quota came back
    runs.resume_run(run_id, owner=None)
    drive(spaces, run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    assert_one_curve(metrics(run_id), 200)


def test_two_visitors_runs_take_turns_on_the_card(zerogpu, tiny_model):
    """Two runs driven at once (two pages): the card goes to each in turn, slot by slot, not one run to its end."""
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs

    spaces, calls = zerogpu
    first = runs.start_run(config_for(tiny_model, max_steps=90), owner=None)
    second = runs.start_run(config_for(tiny_model, max_steps=90), owner=None)
    threads = [threading.Thread(target=drive, args=(spaces, run)) for run in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for run in (first, second):
        assert rundir.read_status(run)["state"] == "completed"
        assert_one_curve(metrics(run), 90)
    order = [Path(json.loads(line)["args"][0]).name for line in calls.read_text().splitlines()]
    assert order.count(first) >= 2 and order.count(second) >= 2, order
    both = min(len([r for r in order if r == first]), len([r for r in order if r == second]))
    turns = order[: 2 * both]  # while both were training: alternating, never twice in a row
    assert all(a != b for a, b in zip(turns, turns[1:])), order


STANDIN_CONTRACT = r"""
import os, pickle, sys, time
sys.path.insert(0, sys.argv[1])
os.environ["SPACES_ZERO_GPU"] = "true"
import spaces, torch
import gradio as gr

@spaces.GPU(duration=2)
def pid_and_forward():
    layer = torch.nn.Linear(2, 2)
    return os.getpid(), layer(torch.ones(1, 2)).shape[-1]

@spaces.GPU(duration=1)
def too_long():
    time.sleep(5)

@spaces.GPU
def returns_a_lambda():
    return lambda: 1

pid, width = pid_and_forward()
assert pid != os.getpid() and width == 2  # run in another process; a forward pass works inside
try:
    torch.nn.Linear(2, 2)(torch.ones(1, 2))
    raise SystemExit("a forward pass outside a call should fail")
except RuntimeError as error:
    assert "only available inside a @spaces.GPU call" in str(error)
try:
    too_long()
    raise SystemExit("a call past its duration should be ended")
except gr.Error as error:
    assert "GPU task aborted" in error.message
try:
    returns_a_lambda()
    raise SystemExit("a result that does not pickle should fail")
except gr.Error as error:  # a local function pickles with an AttributeError: the real worker dies of it
    assert "GPU task aborted" in error.message
os.environ["SPACES_STANDIN_QUOTA_SECONDS"] = "2"
try:
    pid_and_forward()
    raise SystemExit("over the quota")
except gr.Error as error:
    assert "exceeded your free ZeroGPU quota" in error.message and "Try again in" in error.message
print("ok")
"""


def test_the_stand_in_keeps_the_spaces_contract(tmp_path):
    """What the tests above rely on: a forked process per call, the model only inside it, the call ended at its
    duration, results pickled, the quota (its own process: the stand-in's outside-a-call rule is process-wide)."""
    script = tmp_path / "contract.py"
    script.write_text(STANDIN_CONTRACT)
    result = subprocess.run(
        [sys.executable, str(script), str(STANDIN)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), (
        result.stdout[-2000:] + result.stderr[-3000:]
    )


def test_a_slot_longer_than_zerogpu_allows_is_asked_again_shorter(zerogpu, tiny_model, monkeypatch):
    """The host's cap is above what this visitor may ask ("ZeroGPU illegal duration"): the run asks for half,
    then keeps to it, and completes; it does not fail."""
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs

    spaces, calls = zerogpu
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "50")
    monkeypatch.setenv("SPACES_STANDIN_MAX_DURATION", "30")
    run_id = runs.start_run(config_for(tiny_model, max_steps=20), owner=None)
    drive(spaces, run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    asked = [json.loads(line)["requested"] for line in calls.read_text().splitlines()]
    assert asked and all(seconds <= 30 for seconds in asked), asked
    assert "more than ZeroGPU allows here: asking for 25 s" in status["slot_note"]


def test_stop_reaches_a_slot_while_it_trains_and_no_other_slot_is_asked_for(zerogpu, tiny_model, monkeypatch):
    """Stop & save on a run in slots: no process to signal; the slot reads the stop file at its next step, saves
    the adapter, and the driver asks for no other slot."""
    from sft_space import rundir
    from sft_space.runs import lifecycle as runs

    from helpers import wait_until

    spaces, calls = zerogpu
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "60")
    run_id = runs.start_run(config_for(tiny_model, max_steps=3000), owner=None)
    driver = threading.Thread(target=drive, args=(spaces, run_id))
    driver.start()
    wait_until(lambda: (rundir.read_status(run_id).get("step") or 0) >= 5, timeout=120, poll=0.2, what="training")
    runs.stop_run(run_id)
    driver.join(timeout=120)
    assert not driver.is_alive()
    status = rundir.read_status(run_id)
    assert status["state"] == "stopped" and 5 <= status["step"] < 3000, status
    assert rundir.has_adapter(run_id) and not rundir.stop_requested(run_id)
    assert len(calls.read_text().splitlines()) == 1  # the one slot that was training; none after the stop
