"""Stop, Cancel and the host's time limit reach a training process in any phase ([hardening]): a real training
process stuck rendering a chat template that loops (a Hub model may ship one) before its first step, and one frozen
by SIGSTOP (as a process stuck in native code, which no Python signal handler reaches)."""

import os
import shutil
import signal
import time

import pytest

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.host.process import pid_alive
from sft_space.runs import lifecycle as runs
from sft_space.runs import liveness
from sft_space.runs import queue as run_queue

from helpers import CHATML, wait_until

# 10^8 loop iterations per rendered row: hours in Jinja's sandbox
LOOPING = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}" + CHATML


@pytest.fixture(scope="module")
def looping_model(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("looping") / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(LOOPING)
    return folder


@pytest.fixture(autouse=True)
def leaves_no_runs(sft_home):
    """The runs these tests start go when they end: later tests' pages show the suite's shared runs folder."""
    before = set(rundir.list_run_dirs())
    yield
    for run_dir in set(rundir.list_run_dirs()) - before:
        run_queue.wait_for(run_dir.name, timeout=60)
        shutil.rmtree(run_dir, ignore_errors=True)


def config(model, **changes) -> RunConfig:
    settings = dict(
        model=str(model), dataset="demo:json-extract", max_steps=3, per_device_train_batch_size=2, max_length=128,
        logging_steps=1, eval_steps=1000, save_steps=1000, eval_max_rows=4,
    )  # fmt: skip
    return RunConfig(**{**settings, **changes})


def stuck_rendering(run_id: str) -> dict:
    """The run's status once its process has loaded and is rendering rows (a few seconds in)."""
    status = wait_until(
        lambda: (s := rundir.read_status(run_id)).get("pid") and "token" in str(s.get("phase", "")).lower() and s,
        timeout=90,
        what="the run to reach tokenising",
    )
    time.sleep(2)  # inside the loop now
    assert rundir.read_status(run_id)["step"] == 0
    return status


def test_stop_ends_a_run_stuck_before_its_first_step_and_the_queue_moves_on(looping_model, tiny_model, sft_home):
    stuck = runs.start_run(config(looping_model))
    waiting = runs.start_run(config(tiny_model))
    status = stuck_rendering(stuck)
    assert runs.is_waiting(rundir.read_status(waiting))
    asked = time.time()
    runs.stop_run(stuck)
    final = run_queue.wait_for(stuck, timeout=60)
    assert final["state"] == "stopped", final
    assert time.time() - asked < liveness.LOADING_GRACE_SECONDS + 5
    assert "stopped before training began" in final["note"] and "no adapter" in final["note"]
    wait_until(lambda: not liveness.process_alive(stuck, status), timeout=10, what="the process to exit")
    assert not rundir.has_adapter(stuck)
    assert run_queue.wait_for(waiting, timeout=180)["state"] == "completed"  # the next visitor's run was not held up


def test_a_process_that_ignores_the_stop_is_killed_after_its_grace(looping_model, sft_home, monkeypatch):
    monkeypatch.setattr(liveness, "LOADING_GRACE_SECONDS", 3)
    stuck = runs.start_run(config(looping_model), owner=None)
    status = stuck_rendering(stuck)
    os.kill(status["pid"], signal.SIGSTOP)  # frozen: SIGTERM stays pending, as in a native call that never returns
    try:
        runs.cancel_run(stuck)
        final = run_queue.wait_for(stuck, timeout=30)
    finally:
        if pid_alive(status["pid"], status["pid_started"]):
            os.kill(status["pid"], signal.SIGKILL)
    assert final["state"] == "cancelled", final
    assert "did not end within 3 s of the stop (it was" in final["note"] and "no adapter" in final["note"]
    assert not liveness.process_alive(stuck, status)
    assert run_queue.active_run() is None


def test_the_hosts_time_limit_reaches_a_run_that_never_starts_training(looping_model, sft_home, monkeypatch):
    """A visitor's run has the host's wall-time budget (here 0.5 min: loading under a busy suite took more than
    0.2 min once, and the run ended before it was seen rendering); spent while the process still renders its rows,
    the app stops it with the reason (the trainer's own budget check only runs between steps)."""
    monkeypatch.setenv("SFT_SPACE_RUN_MINUTES", "0.5")
    stuck = runs.start_run(config(looping_model), owner="browser:" + "a" * 32)
    stuck_rendering(stuck)
    final = run_queue.wait_for(stuck, timeout=60)
    assert final["state"] == "stopped", final
    assert "the time budget of 0.5 min was spent before training" in final["note"]
    assert final["elapsed_seconds"] < 30 + liveness.LOADING_GRACE_SECONDS + 5
