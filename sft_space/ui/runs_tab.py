"""Runs tab: this visitor's runs, reopen any of them, and overlay their loss curves."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .. import rundir
from ..hub import hub_endpoint, on_a_space
from ..models import model_label
from ..publishing import backup
from ..runs import lifecycle as runs
from ..runs import ownership
from ..runs import restore as backups
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


BACKUP_HEADERS = ["run", "state", "step", "checkpoint on the Hub", "adapter", "model", "dataset"]


def hub_runs(visitor: str | None, oauth_token: gr.OAuthToken | None):
    """The signed-in visitor's runs backed up on the Hub (their private <user>/sft-space-runs), with the ones not
    on this Space's disk offered for restore."""
    if oauth_token is None or not str(visitor or "").startswith("hf:"):
        raise gr.Error("Sign in with Hugging Face (top right) to see the runs backed up to your account.")
    username = visitor.removeprefix("hf:")
    with shown_as_error():
        found = backups.list_backups(oauth_token.token, username)
    rows = [
        [r["run_id"], r["state"], r["step"], r["checkpoint_step"] or "-", "yes" if r["has_adapter"] else "no",
         r["model"], r["dataset"]]
        for r in found
    ]  # fmt: skip
    missing = [r["run_id"] for r in found if not rundir.runs_root().joinpath(r["run_id"]).exists()]
    note = (
        f"{len(found)} run(s) in [{backup.repo_for(username)}]({hub_endpoint()}/{backup.repo_for(username)}); "
        f"{len(missing)} not on this Space's disk."
        if found
        else f"No runs backed up in {backup.repo_for(username)} yet."
    )
    return pd.DataFrame(rows, columns=BACKUP_HEADERS), gr.Dropdown(choices=missing, value=None), note


def restore(run_id: str | None, visitor: str | None, oauth_token: gr.OAuthToken | None):
    """Bring a backed-up run onto this Space's disk, then open it (Resume continues it from its checkpoint)."""
    if oauth_token is None or not str(visitor or "").startswith("hf:"):
        raise gr.Error("Sign in with Hugging Face (top right) to restore your runs.")
    if not run_id:
        raise gr.Error("Pick a run to restore (press Find first).")
    with shown_as_error(errors=(ValueError, RuntimeError, OSError)):
        backups.restore(run_id, oauth_token.token, visitor.removeprefix("hf:"))
    status = runs.refresh(run_id)
    gr.Info(
        f"Restored {run_id} ({status.get('state')}): "
        + ("press Resume on the Train tab to continue it." if status.get("state") != "completed" else "open it.")
    )
    return run_id, run_table(visitor)


def overlay(selected: list[str] | None, visitor: str | None) -> pd.DataFrame | None:
    """Loss curves of the ticked runs on one chart: validation loss where there is one, else training loss."""
    rows = []
    for run_id in selected or []:
        if not ownership.visible_run(run_id, visitor):
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
        use_settings = gr.Button("Use these settings", scale=1, elem_id="runs-use-settings")
        delete_button = gr.Button("Delete", scale=1, variant="stop", elem_id="delete-run")
        refresh_button = gr.Button("Refresh", scale=1)
    with gr.Accordion("Settings of the opened run", open=False):
        config_view = gr.JSON(elem_id="run-config")
    with gr.Accordion("Runs backed up on the Hub", open=False, visible=on_a_space(), elem_id="hub-runs"):
        gr.Markdown(
            "Signed in, your runs push their checkpoints to your private repo `<you>/sft-space-runs`. After this "
            "Space restarts (its disk may be empty), find them here, restore one, and Resume it on the Train tab."
        )
        with gr.Row():
            find_button = gr.Button("Find my runs on the Hub", scale=1)
            backed_up = gr.Dropdown(label="Restore a run", scale=3, elem_id="restore-run", allow_custom_value=True)
            restore_button = gr.Button("Restore", scale=1, elem_id="restore")
        hub_note = gr.Markdown()
        hub_table = gr.Dataframe(pd.DataFrame(columns=BACKUP_HEADERS), interactive=False)
    compare = gr.CheckboxGroup(label="Compare", elem_id="compare-runs")
    chart = gr.LinePlot(None, x="step", y="loss", color="run", title="Loss by run", height=320, elem_id="runs-chart")
    for event in (tab.select, refresh_button.click):
        event(refresh, [visitor, compare], [table, choice, compare], api_name=False)
    open_button.click(open_run, [choice, visitor], [current_run, config_view], api_name="open_run")
    find_button.click(hub_runs, visitor, [hub_table, backed_up, hub_note], api_name="hub_runs")
    restore_button.click(restore, [backed_up, visitor], [current_run, table], api_name="restore_run")
    delete_button.click(
        delete, [choice, current_run, visitor, compare], [table, choice, compare, current_run], api_name="delete_run"
    )
    # emptied first, so the plot is built afresh with a colour for each ticked run (see charts.py)
    compare.change(lambda: None, None, chart, api_name=False, show_progress="hidden").then(
        overlay, [compare, visitor], chart, api_name=False
    )
    return choice, use_settings  # the page wires "Use these settings" to the Data, Model and Train forms
