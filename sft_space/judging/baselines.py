"""Is SFT worth it here? Prompting baselines against the tuned model, on the same held-out prompts.

The SFT guide's first question: would an instruction-tuned model with good
prompts do? This module answers it with numbers for one run: the base model
zero-shot, with instructions (a system prompt, pre-filled from the data), and
few-shot (k training examples before the prompt), against the tuned model with
no instructions and no examples. Each is scored with the evaluation's format
checks, plus prompt tokens per request, latency per reply and the share of
replies that end at the end-of-turn token. Results go into RUN_DIR/eval.json
under "baselines". It knows nothing about Gradio.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from .. import Progress
from ..rundir import read_config, read_eval, read_status, write_eval
from .scorers import EVAL_MAX_NEW_TOKENS, choose_scorer, score_replies

MAX_SHOTS = 8  # examples in a few-shot prompt: each one lengthens every prompt
DEFAULT_SHOTS = 3  # the guide's few-shot baseline: a handful of solved examples
DEFAULT_BASELINE_PROMPTS = 20
VARIANTS = ["zero-shot", "instructions", "few-shot", "tuned"]
VARIANT_LABELS = {
    "zero-shot": "base, zero-shot",
    "instructions": "base + instructions",
    "few-shot": "base, few-shot",
    "tuned": "tuned (no instructions)",
}
# The metric a verdict leans on, per format check: the hardest one the data supports.
PRIMARY = {"json-schema": "field_accuracy", "valid-json": "exact_match", "regex": "regex_match", "exact": "exact_match"}
METRIC_WORDS = {
    "field_accuracy": "correct fields",
    "schema_valid": "schema-valid JSON",
    "valid_json": "valid JSON",
    "all_fields_exact": "fully correct answers",
    "regex_match": "replies matching the pattern",
    "exact_match": "exact answers",
}
CLEAR_MARGIN = 0.05  # a difference in a share smaller than this is "about the same"


# ------------------------------------------------------------- prompts
def describe_rule(name: str, rule: dict) -> str:
    if "enum" in rule:
        return f'"{name}": one of {", ".join(rule["enum"])}'
    kinds = rule["type"] if isinstance(rule.get("type"), list) else [rule.get("type")]
    kinds = sorted(kinds, key=lambda kind: kind == "null")  # "a date or null" reads better than "null or a date"
    words = {
        "string": "text",
        "integer": "a whole number",
        "number": "a number",
        "null": "null",
        "boolean": "true or false",
        "array": "a list",
        "object": "an object",
    }
    kind_text = " or ".join(words.get(k, str(k)) for k in kinds)
    pattern = rule.get("pattern")
    if pattern == r"^\d{4}-\d{2}-\d{2}$":
        kind_text = kind_text.replace("text", "a date as YYYY-MM-DD")
    elif pattern == r"^\d{2}:\d{2}$":
        kind_text = kind_text.replace("text", "a 24-hour time as HH:MM")
    return f'"{name}": {kind_text}'


def default_instructions(scorer: dict) -> str:
    """A system prompt a careful user would write for this data, from what the training answers share."""
    if scorer["kind"] == "json-schema":
        schema = scorer["schema"]
        lines = [describe_rule(name, rule) for name, rule in schema["properties"].items()]
        return (
            "Reply with exactly one JSON object on one line and nothing else: no explanations, no code fences. "
            f"It has exactly these keys, in this order: {'; '.join(lines)}. "
            "Use null when the request does not say."
        )
    if scorer["kind"] == "regex":
        return f"Your whole reply must match this regular expression: {scorer['pattern']}"
    return "Answer the way the assistant answers in this assistant's training examples: same tone, same length."


def pick_shots(train_rows: list[dict], k: int, seed: int) -> list[dict]:
    """k training conversations (never held-out ones), seeded so every prompt gets the same examples."""
    if k < 0:
        raise ValueError(f"The number of few-shot examples must be 0 or more, got {k}.")
    if k > len(train_rows):
        raise ValueError(f"Only {len(train_rows)} training rows: use at most that many few-shot examples.")
    return random.Random(seed).sample(train_rows, k)


def shot_messages(shots: list[dict]) -> list[dict]:
    """The examples as earlier turns of the conversation (their system prompts left out)."""
    return [m for row in shots for m in row["messages"] if m["role"] != "system"]


def build_prompt(variant: str, prompt: list[dict], instructions: str, shots: list[dict]) -> list[dict]:
    """The conversation one variant sends for one held-out prompt."""
    if variant in ("zero-shot", "tuned"):
        return list(prompt)
    if variant == "instructions":
        if prompt and prompt[0]["role"] == "system":
            return [{"role": "system", "content": f"{instructions}\n\n{prompt[0]['content']}"}, *prompt[1:]]
        return [{"role": "system", "content": instructions}, *prompt]
    if variant == "few-shot":
        system = [m for m in prompt[:1] if m["role"] == "system"]
        return [*system, *shot_messages(shots), *prompt[len(system) :]]
    raise ValueError(f"Unknown baseline {variant!r}: one of {', '.join(VARIANTS)}.")


# ------------------------------------------------------------- verdict
def _pct(value: float) -> str:
    return f"{value:.0%}"


def verdict(rows: dict[str, dict], scorer_kind: str) -> str:
    """One plain sentence from a table {variant: {metric: value, prompt_tokens: n, ...}}."""
    tuned = rows["tuned"]
    baselines = {v: rows[v] for v in VARIANTS if v != "tuned" and v in rows}
    primary = PRIMARY.get(scorer_kind)
    if primary is None or primary not in tuned:
        best = min(baselines, key=lambda v: baselines[v]["prompt_tokens"])
        return (
            "No format check applies to this data, so compare the held-out loss and read the replies; "
            f"the tuned model needs {tuned['prompt_tokens']:.0f} prompt tokens per request against "
            f"{baselines['few-shot']['prompt_tokens']:.0f} for few-shot prompting."
            if "few-shot" in baselines
            else f"No format check applies to this data; the cheapest prompt is {VARIANT_LABELS[best]}."
        )
    best = max(baselines, key=lambda v: (baselines[v][primary], -baselines[v]["prompt_tokens"]))
    b = baselines[best]
    token_ratio = b["prompt_tokens"] / max(tuned["prompt_tokens"], 1)
    tokens = f"{token_ratio:.1f}x fewer prompt tokens" if token_ratio >= 1.1 else "about as many prompt tokens"
    secondary = "schema_valid" if scorer_kind == "json-schema" else None
    baseline_text = f"{VARIANT_LABELS[best]} prompting reaches {_pct(b[primary])} {METRIC_WORDS[primary]}"
    if secondary and secondary in b:
        baseline_text = (
            f"{VARIANT_LABELS[best]} prompting reaches {_pct(b[secondary])} {METRIC_WORDS[secondary]} "
            f"but {_pct(b[primary])} {METRIC_WORDS[primary]}"
        )
    if tuned[primary] >= b[primary] + CLEAR_MARGIN:
        return (
            f"SFT is worth it here: {baseline_text}; the tuned model reaches {_pct(tuned[primary])} "
            f"{METRIC_WORDS[primary]} with {tokens}."
        )
    if tuned[primary] > b[primary] - CLEAR_MARGIN:
        return (
            f"About even: {baseline_text}, the tuned model {_pct(tuned[primary])}; what SFT buys here is "
            f"{tokens} per request."
        )
    return (
        f"Prompting is enough here: {baseline_text}, better than the tuned model's {_pct(tuned[primary])}. "
        "Train longer or on more data before relying on SFT, or keep the prompt."
    )


def checklist(rows: dict[str, dict], scorer_kind: str, heldout: dict | None = None) -> list[tuple[str, str]]:
    """The guide's reasons for SFT, each with what the measurements say (or that none speaks to it)."""
    tuned = rows["tuned"]
    baselines = [rows[v] for v in VARIANTS if v != "tuned" and v in rows]
    items = []
    fmt = "schema_valid" if scorer_kind == "json-schema" else PRIMARY.get(scorer_kind)
    if fmt and fmt in tuned:
        best = max(b[fmt] for b in baselines)
        mark = "yes" if tuned[fmt] >= best + CLEAR_MARGIN else ("even" if tuned[fmt] > best - CLEAR_MARGIN else "no")
        items.append(
            (
                "Precise output format",
                f"{mark}: tuned {_pct(tuned[fmt])} vs best prompt {_pct(best)} {METRIC_WORDS[fmt]}",
            )
        )
    else:
        items.append(("Precise output format", "not measured: no format check for this data"))
    if heldout:
        base_loss, tuned_loss = heldout["base"], heldout["tuned"]
        mark = "yes" if tuned_loss < base_loss * 0.9 else "no"
        items.append(("Domain knowledge", f"{mark}: held-out loss {base_loss:.3f} (base) -> {tuned_loss:.3f} (tuned)"))
    else:
        items.append(("Domain knowledge", "not measured: run the evaluation for held-out loss"))
    eot_best = max(b["ends_turn"] for b in baselines)
    mark = (
        "yes"
        if tuned["ends_turn"] >= eot_best + CLEAR_MARGIN
        else ("even" if tuned["ends_turn"] > eot_best - CLEAR_MARGIN else "no")
    )
    items.append(
        (
            "Consistent response patterns",
            f"{mark}: {_pct(tuned['ends_turn'])} of tuned replies end cleanly vs {_pct(eot_best)} at best when "
            f"prompting",
        )
    )
    primary = PRIMARY.get(scorer_kind)
    if primary and primary in tuned and "instructions" in rows:
        ins = rows["instructions"][primary]
        mark = (
            "yes" if tuned[primary] >= ins + CLEAR_MARGIN else ("even" if tuned[primary] > ins - CLEAR_MARGIN else "no")
        )
        items.append(
            (
                "Adherence to guidelines",
                f"{mark}: tuned {_pct(tuned[primary])} vs {_pct(ins)} {METRIC_WORDS[primary]} with written "
                f"instructions",
            )
        )
    else:
        items.append(("Adherence to guidelines", "not measured: no format check for this data"))
    return items


# ----------------------------------------------------------------- run
def compare_with_prompting(
    run: str | Path,
    count: int = DEFAULT_BASELINE_PROMPTS,
    shots: int = DEFAULT_SHOTS,
    instructions: str | None = None,
    scorer_kind: str = "auto",
    pattern: str = "",
    progress: Progress = lambda f, m: None,
) -> dict:
    """The four-row table for a finished run; merged into RUN_DIR/eval.json under 'baselines'."""
    from ..data import load_for_run, prompt_messages, reference_answer
    from ..run_model import generate_once, load_chat_model

    config = read_config(run)
    splits = load_for_run(config, revision=read_status(run).get("data_revision"))  # the commit it trained on
    if splits.format != "messages":
        raise ValueError("The comparison needs a conversational dataset (a 'messages' column).")
    if count < 1:
        raise ValueError(f"Use at least 1 held-out prompt, got {count}.")
    if not 0 <= shots <= MAX_SHOTS:
        raise ValueError(f"Few-shot examples: 0 to {MAX_SHOTS}, got {shots} (more only makes every prompt longer).")
    scorer = choose_scorer([reference_answer(r) for r in splits.train], scorer_kind, pattern)
    instructions = instructions if instructions and instructions.strip() else default_instructions(scorer)
    examples = pick_shots(splits.train, shots, config.seed)
    held = splits.held_out()[0][-count:]  # a demo set's test split, else the validation rows (as Evaluate)
    references = [reference_answer(r) for r in held]
    progress(0.02, "Loading base model + adapter")
    loaded = load_chat_model(run)
    rows: dict[str, dict] = {}
    samples: dict[str, list[str]] = {}
    total = len(VARIANTS) * len(held)
    for v_index, variant in enumerate(VARIANTS):
        replies, prompt_tokens, seconds, ended = [], [], [], []
        for i, row in enumerate(held):
            progress(0.05 + 0.95 * (v_index * len(held) + i) / total, f"{VARIANT_LABELS[variant]}: {i + 1}/{len(held)}")
            messages = build_prompt(variant, prompt_messages(row), instructions, examples)
            out = generate_once(loaded, messages, use_adapter=variant == "tuned", max_new_tokens=EVAL_MAX_NEW_TOKENS)
            replies.append(out["text"])
            prompt_tokens.append(out["prompt_tokens"])
            seconds.append(out["seconds"])
            ended.append(out["ended_turn"])
        n = len(held)
        scores = score_replies(replies, references, scorer) if scorer["kind"] != "none" else {}
        rows[variant] = {
            **{k: v for k, v in scores.items() if isinstance(v, float)},
            "prompt_tokens": sum(prompt_tokens) / n,
            "seconds_per_reply": sum(seconds) / n,
            "ends_turn": sum(ended) / n,
        }
        samples[variant] = replies[:3]
    previous = read_eval(run)
    heldout = None
    if "base" in previous and "tuned" in previous:
        heldout = {"base": previous["base"]["heldout"]["loss"], "tuned": previous["tuned"]["heldout"]["loss"]}
    result = {
        "prompts": len(held),
        "shots": shots,
        "instructions": instructions,
        "scorer": scorer["kind"],
        "rows": rows,
        "samples": samples,
        "verdict": verdict(rows, scorer["kind"]),
        "checklist": checklist(rows, scorer["kind"], heldout),
        "created_at": time.time(),
    }
    write_eval(run, {**previous, "baselines": result})
    progress(1.0, "Comparison saved")
    return result


TABLE_METRICS = ["schema_valid", "field_accuracy", "all_fields_exact", "valid_json", "regex_match", "exact_match"]


def table_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for the four-row table."""
    metrics = [m for m in TABLE_METRICS if m in result["rows"]["tuned"]]
    headers = ["approach", *[METRIC_WORDS[m] for m in metrics], "prompt tokens", "s / reply", "ends at end-of-turn"]
    rows = []
    for variant in VARIANTS:
        r = result["rows"][variant]
        rows.append(
            [
                VARIANT_LABELS[variant],
                *[_pct(r[m]) for m in metrics],
                f"{r['prompt_tokens']:.0f}",
                f"{r['seconds_per_reply']:.2f}",
                _pct(r["ends_turn"]),
            ]
        )
    return headers, rows
