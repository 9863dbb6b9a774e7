"""Evaluate tab: base vs tuned on held-out data: loss, perplexity and output-format adherence."""

from __future__ import annotations

import json

import gradio as gr

from .. import runs
from ..evaluate import DEFAULT_FORMAT_PROMPTS, SCORERS, summary_rows
from .chat_tab import refresh_choices

SUMMARY_HEADERS = ["metric", "base model", "tuned model", "better"]
FAILURE_HEADERS = ["expected", "tuned reply", "problems"]


def show(result: dict | None):
    if not result:
        return "No evaluation for this run yet: press **Evaluate**.", [], []
    scorer = result.get("scorer", {})
    kind = scorer.get("kind", "none")
    about = {
        "json-schema": "replies checked against a JSON schema inferred from the training answers",
        "valid-json": "replies checked for valid JSON",
        "regex": f"replies checked against the pattern `{scorer.get('pattern', '')}`",
        "exact": "replies compared with the reference answers",
        "none": "no format check for this data (answers are free text): compare the losses and read the replies",
    }[kind]
    loss_rows = result["tuned"]["heldout"]["rows"]
    count = result["tuned"].get("format", {}).get("count", 0)
    text = (f"**{result['run']}** on `{result['dataset']}`: held-out loss on {loss_rows} validation rows; "
            f"{count} held-out prompts answered greedily by each model, {about}.")
    failures = result["tuned"].get("format", {}).get("failures", [])
    return text, summary_rows(result), [[f["expected"], f["reply"], "; ".join(f["problems"])] for f in failures]


def load_existing(run_id: str | None):
    path = runs.run_path(run_id) / "eval.json" if run_id else None
    return show(json.loads(path.read_text()) if path and path.is_file() else None)


def evaluate(run_id: str | None, count, scorer: str, pattern: str, progress=gr.Progress()):
    from ..evaluate import evaluate_run

    if not run_id:
        raise gr.Error("Pick a run with a saved adapter first.", print_exception=False)
    try:
        result = evaluate_run(run_id, int(count), scorer, pattern or "",
                              progress=lambda fraction, message: progress(fraction, desc=message))
    except (ValueError, FileNotFoundError) as error:
        raise gr.Error(str(error), print_exception=False) from None
    return show(result)


def build(current_run: gr.State, tab: gr.Tab):
    gr.Markdown("Does the tuned model beat the base model on data it never saw? Held-out loss, and whether "
                "its replies follow the format of the training answers.")
    with gr.Row():
        run = gr.Dropdown(label="Run", allow_custom_value=True, scale=3, elem_id="eval-run")
        count = gr.Number(value=DEFAULT_FORMAT_PROMPTS, precision=0, label="Held-out prompts", scale=1,
                          info="Answered by each model; about 2 s each on CPU.")
        scorer = gr.Dropdown(choices=SCORERS, value="auto", label="Format check", scale=1,
                             info="auto: a JSON schema when the answers are JSON.")
        pattern = gr.Textbox(label="Pattern (regex check)", scale=1)
    button = gr.Button("Evaluate", variant="primary", elem_id="evaluate")
    about = gr.Markdown(elem_id="eval-about")
    table = gr.Dataframe(headers=SUMMARY_HEADERS, interactive=False, elem_id="eval-table")
    with gr.Accordion("Failing examples (tuned model)", open=False):
        failures = gr.Dataframe(headers=FAILURE_HEADERS, interactive=False, wrap=True)
    button.click(evaluate, [run, count, scorer, pattern], [about, table, failures], api_name="evaluate")
    tab.select(refresh_choices, [run, current_run], run, api_name=False)
    run.change(load_existing, run, [about, table, failures], api_name=False)
