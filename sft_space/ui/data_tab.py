"""Data tab: pick a demo set or upload a file, choose or confirm its format, see rows and split sizes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gradio as gr

from .. import home
from ..config import DEFAULT_DATASET
from ..data import FORMATS, PREVIEW_HEADERS, UPLOAD_SUFFIXES, demo_choices, load_dataset_source, preview_table

MAX_UPLOAD_MB = 200  # larger datasets belong on the Hub, not in a browser upload


def preview(source: str, data_format: str):
    try:
        splits = load_dataset_source(source, data_format=data_format or "auto")
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error), print_exception=False) from None
    counts = (
        f"**{len(splits.train)}** train rows · **{len(splits.validation)}** validation rows · "
        f"format: `{splits.format_label()}`" + ("".join(f" · {n}" for n in splits.notes))
    )
    return counts, preview_table(splits.train, 8)


def keep_upload(file_path: str | None):
    """Copy an uploaded file under $SFT_SPACE_HOME/uploads (content-addressed) and select it."""
    if not file_path:
        return gr.Dropdown()
    source = Path(file_path)
    if source.suffix.lower() not in UPLOAD_SUFFIXES:
        raise gr.Error(f"{source.name}: upload a {', '.join(UPLOAD_SUFFIXES)} file.", print_exception=False)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = home() / "uploads" / f"{digest}-{source.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return gr.Dropdown(value=str(target))


def build(demo: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown]:
    gr.Markdown("Pick the examples the model will learn from. Each row becomes a conversation; "
                "the model learns to write the final answer.")
    with gr.Row():
        dataset = gr.Dropdown(
            choices=demo_choices(), value=DEFAULT_DATASET, label="Dataset", allow_custom_value=True, scale=3,
            info="A bundled demo set, an uploaded file, or the path of a file on this machine.", elem_id="dataset",
        )
        data_format = gr.Dropdown(
            choices=[("auto-detect", "auto")] + [(f"{k}: {v}", k) for k, v in FORMATS.items()], value="auto",
            label="Format", scale=2, elem_id="data-format",
            info="Detected from the columns; pick one if the guess is wrong.",
        )
    upload = gr.File(label=f"Upload a dataset ({', '.join(UPLOAD_SUFFIXES)}; up to {MAX_UPLOAD_MB} MB)",
                     file_types=list(UPLOAD_SUFFIXES), type="filepath", elem_id="dataset-upload")
    counts = gr.Markdown(elem_id="dataset-counts")
    table = gr.Dataframe(headers=PREVIEW_HEADERS, label="First rows", wrap=True, interactive=False, elem_id="dataset-preview")
    upload.upload(keep_upload, upload, dataset, api_name=False)
    for event in (dataset.change, data_format.change):
        event(preview, [dataset, data_format], [counts, table], api_name=False)
    demo.load(preview, [dataset, data_format], [counts, table], api_name="preview_dataset")
    return dataset, data_format
