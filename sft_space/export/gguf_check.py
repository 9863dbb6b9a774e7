"""The check of a written GGUF file: loaded back through transformers' GGUF loader, it answers the probe prompts
as base + adapter did (prompt tokens, reply tokens and texts, greedy) and its held-out loss is measured on the
run's validation rows, as the Evaluate tab counts it (run_model's decoding and answer loss).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..run_model import answer_loss, greedy_each
from ..rundir import read_status

MAX_NEW_TOKENS = 48  # the probe replies compared, as the merged-model check of a push
LOSS_ROWS = 20  # held-out rows whose loss the loaded-back file is measured on


def mean_loss(model, tokenizer, rows: list[dict], answers_only: bool) -> float | None:
    """Mean token loss on held-out conversations, counted as the Evaluate tab counts it; None without rows."""
    total, counted = answer_loss(model, tokenizer, rows, answers_only)
    return total / counted if counted else None


def _leading_agreement(a: list[int], b: list[int]) -> int:
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same


def verify_file(path: Path, reference: dict, conversations, rows, answers_only: bool) -> dict:
    """Load the file back with transformers' GGUF loader and answer as base + adapter did."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    load_seconds = time.time() - started
    prompts, replies, texts = greedy_each(model, tokenizer, conversations, MAX_NEW_TOKENS)
    loss = mean_loss(model, tokenizer, rows, answers_only)
    del model
    pairs = list(zip(reference["replies"], replies))
    examples = [
        {"prompt": c[-1]["content"], "tuned": t, "gguf": g, "same": r == o}
        for c, t, g, (r, o) in zip(conversations, reference["texts"], texts, pairs)
    ]
    result = {
        "load_seconds": round(load_seconds, 2),
        "prompts": len(pairs),
        "prompt_tokens_identical": sum(a == b for a, b in zip(reference["prompts"], prompts)),
        "replies_identical": sum(r == o for r, o in pairs),
        "first_tokens_agreeing": [_leading_agreement(r, o) for r, o in pairs],
        "reply_lengths": [len(r) for r, _ in pairs],
        "examples": examples,
    }
    if loss is not None and reference.get("loss") is not None:
        result.update(heldout_loss=loss, loss_difference=loss - reference["loss"], loss_rows=len(rows))
    return result


def _heldout_rows(run_dir: Path, config) -> tuple[list[dict], list[dict], str | None]:
    """(loss rows, training rows) of the run's data as it trained on them; a note when they cannot be read."""
    from ..data import load_for_run

    try:
        splits = load_for_run(config, revision=read_status(run_dir).get("data_revision"))
    except Exception as error:  # the loss is then not measured; the replies still are
        return [], [], f"held-out loss not measured: the data could not be read ({type(error).__name__})"
    if splits.format != "messages":
        return [], [], "held-out loss not measured: the data is not conversational"
    return list(splits.validation[:LOSS_ROWS]), list(splits.train), None
