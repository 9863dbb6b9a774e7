"""Runs that survive: kill -9 then resume, NaN loss stops the run, out of memory offers a smaller batch."""

import json
import math
import os
import signal

import pytest

from sft_space import rundir, runs
from sft_space.config import RunConfig

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
    status = runs.wait_for(run_id, timeout=300)
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
    status = runs.wait_for(run_id, timeout=180)
    assert status["state"] == "failed"
    assert status["error"].startswith("Out of memory at batch size 4")
    assert "retry with batch size 2 and gradient accumulation 2 (the same effective batch)" in status["error"]
    retry = runs.retry_config(run_id)
    assert (retry.per_device_train_batch_size, retry.gradient_accumulation_steps) == (2, 2)
    assert retry.learning_rate == rundir.read_config(run_id).learning_rate


def test_a_full_disk_during_a_save_fails_the_run_with_what_to_do(tiny_model, sft_home, monkeypatch):
    # A full filesystem cannot be mounted here without privileges, so the save at step 10 is cut short through a
    # test hook: it leaves a checkpoint without its completion mark and a temp JSON file, then raises ENOSPC the way
    # the write does. Everything after it (the message, the clean-up, the resume point) is the real code path.
    monkeypatch.setenv("SFT_SPACE_INJECT_DISK_FULL_AT_SAVE", "10")
    run_id = runs.start_run(tiny(tiny_model, max_steps=30, save_steps=5))
    status = runs.wait_for(run_id, timeout=180)

    assert status["state"] == "failed", status
    error = status["error"]
    assert error.startswith("The disk is full (") and "MB free now" in error, error
    assert "save_total_limit" in error and "resume from checkpoint-5 (step 5)" in error, error
    run_dir = rundir.run_path(run_id)
    assert [p.name for p in rundir.checkpoints_dir(run_id).glob("checkpoint-*")] == ["checkpoint-5"]  # partial gone
    assert rundir.last_complete_checkpoint(run_id).name == "checkpoint-5"
    assert not list(run_dir.glob(".*.tmp"))
    assert "No space left on device" in rundir.log_path(run_id).read_text()  # the traceback stays in the log

    monkeypatch.delenv("SFT_SPACE_INJECT_DISK_FULL_AT_SAVE")
    runs.resume_run(run_id)  # after freeing space: the run goes on from the point the message named
    status = runs.wait_for(run_id, timeout=180)
    assert status["state"] == "completed" and status["resumed_from"] == 5, status
