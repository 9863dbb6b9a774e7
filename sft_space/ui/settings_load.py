"""Load settings: one of the visitor's runs ("Use these settings", Train and Runs tabs) or an uploaded
sft_config.yaml / Reproduce zip / config.json fills the Data, Model and Train forms. Nothing starts: the visitor
reviews and presses Start, which checks everything again.

Each value is checked as if typed (export.settings_in); on top, the rules a Start applies on this host: a folder
as the model or a server path as the data on a public Space, a model over the host's size cap, refused by name.
Only the visitor's own runs can be read (ownership as for Open).
"""

from __future__ import annotations

import gradio as gr

from ..config import RunConfig
from ..export import settings_in
from ..host import limits
from .common import SOURCE_FIELDS, owned, shown_as_error, visitor_dataset, visitor_model
from .widgets import TRAIN_FIELDS

SUFFIXES = [".yaml", ".yml", ".json", ".zip"]


def _checked_on_this_host(config: RunConfig, given: set[str]) -> None:
    if "model" in given:
        visitor_model(config.model)  # a public Space: the bundled model or a Hub id, never a folder
        _model_size(config.model)
    if "dataset" in given and config.dataset:
        visitor_dataset(config.dataset)


def _model_size(model: str) -> None:
    from ..models import model_facts

    try:
        facts = model_facts(model)  # metadata only
    except Exception:  # unknown offline or not found: Start and the Model tab's check say so
        return
    with shown_as_error(errors=(ValueError,)):
        limits.check_model_size(model, facts.parameters)


def _filled(config: RunConfig, notes: list[str], given: set[str], source: str) -> list:
    """The forms' new values in load_outputs' order (a field the source did not give keeps its value)."""
    keep = gr.skip()
    values = [getattr(config, name) if name in given else keep for name in SOURCE_FIELDS]
    values.append(config.model if "model" in given else keep)
    values += [getattr(config, name) if name in given else keep for name in TRAIN_FIELDS]
    taken = len([name for name in (*SOURCE_FIELDS, "model", *TRAIN_FIELDS) if name in given])
    text = f"**Loaded from {source}:** {taken} settings filled in the Data, Model and Train tabs. Nothing started: " \
        "review them, then press Start training."  # fmt: skip
    if notes:
        text += "\n\n" + "\n".join(f"- {note}" for note in notes)
    gr.Info(f"Settings loaded from {source}; nothing started.")
    return [*values, text]


def use_run(run_id: str | None, visitor: str | None) -> list:
    """The settings of one of the visitor's runs."""
    owned(run_id, visitor, "load the settings of")
    with shown_as_error(errors=(ValueError, FileNotFoundError, OSError)):
        config, notes, given = settings_in.from_run(run_id)
    _checked_on_this_host(config, given)
    return _filled(config, notes, given, f"run {run_id}")


def use_file(path: str | None, visitor: str | None) -> list:
    """The settings in an uploaded sft_config.yaml, Reproduce zip or config.json."""
    if not path:
        raise gr.Error("Choose a file first: a sft_config.yaml, the Reproduce zip or a run's config.json.")
    with shown_as_error(errors=(ValueError, OSError)):
        config, notes, given = settings_in.from_file(path)
    _checked_on_this_host(config, given)
    from pathlib import Path

    return _filled(config, notes, given, Path(path).name)


def run_choices(visitor: str | None) -> gr.Dropdown:
    from ..runs import lifecycle as runs

    return gr.Dropdown(choices=[r["run_id"] for r in runs.list_runs(visitor)])


def build() -> tuple[gr.Dropdown, gr.Button, gr.File, gr.Markdown]:
    """The Train tab's part: a run of the visitor's, or a file; the page wires them to the forms."""
    with gr.Accordion(
        "Load settings (a run of yours, sft_config.yaml, the Reproduce zip)", open=False, elem_id="load-settings"
    ):
        with gr.Row():
            run = gr.Dropdown(label="One of your runs", allow_custom_value=True, scale=3, elem_id="settings-run")
            use = gr.Button("Use these settings", scale=1, elem_id="use-settings")
        upload = gr.File(
            label="Or a file: sft_config.yaml, the Reproduce export's zip, or a run's config.json",
            file_types=SUFFIXES,
            type="filepath",
            elem_id="settings-file",
        )
        note = gr.Markdown(elem_id="settings-note")
    return run, use, upload, note
