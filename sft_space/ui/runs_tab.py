"""Runs tab: this visitor's runs, reopen any of them, and overlay their loss curves."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .. import rundir, runs
from ..models import model_label
from . import text
from .charts import drawable, finite, typed_frame
from .common import owned, shown_as_error

HEADERS = ["run", "model", "dataset", "state", "steps", "best validation loss", "age"]


def run_table(visitor: str | None) -> pd.DataFrame:
    rows = []
    for r in runs.list_runs(visitor):
        steps = f"{r['step']}/{r['max_steps']}" if r["max_steps"] else str(r["step"])
        best = f"{r['best_eval_loss']:.4f}" if r["best_eval_loss"] is not None else "-"
        rows.append(
            [
                r["run_id"],
                model_label(r["model"] or ""),
                r["dataset"],
                r["state"],
                steps,
                best,
                text.format_duration(r["age_seconds"]) + " ago",
            ]
        )
    return pd.DataFrame(rows, columns=HEADERS)


def refresh(visitor: str | None, selected: list[str] | None):
    ids = [r["run_id"] for r in runs.list_runs(visitor)]
    kept = [run for run in (selected or []) if run in ids]
    return run_table(visitor), gr.Dropdown(choices=ids), gr.CheckboxGroup(choices=ids, value=kept)


def open_run(run_id: str | None, visitor: str | None):
    owned(run_id, visitor, "open")
    gr.Info(f"Opened {run_id}: the Train, Chat and Evaluate tabs now show it.")
    return run_id, rundir.read_config(run_id).to_dict()


def delete(run_id: str | None, current: str | None, visitor: str | None, selected: list[str] | None):
    """Remove a finished run of this visitor's, with its files; the page forgets it if it was open."""
    owned(run_id, visitor, "delete")
    with shown_as_error():
        runs.delete_run(run_id, visitor)
    gr.Info(f"Deleted {run_id} and its files.")
    return (*refresh(visitor, selected), None if current == run_id else current)


def overlay(selected: list[str] | None, visitor: str | None) -> pd.DataFrame | None:
    """Loss curves of the ticked runs on one chart: validation loss where there is one, else training loss."""
    rows = []
    for run_id in selected or []:
        if not runs.visible_run(run_id, visitor):
            continue
        records = rundir.read_metrics(run_id)
        key = "eval_loss" if any(isinstance(r.get("eval_loss"), (int, float)) for r in records) else "loss"
        label = "validation" if key == "eval_loss" else "train"
        rows += [
            {"step": r["step"], "loss": r[key], "run": f"{run_id} ({label})"} for r in records if finite(r.get(key))
        ]
    return drawable(typed_frame(rows, {"step": "int64", "loss": "float64", "run": "str"}), "loss")


def build(current_run: gr.State, visitor: gr.State, tab: gr.Tab):
    gr.Markdown(
        "Your runs on this Space (kept by your browser, or by your Hub account when signed in). "
        "Open one to see its chart, log and chat; tick several to compare their curves."
    )
    table = gr.Dataframe(run_table(None), interactive=False, elem_id="runs-table")
    with gr.Row():
        choice = gr.Dropdown(label="Open a run", scale=3, elem_id="open-run", allow_custom_value=True)
        open_button = gr.Button("Open", scale=1)
        delete_button = gr.Button("Delete", scale=1, variant="stop", elem_id="delete-run")
        refresh_button = gr.Button("Refresh", scale=1)
    with gr.Accordion("Settings of the opened run", open=False):
        config_view = gr.JSON(elem_id="run-config")
    compare = gr.CheckboxGroup(label="Compare", elem_id="compare-runs")
    chart = gr.LinePlot(None, x="step", y="loss", color="run", title="Loss by run", height=320, elem_id="runs-chart")
    for event in (tab.select, refresh_button.click):
        event(refresh, [visitor, compare], [table, choice, compare], api_name=False)
    open_button.click(open_run, [choice, visitor], [current_run, config_view], api_name="open_run")
    delete_button.click(
        delete, [choice, current_run, visitor, compare], [table, choice, compare, current_run], api_name="delete_run"
    )
    # emptied first, so the plot is built afresh with a colour for each ticked run (see charts.py)
    compare.change(lambda: None, None, chart, api_name=False, show_progress="hidden").then(
        overlay, [compare, visitor], chart, api_name=False
    )
    return table
