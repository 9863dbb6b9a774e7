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
import dataclasses
import logging
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path

from . import rundir
from .config import PRESETS, RunConfig, coerce, fields_by_name
from .models import device_name, model_max_length
from .run_writer import IS_MAIN_PROCESS, StopRequested, log, write_status
from .rundir import (
    STATUS,
    cancel_requested,
    forget_after,
    last_complete_checkpoint,
    new_run_id,
    read_config_dict,
    read_json,
    runs_root,
)

DEFAULT_PROBES = 3  # validation prompts watched during training when the user pins none


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
    parser.add_argument("--preset", choices=list(PRESETS), help="start from a named preset (flags override it)")
    parser.add_argument(
        "--output_dir", help="the run directory to write (default: a new folder under $SFT_SPACE_HOME/runs)"
    )
    for f in fields(RunConfig):
        parser.add_argument(
            f"--{f.name}", dest=f.name, default=None, metavar=str(f.type).upper(), help=f.metadata["hint"]
        )
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    settings: dict = dict(PRESETS[args.preset]) if args.preset else {}
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


def setup_logging(run_dir: Path) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if (
        not os.environ.get("SFT_SPACE_LOG_CAPTURED") and IS_MAIN_PROCESS
    ):  # the app already sends our stdout to train.log
        handlers.append(logging.FileHandler(rundir.log_path(run_dir), encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True
    )


# -------------------------------------------------------------- training
def train(config: RunConfig, run_dir: Path, stop: StopRequested, checkpoint: Path | None = None) -> int:
    started = time.time()
    status = dict(
        state="running",
        pid=os.getpid(),
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
    )
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
    try:
        trainer, tokenizer = build_trainer(config, run_dir, stop, status)
        if stop.requested:
            return finish(run_dir, status, "stopped", started, note="stopped before training began; no adapter")
        status.update(phase="training", phase_progress=None, phase_eta=None)
        if checkpoint:
            resumed_step = int(checkpoint.name.split("-")[-1])
            forget_after(run_dir, resumed_step)
            status.update(resumed_from=resumed_step, step=resumed_step)
            log.info("Resuming from %s (step %d)", checkpoint.name, resumed_step)
        write_status(run_dir, **status)
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        status["peak_memory"] = peak_memory()
        if stop.diverged:
            return finish(run_dir, status, "failed", started, error=stop.diverged)
        if stop.requested and cancel_requested(run_dir):
            return finish(run_dir, status, "cancelled", started, note="cancelled: no adapter saved")
        state = "stopped" if stop.requested else "completed"
        status["phase"] = "saving adapter"
        write_status(run_dir, **status)
        if IS_MAIN_PROCESS:
            save_adapter(trainer.model, tokenizer, rundir.adapter_dir(run_dir))
        return finish(run_dir, status, state, started)
    except Exception as error:  # any failure becomes a readable status; the traceback stays in the log
        log.error("Training failed:\n%s", traceback.format_exc())
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
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
        finish(run_dir, status, "failed", started, error=message[:500])
        return 1


def peak_memory() -> int:
    """Peak bytes this process used: GPU memory allocated on CUDA, else resident memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


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


PHASE_WRITE_SECONDS = 0.5  # how often a loading step's progress reaches status.json


@contextlib.contextmanager
def mirrored_progress_bars(run_dir: Path, status: dict):
    """While loading (model conversion, tokenisation, ...), copy every library progress bar into status.json with an
    ETA, so the page shows a bar for each phase. Libraries create their own tqdm bars, so this wraps tqdm's update
    for the duration of the block only, and restores it after."""
    from tqdm import std

    original = std.tqdm.update
    last_write = [0.0]

    def update(bar, n=1):
        result = original(bar, n)
        now = time.time()
        if bar.total and not bar.disable and now - last_write[0] >= PHASE_WRITE_SECONDS:
            last_write[0] = now
            share = min(bar.n / bar.total, 1.0)
            elapsed = now - bar.start_t
            status.update(
                phase=(bar.desc or "working").rstrip(": "),
                phase_progress=share,
                phase_eta=elapsed * (1 - share) / share if share > 0 else None,
            )
            write_status(run_dir, **status)
        return result

    std.tqdm.update = update
    try:
        yield
    finally:
        std.tqdm.update = original


@dataclasses.dataclass
class DevicePlan:
    """Where and how this run trains: decided once from the model's facts, the settings and the device."""

    precision: dict
    device: object
    checkpointing: bool
    estimate: object


def build_trainer(config: RunConfig, run_dir: Path, stop: StopRequested, status: dict):
    """The SFTTrainer for this run, in named steps: model folder, data, device plan, tokenizer, rows, model and
    LoRA, trainer and its callbacks. Facts for the page and the card go into `status` on the way."""

    def progress(fraction: float, message: str) -> None:
        log.info("model: %s", message)
        status.update(phase=message, phase_progress=fraction, phase_eta=None)
        write_status(run_dir, **status)

    from .models import resolve_model

    with mirrored_progress_bars(run_dir, status):
        folder = resolve_model(config.model, progress)
        config, splits = load_data(config)
        facts, plan = plan_device(config, folder)
        tokenizer, token_setup, every_answer = prepare_tokens(config, folder, status)
        train_dataset, eval_dataset = training_datasets(config, tokenizer, splits)
        model, peft_config = prepare_model(config, folder, facts, plan, tokenizer, token_setup)
        trainer = make_trainer(
            config,
            run_dir,
            plan,
            every_answer,
            model,
            peft_config,
            tokenizer,
            train_dataset,
            eval_dataset,
            stop,
            status,
        )
    add_probes(trainer, config, splits, run_dir, status, stop)
    record_distributed_setup(status)
    describe_run(trainer, config, folder, splits, plan, token_setup, status)
    return trainer, tokenizer


def load_data(config: RunConfig):
    """(config, splits); plain text trains on every token. A Hub dataset is read at one commit, kept in status."""
    from .data import load_for_run

    splits = load_for_run(config)
    log.info("data: %s", splits.summary())
    if splits.format == "text" and config.answers_only:
        log.info("data: plain text has no answers to single out; training on the whole text")
        config = dataclasses.replace(config, answers_only=False)
    return config, splits


def plan_device(config: RunConfig, folder: Path):
    """The model's facts and where it trains: precision, gradient checkpointing, the memory estimate (logged)."""
    from .models import (
        check_quantization,
        check_target_modules,
        choose_precision,
        detect_device,
        estimate_memory,
        local_facts,
        needs_gradient_checkpointing,
        precision_name,
    )

    facts = local_facts(folder, config.model)
    check_target_modules(config.target_module_list(), facts)
    check_quantization(config.quantization)
    precision = choose_precision(config.precision)
    device = detect_device()
    checkpointing = config.gradient_checkpointing == "on" or (
        config.gradient_checkpointing == "auto" and needs_gradient_checkpointing(facts, config, device)
    )
    estimate = estimate_memory(facts, config, device, checkpointing, precision_name(precision))
    log.info(
        "device: %s; precision %s; gradient checkpointing %s; memory estimate %.2f GiB (%s)",
        device.describe(),
        precision_name(precision),
        "on" if checkpointing else "off",
        estimate.total / 2**30,
        estimate.verdict,
    )
    return facts, DevicePlan(precision, device, checkpointing, estimate)


def prepare_tokens(config: RunConfig, folder: Path, status: dict):
    """The tokenizer (ChatML set up for a base model) and whether every assistant turn carries the loss."""
    from .data import trains_every_answer
    from .models import prepare_tokenizer

    tokenizer, token_setup = prepare_tokenizer(folder)
    for note in token_setup.notes:
        log.info("tokens: %s", note)
    every_answer = config.answers_only and trains_every_answer(tokenizer)
    loss_on = ("every assistant turn" if every_answer else "the last answer") if config.answers_only else "every token"
    log.info("loss on %s", loss_on)
    status.update(loss_on=loss_on, assistant_only_loss=every_answer)
    return tokenizer, token_setup, every_answer


def training_datasets(config: RunConfig, tokenizer, splits):
    """TRL's train and evaluation datasets: the rows evaluation and export rebuild the same way (trainer_rows)."""
    from datasets import Dataset

    from .data import trainer_rows

    train_rows, validation_rows = trainer_rows(config, tokenizer, splits)
    return Dataset.from_list(train_rows), Dataset.from_list(validation_rows)


def prepare_model(config: RunConfig, folder: Path, facts, plan: DevicePlan, tokenizer, token_setup):
    """The base model, fitted to the tokenizer, and the LoRA config (new tokens' rows trained too)."""
    from .models import (
        attention_targets,
        expose_bias_on_token_wrappers,
        fit_model_to_tokenizer,
        load_model,
        trainable_tokens,
        training_dtype,
    )

    model = load_model(folder, training_dtype(plan.precision, plan.device.kind), quantization=config.quantization)
    fit_model_to_tokenizer(model, tokenizer)
    if config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.checkpointing)
    if token_setup.new_token_ids:
        expose_bias_on_token_wrappers()
    targets = attention_targets(facts) if config.lora_target_modules.strip() == "attention" else None
    return model, config.to_lora_config(targets, trainable_tokens(model, token_setup.new_token_ids))


def make_trainer(
    config: RunConfig,
    run_dir: Path,
    plan: DevicePlan,
    every_answer: bool,
    model,
    peft_config,
    tokenizer,
    train_dataset,
    eval_dataset,
    stop: StopRequested,
    status: dict,
):
    from trl import SFTTrainer

    from .callbacks import RunDirCallback
    from .models import trainer_precision_args

    args = config.to_sft_config(
        str(rundir.checkpoints_dir(run_dir)),
        **trainer_precision_args(plan.precision),
        gradient_checkpointing=plan.checkpointing,
        assistant_only_loss=every_answer,
    )
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[RunDirCallback(run_dir, status, stop)],
    )


def add_probes(trainer, config: RunConfig, splits, run_dir: Path, status: dict, stop: StopRequested) -> None:
    """Probe prompts (the user's, else a few validation prompts) answered before training and at each evaluation."""
    from .callbacks import ProbeCallback
    from .data import prompt_messages

    probes = [[{"role": "user", "content": text}] for text in config.probe_list()] or [
        prompt_messages(row) for row in splits.validation[:DEFAULT_PROBES] if "messages" in row
    ]
    if probes and IS_MAIN_PROCESS:  # plain-text data has no prompts to ask unless the user pinned some
        trainer.add_callback(ProbeCallback(run_dir, probes, status, stop))


def record_distributed_setup(status: dict) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        backend = dist.get_backend_config() if hasattr(dist, "get_backend_config") else dist.get_backend()
        status.update(distributed_backend=str(backend), processes=dist.get_world_size())
        log.info("distributed: %d processes, backend %s", dist.get_world_size(), backend)


def describe_run(trainer, config: RunConfig, folder: Path, splits, plan: DevicePlan, token_setup, status: dict) -> None:
    """What the page, the card and later readers need to know about how this run trains."""
    from .models import base_license, precision_name

    trainable, total = trainer.model.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    status.update(
        precision=precision_name(plan.precision),
        gradient_checkpointing=plan.checkpointing,
        device=plan.device.describe(),
        memory_estimate=plan.estimate.total,
        token_notes=token_setup.notes,
        chatml_added=token_setup.chatml_added,
        trainable_parameters=trainable,
        total_parameters=total,
        train_rows=len(splits.train),
        validation_rows=len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        data_revision=splits.revision,  # the commit a Hub dataset was read at: evaluation and export read it too
        data_format=splits.format_label(),
        data_notes=splits.notes,
        token_lengths=token_length_summary(trainer.train_dataset, config.max_length),
        base_license=base_license(folder),
    )


def token_length_summary(dataset, max_length: int) -> dict:
    """Token counts of the tokenised training rows (after truncation), for the run summary and the model card."""
    import statistics

    lengths = sorted(len(ids) for ids in dataset["input_ids"]) if "input_ids" in dataset.column_names else []
    if not lengths:
        return {}
    return {
        "rows": len(lengths),
        "min": lengths[0],
        "median": int(statistics.median(lengths)),
        "p95": lengths[int(0.95 * (len(lengths) - 1))],
        "max": lengths[-1],
        "at_max_length": round(sum(n >= max_length for n in lengths) / len(lengths), 4),
    }


def save_adapter(model, tokenizer, target: Path) -> None:
    """Save adapter + tokenizer into a staging folder, then rename it into place."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("Adapter saved to %s", target)


if __name__ == "__main__":
    reexec_with_malloc_tuning()
    sys.exit(main())
