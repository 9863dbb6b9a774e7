"""Evaluate tab: base vs tuned on held-out data: loss, perplexity and output-format adherence."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from .. import rundir
from ..host import limits
from ..hub import public as hardware_public
from ..judging.baselines import (
    DEFAULT_BASELINE_PROMPTS,
    DEFAULT_SHOTS,
    METRIC_WORDS,
    PRIMARY,
    VARIANT_LABELS,
    VARIANTS,
    table_rows,
)
from ..judging.evaluate import summary_headers, summary_rows, unlike_note
from ..judging.scorers import EVAL_MAX_NEW_TOKENS, SCORERS
from ..runs import ownership
from . import votes_panel
from .charts import typed_frame
from .chat_tab import refresh_choices
from .common import in_gpu_slot, owned, shown_as_error
from .widgets import Number

SUMMARY_HEADERS = ["metric", "base model", "tuned model", "better"]
FAILURE_HEADERS = ["expected", "tuned reply", "problems"]


def show(result: dict | None):
    if not result:
        return "No evaluation for this run yet: press **Evaluate**.", pd.DataFrame(columns=SUMMARY_HEADERS), []
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
    held = result.get("held_out", "validation rows")
    text = (
        f"**{result['run']}** on `{result['dataset']}`: held-out loss on {loss_rows} {held}; "
        f"{count} held-out prompts answered greedily by each model, {about}."
        + (f" {result['left_out']}." if result.get("left_out") else "")
        + (f" Not scored: {result['unlike_left_out']}." if result.get("unlike_left_out") else "")
    )
    note = unlike_note(result)
    if note:
        text += f"\n\n{note[0].upper()}{note[1:]}. Compare the two sets of columns."
    failures = result["tuned"].get("format", {}).get("failures", []) + (
        result["tuned"].get("unlike", {}).get("format", {}).get("failures", []) if note else []
    )
    table = pd.DataFrame(summary_rows(result), columns=summary_headers(result))
    return text, table, [[f["expected"], f["reply"], "; ".join(f["problems"])] for f in failures]


def saved_eval(run_id: str | None) -> dict:
    return rundir.read_eval(run_id) if run_id else {}


def load_existing(run_id: str | None, visitor: str | None):
    if run_id and not ownership.visible_run(run_id, visitor):
        run_id = None
    saved = saved_eval(run_id)
    scored = saved.get("tuned", {}).get("format", {}).get("count") if "base" in saved else None
    return (
        gr.update(value=scored) if scored else gr.update(),  # the count this run was last scored on
        *show(saved if "base" in saved else None),
        *show_baselines(saved.get("baselines")),
        instructions_for(run_id, saved),
    )


def instructions_for(run_id: str | None, saved: dict) -> str:
    """The instructions used last time, else a system prompt written from the run's training answers."""
    if saved.get("baselines"):
        return saved["baselines"]["instructions"]
    if not run_id:
        return ""
    from ..data import load_for_run, reference_answer
    from ..judging.baselines import default_instructions
    from ..judging.scorers import choose_scorer

    try:
        config = rundir.read_config(run_id)
        train = load_for_run(config, revision=rundir.read_status(run_id).get("data_revision")).train
        return default_instructions(choose_scorer([reference_answer(r) for r in train]))
    except (ValueError, FileNotFoundError):
        return ""


def show_baselines(result: dict | None):
    """Verdict, four-row table, checklist and bar chart of a prompting comparison."""
    if not result:
        return "Not compared yet: press **Compare with prompting**.", [], "", *bar_charts(None, [])
    headers, rows = table_rows(result)
    checks = "\n".join(f"- **{item}** – {finding}" for item, finding in result["checklist"])
    primary = PRIMARY.get(result["scorer"])
    shown = [m for m in ("schema_valid", primary) if m and m in result["rows"]["tuned"]]
    return (
        f"**Verdict:** {result['verdict']}",
        pd.DataFrame(rows, columns=headers),
        checks,
        *bar_charts(result, list(dict.fromkeys(shown))),
    )


BAR_CHARTS = 2  # schema-valid JSON, and the check the verdict leans on


def bar_charts(result: dict | None, metrics: list[str]) -> list:
    """A bar chart per metric (share of held-out prompts), one bar per approach; unused charts hidden."""
    charts = []
    for m in metrics[:BAR_CHARTS]:
        rows = [{"approach": VARIANT_LABELS[variant], "share": result["rows"][variant][m]} for variant in VARIANTS]
        charts.append(
            gr.BarPlot(
                value=typed_frame(rows, {"approach": "str", "share": "float64"}), title=METRIC_WORDS[m], visible=True
            )
        )
    return charts + [gr.BarPlot(visible=False)] * (BAR_CHARTS - len(charts))


def _count(count) -> int:
    """The number of prompts from the form or an API call: a whole number, said so when it is not."""
    try:
        return int(float(count or 0))
    except (TypeError, ValueError):
        raise ValueError(f"The number of prompts must be a whole number, not {str(count)[:40]!r}.") from None


def book_generation(visitor: str | None, replies: int) -> None:
    """Evaluate and the baselines generate like chat does: their most tokens (every reply at its longest) come out
    of the visitor's one generation budget per hour (limits.chat_budget), booked before any model work starts."""
    quota = limits.current()
    limits.chat_budget.reserve(visitor or "anonymous", quota.chat_tokens_per_hour, replies * EVAL_MAX_NEW_TOKENS)


def compare(
    run_id: str | None,
    count,
    shots,
    instructions: str,
    scorer: str,
    pattern: str,
    visitor: str | None,
    progress=gr.Progress(),
):
    from ..judging.baselines import VARIANTS, compare_with_prompting

    owned(run_id, visitor, "compare")
    with shown_as_error():
        rows = limits.check_eval_rows(_count(count))
        if hardware_public() and len(instructions or "") > limits.CHAT_MESSAGE_CHARACTERS:
            raise ValueError(
                f"The instructions are {len(instructions):,} characters: at most {limits.CHAT_MESSAGE_CHARACTERS:,} "
                "here (they go into every prompt)."
            )
        book_generation(visitor, rows * len(VARIANTS))
        result = compare_with_prompting(
            run_id,
            rows,
            int(shots),
            instructions,
            scorer,
            pattern or "",
            progress=lambda fraction, message: progress(fraction, desc=message),
        )
    return show_baselines(result)


def evaluate(run_id: str | None, count, scorer: str, pattern: str, visitor: str | None, progress=gr.Progress()):
    from ..judging.evaluate import evaluate_run

    owned(run_id, visitor, "evaluate")
    with shown_as_error():
        rows = limits.check_eval_rows(_count(count))
        book_generation(visitor, rows * 2)  # each prompt answered by the tuned and the base model
        result = evaluate_run(
            run_id,
            rows,
            scorer,
            pattern or "",
            progress=lambda fraction, message: progress(fraction, desc=message),
        )
        if result.get("unlike"):  # the rows unlike the training rows were answered too, by both models
            limits.chat_budget.charge(visitor or "anonymous", limits.current().chat_tokens_per_hour,
                                      rows * 2 * EVAL_MAX_NEW_TOKENS)  # fmt: skip
    return show(result)


def votes_text(run_id: str | None, visitor: str | None) -> str:
    text = votes_panel.rate_text(run_id, visitor)
    return f"**Your side-by-side votes (Chat tab):** {text}" if text else ""


def build(current_run: gr.State, visitor: gr.State, tab: gr.Tab):
    gr.Markdown(
        "Does the tuned model beat the base model on data it never saw? Held-out loss, and whether "
        "its replies follow the format of the training answers."
    )
    with gr.Row():
        run = gr.Dropdown(label="Run", allow_custom_value=True, scale=3, elem_id="eval-run")
        count = Number(
            value=DEFAULT_BASELINE_PROMPTS,
            precision=0,
            label="Held-out prompts",
            scale=1,
            elem_id="eval-count",
            info="Answered by each model, 16 at a time; more than the held-out rows scores all of them.",
        )
        scorer = gr.Dropdown(
            choices=SCORERS,
            value="auto",
            label="Format check",
            scale=1,
            info="auto: a JSON schema when the answers are JSON.",
        )
        pattern = gr.Textbox(label="Pattern (regex check)", scale=1)
    button = gr.Button("Evaluate", variant="primary", elem_id="evaluate")
    about = gr.Markdown(elem_id="eval-about")
    table = gr.Dataframe(headers=SUMMARY_HEADERS, interactive=False, elem_id="eval-table")
    votes_rate = gr.Markdown(elem_id="eval-votes")  # your Chat votes, tuned against base (votes_panel)
    with gr.Accordion("Failing examples (tuned model)", open=False):
        failures = gr.Dataframe(headers=FAILURE_HEADERS, interactive=False, wrap=True)
    gr.Markdown(
        "### Is it worth it?\nThe SFT guide's first question: would prompting the base model do? "
        "The same held-out prompts, the same checks: the base model alone, with written instructions, "
        "with a few solved training examples, and the tuned model with neither."
    )
    with gr.Row():
        instructions = gr.Textbox(
            label="Instructions (system prompt of the 'base + instructions' row)",
            lines=4,
            scale=4,
            elem_id="baseline-instructions",
            info="Pre-filled from the training answers; edit it to give prompting its best shot.",
        )
        shots = Number(
            value=DEFAULT_SHOTS,
            precision=0,
            label="Few-shot examples",
            scale=1,
            info="Drawn from the training split only.",
        )
    compare_button = gr.Button("Compare with prompting", elem_id="compare-baselines")
    verdict = gr.Markdown(elem_id="baseline-verdict")
    baseline_table = gr.Dataframe(interactive=False, elem_id="baseline-table")
    with gr.Row():
        charts = [
            gr.BarPlot(
                x="approach",
                y="share",
                y_lim=[0, 1],
                height=260,
                x_title="",
                visible=False,
                y_title="share of held-out prompts",
                sort=list(VARIANT_LABELS.values()),
                elem_id=f"baseline-chart-{i}",
            )
            for i in range(BAR_CHARTS)
        ]
    checks = gr.Markdown(elem_id="baseline-checklist")
    button.click(
        in_gpu_slot(evaluate),
        [run, count, scorer, pattern, visitor],
        [about, table, failures],
        api_name="evaluate",
    )
    compare_button.click(
        in_gpu_slot(compare),
        [run, count, shots, instructions, scorer, pattern, visitor],
        [verdict, baseline_table, checks, *charts],
        api_name="compare_baselines",
    )
    tab.select(refresh_choices, [run, current_run, visitor], run, api_name=False)
    for event in (tab.select, run.change):
        event(votes_text, [run, visitor], votes_rate, api_name=False, show_progress="hidden")
    run.change(
        load_existing,
        [run, visitor],
        [count, about, table, failures, verdict, baseline_table, checks, *charts, instructions],
        api_name=False,
    )
