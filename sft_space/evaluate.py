"""Judge a run on held-out data: base model vs tuned model, loss and output format.

Owns the format scorers (valid JSON, JSON matching a schema inferred from the
training answers, a regular expression, exact match), held-out loss and
perplexity, and the base-vs-tuned comparison written to RUN_DIR/eval.json. Base
replies come from the same loaded model with the LoRA adapter switched off, so
only one copy is in memory. No Gradio here.

    python -m sft_space.evaluate RUN_DIR [--count 20] [--scorer auto|json-schema|valid-json|regex|exact|none]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from .rundir import EVAL, read_config, run_path, write_eval

EVAL_MAX_NEW_TOKENS = 96  # a json-extract answer is about 50 tokens; room for a wrong, longer one
DEFAULT_FORMAT_PROMPTS = 20  # held-out prompts answered greedily by each model
DEFAULT_LOSS_ROWS = 60  # held-out rows for loss / perplexity; enough for a stable mean on CPU
JSON_SHARE_FOR_SCHEMA = 0.9  # answers that must be JSON objects before a schema check is chosen
ENUM_MAX_VALUES = 12  # a string field with at most this many distinct values (each seen 3+ times) is an enum
SCORERS = ["auto", "json-schema", "valid-json", "regex", "exact", "none"]

Progress = Callable[[float, str], None]


# ------------------------------------------------------------------ JSON
class DuplicateKeys(dict):
    """A parsed JSON object that repeated a key (json.loads would silently keep the last one)."""


def _keep_duplicates(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    return (DuplicateKeys if len(set(keys)) < len(keys) else dict)(pairs)


def parse_json_object(text: str) -> dict | None:
    try:
        value = json.loads(text.strip(), object_pairs_hook=_keep_duplicates)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# Patterns a string field keeps in every training answer are part of the format the model must learn.
KNOWN_PATTERNS = {
    "date (YYYY-MM-DD)": r"^\d{4}-\d{2}-\d{2}$",
    "time (HH:MM)": r"^\d{2}:\d{2}$",
}


def infer_json_schema(answers: list[str]) -> dict | None:
    """A flat JSON schema that every training answer satisfies: keys, types, enums, date/time patterns."""
    objects = [parse_json_object(a) for a in answers]
    objects = [o for o in objects if o is not None]
    if not answers or len(objects) < JSON_SHARE_FOR_SCHEMA * len(answers):
        return None
    keys = list(dict.fromkeys(k for o in objects for k in o))
    required = [k for k in keys if all(k in o for o in objects)]
    properties = {}
    for key in keys:
        values = [o[key] for o in objects if key in o]
        types = sorted({_json_type(v) for v in values})
        rule: dict = {"type": types[0] if len(types) == 1 else types}
        strings = [v for v in values if isinstance(v, str)]
        counts = Counter(strings)
        if strings and len(counts) <= ENUM_MAX_VALUES and min(counts.values()) >= 3 and types == ["string"]:
            rule = {"enum": sorted(counts)}
        elif strings:
            for pattern in KNOWN_PATTERNS.values():
                if all(re.match(pattern, v) for v in strings):
                    rule["pattern"] = pattern
        properties[key] = rule
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


def _type_ok(value, kinds) -> bool:
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return _json_type(value) in kinds or ("number" in kinds and _json_type(value) == "integer")


def schema_errors(value: dict | None, schema: dict) -> list[str]:
    """Why `value` breaks a flat JSON schema (type, required, additionalProperties, enum, pattern)."""
    if value is None:
        return ["not a JSON object"]
    errors = [f"missing {key!r}" for key in schema.get("required", []) if key not in value]
    if isinstance(value, DuplicateKeys):
        errors.append("a key appears twice")
    properties = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        errors += [f"unexpected {key!r}" for key in value if key not in properties]
    for key, rule in properties.items():
        if key not in value:
            continue
        item = value[key]
        if "enum" in rule and item not in rule["enum"]:
            errors.append(f"{key!r} not one of {rule['enum']}")
        if "type" in rule and not _type_ok(item, rule["type"]):
            errors.append(f"{key!r} has the wrong type")
        if "pattern" in rule and isinstance(item, str) and not re.match(rule["pattern"], item):
            errors.append(f"{key!r} does not match {rule['pattern']}")
    return errors


# --------------------------------------------------------------- scorers
def choose_scorer(train_answers: list[str], kind: str = "auto", pattern: str = "") -> dict:
    """The adherence check for a dataset: a schema inferred from its answers when they are JSON, else none."""
    if kind not in SCORERS:
        raise ValueError(f"Unknown format check {kind!r}: choose one of {', '.join(SCORERS)}.")
    if kind == "regex":
        if not pattern:
            raise ValueError("The regex check needs a pattern, e.g. ^\\{.*\\}$ for one-line JSON.")
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"The pattern {pattern!r} is not a valid regular expression: {error}.") from None
        return {"kind": "regex", "pattern": pattern}
    if kind in ("auto", "json-schema"):
        schema = infer_json_schema(train_answers)
        if schema:
            return {"kind": "json-schema", "schema": schema}
        if kind == "json-schema":
            raise ValueError(
                "The training answers are not JSON objects, so no schema can be inferred: pick another check."
            )
        return {"kind": "none"}
    return {"kind": kind}


def score_replies(replies: list[str], references: list[str], scorer: dict) -> dict:
    """Shares of replies passing the scorer's checks, and up to 10 failing examples."""
    kind = scorer["kind"]
    if kind == "json-schema":
        return score_json_replies(replies, references, scorer["schema"])
    checks: dict[str, list[bool]] = {}
    if kind == "valid-json":
        checks["valid_json"] = [parse_json_object(r) is not None for r in replies]
    if kind == "regex":
        checks["regex_match"] = [re.search(scorer["pattern"], r, re.DOTALL) is not None for r in replies]
    if kind in ("valid-json", "exact", "regex"):
        checks["exact_match"] = [r.strip() == ref.strip() for r, ref in zip(replies, references)]
    n = max(len(replies), 1)
    result: dict = {"count": len(replies), **{name: sum(flags) / n for name, flags in checks.items()}}
    first_check = next(iter(checks.values()), [True] * len(replies))
    result["failures"] = [
        {"reply": r, "expected": ref, "problems": []} for r, ref, ok in zip(replies, references, first_check) if not ok
    ][:10]
    return result


def score_json_replies(replies: list[str], references: list[str], schema: dict) -> dict:
    """Share of replies that are valid JSON, schema-valid, and equal to the reference on every field."""
    valid = schema_ok = exact = 0
    fields_right = fields_total = 0
    failures = []
    for reply, reference in zip(replies, references):
        value = parse_json_object(reply)
        expected = parse_json_object(reference) or {}
        valid += value is not None
        problems = schema_errors(value, schema)
        schema_ok += not problems
        exact += value == expected
        fields_total += len(expected)
        fields_right += sum(1 for k, v in expected.items() if value is not None and k in value and value[k] == v)
        if problems or value != expected:
            failures.append({"reply": reply, "expected": reference, "problems": problems})
    n = max(len(replies), 1)
    return {
        "count": len(replies),
        "valid_json": valid / n,
        "schema_valid": schema_ok / n,
        "all_fields_exact": exact / n,
        "field_accuracy": fields_right / max(fields_total, 1),
        "failures": failures[:10],
    }


# ------------------------------------------------------------------ loss
def heldout_loss(loaded, rows: list[dict], use_adapter: bool, answers_only: bool = True) -> dict:
    """Mean token loss (and perplexity) on held-out conversations: answers only, as in training."""
    import torch

    from .data import prompt_messages

    tokenizer, model = loaded.tokenizer, loaded.model
    total, tokens = 0.0, 0
    adapter = contextlib.nullcontext() if use_adapter else model.disable_adapter()
    with adapter, torch.inference_mode():
        for row in rows:
            full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            labels = list(full)
            if answers_only:
                prompt = tokenizer.apply_chat_template(
                    prompt_messages(row), tokenize=True, add_generation_prompt=True, return_dict=True
                )["input_ids"]
                labels[: len(prompt)] = [-100] * len(prompt)
            ids = torch.tensor([full], device=model.device)
            target = torch.tensor([labels], device=model.device)
            counted = int((target[:, 1:] != -100).sum())
            if counted == 0:
                continue
            loss = model(input_ids=ids, labels=target).loss
            total += float(loss) * counted
            tokens += counted
    mean = total / max(tokens, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50)), "tokens": tokens, "rows": len(rows)}


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
    from .chat import generate_once, load_chat_model
    from .data import load_for_run, prompt_messages, reference_answer

    config = read_config(run)
    splits = load_for_run(config)
    if splits.format != "messages":
        raise ValueError("Evaluation needs a conversational dataset (a 'messages' column).")
    scorer = choose_scorer([reference_answer(r) for r in splits.train], scorer_kind, pattern)
    progress(0.02, "Loading base model + adapter")
    loaded = load_chat_model(run)
    result: dict = {"run": run_path(run).name, "dataset": config.dataset, "scorer": scorer, "created_at": time.time()}
    loss_set = splits.validation[:loss_rows]
    format_set = splits.validation[-count:] if count else []
    prompts = [prompt_messages(r) for r in format_set]
    references = [reference_answer(r) for r in format_set]
    for index, name in enumerate(("base", "tuned")):
        use_adapter = name == "tuned"
        started = time.time()
        progress(0.05 + 0.45 * index, f"{name} model: held-out loss on {len(loss_set)} rows")
        entry = {"heldout": heldout_loss(loaded, loss_set, use_adapter, config.answers_only)}
        replies = []
        for i, prompt in enumerate(prompts):
            progress(
                0.15 + 0.45 * index + 0.35 * i / max(len(prompts), 1), f"{name} model: reply {i + 1}/{len(prompts)}"
            )
            replies.append(generate_once(loaded, prompt, use_adapter, EVAL_MAX_NEW_TOKENS)["text"])
        if scorer["kind"] != "none" and replies:
            entry["format"] = score_replies(replies, references, scorer)
        entry["examples"] = [{"prompt": p[-1]["content"], "reply": r} for p, r in zip(prompts[:5], replies[:5])]
        entry["seconds"] = round(time.time() - started, 1)
        result[name] = entry
    write_eval(run, result)
    progress(1.0, "Evaluation saved")
    return result


METRIC_LABELS = {
    "loss": "held-out loss (answers)",
    "perplexity": "held-out perplexity",
    "valid_json": "valid JSON",
    "schema_valid": "schema-valid JSON",
    "field_accuracy": "field accuracy",
    "all_fields_exact": "all fields exact",
    "regex_match": "matches the pattern",
    "exact_match": "exact match",
}
LOWER_IS_BETTER = {"loss", "perplexity"}


def summary_rows(result: dict) -> list[list[str]]:
    """[metric, base, tuned, better] rows for a table."""
    rows = []
    for section in ("heldout", "format"):
        base, tuned = result["base"].get(section, {}), result["tuned"].get(section, {})
        for key, label in METRIC_LABELS.items():
            if key in base and key in tuned:
                b, t = base[key], tuned[key]
                as_share = section == "format"
                fmt = (lambda v: f"{v:.0%}") if as_share else (lambda v: f"{v:.3f}" if v < 1000 else f"{v:.3g}")
                better = (t < b) if key in LOWER_IS_BETTER else (t > b)
                rows.append([label, fmt(b), fmt(t), "tuned" if better else ("same" if t == b else "base")])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_space.evaluate", description=__doc__.splitlines()[0])
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
        print(f"{'metric':28s} {'base':>10s} {'tuned':>10s}  better")
        for label, base, tuned, better in summary_rows(result):
            print(f"{label:28s} {base:>10s} {tuned:>10s}  {better}")
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
