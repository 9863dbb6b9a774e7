"""Judge a run on held-out data: base model vs tuned model, loss and output format.

Owns held-out loss and perplexity and the base-vs-tuned comparison written to
the run's eval.json; the format checks themselves are `scorers`. Base
replies come from the same loaded model with the LoRA adapter switched off, so
only one copy is in memory. No Gradio here.

    python -m sft_space.judging.evaluate RUN_DIR [--count 20] [--scorer auto|json-schema|valid-json|regex|exact|none]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import Progress
from ..host.limits import current as current_limits
from ..rundir import EVAL, read_config, read_status, run_path, write_eval
from .scorers import EVAL_MAX_NEW_TOKENS, SCORERS, choose_scorer, score_replies

DEFAULT_FORMAT_PROMPTS = 20  # held-out prompts answered greedily by each model
DEFAULT_LOSS_ROWS = 60  # held-out rows for loss / perplexity; enough for a stable mean on CPU


# ------------------------------------------------------------------ loss
def within_prompt_cap(tokenizer, rows: list[dict]) -> tuple[list[dict], int]:
    """The held-out rows this host scores: on a public host a conversation longer than eval_prompt_tokens is left
    out (a few 3,000-token prompts once held a 2-core CPU's model for 13 minutes); (rows, how many were left out).
    A row far longer in characters than the cap allows is left out before it is tokenised."""
    cap = current_limits().eval_prompt_tokens
    if not cap or not rows:
        return rows, 0
    kept = [
        r for r in rows
        if sum(len(str(m.get("content", ""))) for m in r["messages"]) <= cap * 16
        and len(tokenizer.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) <= cap
    ]  # fmt: skip
    if not kept:
        raise ValueError(f"Every held-out row is longer than {cap:,} tokens, the most this Space evaluates.")
    return kept, len(rows) - len(kept)


# ------------------------------------------------------------ the report
def evaluate_run(
    run: str | Path,
    count: int = DEFAULT_FORMAT_PROMPTS,
    scorer_kind: str = "auto",
    pattern: str = "",
    loss_rows: int = DEFAULT_LOSS_ROWS,
    progress: Progress = lambda f, m: None,
) -> dict:
    """Held-out loss of base and tuned model, and format adherence of their greedy replies; saved to eval.json."""
    from ..data import load_for_run, reference_answer
    from ..run_model import load_chat_model, on_generation_thread

    config = read_config(run)
    splits = load_for_run(config, revision=read_status(run).get("data_revision"))  # the commit it trained on
    if splits.format != "messages":
        raise ValueError("Evaluation needs a conversational dataset (a 'messages' column).")
    scorer = choose_scorer([reference_answer(r) for r in splits.train], scorer_kind, pattern)
    progress(0.02, "Loading base model + adapter")
    loaded = load_chat_model(run)
    held, held_name = splits.held_out()
    # the rows scored, each capped on a public host (on the tokenizer's thread); never every held-out row
    loss_set, loss_left = on_generation_thread(within_prompt_cap, loaded.tokenizer, held[:loss_rows])
    format_set, format_left = on_generation_thread(within_prompt_cap, loaded.tokenizer, held[-count:] if count else [])
    left_out = (
        f"{loss_left + format_left} held-out rows longer than {current_limits().eval_prompt_tokens:,} tokens were "
        "left out (this Space's limit)"
        if loss_left + format_left
        else None
    )
    result: dict = {
        "run": run_path(run).name,
        "dataset": config.dataset,
        "scorer": scorer,
        "created_at": time.time(),
        "held_out": held_name,
        **({"left_out": left_out} if left_out else {}),
    }
    parts = [("heldout", loss_set, format_set)]
    if splits.unlike:  # rows written unlike the training rows: scored the same way, beside the held-out rows
        try:
            unlike_loss = on_generation_thread(within_prompt_cap, loaded.tokenizer, splits.unlike[:loss_rows])[0]
            unlike_format = on_generation_thread(within_prompt_cap, loaded.tokenizer, splits.unlike[:count])[0]
        except ValueError:  # every one longer than this Space evaluates: the held-out rows are still scored
            result["unlike_left_out"] = f"the {splits.unlike_name.split(' (')[0]} are longer than this Space evaluates"
        else:
            result["unlike"], result["unlike_label"] = splits.unlike_name, splits.unlike_label
            parts.append(("unlike", unlike_loss, unlike_format))
    steps = 2 * len(parts)
    for index, name in enumerate(("base", "tuned")):
        use_adapter = name == "tuned"
        started = time.time()
        entry: dict = {}
        for p_index, (part, losses, formats) in enumerate(parts):
            at = (index * len(parts) + p_index) / steps
            rows_name = held_name.split(" (")[0] if part == "heldout" else splits.unlike_name.split(" (")[0]
            progress(0.02 + 0.96 * at, f"{name} model: loss on {len(losses)} {rows_name}")
            scored = _score_part(
                loaded, config, scorer, losses, formats, use_adapter, name, rows_name, at, steps, progress
            )
            if part == "heldout":
                entry.update(scored)
            else:
                entry["unlike"] = scored
        entry["seconds"] = round(time.time() - started, 1)
        result[name] = entry
    write_eval(run, result)
    progress(1.0, "Evaluation saved")
    return result


def _score_part(loaded, config, scorer, loss_set, format_set, use_adapter, name, rows_name, at, steps, progress):
    """One model on one set of rows: its loss, and its greedy replies' format checks."""
    from ..data import prompt_messages, reference_answer
    from ..run_model import generate_many, heldout_loss

    entry = {"heldout": heldout_loss(loaded, loss_set, use_adapter, config.answers_only)}
    prompts = [prompt_messages(r) for r in format_set]
    references = [reference_answer(r) for r in format_set]

    def replied(done: int, total: int) -> None:
        progress(
            0.02 + 0.96 * (at + 0.8 * done / max(total, 1) / steps),
            f"{name} model: {done}/{total} replies to {rows_name}",
        )

    replied(0, len(prompts))
    answers = generate_many(loaded, prompts, use_adapter, EVAL_MAX_NEW_TOKENS, progress=replied) if prompts else []
    replies = [a["text"] for a in answers]
    if scorer["kind"] != "none" and replies:
        entry["format"] = score_replies(replies, references, scorer)
        entry["format"]["ended_turn"] = sum(a["ended_turn"] for a in answers) / len(answers)
    entry["examples"] = [{"prompt": p[-1]["content"], "reply": r} for p, r in zip(prompts[:5], replies[:5])]
    return entry


METRIC_LABELS = {
    "loss": "held-out loss (answers)",
    "perplexity": "held-out perplexity",
    "valid_json": "valid JSON",
    "schema_valid": "schema-valid JSON",
    "field_accuracy": "field accuracy",
    "all_fields_exact": "all fields exact",
    "ended_turn": "ended its turn",
    "regex_match": "matches the pattern",
    "exact_match": "exact match",
}
LOWER_IS_BETTER = {"loss", "perplexity"}


def unlike_note(result: dict) -> str:
    """What an evaluation with rows unlike the training rows says beside its table ('' without them): how many,
    and why they are there."""
    unlike = result["tuned"].get("unlike") if result.get("unlike") else None
    if not unlike:
        return ""
    return (
        f"beside them, {unlike.get('format', {}).get('count', 0)} {result['unlike']}: a held-out split from the same "
        "source as the training rows overstates what a user will see, and these rows are closer to it"
    )


def _compare(key: str, b: float, t: float) -> str:
    better = (t < b) if key.split(".")[-1] in LOWER_IS_BETTER else (t > b)
    return "tuned" if better else ("same" if t == b else "base")


def _metric_rows(base: dict, tuned: dict) -> list[tuple[str, str, float, float]]:
    """(key, label, base value, tuned value) for each metric both entries have, the fields' shares last."""
    rows = []
    for section in ("heldout", "format"):
        b_part, t_part = base.get(section, {}), tuned.get(section, {})
        for key, label in METRIC_LABELS.items():
            if key in b_part and key in t_part:
                rows.append((f"{section}.{key}", label, b_part[key], t_part[key]))
    base_fields = base.get("format", {}).get("fields", {})
    for key, t in tuned.get("format", {}).get("fields", {}).items():
        rows.append((f"field.{key}", f"field '{key}' right", base_fields.get(key, 0.0), t))
    return rows


def _shown(key: str, value: float) -> str:
    if key.startswith("heldout."):
        return f"{value:.3f}" if value < 1000 else f"{value:.3g}"
    return f"{value:.0%}"


def summary_headers(result: dict) -> list[str]:
    """The columns of summary_rows: base and tuned on the held-out rows, and on the rows unlike the training rows
    when the set has them."""
    if result.get("unlike") and "unlike" in result.get("tuned", {}):
        label = result.get("unlike_label", "hand-written")
        return ["metric", "base · held-out", "tuned · held-out", f"base · {label}", f"tuned · {label}", "better"]
    return ["metric", "base model", "tuned model", "better"]


def summary_rows(result: dict) -> list[list[str]]:
    """[metric, base, tuned, better] rows for a table; with rows unlike the training rows, [metric, base, tuned,
    base there, tuned there, better (held-out / there)] side by side."""
    held = _metric_rows(result["base"], result["tuned"])
    unlike_base, unlike_tuned = result["base"].get("unlike"), result["tuned"].get("unlike")
    if not (result.get("unlike") and unlike_base and unlike_tuned):
        return [[label, _shown(k, b), _shown(k, t), _compare(k, b, t)] for k, label, b, t in held]
    there = {k: (b, t) for k, _, b, t in _metric_rows(unlike_base, unlike_tuned)}
    rows = []
    for k, label, b, t in held:
        if k in there:
            ub, ut = there[k]
            rows.append([label, _shown(k, b), _shown(k, t), _shown(k, ub), _shown(k, ut),
                         f"{_compare(k, b, t)} / {_compare(k, ub, ut)}"])  # fmt: skip
        else:
            rows.append([label, _shown(k, b), _shown(k, t), "", "", _compare(k, b, t)])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_space.judging.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument(
        "--count", type=int, default=DEFAULT_FORMAT_PROMPTS, help="held-out prompts answered by each model"
    )
    parser.add_argument("--loss_rows", type=int, default=DEFAULT_LOSS_ROWS, help="held-out rows for loss/perplexity")
    parser.add_argument(
        "--scorer", default="auto", choices=SCORERS, help="format check (auto: a JSON schema when answers are JSON)"
    )
    parser.add_argument("--pattern", default="", help="the regular expression for --scorer regex")
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="also compare the tuned model with prompting the base model (zero-shot, instructions, few-shot)",
    )
    parser.add_argument("--shots", type=int, default=3, help="training examples in the few-shot baseline (default 3)")
    parser.add_argument(
        "--instructions", default=None, help="system prompt of the instructions baseline (default: from the data)"
    )
    args = parser.parse_args(argv)
    try:
        result = evaluate_run(args.run_dir, args.count, args.scorer, args.pattern, args.loss_rows)
        headers = summary_headers(result)
        widths = [28] + [max(10, len(h)) for h in headers[1:-1]]
        print(
            " ".join(f"{h:>{w}s}" if i else f"{h:{w}s}" for i, (h, w) in enumerate(zip(headers, widths))) + "  better"
        )
        for row in summary_rows(result):
            cells = row[:-1]
            print(
                " ".join(f"{c:>{w}s}" if i else f"{c:{w}s}" for i, (c, w) in enumerate(zip(cells, widths)))
                + f"  {row[-1]}"
            )
        if args.baselines:
            from .baselines import compare_with_prompting, table_rows

            compared = compare_with_prompting(
                args.run_dir, args.count, args.shots, args.instructions, args.scorer, args.pattern
            )
            headers, rows = table_rows(compared)
            print()
            print(" | ".join(headers))
            for row in rows:
                print(" | ".join(row))
            print(compared["verdict"])
            for item, finding in compared["checklist"]:
                print(f"- {item}: {finding}")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"saved {run_path(args.run_dir) / EVAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
