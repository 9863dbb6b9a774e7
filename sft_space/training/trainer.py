"""The SFTTrainer of one run, built in named steps: the model folder, the data, the device plan (precision,
gradient checkpointing, memory), the tokenizer (ChatML for a base model), TRL's rows, the model with its LoRA
config, the trainer with its callbacks, the probe prompts. What the page and the card need to know about the
run goes into its status on the way.

Runs inside the training process (train); heavy libraries are imported inside the steps that need them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from .. import rundir
from ..config import RunConfig
from .run_writer import IS_MAIN_PROCESS, StopRequested, log, write_status

DEFAULT_PROBES = 3  # validation prompts watched during training when the user pins none
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


def build_trainer(config: RunConfig, run_dir: Path, stop: StopRequested, status: dict, backup=None):
    """The SFTTrainer for this run, in named steps: model folder, data, device plan, tokenizer, rows, model and
    LoRA, trainer and its callbacks. Facts for the page and the card go into `status` on the way."""

    def progress(fraction: float, message: str) -> None:
        log.info("model: %s", message)
        status.update(phase=message, phase_progress=fraction, phase_eta=None)
        write_status(run_dir, **status)

    from ..models import resolve_model

    with mirrored_progress_bars(run_dir, status):
        fetching = time.time()
        folder = resolve_model(config.model, progress)
        exclude_model_fetch(config, status, time.time() - fetching)
        config, splits = load_data(config)
        tokenizer, token_setup, every_answer = prepare_tokens(config, folder, status)
        train_dataset, eval_dataset = training_datasets(config, tokenizer, splits)
        facts, plan = plan_device(config, folder, batch_length(config, tokenizer, train_dataset, status))
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
            backup,
        )
    check_rows_kept(trainer, config, len(train_dataset), len(eval_dataset), status)
    add_probes(trainer, config, splits, run_dir, status, stop)
    record_distributed_setup(status)
    describe_run(trainer, config, folder, splits, plan, token_setup, status)
    return trainer, tokenizer


FETCH_EXCLUDED_AFTER_SECONDS = 2.0  # a model already here resolves in well under this


def exclude_model_fetch(config: RunConfig, status: dict, seconds: float) -> None:
    """Downloading or converting the model (once per machine) is not the visitor's training time: a timed run's
    limit grows by it, within the host's own limit (train.fit_to_minutes keeps that as host_time_budget_seconds)."""
    status["model_fetch_seconds"] = round(seconds, 1)
    if not config.train_minutes or seconds < FETCH_EXCLUDED_AFTER_SECONDS or status.get("resumed_from"):
        return
    host = status.get("host_time_budget_seconds")
    wanted = config.train_minutes * 60 + seconds
    status["time_budget_seconds"] = min(wanted, host) if host else wanted
    log.info("train for %g min: the model took %.0f s to fetch or convert; not counted", config.train_minutes, seconds)


def load_data(config: RunConfig):
    """(config, splits); plain text trains on every token. A Hub dataset is read at one commit, kept in status."""
    from ..data import load_for_run

    splits = load_for_run(config)
    log.info("data: %s", splits.summary())
    if splits.format == "text" and config.answers_only:
        log.info("data: plain text has no answers to single out; training on the whole text")
        config = dataclasses.replace(config, answers_only=False)
    return config, splits


SAMPLED_ROWS = 256  # rows tokenised to learn the data's lengths for the memory estimate


def batch_length(config: RunConfig, tokenizer, dataset, status: dict) -> float | None:
    """The expected padded length of a batch (its longest row) from a sample of the training rows, for the memory
    estimate: far below max_length on short data (json-extract: about 100 tokens against 512). The messages' texts
    are tokenised as they are, plus a few tokens per turn for the template's markers: the chat template itself is
    rendered only by TRL's tokenisation (a costly template is met there, where Stop reaches it). None if unknown."""
    from ..models import expected_batch_length

    try:
        step = max(1, len(dataset) // SAMPLED_ROWS)
        lengths = []
        for row in dataset.select(range(0, len(dataset), step)):
            if row.get("text") is not None:
                texts = [row["text"]]
            else:
                texts = [m.get("content") or "" for m in row.get("messages") or [*row["prompt"], *row["completion"]]]
            texts = [t if isinstance(t, str) else str(t) for t in texts]
            lengths.append(sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + TURN_TOKENS for t in texts))
    except Exception as error:  # an estimate only: every row at max_length then
        log.info("memory estimate: row lengths not measured (%s); counting every row at max_length", error)
        return None
    expected = expected_batch_length(lengths, config.per_device_train_batch_size, config.max_length)
    status["expected_batch_length"] = round(expected, 1)
    return expected


TURN_TOKENS = 5  # a chat template's markers around one turn (ChatML: <|im_start|>role\n ... <|im_end|>\n)


def plan_device(config: RunConfig, folder: Path, sequence_length: float | None = None):
    """The model's facts and where it trains: precision, gradient checkpointing, the memory estimate (logged), at
    the data's expected batch length when known."""
    from ..models import (
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
        config.gradient_checkpointing == "auto"
        and needs_gradient_checkpointing(facts, config, device, sequence_length=sequence_length)
    )
    estimate = estimate_memory(facts, config, device, checkpointing, precision_name(precision), sequence_length)
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
    from ..data import trains_every_answer
    from ..models import prepare_tokenizer

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

    from ..data import trainer_rows

    train_rows, validation_rows = trainer_rows(config, tokenizer, splits)
    return Dataset.from_list(train_rows), Dataset.from_list(validation_rows)


def check_rows_kept(trainer, config: RunConfig, train_rows: int, validation_rows: int, status: dict) -> None:
    """TRL drops a row whose answer truncation to max_length cut off entirely (its prompt alone fills it): say how
    many, and refuse a run left with no training rows before it starts (else the sampler fails with num_samples=0)."""
    kept = {"training": len(trainer.train_dataset), "validation": len(trainer.eval_dataset or [])}
    before = {"training": train_rows, "validation": validation_rows}
    dropped = {name: before[name] - kept[name] for name in kept if before[name] > kept[name]}
    if not dropped:
        return
    why = f"their prompt alone fills max_length ({config.max_length} tokens), so no answer token is left to learn"
    if kept["training"] == 0 or (before["validation"] and kept["validation"] == 0):
        empty = "training" if kept["training"] == 0 else "validation"
        raise ValueError(
            f"All {before[empty]} {empty} rows were left out: {why}. Raise max_length (the Data tab's 'What the "
            "model sees' shows each row's length in tokens) or shorten the prompts."
        )
    note = "; ".join(f"{count} of {before[name]} {name} rows left out" for name, count in dropped.items())
    status["rows_left_out"] = f"{note}: {why}"
    log.warning("data: %s", status["rows_left_out"])


def prepare_model(config: RunConfig, folder: Path, facts, plan: DevicePlan, tokenizer, token_setup):
    """The base model, fitted to the tokenizer, and the LoRA config (new tokens' rows trained too)."""
    from ..models import (
        attention_targets,
        expose_bias_on_token_wrappers,
        fit_model_to_tokenizer,
        load_model,
        trainable_tokens,
        training_attention,
        training_dtype,
    )

    model = load_model(folder, training_dtype(plan.precision, plan.device.kind), quantization=config.quantization)
    attention = training_attention(plan.device.kind, config.max_length)
    if attention:
        model.set_attn_implementation(attention)
    fit_model_to_tokenizer(model, tokenizer)
    if config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.checkpointing)
    if token_setup.new_token_ids:
        expose_bias_on_token_wrappers()
    targets = attention_targets(facts) if config.lora_target_modules.strip() == "attention" else None
    return model, config.to_lora_config(targets, trainable_tokens(model, token_setup.new_token_ids))


TRACKIO_PROJECT = "sft-space"  # the Trackio project every run logs to when asked (config.trackio)


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
    backup=None,
):
    from trl import SFTTrainer

    from ..models import trainer_precision_args
    from .callbacks import RunDirCallback
    from .lm_head import compact_lm_head

    args = config.to_sft_config(
        str(rundir.checkpoints_dir(run_dir)),
        **trainer_precision_args(plan.precision),
        gradient_checkpointing=plan.checkpointing,
        assistant_only_loss=every_answer,
        **({"project": TRACKIO_PROJECT, "run_name": run_dir.name} if config.trackio else {}),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[RunDirCallback(run_dir, status, stop, backup)],
    )
    status["lm_head"] = "labelled positions only" if compact_lm_head(trainer.model) else "TRL's fused head"
    return trainer


def add_probes(trainer, config: RunConfig, splits, run_dir: Path, status: dict, stop: StopRequested) -> None:
    """Probe prompts (the user's, else a few validation prompts) answered before training and at each evaluation."""
    from ..data import prompt_messages
    from .probes import ProbeCallback

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
    from ..models import base_license, precision_name

    trainable, total = trainer.model.get_nb_trainable_parameters()
    log.info("LoRA: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    status.update(
        precision=precision_name(plan.precision),
        attention=getattr(trainer.model.config, "_attn_implementation", None),
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
