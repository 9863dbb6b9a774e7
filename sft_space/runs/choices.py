"""What a visitor may choose on a public host: a dataset is a demo set, a Hub dataset id or a file uploaded through
the Data tab, never another path on the server; a base model is the bundled one or a Hub model id, never a folder
on the server. The Start and Resume handlers ask this of what a visitor sends, and a restored backup's settings
are asked the same (they come from outside, whatever host restores them). Imports neither torch nor Gradio."""

from __future__ import annotations

from pathlib import Path

from ..config import BUNDLED_MODEL
from ..data.hub import is_hub_id
from ..models.facts import is_hub_model_id
from .cleanup import uploads_dir

DATASET_REFUSAL = (
    "On this Space a dataset is a demo set, a Hub dataset id (owner/name) or a file you upload on the Data tab."
)
MODEL_REFUSAL = "On this Space the base model is the bundled one or a Hub model id (owner/name)."


def allowed_dataset(dataset) -> str:
    """The dataset, stripped, if a visitor may train on it here; else ValueError (the same whether such a path
    exists on the server or not)."""
    dataset = str(dataset or "").strip()
    if dataset.startswith("demo:") or is_hub_id(dataset):
        return dataset
    if dataset and Path(dataset).resolve().is_relative_to(uploads_dir().resolve()):
        return dataset
    raise ValueError(DATASET_REFUSAL)


def allowed_model(model) -> str:
    """The model, stripped, if a visitor may train it here; else ValueError."""
    model = str(model or "").strip()
    if model == BUNDLED_MODEL or is_hub_model_id(model):
        return model
    raise ValueError(MODEL_REFUSAL)
