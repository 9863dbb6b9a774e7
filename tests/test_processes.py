"""A run's process is its pid and its start time; its owner is a file written once; both fail closed."""

import subprocess
import sys
import time

import pytest

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.host import process
from sft_space.runs import lifecycle as runs
from sft_space.runs import ownership
from sft_space.runs import queue as run_queue

from helpers import run_cli


def planted_run(run_id: str, owner=None, **status) -> str:
    """A run directory as the app leaves it, without training (no model needed)."""
    run_dir = rundir.runs_root() / run_id
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, RunConfig(dataset="demo:json-extract", max_steps=10))
    if owner is not False:
        rundir.write_owner(run_dir, owner)
    rundir.write_status(run_dir, created_at=time.time(), queued_at=time.time(), launched_at=time.time(), **status)
    return run_id


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A runs folder of this test's own: what it lists is what it planted."""
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def stranger_process():
    """A live process that is not any run's: what a reused pid points at."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_reused_pid_is_not_the_run_and_is_never_signalled(home, stranger_process):
    pid = stranger_process.pid
    started = process.start_time(pid)
    assert started and process.pid_alive(pid, started) and not process.pid_alive(pid, started - 1)
    run_id = planted_run("20260101-000000-stale", owner="browser:v1", state="running", pid=pid, pid_started=started - 1)

    status = runs.stop_run(run_id, "browser:v1")  # Stop on a run whose recorded process died long ago

    time.sleep(0.5)
    assert stranger_process.poll() is None  # the foreign process was not signalled
    assert status["state"] == "interrupted" and "ended unexpectedly" in status["error"]
    assert run_queue.active_run() is None  # the dead run no longer holds the queue


def test_a_live_run_cannot_be_resumed_or_restarted_from_the_command_line(home, stranger_process):
    pid = stranger_process.pid
    run_id = planted_run(
        "20260101-000000-live", owner=None, state="running", step=7, pid=pid, pid_started=process.start_time(pid)
    )
    before = (rundir.run_path(run_id) / rundir.STATUS).read_bytes()
    for args in (["--resume", str(rundir.run_path(run_id))], [str(rundir.run_path(run_id))]):
        result = run_cli(*args, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"error: run {run_id} is still running (pid {pid}): stop it first."
    assert (rundir.run_path(run_id) / rundir.STATUS).read_bytes() == before  # not marked failed, not touched
    with pytest.raises(RuntimeError, match="still going"):
        runs.resume_run(run_id)
    assert stranger_process.poll() is None


def test_ownership_fails_closed(home, monkeypatch):
    mine = planted_run("20260101-000001-mine", owner="browser:me", state="completed")
    corrupt_status = planted_run("20260101-000002-victim", owner="browser:victim", state="completed")
    (rundir.run_path(corrupt_status) / rundir.STATUS).write_text("{not json")
    bad_owner = planted_run("20260101-000003-garbled", owner=False, state="completed")
    (rundir.run_path(bad_owner) / rundir.OWNER).write_text('{"owner": ')
    cli_run = planted_run("20260101-000004-cli", owner=False, state="completed")

    seen = {r["run_id"] for r in runs.list_runs("browser:stranger")}
    assert seen == {cli_run}  # a private machine: the command line's runs are everyone's, nothing else is
    for run_id in (mine, corrupt_status, bad_owner):
        with pytest.raises(PermissionError, match="another visitor"):
            runs.check_owner(run_id, "browser:stranger")
        assert not ownership.visible_run(run_id, "browser:stranger")
    assert ownership.visible_run(mine, "browser:me")
    with pytest.raises(FileExistsError):  # the owner is written once, whoever asks again
        rundir.write_owner(rundir.run_path(mine), "browser:stranger")
    assert rundir.read_owner(mine)["owner"] == "browser:me"

    monkeypatch.setenv("SFT_SPACE_PUBLIC", "1")  # hosted for strangers: a run with no owner is nobody's
    assert {r["run_id"] for r in runs.list_runs("browser:stranger")} == set()
    with pytest.raises(PermissionError):
        runs.check_owner(cli_run, "browser:stranger")
    assert {r["run_id"] for r in runs.list_runs("browser:me")} == {mine}


def test_a_queue_position_reads_each_models_pace_once(home, monkeypatch):
    """Every page poll of a waiting visitor asks for its place: the runs are scanned once per model, not per run."""
    from sft_space.training import estimates

    for i in range(4):
        planted_run(f"20260101-00000{i}-wait", owner=f"browser:v{i}", state="queued", planned_steps=10)
        rundir.write_status(rundir.runs_root() / f"20260101-00000{i}-wait", launched_at=None, queued_at=i)
    scans = []
    monkeypatch.setattr(estimates, "measured_pace", lambda model, device=None: scans.append(model))
    place = run_queue.queue_position("20260101-000003-wait")
    assert place[:2] == (4, 4) and len(scans) == 1
