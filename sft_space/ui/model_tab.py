"""Model tab: pick the base model; prepare the bundled one (a one-time conversion with progress)."""

from __future__ import annotations

import json

import gradio as gr

from ..bundled import BUNDLED_NAME, is_converted
from ..config import BUNDLED_MODEL
from ..models import model_max_length, resolve_model


def describe(choice: str) -> str:
    if choice == BUNDLED_MODEL:
        ready = "ready" if is_converted() else "not prepared yet: press **Prepare model** (about 20 s, once), or just start training"
        return (f"**{BUNDLED_NAME}**: 135M parameters, context {model_max_length(choice)} tokens, "
                f"works offline. Local copy: {ready}.")
    limit = model_max_length(choice)
    return f"**{choice}**" + (f": context {limit} tokens." if limit else ": folder not found yet.")


def prepare(choice: str, progress=gr.Progress()):
    progress(0, desc="Checking the model")
    try:
        folder = resolve_model(choice, lambda fraction, message: progress(fraction, desc=message))
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error), print_exception=False) from None
    config = json.loads((folder / "config.json").read_text())
    layers, hidden = config.get("num_hidden_layers"), config.get("hidden_size")
    return describe(choice) + f"\n\nPrepared in `{folder}` ({config.get('model_type')}, {layers} layers, hidden size {hidden})."


def build() -> gr.Dropdown:
    gr.Markdown("The base model you fine-tune. The bundled one needs no network.")
    model = gr.Dropdown(
        choices=[(BUNDLED_NAME, BUNDLED_MODEL)], value=BUNDLED_MODEL, label="Base model", allow_custom_value=True,
        info="Or the path of a local model folder (config.json, *.safetensors, a tokenizer with a chat template).",
        elem_id="model",
    )
    info = gr.Markdown(describe(BUNDLED_MODEL), elem_id="model-info")
    button = gr.Button("Prepare model", elem_id="prepare-model")
    model.change(describe, model, info, api_name=False)
    button.click(prepare, model, info, api_name="prepare_model")
    return model
