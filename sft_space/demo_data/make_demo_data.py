"""Build the bundled demo datasets from fixed vocabularies and a fixed seed.

Run `python -m sft_space.demo_data.make_demo_data` to rewrite the jsonl files in
this folder. The output is deterministic: the same script always writes the same
bytes, so the files in the repository can be checked against it (a test does).

Two sets:
- json-extract: customer requests answered with exactly one JSON object of a
  fixed schema (json_extract.py writes them, json-extract-rules.md says what each
  field means). Open vocabularies, other people and other numbers beside the
  answer, notes, emails, chat lines and forms: a model has to learn the task
  (copy the sender's name, normalise "7.30pm" to "19:30", add up a party), not a
  list of words. Its hand-written check split (json-extract.check.jsonl) is not
  written by this script: each request was written on its own, by hand.
- pirate-chat: hand-written conversations (pirate_chat.txt) in the voice of a
  cheerful ship's cook; some multi-turn, some with a system prompt.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .json_extract import request_row

HERE = Path(__file__).resolve().parent
SEED = 20251125  # fixed: the files in the repo are exactly what this script writes
JSON_TRAIN_ROWS = 640
JSON_TEST_ROWS = 120
PIRATE_TEST_ROWS = 15

# The one schema every json-extract answer follows, keys in this order.
JSON_EXTRACT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["intent", "name", "date", "time", "quantity", "item"],
    "properties": {
        "intent": {"enum": ["book_table", "order_product", "cancel_order", "schedule_delivery", "report_issue"]},
        "name": {"type": ["string", "null"]},
        "date": {"type": ["string", "null"], "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "time": {"type": ["string", "null"], "pattern": r"^\d{2}:\d{2}$"},
        "quantity": {"type": ["integer", "null"]},
        "item": {"type": ["string", "null"]},
    },
}


def json_extract_rows(count: int, rng: random.Random, seen: set[str]) -> list[dict]:
    rows = []
    while len(rows) < count:
        request, reply = request_row(rng)
        if request in seen:
            continue
        seen.add(request)
        rows.append({"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": reply}]})
    return rows


def parse_pirate_source(text: str) -> list[dict]:
    """Parse pirate_chat.txt: conversations separated by '---', one 'role: text' per line."""
    conversations = []
    for block in text.split("\n---\n"):
        messages = []
        for line in block.strip().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            role, _, content = line.partition(":")
            role = role.strip()
            if role not in ("system", "user", "assistant"):
                raise ValueError(f"pirate_chat.txt: unknown role {role!r} in line {line!r}")
            messages.append({"role": role, "content": content.strip()})
        if messages:
            conversations.append({"messages": messages})
    return conversations


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build() -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    files = {
        "json-extract.train.jsonl": json_extract_rows(JSON_TRAIN_ROWS, rng, seen),
        "json-extract.test.jsonl": json_extract_rows(JSON_TEST_ROWS, rng, seen),
    }
    pirate = parse_pirate_source((HERE / "pirate_chat.txt").read_text(encoding="utf-8"))
    random.Random(SEED).shuffle(pirate)
    files["pirate-chat.test.jsonl"] = pirate[:PIRATE_TEST_ROWS]
    files["pirate-chat.train.jsonl"] = pirate[PIRATE_TEST_ROWS:]
    return files


def main() -> None:
    for name, rows in build().items():
        write_jsonl(HERE / name, rows)
        print(f"wrote {name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
