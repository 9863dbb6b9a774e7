"""Data tab: pick a dataset, see a few rows and the split sizes."""

from __future__ import annotations

import gradio as gr

from ..config import DEFAULT_DATASET
from ..data import PREVIEW_HEADERS, demo_choices, load_dataset_source, preview_table


def preview(source: str):
    try:
        splits = load_dataset_source(source)
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error), print_exception=False) from None
    counts = (
        f"**{len(splits.train)}** train rows · **{len(splits.validation)}** validation rows · "
        f"format: `{splits.format}`" + ("".join(f" · {n}" for n in splits.notes))
    )
    return counts, preview_table(splits.train, 8)


def build(demo: gr.Blocks) -> gr.Dropdown:
    gr.Markdown("Pick the examples the model will learn from. Each row is a conversation; the model learns to write the final answer.")
    dataset = gr.Dropdown(
        choices=demo_choices(), value=DEFAULT_DATASET, label="Dataset", allow_custom_value=True,
        info="A bundled demo set, or the path of a .jsonl file with a 'messages' column.", elem_id="dataset",
    )
    counts = gr.Markdown(elem_id="dataset-counts")
    table = gr.Dataframe(headers=PREVIEW_HEADERS, label="First rows", wrap=True, interactive=False, elem_id="dataset-preview")
    dataset.change(preview, dataset, [counts, table], api_name="preview_dataset")
    demo.load(preview, dataset, [counts, table])
    return dataset
