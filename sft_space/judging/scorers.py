"""Format checks of replies against reference answers: valid JSON, JSON matching a schema inferred from the
training answers, a regular expression, exact match; and how many new tokens a checked reply may take.

Pure Python on strings: no model, no run directory. Used by evaluate (base vs tuned) and baselines (prompting
vs tuning), which therefore do not need each other.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import regex

from ..host.sandbox import bounded_regex

EVAL_MAX_NEW_TOKENS = 96  # a json-extract answer is about 50 tokens; room for a wrong, longer one
JSON_SHARE_FOR_SCHEMA = 0.9  # answers that must be JSON objects before a schema check is chosen
ENUM_MAX_VALUES = 12  # a string field with at most this many distinct values (each seen 3+ times) is an enum
MAX_PATTERN_CHARACTERS = 500
SCORERS = ["auto", "json-schema", "valid-json", "regex", "exact", "none"]
REGEX_TIMEOUT_SECONDS = 0.5  # per reply: a pattern that backtracks for longer is refused, not waited on


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
        if len(pattern) > MAX_PATTERN_CHARACTERS:
            raise ValueError(f"The pattern has {len(pattern):,} characters; at most {MAX_PATTERN_CHARACTERS} here.")
        bounded_regex(pattern)  # compiled first in a bounded process: ((a{1000}){1000}){1000} needs gigabytes
        try:
            regex.compile(pattern)
        except regex.error as error:
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


def regex_match(pattern: str, text: str) -> bool:
    """Does the pattern match the reply? The match runs with a time limit and releases the interpreter lock
    meanwhile, so a catastrophic pattern such as (a+)+$ stops with a message instead of freezing the app."""
    try:
        return regex.search(pattern, text, regex.DOTALL, timeout=REGEX_TIMEOUT_SECONDS, concurrent=True) is not None
    except TimeoutError:
        raise ValueError(
            f"The pattern {pattern[:80]!r} took longer than {REGEX_TIMEOUT_SECONDS} s on one reply (nested repeats "
            "such as (a+)+ backtrack without end): simplify it."
        ) from None


def score_replies(replies: list[str], references: list[str], scorer: dict) -> dict:
    """Shares of replies passing the scorer's checks, and up to 10 failing examples."""
    kind = scorer["kind"]
    if kind == "json-schema":
        return score_json_replies(replies, references, scorer["schema"])
    checks: dict[str, list[bool]] = {}
    if kind == "valid-json":
        checks["valid_json"] = [parse_json_object(r) is not None for r in replies]
    if kind == "regex":
        checks["regex_match"] = [regex_match(scorer["pattern"], r) for r in replies]
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
    per_field: dict[str, list[int]] = {}  # field -> [right, asked]
    failures = []
    for reply, reference in zip(replies, references):
        value = parse_json_object(reply)
        expected = parse_json_object(reference) or {}
        valid += value is not None
        problems = schema_errors(value, schema)
        schema_ok += not problems
        exact += value == expected
        fields_total += len(expected)
        for key, wanted in expected.items():
            right = value is not None and key in value and value[key] == wanted
            fields_right += right
            tally = per_field.setdefault(key, [0, 0])
            tally[0] += right
            tally[1] += 1
        if problems or value != expected:
            failures.append({"reply": reply, "expected": reference, "problems": problems})
    n = max(len(replies), 1)
    return {
        "count": len(replies),
        "valid_json": valid / n,
        "schema_valid": schema_ok / n,
        "all_fields_exact": exact / n,
        "field_accuracy": fields_right / max(fields_total, 1),
        "fields": {key: right / asked for key, (right, asked) in per_field.items()},
        "failures": failures[:10],
    }
