"""Runs that survive: kill -9 then resume, NaN loss stops the run, out of memory offers a smaller batch."""

import contextlib
import json
import math
import os
import signal
import subprocess
import threading

import pytest

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.runs import lifecycle as runs
from sft_space.runs import queue as run_queue

from helpers import run_cli, wait_until


def tiny(tiny_model, **changes) -> RunConfig:
    settings = dict(
        model=str(tiny_model),
        dataset="demo:json-extract",
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=1000,
        save_steps=5,
        eval_max_rows=4,
    )
    return RunConfig(**{**settings, **changes})


def test_kill_then_resume_continues_the_steps(tiny_model, sft_home):
    run_id = runs.start_run(tiny(tiny_model, max_steps=40, run_name="resume-me"))
    wait_until(
        lambda: (rundir.read_status(run_id).get("last_checkpoint") or 0) >= 10, timeout=180, what="two checkpoints"
    )
    killed_at = rundir.read_status(run_id)["step"]
    os.kill(rundir.read_status(run_id)["pid"], signal.SIGKILL)
    assert wait_until(lambda: runs.refresh(run_id)["state"] == "interrupted", timeout=30, what="interrupted")
    point = rundir.last_complete_checkpoint(run_id)
    assert point is not None and killed_at - int(point.name.split("-")[-1]) <= 5  # at most save_steps lost

    runs.resume_run(run_id)
    status = run_queue.wait_for(run_id, timeout=300)
    assert status["state"] == "completed" and status["step"] == 40, status
    assert status["resumed_from"] == int(point.name.split("-")[-1])
    steps = [r["step"] for r in rundir.read_metrics(run_id) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 40  # the curve continues, no step twice
    assert (rundir.run_path(run_id) / "adapter" / "adapter_model.safetensors").is_file()

    with pytest.raises(RuntimeError, match="completed"):
        runs.resume_run(run_id)


def test_resume_without_checkpoint_is_refused(tiny_model, tmp_path):
    result = run_cli("--resume", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "error:" in result.stderr


def test_a_loss_that_becomes_nan_stops_the_run_with_advice(tiny_model, tmp_path, monkeypatch):
    # A learning rate far too high used to drive the tiny model to NaN, but how soon depends on the loss head and
    # the machine; so a test hook turns one LoRA weight into NaN after step 5, and from there on the real code runs:
    # the next forward pass gives a NaN loss, the run stops with advice and keeps no NaN adapter.
    monkeypatch.setenv("SFT_SPACE_INJECT_NAN_AFTER_STEP", "5")
    run_dir = tmp_path / "nan"
    result = run_cli(
        *("--model", str(tiny_model), "--dataset", "demo:json-extract", "--max_steps", "200"),
        *("--learning_rate", "0.002", "--per_device_train_batch_size", "2", "--max_length", "128"),
        *("--logging_steps", "1", "--eval_steps", "1000", "--save_steps", "1000", "--output_dir", str(run_dir)),
    )
    assert result.returncode == 1
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed", status
    assert "The loss became nan at step 6 with learning_rate 0.002" in status["error"], status
    assert "lower the learning rate (try 0.0002)" in status["error"], status
    assert status["step"] < 10
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses[:5]), losses  # finite until the NaN
    assert not (run_dir / "adapter").exists()  # NaN weights are not saved as a result


def test_out_of_memory_offers_half_batch_twice_accumulation(tiny_model, sft_home, monkeypatch):
    # Real memory exhaustion cannot be produced on demand here, so the trainer raises torch's own
    # OutOfMemoryError at step 2 through a test hook; everything after it is the real code path.
    monkeypatch.setenv("SFT_SPACE_INJECT_OOM_AT_STEP", "2")
    run_id = runs.start_run(
        tiny(tiny_model, max_steps=20, per_device_train_batch_size=4, gradient_accumulation_steps=1)
    )
    status = run_queue.wait_for(run_id, timeout=180)
    assert status["state"] == "failed"
    assert status["error"].startswith("Out of memory at batch size 4")
    assert "retry with batch size 2 and gradient accumulation 2 (the same effective batch)" in status["error"]
    retry = runs.retry_config(run_id)
    assert (retry.per_device_train_batch_size, retry.gradient_accumulation_steps) == (2, 2)
    assert retry.learning_rate == rundir.read_config(run_id).learning_rate


@pytest.fixture
def small_disk(tmp_path):
    """A real 6 MB filesystem (tmpfs, mounted as root), unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused here ({mounted.stderr.decode().strip()}): the test needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill_after_checkpoint(run_dir, disk, step: int, leave: int) -> threading.Thread:
    """Once checkpoint-`step` is complete, fill the disk with a file until the kernel says no, then give back
    `leave` bytes: room for the next checkpoint's adapter and tokenizer, not for its optimizer state."""

    def fill():
        mark = run_dir / "checkpoints" / f"checkpoint-{step}" / rundir.CHECKPOINT_MARK
        wait_until(mark.is_file, timeout=120, poll=0.05, what="the first checkpoint")
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        os.truncate(filler, max(0, filler.stat().st_size - leave))

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    return thread


def test_a_disk_that_really_fills_during_a_save_fails_the_run_with_what_to_do(tiny_model, small_disk):
    """A real full filesystem under the run: torch.save raises RuntimeError ('iostream error'), not ENOSPC. The run
    fails with the disk-full message (free space, what to do, the checkpoint to resume from), the half-written
    checkpoint and temp files are gone, the terminal gets one line, and after space is freed it resumes."""
    run_dir = small_disk / "run"
    flags = [
        "--model", str(tiny_model), "--dataset", "demo:json-extract", "--per_device_train_batch_size", "2",
        "--max_length", "128", "--logging_steps", "1", "--eval_steps", "1000", "--eval_max_rows", "4",
        "--save_steps", "5", "--max_steps", "30", "--output_dir", str(run_dir),
    ]  # fmt: skip
    filler = fill_after_checkpoint(run_dir, small_disk, 5, leave=120 * 1024)
    result = run_cli(*flags, timeout=300)
    filler.join(timeout=5)
    status = json.loads((run_dir / "status.json").read_text())
    assert result.returncode == 1 and status["state"] == "failed", (status, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: The disk is full (")
    error = status["error"]
    assert error.startswith("The disk is full (") and "MB free now" in error, error
    assert "save_total_limit" in error and "resume from checkpoint-5 (step 5)" in error, error
    assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-5"]  # partial gone
    assert rundir.last_complete_checkpoint(run_dir).name == "checkpoint-5"
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / "adapter").exists()
    log = result.stdout + (run_dir / "train.log").read_text(errors="replace")
    assert "iostream error" in log or "unexpected pos" in log, log[-3000:]  # torch.save's own words

    (small_disk / "filler").unlink()  # space freed: the run goes on from the point the message named
    resumed = run_cli("--resume", str(run_dir), timeout=300)
    status = json.loads((run_dir / "status.json").read_text())
    assert resumed.returncode == 0 and status["state"] == "completed" and status["resumed_from"] == 5, status
    assert status["step"] == 30
