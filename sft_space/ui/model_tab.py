"""Model tab: pick a base model (curated list, any Hub id, a local folder), learn before downloading whether it
trains on this hardware, and prepare it (download or the bundled model's one-time conversion) with progress."""

from __future__ import annotations

import json

import gradio as gr

from ..config import BUNDLED_MODEL
from ..host import limits
from ..models import CURATED_MODELS, detect_device, fit_report, is_hub_model_id, model_facts, resolve_model
from ..models.bundled import is_converted
from ..training import estimates
from .common import shown_as_error, visitor_model
from .widgets import read_config

CHECK_FIELDS = [
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "lora_r",
    "lora_target_modules",
    "gradient_checkpointing",
    "precision",
    "quantization",
]


def model_choices() -> list[tuple[str, str]]:
    return [(f"{label} · {parameters / 1e6:,.0f}M", choice) for choice, label, parameters in CURATED_MODELS]


def describe(choice: str) -> str:
    """A line about the choice that needs no network (Check gives the full report)."""
    choice = (choice or "").strip()
    if choice == BUNDLED_MODEL:
        ready = "ready" if is_converted() else "converted on first use (about 20 s, once)"
        return f"**SmolLM2-135M-Instruct**, bundled: works offline; local copy {ready}."
    if is_hub_model_id(choice):
        return f"**{choice}** from the Hub: press **Check** to learn, before downloading, whether it trains here."
    return f"**{choice}**: a local folder; press **Check**."


def check(choice: str, *values) -> str:
    """Metadata-only report: what the model is, whether it fits this device with these settings, what to change."""
    choice = visitor_model(choice)
    try:
        config = read_config({**dict(zip(CHECK_FIELDS, values)), "model": choice})
        facts = model_facts(choice)
    except ValueError as error:
        return f"**Error:** {error}"
    except Exception as error:  # anything unexpected still reads as a message, never a traceback
        first_line = str(error).splitlines()[0] if str(error) else ""
        return f"**Error:** could not check {choice}: {type(error).__name__}: {first_line}"
    verdict, report = fit_report(facts, config, detect_device())
    lines = [
        f"**{choice if choice != BUNDLED_MODEL else 'SmolLM2-135M-Instruct (bundled)'}**: {facts.summary()}.",
        report,
    ]
    lines += [f"**Note:** {note}" for note in facts.notes]
    modules = sorted(facts.linear_modules())
    if modules:
        lines.append(
            f"LoRA can target these layers (for a custom list): `{', '.join(modules)}`; "
            f"*attention* means `{', '.join(facts.attention_modules()) or 'q_proj, k_proj, v_proj, o_proj'}`."
        )
    if not facts.has_chat_template:
        lines.append(
            "This is a base model without a chat template: training sets up ChatML (`<|im_start|>`, "
            "`<|im_end|>`) and trains those tokens' embedding rows, so the tuned model learns to end its turn."
        )
    return "\n\n".join(lines)


def prepare(choice: str, progress=gr.Progress(track_tqdm=True)) -> str:
    progress(0, desc="Checking the model")
    choice = visitor_model(choice)
    with shown_as_error():
        facts = model_facts(choice)  # metadata only: a model too big for this host is refused before downloading
        limits.check_model_size(choice, facts.parameters)
        estimates.check_download(choice, facts)
        folder = resolve_model(choice, lambda fraction, message: progress(fraction, desc=message))
    config = json.loads((folder / "config.json").read_text())
    return (
        describe(choice) + f"\n\nReady in `{folder}` ({config.get('model_type')}, "
        f"{config.get('num_hidden_layers')} layers, hidden size {config.get('hidden_size')})."
    )


def build():
    """The model picker; returns (model, check button, report) so the page can feed Check the Train settings."""
    gr.Markdown(
        "The base model you fine-tune: pick one, type any Hub id (`owner/name`) or the path of a local "
        "folder. Only safetensors weights are loaded, and never custom code."
    )
    model = gr.Dropdown(
        choices=model_choices(),
        value=BUNDLED_MODEL,
        label="Base model",
        allow_custom_value=True,
        info="Sizes in parameters. Hub models need a network; the bundled one works offline.",
        elem_id="model",
    )
    info = gr.Markdown(describe(BUNDLED_MODEL), elem_id="model-info")
    with gr.Row():
        check_button = gr.Button("Check", elem_id="check-model", variant="primary")
        prepare_button = gr.Button("Download / prepare", elem_id="prepare-model")
    report = gr.Markdown(elem_id="model-report")
    model.change(describe, model, info, api_name=False)
    prepare_button.click(prepare, model, info, api_name="prepare_model")
    return model, check_button, report
