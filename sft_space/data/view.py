"""What the model sees, for people: the preview table, and each row's tokens with those that carry the loss.

Owns the small table of rows the Data tab shows, token_labels (a row's token ids after the chat template and
which of them are trained, as TRL computes it), the highlighted loss view with what max_length cuts off, and
length statistics (truncation, answers lost to it, padding and packing efficiency). It is given rows and a
tokenizer; it knows nothing about where rows come from, the Hub, or training.
"""

from __future__ import annotations

import random

from .rows import prompt_messages, trains_every_answer

PREVIEW_HEADERS = ["system", "first user message", "final answer", "user turns"]


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
        cells = [system, user, messages[-1]["content"], str(sum(m["role"] == "user" for m in messages))]
        table.append([_shortened(str(cell)) for cell in cells])
    return table


PREVIEW_CELL_CHARACTERS = 2_000  # what a preview cell shows of a long text


def _shortened(text: str) -> str:
    if len(text) <= PREVIEW_CELL_CHARACTERS:
        return text
    return text[:PREVIEW_CELL_CHARACTERS] + f" … ({len(text) - PREVIEW_CELL_CHARACTERS:,} more characters)"


def token_labels(tokenizer, row: dict, answers_only: bool) -> tuple[list[int], list[bool]]:
    """The token ids of one row after the chat template, and which of them carry loss (as TRL computes it)."""
    if "text" in row:
        ids = tokenizer(row["text"])["input_ids"]
        return ids, [True] * len(ids)
    if answers_only and trains_every_answer(tokenizer):
        encoded = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return encoded["input_ids"], [bool(m) for m in encoded["assistant_masks"]]
    full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
    if not answers_only:
        return full, [True] * len(full)
    prompt = tokenizer.apply_chat_template(
        prompt_messages(row), tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    start = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    return full, [i >= start for i in range(len(full))]


def loss_view(tokenizer, row: dict, answers_only: bool, max_length: int) -> list[tuple[str, str | None]]:
    """(text, label) pieces for a highlighted view: 'trained', 'cut off' (past max_length) or None (context)."""
    ids, trained = token_labels(tokenizer, row, answers_only)
    pieces: list[tuple[str, str | None]] = []
    for index, (token, loss) in enumerate(zip(ids, trained)):
        label = "cut off" if index >= max_length else ("trained" if loss else None)
        text = tokenizer.decode([token])
        if pieces and pieces[-1][1] == label:
            pieces[-1] = (pieces[-1][0] + text, label)
        else:
            pieces.append((text, label))
    return pieces


def length_stats(
    tokenizer, rows: list[dict], answers_only: bool, max_length: int, batch_size: int, limit: int = 5000
) -> dict:
    """Token lengths of the rows (a seeded sample of `limit` when there are more), what max_length cuts,
    and how much padding or packing wastes."""
    lengths, cut, lost = [], 0, 0
    sample = random.Random(0).sample(rows, limit) if len(rows) > limit else rows  # seeded: the same view every time
    for row in sample:
        ids, trained = token_labels(tokenizer, row, answers_only)
        lengths.append(len(ids))
        if len(ids) > max_length:
            cut += 1
            if not any(trained[:max_length]):
                lost += 1  # the answer starts after the cut: this row teaches nothing
    kept = [min(n, max_length) for n in lengths]
    n = max(len(lengths), 1)
    padded = sum(max(kept[i : i + batch_size]) * len(kept[i : i + batch_size]) for i in range(0, len(kept), batch_size))
    blocks = -(-sum(kept) // max_length)
    return {
        "rows": len(lengths),
        "total_rows": len(rows),
        "lengths": lengths,
        "max_length": max_length,
        "truncated_share": cut / n,
        "answer_lost_share": lost / n,
        "padding_efficiency": sum(kept) / max(padded, 1),  # real tokens / tokens computed, without packing
        "packing_efficiency": sum(kept) / max(blocks * max_length, 1),  # with packing into max_length blocks
        "longest": max(lengths, default=0),
        "median": sorted(lengths)[len(lengths) // 2] if lengths else 0,
    }
