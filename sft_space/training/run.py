"""The training process: `python -m sft_space.train RUN_DIR` (or flags, or --config FILE).

Reads RunConfig, trains a LoRA adapter with TRL's SFTTrainer, and writes the run
directory: status.json (state and progress), metrics.jsonl (one line per log),
checkpoints/, and adapter/ at the end or on SIGTERM (stop & save). It is also the
headless command line for people who don't want the UI. No Gradio here.

    python -m sft_space.train --model bundled --dataset demo:json-extract --max_steps 20 --output_dir runs/a
    python -m sft_space.train --config my_run.json --output_dir runs/b
    python -m sft_space.train RUN_DIR            # a run directory holding config.json
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path

from .. import rundir
from ..config import RunConfig, coerce, fields_by_name
from ..host.process import pid_alive, start_time
from ..models import device_name, model_max_length
from ..presets import ALL_PRESETS
from ..publishing.backup import Backup
from ..rundir import (
    STATUS,
    cancel_requested,
    forget_after,
    last_complete_checkpoint,
    new_run_id,
    read_config_dict,
    read_json,
    runs_root,
)
from . import estimates
from .failures import disk_full_message, is_disk_full, is_out_of_memory, peak_memory
from .run_writer import IS_MAIN_PROCESS, StopBeforeTraining, StopRequested, log, write_status
from .trainer import build_trainer


# ------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sft_space.train",
        description="Fine-tune a causal language model with LoRA (TRL SFTTrainer) and write a run directory.",
    )
    parser.add_argument("run_dir", nargs="?", help="a run directory; its config.json is read if present")
    parser.add_argument("--config", help="a JSON file of RunConfig settings (flags override it)")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a stopped, failed or interrupted run from its last complete checkpoint",
    )
    parser.add_argument("--preset", choices=list(ALL_PRESETS), help="start from a named preset (flags override it)")
    parser.add_argument(
        "--output_dir", help="the run directory to write (default: a new folder under $SFT_SPACE_HOME/runs)"
    )
    for f in fields(RunConfig):
        parser.add_argument(
            f"--{f.name}", dest=f.name, default=None, metavar=str(f.type).upper(), help=f.metadata["hint"]
        )
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    settings: dict = dict(ALL_PRESETS[args.preset]) if args.preset else {}
    run_dir = Path(args.output_dir or args.run_dir) if (args.output_dir or args.run_dir) else None
    if args.config:
        settings.update(
            read_json(Path(args.config)) or _fail(f"--config {args.config}: no such file or not valid JSON")
        )
    elif run_dir and rundir.is_run(run_dir):
        settings.update(read_config_dict(run_dir))
    known = fields_by_name()
    for name, f in known.items():
        value = getattr(args, name)
        if value is not None:
            settings[name] = coerce(f, value)
    config = RunConfig.from_dict(settings)
    return config, run_dir or runs_root() / new_run_id(config)


def _fail(message: str):
    raise ValueError(message)


# glibc returns big freed blocks to the OS at once, so every training step page-faults its activations
# back in; keeping them in the heap measured about 1.5x faster CPU training (bench/train_throughput.py).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def reexec_with_malloc_tuning() -> None:
    """Restart this process once with MALLOC_ENV set (glibc reads it only at start-up)."""
    if sys.platform.startswith("linux") and any(k not in os.environ for k in MALLOC_ENV):
        os.execve(
            sys.executable, [sys.executable, "-m", "sft_space.train", *sys.argv[1:]], {**os.environ, **MALLOC_ENV}
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume:
        args.run_dir = args.resume
    busy = live_elsewhere(args.output_dir or args.run_dir)
    if busy:  # another process trains into this run directory: touch nothing of it
        print(f"error: {busy}", file=sys.stderr)
        return 2
    try:
        config, run_dir = config_from_args(args)
        config.validate(model_max_length(config.model))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        if args.run_dir and (Path(args.run_dir) / STATUS).is_file():
            write_status(args.run_dir, state="failed", error=str(error), ended_at=time.time())
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    if IS_MAIN_PROCESS:
        rundir.write_config(run_dir, config)
    setup_logging(run_dir)
    stop = StopRequested()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    checkpoint = None
    if args.resume:
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint is None:
            message = "This run has no complete checkpoint to resume from: start it again instead."
            print(f"error: {message}", file=sys.stderr)
            write_status(run_dir, state="failed", error=message, ended_at=time.time())
            return 2
    return train(config, run_dir, stop, checkpoint)


def live_elsewhere(run_dir: str | None) -> str | None:
    """Why this process must not train into `run_dir`: another live process is doing so (None when free).
    A process the app launched for this very run (same pid) is this one."""
    if not run_dir or not IS_MAIN_PROCESS:  # under accelerate the other ranks follow the main one
        return None
    status = read_json(Path(run_dir) / STATUS)
    pid = status.get("pid")
    if pid == os.getpid() or status.get("state") not in ("running", "stopping", "queued"):
        return None
    if pid_alive(pid, status.get("pid_started")):
        return f"run {Path(run_dir).name} is still running (pid {pid}): stop it first."
    return None


def setup_logging(run_dir: Path) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if (
        not os.environ.get("SFT_SPACE_LOG_CAPTURED") and IS_MAIN_PROCESS
    ):  # the app already sends our stdout to train.log
        handlers.append(logging.FileHandler(rundir.log_path(run_dir), encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    logging.raiseExceptions = False  # a log line the full disk refused is lost, not a traceback on the terminal


# -------------------------------------------------------------- training
def train_slot(run_dir: Path, deadline: float, save_every: float) -> dict:
    """One GPU slot of a run (slot_worker.run_slot, in the spaces.GPU worker): from the last complete checkpoint (none:
    the start) until shortly before `deadline`, saving every `save_every` seconds. No signal handlers (the worker
    runs this in a thread); the log goes to the run's train.log for this slot only. Returns where the run stands."""
    handler = logging.FileHandler(rundir.log_path(run_dir), encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    # what the Trainer prints (its log lines, warnings) goes to the run's log too, as a training process's does
    with open(rundir.log_path(run_dir), "a", encoding="utf-8") as printed:
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                config = RunConfig.from_dict(read_config_dict(run_dir))
                stop = StopRequested()
                stop.training = True  # no signal reaches a slot; a stop arrives as a file (callbacks.SlotCallback)
                checkpoint = last_complete_checkpoint(run_dir)
                code = train(config, run_dir, stop, checkpoint, slot=(deadline, save_every))
        finally:
            log.removeHandler(handler)
            handler.close()
    status = rundir.read_status(run_dir)
    return {
        "code": code,
        "state": status.get("state"),
        "step": status.get("step"),
        "max_steps": status.get("max_steps"),
    }


def train(
    config: RunConfig,
    run_dir: Path,
    stop: StopRequested,
    checkpoint: Path | None = None,
    slot: tuple[float, float] | None = None,
) -> int:
    """The run from its start (or `checkpoint`) to its adapter and final status. slot: (deadline, save every
    seconds) of a GPU slot (slots.py): training ends, saved, before the deadline and the run stays running."""
    started = time.time()
    status = dict(
        state="running",
        pid=os.getpid(),
        pid_started=start_time(os.getpid()),
        started_at=started,
        phase="loading",
        step=0,
        error=None,
        retry=None,
        note=None,
        eta_seconds=None,
        seconds_per_step=None,
        steps_measured=0,
        last_step_at=None,
        # the host's limit on this run's wall time (a public Space), from its start: then it stops and saves
        time_budget_seconds=rundir.read_status(run_dir).get("time_budget_seconds"),
    )
    fit_to_minutes(config, status, resuming=checkpoint is not None)
    write_status(run_dir, **status)
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    log.info(
        "Run %s: %s on %s%s",
        run_dir.name,
        config.model,
        config.dataset,
        f" (process {os.environ.get('RANK', '0')} of {processes})" if processes > 1 else "",
    )
    status["processes"] = processes
    # a signed-in visitor's run on a Space: checkpoints pushed to their private Hub repo as they are saved
    backup = Backup.from_environment(run_dir, status) if IS_MAIN_PROCESS else None
    try:
        try:
            trainer, tokenizer = build_trainer(config, run_dir, stop, status, backup)
            if stop.requested:
                return finish(run_dir, status, "stopped", started, note="stopped before training began; no adapter")
            status.update(phase="training", phase_progress=None, phase_eta=None)
            if slot is not None and not checkpoint:  # a slot ended before its first save: its steps go again
                forget_after(run_dir, 0)
            if checkpoint:
                resumed_step = rundir.checkpoint_step(checkpoint)
                forget_after(run_dir, resumed_step)
                status.update(resumed_from=resumed_step, step=resumed_step)
                log.info("Resuming from %s (step %d)", checkpoint.name, resumed_step)
                if 0 < trainer.args.max_steps <= resumed_step:  # all steps done (the process ended before its
                    # adapter): Trainer.train would train a step past max_steps, so the checkpoint's adapter is it
                    from .slots import adapter_from_checkpoint

                    if IS_MAIN_PROCESS:
                        adapter_from_checkpoint(run_dir)
                    return finish(run_dir, status, "completed", started)
            write_status(run_dir, **status)
            from .schedule import use_timed_schedule

            use_timed_schedule(trainer, config, status)  # train_minutes: the learning rate follows the clock
            if slot is not None:
                from .callbacks import SlotCallback

                trainer.add_callback(SlotCallback(run_dir, status, stop, *slot))
                if trainer.args.save_total_limit == 1:  # rotating out the only complete checkpoint before the next
                    trainer.args.save_total_limit = 2  # is marked: a slot ended then would restart from step 0
            stop.training = True  # from here a stop finishes the current step and saves
            if stop.requested:
                return finish(run_dir, status, "stopped", started, note="stopped before training began; no adapter")
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            status["peak_memory"] = peak_memory()
            if stop.diverged:
                return finish(run_dir, status, "failed", started, error=stop.diverged)
            if stop.requested and cancel_requested(run_dir):
                return finish(run_dir, status, "cancelled", started, note="cancelled: no adapter saved")
            if stop.slot_over and not stop.requested:  # saved at the slot's end: the next slot goes on from here
                status.update(phase="between GPU slots", eta_seconds=None, peak_memory=status["peak_memory"])
                write_status(run_dir, **status)
                log.info("GPU slot over at step %s of %s", status.get("step"), status.get("max_steps"))
                return 0
            state = "stopped" if stop.requested else "completed"
            status["phase"] = "saving adapter"
            write_status(run_dir, **status)
            if IS_MAIN_PROCESS:
                save_adapter(trainer.model, tokenizer, rundir.adapter_dir(run_dir))
            note = f"{stop.budget_spent}: resume the run to train further" if stop.budget_spent else None
            return finish(run_dir, status, state, started, note=note or fewer_steps_than_planned(config, status))
        except StopBeforeTraining:  # Stop, Cancel or the host's time limit while loading: nothing to save
            state = "cancelled" if cancel_requested(run_dir) else "stopped"
            why = rundir.read_status(run_dir).get("stop_reason") or f"{state} before training began"
            return finish(run_dir, status, state, started, note=f"{why} (while {status.get('phase')}); no adapter")
        except Exception as error:  # any failure becomes a readable status; the traceback stays in the log
            log_traceback()
            try:
                code = fail(run_dir, config, status, started, error)
            except OSError as again:  # the disk refused even the failure's status: one line, no traceback
                print(f"error: {error}; and the status could not be written: {again}", file=sys.stderr)
                return 1
            if not os.environ.get("SFT_SPACE_LOG_CAPTURED"):  # on a terminal: one line; the log has the rest
                print(
                    "error: " + " ".join(str(rundir.read_status(run_dir).get("error") or error).split()),
                    file=sys.stderr,
                )
            return code
    finally:
        if backup is not None:  # the final status, metrics and adapter; waits for the pushes still queued
            backup.finish(rundir.adapter_dir(run_dir) if rundir.has_adapter(run_dir) else None)


def fit_to_minutes(config: RunConfig, status: dict, resuming: bool) -> None:
    """train_minutes: the wall-time limit (with the host's, the lower wins) and, from this model's measured pace,
    the steps expected to fit (status["minutes_plan"], an estimate). The steps themselves are not capped: the
    clock-driven schedule (schedule.TimedSchedule) ends the run when the time is up, whatever the pace is now
    (a pace measured with other settings or on a busier machine planned 105 steps where 120 fitted)."""
    if not config.train_minutes:
        return
    seconds = config.train_minutes * 60
    host = status.get("time_budget_seconds")
    status["host_time_budget_seconds"] = host
    status["time_budget_seconds"] = min(seconds, host) if host else seconds
    if resuming:
        return
    fitted = estimates.steps_in(config, status["time_budget_seconds"])
    if fitted is None:
        log.info("train for %g min: no pace measured here yet; the schedule follows the clock", config.train_minutes)
        return
    steps, pace = fitted
    status["minutes_plan"] = {"steps": steps, "seconds_per_step": pace["seconds_per_step"], "from_run": pace["run_id"]}
    log.info(
        "train for %g min: about %d steps at %.2f s/step (measured by run %s)",
        config.train_minutes,
        steps,
        pace["seconds_per_step"],
        pace["run_id"],
    )


def fewer_steps_than_planned(config: RunConfig, status: dict) -> str | None:
    """A timed run that trained far fewer steps than its minutes promised says so, and why: a start-up that ate a
    large share of the minutes, or a machine busier than when this model's pace was measured."""
    if not config.train_minutes or status.get("resumed_from"):
        return None
    budget = status.get("time_budget_seconds") or config.train_minutes * 60
    startup = status.get("startup_seconds") or 0.0
    trained = status.get("step") or 0
    plan = (status.get("minutes_plan") or {}).get("steps")
    reasons = []
    if startup > 0.3 * budget:
        reasons.append(f"start-up took {startup:.0f} s of the {budget / 60:g} min")
    if plan and trained < 0.5 * plan:
        reasons.append(
            f"about {plan} steps fit at this model's pace measured earlier here: the machine was busier this time "
            "(other work shared the CPU)"
        )
    if not reasons:
        return None
    return f"trained {trained} steps in {config.train_minutes:g} min: " + "; ".join(reasons)


def log_traceback() -> None:
    """The traceback goes to train.log only: on a terminal the user reads one line (see train)."""
    text = "Training failed:\n" + traceback.format_exc()
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if os.environ.get("SFT_SPACE_LOG_CAPTURED") or not files:  # the app sends stdout to train.log
        log.error(text)
        return
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, text, None, None)
    for handler in files:
        handler.handle(record)


def fail(run_dir: Path, config: RunConfig, status: dict, started: float, error: Exception) -> int:
    """Record a failed run with a message that says what to do; exit status 2 for bad input found while the
    data and model were being read (nothing trained yet), 1 otherwise."""
    if is_out_of_memory(error):
        retry = {
            "per_device_train_batch_size": max(1, config.per_device_train_batch_size // 2),
            "gradient_accumulation_steps": config.gradient_accumulation_steps * 2,
        }
        status["retry"] = retry
        message = (
            f"Out of memory at batch size {config.per_device_train_batch_size} "
            f"({'GPU' if 'CUDA' in str(error) else 'device'} memory ran out): retry with batch size "
            f"{retry['per_device_train_batch_size']} and gradient accumulation "
            f"{retry['gradient_accumulation_steps']} (the same effective batch)."
        )
        finish(run_dir, status, "failed", started, error=message)
        return 1
    if is_disk_full(error, run_dir):
        finish(run_dir, status, "failed", started, error=disk_full_message(run_dir, config))
        return 1
    if isinstance(error, (ValueError, FileNotFoundError)) and status.get("phase") != "training":
        finish(run_dir, status, "failed", started, error=str(error)[:500])
        return 2
    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
    finish(run_dir, status, "failed", started, error=message[:500])
    return 1


def finish(
    run_dir: Path, status: dict, state: str, started: float, error: str | None = None, note: str | None = None
) -> int:
    ended = time.time()
    status.update(
        state=state,
        phase=None,
        ended_at=ended,
        elapsed_seconds=ended - started,
        error=error,
        device_name=device_name(),
    )
    if status.get("last_step_at"):  # saving the adapter and the last probe replies, after the last step
        status["finish_seconds"] = round(ended - status["last_step_at"], 2)
    if note:
        status["note"] = note
    write_status(run_dir, **status)
    log.info("Run %s %s after %.0f s", run_dir.name, state, status["elapsed_seconds"])
    return 0 if state in ("completed", "stopped", "cancelled") else 1


def save_adapter(model, tokenizer, target: Path) -> None:
    """Save adapter + tokenizer into a staging folder, then rename it into place."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("Adapter saved to %s", target)
