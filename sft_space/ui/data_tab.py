"""Data tab: pick a demo set or upload a file, choose or confirm its format, see rows and split sizes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gradio as gr

from ..config import DEFAULT_DATASET
from ..data import FORMATS, PREVIEW_HEADERS, UPLOAD_SUFFIXES, DatasetSplits, demo_choices, is_hub_id, preview_table
from ..data.sources import test_rows_note, unlike_rows_note
from ..host import limits
from ..hub import public
from ..runs.cleanup import uploads_dir
from .charts import drawable, typed_frame
from .common import SOURCE_FIELDS, data_settings, shown_as_error, visitor_model
from .widgets import Number, named

MAX_UPLOAD_MB = 200  # larger datasets belong on the Hub, not in a browser upload (a public host may allow less)


def max_upload_mb() -> float:
    cap = limits.current().upload_mb
    return min(cap, MAX_UPLOAD_MB) if cap else MAX_UPLOAD_MB


def load_from_widgets(values, preview: bool = False) -> DatasetSplits:
    """Read the data exactly as a run with these Data settings would (RunConfig -> load_for_run)."""
    from ..data import load_for_run
    from .widgets import read_config

    config = read_config(data_settings(values))
    config.validate()
    return load_for_run(config, preview=preview)


def preview(*values):
    with shown_as_error():
        splits = load_from_widgets(values, preview=True)
    sizes = (
        "**Preview** (training reads the whole dataset and its splits)"
        if splits.preview
        else f"**{len(splits.train)}** train rows · **{len(splits.validation)}** validation rows"
        + (f" · **{len(splits.test)}** test rows (kept for Evaluate)" if splits.test else "")
        + (
            f" · **{len(splits.unlike)}** {splits.unlike_name.split(' (')[0]} (unlike the training rows)"
            if splits.unlike
            else ""
        )
    )
    said = {test_rows_note(len(splits.test)), unlike_rows_note(len(splits.unlike), splits.unlike_name)}
    counts = (
        f"{sizes} · "
        f"format: `{splits.format_label()}`"
        + "".join(f" · {n}" for n in splits.notes if n not in said)  # said above
        + f"  \ncolumns: {', '.join(f'`{c}`' for c in splits.columns)}"
    )
    choices = [""] + splits.columns
    pickers = [gr.Dropdown(choices=choices) for _ in range(3)]
    return counts, preview_table(splits.train, 8), *pickers


def hub_pickers(source: str, config: str, revision: str):
    """Subset and split pickers for a Hub dataset id, filled from its file list; empty for anything else."""
    from ..data import hub_layout, hub_splits, is_hub_id

    if not source or not is_hub_id(source.strip()):
        return gr.Dropdown(choices=[], value=""), gr.Dropdown(choices=[], value="")
    with shown_as_error():
        configs = sorted(hub_layout(source.strip(), revision or None))
        config = config if config in configs else ""
        config, split, splits = hub_splits(source.strip(), config, revision)
    return gr.Dropdown(choices=configs, value=config), gr.Dropdown(choices=sorted(splits), value=split)


def keep_upload(file_path: str | None):
    """Copy an uploaded file under $SFT_SPACE_HOME/uploads (content-addressed) and select it."""
    if not file_path:
        return gr.Dropdown()
    source = Path(file_path)
    if source.suffix.lower() not in UPLOAD_SUFFIXES:
        raise gr.Error(f"{source.name}: upload a {', '.join(UPLOAD_SUFFIXES)} file.", print_exception=False)
    if source.stat().st_size > max_upload_mb() * 2**20:  # a file input can name a URL Gradio fetched unchecked
        raise gr.Error(f"{source.name} is larger than {max_upload_mb():g} MB, the most this Space reads.",
                       print_exception=False)  # fmt: skip
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    digest = digest.hexdigest()[:12]
    target = uploads_dir() / f"{digest}-{source.name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return gr.Dropdown(value=str(target))


def build(demo: gr.Blocks):
    gr.Markdown(
        "Pick the examples the model will learn from. Each row becomes a conversation; "
        "the model learns to write the final answer."
    )
    with gr.Row():
        dataset = gr.Dropdown(
            choices=demo_choices(),
            value=DEFAULT_DATASET,
            label="Dataset",
            allow_custom_value=True,
            scale=3,
            info="A bundled demo set, an uploaded file, or the path of a file on this machine.",
            elem_id="dataset",
        )
        data_format = gr.Dropdown(
            choices=[("auto-detect", "auto")] + [(f"{k}: {v}", k) for k, v in FORMATS.items()],
            value="auto",
            label="Format",
            scale=2,
            elem_id="data-format",
            info="Detected from the columns; pick one if the guess is wrong.",
        )
    with gr.Row():
        hub_config = gr.Dropdown(
            choices=[],
            value="",
            label="Subset (Hub datasets)",
            allow_custom_value=True,
            info="Filled from the Hub when the dataset is an owner/name id.",
            elem_id="hub-config",
        )
        hub_split = gr.Dropdown(
            choices=[],
            value="",
            label="Split to train on (Hub datasets)",
            allow_custom_value=True,
            info="Its validation or test split, if any, becomes the validation set.",
            elem_id="hub-split",
        )
        revision = gr.Textbox(
            value="",
            label="Revision (Hub datasets)",
            placeholder="main",
            info="A branch, tag or commit; press Enter to reload.",
            elem_id="hub-revision",
        )
    validation_share = Number(
        value=0.1,
        label="Validation share",
        elem_id="validation-share",
        info="Held out (seeded) when the data has no validation or test split of its own; a demo set's "
        "validation rows come from its training rows (its test split is kept for Evaluate).",
    )
    with gr.Accordion("Your own columns or template (formats 'columns' and 'template')", open=False):
        with gr.Row():
            prompt_column = gr.Dropdown(choices=[""], value="", label="Prompt column", allow_custom_value=True)
            response_column = gr.Dropdown(choices=[""], value="", label="Answer column", allow_custom_value=True)
            system_column = gr.Dropdown(
                choices=[""], value="", label="System column (optional)", allow_custom_value=True
            )
        text_template = gr.Textbox(
            value="",
            label="Template",
            lines=2,
            elem_id="text-template",
            placeholder="### Question: {question}\n### Answer: {answer}",
            info="Placeholders are column names; each row becomes this text (trained whole).",
        )
    upload = gr.File(
        label=f"Upload a dataset ({', '.join(UPLOAD_SUFFIXES)}; up to {max_upload_mb():g} MB)",
        file_types=list(UPLOAD_SUFFIXES),
        type="filepath",
        elem_id="dataset-upload",
    )
    counts = gr.Markdown(elem_id="dataset-counts")
    table = gr.Dataframe(
        headers=PREVIEW_HEADERS,
        label="First rows",
        wrap=True,
        interactive=False,
        elem_id="dataset-preview",
        column_widths=["15%", "40%", "35%", "10%"],  # a narrow 'system' header wrapped letter by letter
    )
    upload.upload(keep_upload, upload, dataset, api_name=False)
    sources = [
        dataset,
        data_format,
        hub_config,
        hub_split,
        revision,
        validation_share,
        prompt_column,
        response_column,
        system_column,
        text_template,
    ]
    outputs = [counts, table, prompt_column, response_column, system_column]
    handler = named(preview, SOURCE_FIELDS)
    for event in (dataset.change, hub_config.input, revision.submit):
        event(hub_pickers, [dataset, hub_config, revision], [hub_config, hub_split], api_name=False).then(
            handler, sources, outputs, api_name=False
        )
    for event in (
        data_format.change,
        hub_split.input,
        validation_share.submit,
        prompt_column.change,
        response_column.change,
        system_column.change,
        text_template.submit,
    ):
        event(handler, sources, outputs, api_name=False)
    demo.load(handler, sources, outputs, api_name="preview_dataset")
    inspector = build_inspector()
    return sources, inspector


HISTOGRAM_BINS = 24
HISTOGRAM_COLOURS = {"within max_length": "#2563eb", "cut off by max_length": "#dc2626"}


def histogram_plot(stats: dict) -> gr.BarPlot:
    """Token lengths as a histogram; bins past the max_length cut in red."""
    lengths, limit = stats["lengths"], stats["max_length"]
    top = max(max(lengths, default=0), limit) + 1
    width = max(1, -(-top // HISTOGRAM_BINS))
    counts = [0] * HISTOGRAM_BINS
    for n in lengths:
        counts[min(n // width, HISTOGRAM_BINS - 1)] += 1
    rows = [
        {
            "tokens": i * width,
            "rows": c,
            "part": "cut off by max_length" if (i + 1) * width > limit else "within max_length",
        }
        for i, c in enumerate(counts)
        if c
    ]
    frame = typed_frame(rows, {"tokens": "int64", "rows": "int64", "part": "str"}, ("part", HISTOGRAM_COLOURS))
    return gr.BarPlot(value=drawable(frame, "rows"), x_bin=width)


def inspect(*values, progress=gr.Progress()):
    """The chosen row as the model sees it (trained tokens highlighted) and the token lengths of the data."""
    from ..data import length_stats, loss_view
    from ..models import load_tokenizer, resolve_tokenizer

    sources, (model, row_number, answers_only, max_length, batch_size, packing) = (
        values[: len(SOURCE_FIELDS)],
        values[len(SOURCE_FIELDS) :],
    )
    model = visitor_model(model)
    dataset = str(sources[SOURCE_FIELDS.index("dataset")] or "")
    with shown_as_error():
        # on a public host a Hub dataset is looked at through its first rows, never downloaded into the app
        splits = load_from_widgets(sources, preview=public() and is_hub_id(dataset))
        index = int(row_number)
        if not 0 <= index < len(splits.train):
            raise ValueError(f"Row {index} does not exist: pick 0 to {len(splits.train) - 1}.")
        progress(0.1, desc="Loading the model's tokenizer")
        tokenizer = load_tokenizer(resolve_tokenizer(model, lambda f, m: progress(f, desc=m)))
        progress(0.6, desc="Counting tokens")
        view = loss_view(tokenizer, splits.train[index], bool(answers_only), int(max_length))
        stats = length_stats(tokenizer, splits.train, bool(answers_only), int(max_length), int(batch_size))
    warn = ""
    if stats["answer_lost_share"]:
        warn = (
            f"  \n**Warning: {stats['answer_lost_share']:.0%} of rows lose their whole answer** to the cut: they teach "
            "nothing. Raise max_length or shorten those rows."
        )
    waste = (
        f"packing fills {stats['packing_efficiency']:.0%} of each sequence"
        if packing
        else f"{1 - stats['padding_efficiency']:.0%} of each batch is padding (packing would fill "
        f"{stats['packing_efficiency']:.0%})"
    )
    sampled = (
        f" (a seeded sample of {stats['rows']} of {stats['total_rows']})" if stats["rows"] < stats["total_rows"] else ""
    )
    text = (
        f"{stats['rows']} training rows{sampled}: median {stats['median']} tokens, longest {stats['longest']}; "
        f"**{stats['truncated_share']:.0%} longer than max_length {stats['max_length']}** (cut); {waste}." + warn
    )
    return view, text, histogram_plot(stats)


def build_inspector():
    """Components of 'What the model sees'; wired by build_app once the Train settings exist."""
    with gr.Accordion("What the model sees", open=False):
        gr.Markdown(
            "A training row after the chat template, exactly as tokenised: **trained** tokens carry the loss, "
            "the rest is context; **cut off** tokens fall past max_length. Uses the model chosen in step 2 and "
            "the max length, batch and answers-only settings of step 3."
        )
        with gr.Row():
            row_number = Number(value=0, precision=0, label="Row", scale=1, elem_id="inspect-row")
            button = gr.Button("Show", scale=1, elem_id="inspect")
        view = gr.HighlightedText(
            label="Row after the chat template",
            combine_adjacent=True,
            show_legend=True,
            color_map={"trained": "green", "cut off": "red"},
            elem_id="inspect-view",
        )
        stats = gr.Markdown(elem_id="inspect-stats")
        histogram = gr.BarPlot(
            x="tokens",
            y="rows",
            color="part",
            y_aggregate="sum",
            height=220,
            color_map=HISTOGRAM_COLOURS,
            title="Token length of the training rows",
            x_title="tokens",
            y_title="rows",
            elem_id="length-histogram",
        )
    return row_number, button, view, stats, histogram
