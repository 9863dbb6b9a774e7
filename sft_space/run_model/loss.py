"""The answer loss of a run's model on held-out conversations: the answers only when the run trained on answers
only, as in training; a few rows per turn on the generation thread.
"""

from __future__ import annotations

import math

from .merging import answering_as
from .thread import on_generation_thread

LOSS_ROWS_PER_TURN = 4  # held-out rows scored per turn on the generation thread (chat replies come between turns)


def heldout_loss(loaded, rows: list[dict], use_adapter: bool, answers_only: bool = True) -> dict:
    """Mean token loss (and perplexity) on held-out conversations: answers only, as in training. A few rows per
    turn on the generation thread, so another visitor's reply never waits for the whole set."""
    total, tokens = 0.0, 0
    for start in range(0, len(rows), LOSS_ROWS_PER_TURN):
        part = rows[start : start + LOSS_ROWS_PER_TURN]
        part_total, part_tokens = on_generation_thread(_heldout_loss, loaded, part, use_adapter, answers_only)
        total, tokens = total + part_total, tokens + part_tokens
    mean = total / max(tokens, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50)), "tokens": tokens, "rows": len(rows)}


def _heldout_loss(loaded, rows: list[dict], use_adapter: bool, answers_only: bool) -> tuple[float, int]:
    with answering_as(loaded, use_adapter):
        return answer_loss(loaded.model, loaded.tokenizer, rows, answers_only)


def answer_loss(model, tokenizer, rows: list[dict], answers_only: bool = True) -> tuple[float, int]:
    """Summed token loss of `model` on held-out conversations and the tokens counted: the answers only when the run
    trained on answers only (the prompt's tokens masked), else every token. The model as given (no lock, no
    adapter switching): the caller holds it."""
    import torch

    from ..data import prompt_messages

    total, tokens = 0.0, 0
    with torch.inference_mode():
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
            total += float(model(input_ids=ids, labels=target).loss) * counted
            tokens += counted
    return total, tokens
