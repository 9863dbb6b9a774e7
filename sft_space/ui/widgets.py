"""Gradio widgets generated from RunConfig's fields, and reading them back.

Every training field becomes a widget whose label is the plain-words name and
whose info line is the field's hint (which ends with the TRL name).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import fields

import gradio as gr

from ..config import RunConfig, coerce, field_type, fields_by_name


def Number(**kwargs) -> gr.Number:
    """gr.Number whose value from a browser or an API call is checked first: a value that is not a number (an API
    call may send any JSON) is refused with the field's name, where gr.Number's own conversion fails with no message.
    (A wrapper, not a subclass: Gradio writes a .pyi stub beside the source of every component class.)"""
    number = gr.Number(**kwargs)
    convert = number.preprocess

    def preprocess(payload):
        if payload is not None:
            what = number.label or "This field"
            try:
                value = float(payload) if not isinstance(payload, bool) else math.nan
            except (TypeError, ValueError, OverflowError):
                value = math.nan
            if not math.isfinite(value) or abs(value) > 1e15:
                raise gr.Error(f"{what} must be a number, not {str(payload)[:40]!r}.", print_exception=False)
            payload = value if not isinstance(payload, int) else payload
        return convert(payload)

    number.preprocess = preprocess
    return number


LABELS = {
    "num_train_epochs": "Epochs",
    "max_steps": "Max steps",
    "per_device_train_batch_size": "Batch size",
    "gradient_accumulation_steps": "Gradient accumulation",
    "learning_rate": "Learning rate",
    "warmup_ratio": "Warmup share",
    "lr_scheduler_type": "Schedule",
    "logging_steps": "Log training loss every",
    "eval_steps": "Validation loss every",
    "save_steps": "Checkpoint every",
    "eval_max_rows": "Validation rows per evaluation",
    "max_length": "Max length (tokens)",
    "packing": "Packing",
    "answers_only": "Train on answers only",
    "lora_r": "LoRA rank",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "lora_target_modules": "Target modules",
    "seed": "Seed",
    "gradient_checkpointing": "Gradient checkpointing",
    "precision": "Precision",
    "quantization": "Quantization",
    "weight_decay": "Weight decay",
    "max_grad_norm": "Max gradient norm",
    "save_total_limit": "Checkpoints kept",
    "train_minutes": "Train for (minutes)",
    "probe_prompts": "Probe prompts",
    "temperature": "Temperature",
    "top_p": "Top-p",
    "max_new_tokens": "Max new tokens",
    "repetition_penalty": "Repetition penalty",
}

# The SFT guide's grouping of SFTConfig parameters, in its order; open by default where a newcomer looks first.
TRAIN_GROUPS = [
    ("Duration", True),
    ("Batch", False),
    ("Learning rate", False),
    ("Monitoring", False),
    ("Sequence", False),
    ("LoRA", False),
    ("Advanced", False),
]


def group_fields(group: str) -> list:
    return [f for f in fields(RunConfig) if f.metadata["group"] == group]


# The Train tab's settings in the order build_groups(TRAIN_GROUPS) creates their widgets and handlers receive them.
TRAIN_FIELDS = [f.name for group, _ in TRAIN_GROUPS for f in group_fields(group)]


def make_widget(f, value=None):
    value = getattr(RunConfig(), f.name) if value is None else value
    label, info = LABELS.get(f.name, f.name), f.metadata["hint"]
    kind = field_type(f)
    if "choices" in f.metadata:
        return gr.Dropdown(choices=f.metadata["choices"], value=value, label=label, info=info, elem_id=f"cfg-{f.name}")
    if f.name == "lora_target_modules":
        return gr.Dropdown(
            choices=["all-linear", "attention"],
            value=value,
            label=label,
            info=info,
            allow_custom_value=True,
            elem_id=f"cfg-{f.name}",
        )
    if kind is bool:
        return gr.Checkbox(value=value, label=label, info=info, elem_id=f"cfg-{f.name}")
    if kind is str:
        lines = 3 if f.name == "probe_prompts" else 1
        return gr.Textbox(value=value, label=label, info=info, lines=lines, elem_id=f"cfg-{f.name}")
    return Number(value=value, label=label, info=info, precision=0 if kind is int else None, elem_id=f"cfg-{f.name}")


def build_groups(groups: list[tuple[str, bool]]) -> dict[str, gr.components.Component]:
    """One accordion per group; returns {field name: widget} in RunConfig order."""
    widgets = {}
    for group, open_ in groups:
        with gr.Accordion(group, open=open_):
            for f in group_fields(group):
                widgets[f.name] = make_widget(f)
    return widgets


def read_config(values: dict) -> RunConfig:
    """Widget values -> a validated-shape RunConfig; a bad value raises ValueError naming its field."""
    known = fields_by_name()
    return RunConfig(**{name: coerce(known[name], value) for name, value in values.items()})


def named(
    function, names: list[str], with_progress: bool = False, with_request: bool = False, with_oauth: bool = False
):
    """The same handler with one named parameter per widget, so the API (and gradio_client) takes field names.

    with_progress: the handler also gets gradio's progress tracker, passed on as `progress=`.
    with_request: the handler's first argument is the request (gr.Request), as gradio passes it.
    with_oauth: then comes the visitor's sign-in token (gr.OAuthToken, None when not signed in).
    """

    def handler(*values):
        if with_progress:
            return function(*values[:-1], progress=values[-1])
        return function(*values)

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    special = {}
    if with_request:
        special["request"] = gr.Request
    if with_oauth:
        special["oauth_token"] = gr.OAuthToken | None
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters[:0] = [inspect.Parameter(name, kind, annotation=hint) for name, hint in special.items()]
    handler.__annotations__ = special
    if with_progress:
        parameters.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    handler.__signature__ = inspect.Signature(parameters)
    handler.__name__ = function.__name__
    return handler
