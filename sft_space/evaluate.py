"""Held-out checks of a run's output format, base model vs tuned model.

Owns the format scorers (valid JSON, JSON matching a schema, field-exact match)
and a base-vs-tuned comparison on held-out prompts, written to RUN_DIR/eval.json.
The base model's replies come from the same loaded model with the adapter
switched off, so only one copy is in memory. No Gradio here.

    python -m sft_space.evaluate RUN_DIR [--count 20]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from .runs import read_config, run_path, write_json_atomic

EVAL_MAX_NEW_TOKENS = 96  # a json-extract answer is about 50 tokens; room for a wrong, longer one


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


def _type_ok(value, kinds) -> bool:
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }
    return any(checks[k](value) for k in kinds)


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


def score_json_replies(replies: list[str], references: list[str], schema: dict) -> dict:
    """Share of replies that are valid JSON, schema-valid, and equal to the reference on every field."""
    valid = schema_ok = exact = 0
    fields_right = fields_total = 0
    failures = []
    for reply, reference in zip(replies, references):
        value = parse_json_object(reply)
        expected = json.loads(reference)
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


def compare_base_and_tuned(run: str | Path, count: int = 20) -> dict:
    """Greedy replies of base and tuned model to `count` held-out prompts, scored for the JSON schema."""
    from .chat import load_chat_model, reply
    from .data import load_dataset_source, prompt_messages, reference_answer
    from .demo_data.make_demo_data import JSON_EXTRACT_SCHEMA

    config = read_config(run)
    if config.dataset != "demo:json-extract":
        raise ValueError("This check scores the json-extract schema; run it on a demo:json-extract run.")
    rows = load_dataset_source(config.dataset, seed=config.seed).validation[-count:]
    loaded = load_chat_model(run)
    prompts = [prompt_messages(row) for row in rows]
    references = [reference_answer(row) for row in rows]
    greedy = dict(do_sample=False, max_new_tokens=EVAL_MAX_NEW_TOKENS, repetition_penalty=1.0)
    result: dict = {"prompts": count, "schema": "json-extract"}
    for name in ("base", "tuned"):
        started = time.time()
        if name == "base":
            with loaded.model.disable_adapter():
                replies = [reply(loaded, p, **greedy) for p in prompts]
        else:
            replies = [reply(loaded, p, **greedy) for p in prompts]
        result[name] = score_json_replies(replies, references, JSON_EXTRACT_SCHEMA)
        result[name]["seconds"] = round(time.time() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_space.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--count", type=int, default=20, help="held-out prompts to score (default 20)")
    args = parser.parse_args(argv)
    try:
        result = compare_base_and_tuned(args.run_dir, args.count)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json_atomic(run_path(args.run_dir) / "eval.json", result)
    for name in ("base", "tuned"):
        r = result[name]
        print(f"{name:5s}: valid JSON {r['valid_json']:.0%}, schema-valid {r['schema_valid']:.0%}, "
              f"all fields exact {r['all_fields_exact']:.0%}, field accuracy {r['field_accuracy']:.0%} ({r['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
