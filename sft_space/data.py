"""Datasets: where rows come from, what shape they have, and what TRL is given.

Owns loading a dataset source (a bundled demo set `demo:NAME`, or a local
.jsonl/.json file of chat `messages`), detecting its format, splitting off a
validation set, converting rows to TRL's formats, and the small previews the UI
shows. Reading is plain Python, so the UI can preview without importing
`datasets` or torch. It knows nothing about models, training or Gradio.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from .bundled import DEMO_DATASETS, demo_split_path

DEFAULT_VALIDATION_SHARE = 0.1  # the usual hold-out when a dataset has no validation split of its own
ROLES = ("system", "user", "assistant")


@dataclass
class DatasetSplits:
    name: str
    train: list[dict]
    validation: list[dict]
    format: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.name}: {len(self.train)} train rows, {len(self.validation)} validation rows ({self.format})"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def demo_choices() -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown of the bundled demo sets."""
    return [(f"demo:{name} - {about}", f"demo:{name}") for name, about in DEMO_DATASETS.items()]


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a .jsonl file, or of a .json file holding a list; a bad line is named by its number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Dataset file {path} does not exist: check the path, or pick a demo set such as demo:json-extract.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name} is not valid JSON (line {error.lineno}: {error.msg}).") from None
        if not isinstance(rows, list):
            raise ValueError(f"{path.name} must hold a JSON list of rows, one object per example.")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name} line {number} is not valid JSON ({error.msg}): fix or remove that line.") from None
    return rows


def detect_format(rows: list[dict]) -> str:
    """'messages' (chat), 'prompt-completion' or 'text', from the first row's keys."""
    if not rows:
        raise ValueError("The dataset has no rows: add examples, or pick a demo set such as demo:json-extract.")
    first = rows[0]
    if not isinstance(first, dict):
        raise ValueError("Each row must be a JSON object, e.g. {\"messages\": [{\"role\": \"user\", \"content\": \"...\"}, ...]}.")
    if "messages" in first:
        return "messages"
    if "prompt" in first and "completion" in first:
        return "prompt-completion"
    if "text" in first:
        return "text"
    raise ValueError(
        f"Unrecognised dataset columns {sorted(first)}: rows need 'messages' (a list of role/content turns), "
        "'prompt' and 'completion', or 'text'."
    )


def check_messages(rows: list[dict]) -> None:
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"Row {number}: 'messages' must be a non-empty list of {{role, content}} turns.")
        for turn in messages:
            if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
                raise ValueError(f"Row {number}: every turn needs a role ({', '.join(ROLES)}) and a text content, got {turn!r}.")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"Row {number}: the last turn must be the assistant's answer (it is what the model learns).")


def load_dataset_source(source: str, validation_share: float = DEFAULT_VALIDATION_SHARE, seed: int = 42) -> DatasetSplits:
    """Load `demo:NAME` (its own train/test splits) or a local .jsonl/.json file (a seeded hold-out)."""
    source = source.strip()
    if source.startswith("demo:"):
        name = source.split(":", 1)[1]
        train = read_jsonl(demo_split_path(name, "train"))
        validation = read_jsonl(demo_split_path(name, "test"))
        notes = ["validation = the set's own test split"]
    else:
        path = Path(source).expanduser()
        if path.suffix not in (".jsonl", ".json"):
            raise ValueError(f"{source!r} is not a demo set or a .jsonl/.json file: use demo:json-extract, demo:pirate-chat or a path to a .jsonl file.")
        rows = read_jsonl(path)
        kept = [row for row in rows if isinstance(row, dict) and any(str(v).strip() for v in row.values())]
        if len(kept) < 2:
            raise ValueError(f"{path.name} has {len(kept)} usable rows; at least 2 are needed (one to train, one to validate).")
        shuffled = kept[:]
        random.Random(seed).shuffle(shuffled)
        held = max(1, round(len(shuffled) * validation_share))
        train, validation = shuffled[held:], shuffled[:held]
        name = path.name
        notes = [f"validation = a seeded {validation_share:.0%} hold-out"]
        if len(kept) < len(rows):
            notes.append(f"{len(rows) - len(kept)} empty rows dropped")
    kind = detect_format(train)
    if kind == "messages":
        check_messages(train)
        check_messages(validation)
    return DatasetSplits(name=source, train=train, validation=validation, format=kind, notes=notes)


def to_trl_rows(rows: list[dict], answers_only: bool) -> list[dict]:
    """Rows in the TRL format that matches the loss choice.

    With answers_only, a conversation becomes conversational prompt/completion
    (every turn before the last answer is the prompt), so TRL's completion-only
    loss trains the final answer and its end-of-turn token, for any chat
    template, with or without generation markers.
    """
    if not rows or "messages" not in rows[0]:
        return rows
    if not answers_only:
        return [{"messages": row["messages"]} for row in rows]
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def prompt_messages(row: dict) -> list[dict]:
    """The conversation up to (not including) the final answer: what a model is asked."""
    if "messages" in row:
        return row["messages"][:-1]
    if "prompt" in row:
        prompt = row["prompt"]
        return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    raise ValueError("This row has no prompt to ask a model.")


def reference_answer(row: dict) -> str:
    if "messages" in row:
        return row["messages"][-1]["content"]
    completion = row.get("completion", "")
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def preview_table(rows: list[dict], count: int = 5) -> list[list[str]]:
    """[system, user, assistant, turns] for the first rows, for a small table."""
    table = []
    for row in rows[:count]:
        messages = row.get("messages") or [
            {"role": "user", "content": str(row.get("prompt", row.get("text", "")))},
            {"role": "assistant", "content": str(row.get("completion", ""))},
        ]
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        table.append([system, user, messages[-1]["content"], str(sum(m["role"] == "user" for m in messages))])
    return table


PREVIEW_HEADERS = ["system", "first user message", "final answer", "user turns"]
