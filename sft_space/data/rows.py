"""What TRL is given: a run's normalised rows in the shape that matches its loss choice.

Owns whether a chat template lets every answer carry the loss (generation markers), the conversion of
conversations to TRL's rows (conversational prompt/completion when only the last answer is trained, else whole
conversations), trainer_rows (the one path from a RunConfig to the train and validation rows TRL trains and
evaluates on, used by training and export alike), and the prompt / reference answer of a row for evaluation.
It reads only a tokenizer's chat template; it knows nothing about where rows come from beyond calling
`sources.load_for_run`, nor about token ids, models, TRL's trainer or Gradio.
"""

from __future__ import annotations

import re

from .sources import DatasetSplits, load_for_run

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def trains_every_answer(tokenizer) -> bool:
    """Whether the chat template marks assistant turns ({% generation %}), so every answer of a multi-turn
    conversation can carry the loss (TRL's assistant_only_loss); without markers only the last answer can."""
    return bool(GENERATION_MARKER.search(tokenizer.chat_template or ""))


def to_trl_rows(rows: list[dict], answers_only: bool, every_answer: bool = False) -> list[dict]:
    """Rows in the TRL format that matches the loss choice.

    With answers_only, a conversation becomes conversational prompt/completion
    (every turn before the last answer is the prompt), so TRL's completion-only
    loss trains the final answer and its end-of-turn token, for any chat
    template, with or without generation markers. With every_answer (a template
    with generation markers), conversations stay whole and TRL's
    assistant_only_loss trains every assistant turn.
    """
    if not rows or "messages" not in rows[0]:
        return rows
    if not answers_only or every_answer:
        return [{"messages": row["messages"]} for row in rows]
    return [{"prompt": row["messages"][:-1], "completion": row["messages"][-1:]} for row in rows]


def trainer_rows(config, tokenizer, splits: DatasetSplits | None = None) -> tuple[list[dict], list[dict]]:
    """(train, validation) rows exactly as training gives them to TRL's SFTTrainer.

    `splits` is the run's data when the caller has read it already (at the commit the run trained on), else
    load_for_run(config). Plain text trains on every token, so answers_only applies to conversations only;
    every assistant turn carries the loss when the tokenizer's chat template marks them. The validation rows
    are capped at config.eval_max_rows (0 = all), as the trainer's evaluation dataset is."""
    splits = splits if splits is not None else load_for_run(config)
    answers_only = config.answers_only and splits.format != "text"
    every_answer = answers_only and trains_every_answer(tokenizer)
    validation = splits.validation[: config.eval_max_rows] if config.eval_max_rows else splits.validation
    return (
        to_trl_rows(splits.train, answers_only, every_answer),
        to_trl_rows(validation, answers_only, every_answer),
    )


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
