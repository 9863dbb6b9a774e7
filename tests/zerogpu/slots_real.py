"""(Run by tests/test_zerogpu.py in a fresh interpreter.)

Training in GPU slots under the REAL `spaces` package (pinned in requirements-dev.txt), as a ZeroGPU Space runs it:
its worker processes forked and REUSED across calls and visitors while the device API answers idle, arguments and
results pickled, its quota and queue messages. What cannot exist here is stood in for, and only that: the device
API it calls (tests/zerogpu/device_api.py, HTTP on 127.0.0.1, which also kills a worker past its duration as the
platform does) and the few torch attributes a CPU build lacks (tests/zerogpu/cpu_torch.py).
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from device_api import DeviceAPI

API = DeviceAPI().__enter__()  # before `spaces` is imported: the package asserts its URL at import
os.environ.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=API.url)

import cpu_torch  # noqa: E402,F401  (before `spaces`: what a CPU build of torch lacks)
import spaces  # noqa: E402
import torch  # noqa: E402
from gradio.context import LocalContext  # noqa: E402

from sft_space import rundir  # noqa: E402
from sft_space.runs import lifecycle as runs  # noqa: E402
from sft_space.training import slot_worker, slots  # noqa: E402

from helpers import TINY_FAST, app_settings, run_cli, wait_until  # noqa: E402,F401

WATCHED = ("HF_TOKEN", "SFT_SPACE_SECRET", "SFT_SPACE_PLANTED", "SFT_SPACE_BACKUP_REPO")


def observed_slot(run_dir: str, seconds: float, env: dict | None = None) -> dict:
    """The app's slot function, and what the worker looked like as the slot began and after it ended: the
    environment a visitor's slot sets, the in-slot flag, torch's threads, the worker's pid. Planted: a value only
    visitor A's slots set, looked for in visitor B's."""

    def look() -> dict:
        return {
            "pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in WATCHED},
            "in_slot": slots.IN_SLOT,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        }

    before = look()
    outcome = slot_worker.run_slot(run_dir, seconds, env)
    return {**outcome, "observed": {"before": before, "after": look()}}


def unsendable_slot(run_dir: str, seconds: float, env: dict | None = None) -> dict:
    """The app's slot function returning, besides its outcome, a value that does not pickle (a lock): the worker
    trains and saves, then cannot send its answer back."""
    return {**slot_worker.run_slot(run_dir, seconds, env), "held": threading.Lock()}


# one decorated function for every visitor, as the page decorates its handler once
GPU_SLOT = spaces.GPU(observed_slot, duration=slot_worker.slot_duration)
UNSENDABLE = spaces.GPU(unsendable_slot, duration=slot_worker.slot_duration)
STEPS = 60


@pytest.fixture(autouse=True)
def device(monkeypatch):
    """The device API's knobs back to a free, unlimited card, and short slots for the run."""
    API.quota_seconds = API.max_duration = None
    API.no_gpu, API.queue_seconds, API.cut_first = False, 60.0, None
    API.calls.clear()
    API.spent.clear()
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "6")
    monkeypatch.setenv("SFT_SPACE_SLOT_SAVE_SECONDS", "2")
    yield API


def config_for(tiny_model, **changes):
    """The Start button's short run of the tiny model (helpers.app_settings), at the reference run's learning rate."""
    from sft_space.config import RunConfig

    return RunConfig(**app_settings(tiny_model, STEPS, **{"learning_rate": 0.005, **changes}))


def drive(
    run_id: str,
    env: dict | None = None,
    token: str | None = None,
    seen: list | None = None,
    backup_to: dict | None = None,
    slot=None,
):
    """The page's driver for one run (slots.drive), in a visitor's request: its x-ip-token when given."""

    def call(run_dir, seconds, slot_env):
        outcome = (slot or GPU_SLOT)(run_dir, seconds, slot_env)
        if seen is not None:
            seen.append({"run": Path(run_dir).name, **outcome["observed"]})
        return outcome

    def in_request():
        if token is not None:  # the request's headers as Gradio hands them to the package (an object with get)
            LocalContext.request.set(SimpleNamespace(headers=Headers({"x-ip-token": token})))
        return list(slots.drive(run_id, call, env or {"set": {}, "unset": []}, backup_to))

    return contextvars.Context().run(in_request)


class Headers(dict):
    pass


def curve(run_id) -> list[int]:
    return [r["step"] for r in rundir.read_metrics(run_id) if "loss" in r]


def allowed_pids() -> list[int]:
    return [c["pid"] for c in API.calls if c["call"] == "allow"]


def test_a_run_in_several_slots_completes_in_one_reused_worker(tiny_model, tmp_path):
    """The package reuses its worker while the device API answers idle: slot after slot in one process, every step
    logged once and in order, the adapter saved; the same steps, losses, tokens and learning rates as the same run
    in one process (the schedule and data position carried across slots, not restarted)."""
    reference = tmp_path / "one-process"
    flags = [*TINY_FAST, "--max_steps", str(STEPS), "--eval_steps", "1000", "--save_steps", "1000"]
    result = run_cli("--model", str(tiny_model), *flags, "--output_dir", str(reference))
    assert result.returncode == 0, result.stderr[-2000:]
    run_id = runs.start_run(config_for(tiny_model), owner=None)
    seen: list = []
    drive(run_id, seen=seen)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    assert len(status["slot_log"]) >= 2, status["slot_log"]
    assert curve(run_id) == list(range(1, STEPS + 1))
    ours, theirs = rundir.read_metrics(run_id), rundir.read_metrics(reference)
    for key, tolerance in (("loss", 2e-2), ("learning_rate", 1e-6)):
        mine = {r["step"]: r[key] for r in ours if key in r}
        other = {r["step"]: r[key] for r in theirs if key in r}
        assert mine.keys() == other.keys() and all(mine[s] == pytest.approx(other[s], rel=tolerance) for s in mine)
    tokens = {r["step"]: r["tokens_seen"] for r in ours if "loss" in r}
    assert tokens == {r["step"]: r["tokens_seen"] for r in theirs if "loss" in r}
    assert rundir.has_adapter(run_id)
    assert len({s["before"]["pid"] for s in seen}) == 1 and len(allowed_pids()) == 1  # one worker, reused
    assert not any(s["before"]["cuda"] for s in seen)  # inside the worker torch is itself again: the CPU trains


def test_two_visitors_in_one_reused_worker_leak_nothing_to_each_other(tiny_model):
    """Visitor A's slots set A's token and a planted value in the worker's environment; visitor B's slots, in the
    same reused worker, start without either, and every slot leaves the worker as it found it (its environment,
    torch's threads)."""
    first = runs.start_run(config_for(tiny_model, max_steps=40), owner=None)
    second = runs.start_run(config_for(tiny_model, max_steps=40), owner=None)
    secret = {"set": {"HF_TOKEN": "hf_visitor_a", "SFT_SPACE_PLANTED": "a"}, "unset": ["SFT_SPACE_SECRET"]}
    seen: list = []
    drivers = [
        threading.Thread(target=drive, args=(first,), kwargs={"env": secret, "seen": seen}),
        threading.Thread(target=drive, args=(second,), kwargs={"seen": seen}),
    ]
    for driver in drivers:
        driver.start()
    for driver in drivers:
        driver.join(timeout=600)
    for run in (first, second):
        status = rundir.read_status(run)
        assert status["state"] == "completed", (status.get("note"), status.get("slot_log"))
        assert curve(run) == list(range(1, 41))
    assert {s["run"] for s in seen} == {first, second}
    order = [s["run"] for s in seen]  # while both trained, the card went to each in turn (the queue is first come)
    both = min(order.count(first), order.count(second))
    assert both >= 2 and all(a != b for a, b in zip(order[: 2 * both], order[1 : 2 * both])), order
    assert len({s["before"]["pid"] for s in seen}) == 1  # the same worker served both visitors
    for slot in seen:
        assert slot["before"]["env"]["HF_TOKEN"] is None and slot["before"]["env"]["SFT_SPACE_PLANTED"] is None
        assert slot["after"]["env"] == slot["before"]["env"]  # put back at the slot's end
        assert slot["after"]["in_slot"] is True  # the worker is a slot process for every visitor: no visitor's
        assert slot["after"]["threads"] == slot["before"]["threads"]  # fact, and torch's threads are as found
    assert slots.IN_SLOT is False  # the app process, which drives the slots, never is


def test_a_slot_the_platform_kills_resumes_from_its_last_save(tiny_model, monkeypatch):
    """The first task is killed by the device API after 5 s though it asked for 30 (the platform ends a worker; the
    package itself never does): the next slot starts a fresh worker from the last checkpoint and the run completes;
    the note says how long the slot really ran."""
    API.cut_first = 5.0
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "30")
    monkeypatch.setenv("SFT_SPACE_SLOT_SAVE_SECONDS", "1")
    run_id = runs.start_run(config_for(tiny_model, max_steps=400), owner=None)
    drive(run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", status
    first = status["slot_log"][0]
    assert first["outcome"] == "aborted" and "GPU task aborted" in first["message"], first
    assert status["slot_log"][1]["from_step"] == first["to_step"]
    (killed,) = [c["pid"] for c in API.calls if c["call"] == "killed"]
    assert allowed_pids() and killed not in allowed_pids()[-1:]  # the next slot ran in a fresh worker
    assert curve(run_id) == list(range(1, 401))


def test_the_quota_pauses_a_run_with_and_without_a_token(tiny_model, monkeypatch):
    """Without a token the package says only "Space app has reached its GPU limit" (no numbers, so no shorter
    slot to ask): the run pauses with that message, no step lost. With a visitor's x-ip-token the quota is that
    token's, and the message says how much is left."""
    API.quota_seconds = 0
    run_id = runs.start_run(config_for(tiny_model), owner=None)
    drive(run_id)
    paused = rundir.read_status(run_id)
    assert paused["state"] == "stopped" and "reached its GPU limit" in paused["note"], paused
    assert "(no step lost)" in paused["note"]

    API.quota_seconds = 7  # one 6 s slot, then 1 s left of the token's quota
    API.calls.clear()
    other = runs.start_run(config_for(tiny_model, max_steps=400), owner=None)
    drive(other, token="visitor-token")
    status = rundir.read_status(other)
    assert status["state"] == "stopped" and "exceeded your ZeroGPU quota" in status["note"], status
    assert "s requested vs." in status["note"] and "Try again in" in status["note"]
    assert all(c["token"] == "visitor-token" for c in API.calls if c["call"] == "schedule")
    assert curve(other) == list(range(1, (status.get("step") or 0) + 1))


def test_no_gpu_is_not_a_quota_and_an_illegal_duration_asks_shorter(tiny_model, monkeypatch):
    """503 (no card) and a queue that gives up ("No GPU was available after 60s", titled a quota error when there
    is no token) pause the run as no GPU, not as quota; a slot longer than allowed is asked again at half."""
    API.no_gpu = True
    run_id = runs.start_run(config_for(tiny_model), owner=None)
    drive(run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "stopped" and "No GPU was available" in status["note"], status.get("note")

    API.no_gpu = False
    API.queue_seconds = 2  # the card held by another Space's task: the queue gives up
    with API._lock:
        API._holder = {"allowToken": "someone-else", "pid": None, "token": "", "granted": 0.0}
    queued = runs.start_run(config_for(tiny_model), owner=None)
    drive(queued)
    status = rundir.read_status(queued)
    assert status["state"] == "stopped" and "No GPU was available after 60s" in status["note"], status.get("note")
    assert "quota" not in status["note"].lower()
    with API._lock:
        API._holder = None
    API.max_duration = 30
    API.calls.clear()
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "50")
    other = runs.start_run(config_for(tiny_model, max_steps=20), owner=None)
    drive(other)
    status = rundir.read_status(other)
    assert status["state"] == "completed", (status.get("note"), status.get("slot_log"))
    asked = [c["seconds"] for c in API.calls if c["call"] == "schedule"]
    assert asked[0] == 50 and asked[1:] and all(s <= 30 for s in asked[1:]), asked
    assert "more than ZeroGPU allows here: asking for 25 s" in status["slot_note"]


def test_stop_reaches_a_slot_in_a_reused_worker(tiny_model, monkeypatch):
    """Stop & save while a slot trains: the slot reads the stop file at its next step, saves the adapter, and the
    driver asks for no other slot."""
    monkeypatch.setenv("SFT_SPACE_SLOT_SECONDS", "60")
    run_id = runs.start_run(config_for(tiny_model, max_steps=3000), owner=None)
    driver = threading.Thread(target=drive, args=(run_id,))
    driver.start()
    wait_until(lambda: (rundir.read_status(run_id).get("step") or 0) >= 5, timeout=120, poll=0.2, what="training")
    runs.stop_run(run_id)
    driver.join(timeout=120)
    status = rundir.read_status(run_id)
    assert status["state"] == "stopped" and 5 <= status["step"] < 3000, (status.get("note"), status.get("step"))
    assert rundir.has_adapter(run_id)
    assert len([c for c in API.calls if c["call"] == "schedule"]) == 1


def test_a_signed_in_visitors_run_in_slots_is_backed_up_between_slots(tiny_model, tmp_path, monkeypatch):
    """A signed-in visitor who ticked the backup: the driver (the app process, between slots, not in GPU time) pushes
    each new checkpoint to their private repo with the real huggingface_hub client (the test Hub server), then the
    final status and adapter; the worker never sees the repo, and the token reaches no file."""
    from sft_space.runs import queue as run_queue

    from helpers import use_test_hub
    from hub_server import HubServer

    token, repo = "hf_aliceSLOTbackupToken0123456789", "alice/sft-space-runs"
    with HubServer() as hub:
        hub.users[token] = "alice"
        use_test_hub(monkeypatch, hub.url, tmp_path / "hf-home")
        run_id = runs.start_run(config_for(tiny_model, max_steps=40), owner=None, hub_token=token, backup_repo=repo)
        env, backup_to = run_queue.slot_environment(run_id)
        assert backup_to == {"repo": repo, "token": token}
        assert env["set"] == {"HF_TOKEN": token} and "SFT_SPACE_BACKUP_REPO" in env["unset"]
        seen: list = []
        drive(run_id, env=env, seen=seen, backup_to=backup_to)
        status = rundir.read_status(run_id)
        assert status["state"] == "completed" and len(status["slot_log"]) >= 2, status.get("slot_log")
        wait_until(lambda: (rundir.read_status(run_id).get("backup") or {}).get("final"), timeout=120, what="push")
        pushed = [c for c in hub.commits if c["repo"] == repo]
        steps = [int(c["message"].rsplit(" ", 1)[1]) for c in pushed if ": checkpoint " in c["message"]]
        assert len(steps) >= 2 and steps == sorted(set(steps)), [c["message"] for c in pushed]
        assert steps[0] == status["slot_log"][0]["to_step"]  # the first slot's save, pushed before the second slot
        assert f"{run_id}/checkpoint/adapter_model.safetensors" in pushed[0]["files"]
        assert pushed[-1]["message"] == f"{run_id}: final"
        assert f"{run_id}/adapter/adapter_model.safetensors" in pushed[-1]["files"]
        final = hub.repos[("model", repo)].at(None)
        assert json.loads(final[f"{run_id}/status.json"])["state"] == "completed"
    for slot in seen:  # the token is set by run_slot for the slot only (env["set"]); the repo is in env["unset"],
        for moment in ("before", "after"):  # so the slot's training process has no backup of its own to push
            assert slot[moment]["env"]["SFT_SPACE_BACKUP_REPO"] is None and slot[moment]["env"]["HF_TOKEN"] is None
    assert len(pushed) == len(steps) + 1  # the driver's pushes only: a checkpoint per boundary, then the final
    for path in rundir.run_path(run_id).rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes(), path


def test_a_result_or_arguments_that_do_not_pickle_pause_with_a_clear_message(tiny_model):
    """What crosses between the app and the worker is pickled. A result that does not pickle: the real package
    raises gr.Error("PicklingError") titled "ZeroGPU worker error" after the slot trained and saved, and its worker
    is left running (not reused); arguments that do not pickle: a plain PicklingError in the caller, the card
    released as failed, the worker never ran. Either pauses the run saying what happened, that it is the app's
    fault, and that nothing saved is lost; Resume then completes it."""
    run_id = runs.start_run(config_for(tiny_model, max_steps=400), owner=None)
    drive(run_id, slot=UNSENDABLE)
    status = rundir.read_status(run_id)
    assert status["state"] == "stopped", status
    assert "its answer could not be sent back (they do not pickle: PicklingError)" in status["note"], status["note"]
    (slot,) = status["slot_log"]
    assert slot["outcome"] == "result" and slot["to_step"] > 0  # the slot's saved steps are kept
    assert (
        f"fault of SFT Space, not of your settings or quota; please report it. Resume continues from step "
        f"{slot['to_step']} (no saved step lost)" in status["note"]
    ), status["note"]
    assert rundir.has_adapter(run_id)
    releases = [c for c in API.calls if c["call"] == "release"]
    assert releases[-1]["fail"] is True
    (pid,) = {c["pid"] for c in API.calls if c["call"] == "allow"}
    os.kill(pid, 0)  # the worker did not die of it (the package leaves it running; the next call gets a new one)

    API.calls.clear()
    other = runs.start_run(config_for(tiny_model, max_steps=20), owner=None)
    drive(other, env={"set": {}, "unset": [], "hook": lambda: None})
    status = rundir.read_status(other)
    assert status["state"] == "stopped" and "settings could not be sent to the GPU worker" in status["note"]
    assert "fault of SFT Space" in status["note"] and not status.get("slot_log"), status
    assert [c["call"] for c in API.calls][-2:] == ["schedule", "release"] and API.calls[-1]["fail"] is True
    assert not [c for c in API.calls if c["call"] == "allow"]  # no worker started: nothing ran on the card

    runs.resume_run(run_id)
    drive(run_id)
    status = rundir.read_status(run_id)
    assert status["state"] == "completed", (status.get("note"), status.get("slot_log"))
    assert curve(run_id) == list(range(1, 401))


def answer_with_a_lock(text: str) -> dict:
    return {"text": text, "held": threading.Lock()}


def echo(text):
    return text


def test_a_page_call_whose_answer_or_inputs_do_not_pickle_says_so():
    """Chat and Evaluate's calls (ui.common.in_gpu_slot) under the real package: an answer that does not pickle
    (gr.Error "PicklingError" titled "ZeroGPU worker error") and inputs that do not (a plain PicklingError) reach
    the page as a message that says what happened and whose fault it is; a call that pickles is untouched."""
    import gradio as gr

    from sft_space.ui.common import in_gpu_slot

    with pytest.raises(gr.Error) as raised:
        in_gpu_slot(answer_with_a_lock)("hi")
    assert raised.value.message.startswith("The GPU worker could not send its answer back (it does not pickle")
    assert "fault of SFT Space" in raised.value.message
    call = in_gpu_slot(echo)
    with pytest.raises(gr.Error) as raised:
        call(threading.Lock())
    assert raised.value.message.startswith("The GPU worker could not receive this call's inputs (it does not pickle")
    assert call("fine") == "fine"
