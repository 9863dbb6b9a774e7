"""Greedy and batched decoding of a run's model: a conversation as model input (the tokenizer's chat template),
left-padded batches (probes during training, Evaluate), many rows in token-bounded batches, one reply with its
cost, and one conversation at a time with its token ids (the GGUF export's comparison); the probe conversations
of a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..rundir import read_probes
from .loaded import LoadedChatModel
from .merging import answering_as
from .thread import on_generation_thread


def chat_inputs(tokenizer, conversation, context: int | None, **kwargs) -> dict:
    """The conversation (or a list of them) through the chat template as model input, refused when the prompt is
    longer than the model's context: a template is a stranger's code, and one that turns a word into hundreds of
    thousands of tokens would hold the generation thread for everyone (the render itself is bounded elsewhere)."""
    encoded = tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, return_tensors="pt", return_dict=True, **kwargs
    )
    length = encoded["input_ids"].shape[-1]
    cap = max(context or 0, PROMPT_TOKENS_FLOOR)
    if context and length > cap:
        raise ValueError(
            f"This conversation is {length:,} tokens after the model's chat template: more than the {cap:,} a prompt "
            "may have here (the model's context). Start a new conversation, or use a model whose template does not "
            "grow it."
        )
    return encoded


PROMPT_TOKENS_FLOOR = 4_096  # a prompt may be this long whatever the model's context says (small test models say 512)


def context_of(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None


def build_inputs(tokenizer, messages: list[dict], device, context: int | None = None) -> dict:
    encoded = chat_inputs(tokenizer, messages, context)
    return {k: v.to(device) for k, v in encoded.items()}


def generate_batch(
    model, tokenizer, conversations: list[list[dict]], max_new_tokens: int, with_ends: bool = False
) -> list[str] | tuple[list[str], list[bool]]:
    """Greedy replies to several conversations in one left-padded batch (probes during training).

    with_ends: also return, per reply, whether it ended at an end-of-turn token (not at max_new_tokens).
    """
    import torch

    from ..models import end_of_turn_ids

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    try:
        encoded = chat_inputs(tokenizer, conversations, context_of(model), padding=True)
    finally:
        tokenizer.padding_side = side
    encoded = {k: v.to(model.device) for k, v in encoded.items()}
    with torch.inference_mode():
        output = model.generate(
            **encoded,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=end_of_turn_ids(model, tokenizer),
        )
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    texts = [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    if not with_ends:
        return texts
    ends = set(end_of_turn_ids(model, tokenizer))
    return texts, [any(int(t) in ends for t in row) for row in new_tokens]


def generate_many(
    loaded: LoadedChatModel,
    conversations: list[list[dict]],
    use_adapter: bool = True,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> list[dict]:
    """Greedy replies to many conversations, `batch_size` at a time (prompts of similar length together, so
    little padding), in the given order: [{"text", "ended_turn"}]. Evaluations of any number of rows use it;
    progress(done, total) after each batch. Each batch is its own turn on the generation thread, and a batch holds
    at most BATCH_PROMPT_TOKENS of padded prompt (long prompts go one at a time), so another visitor's chat reply
    waits for one batch, never for a whole evaluation."""
    # on the generation thread, as every use of the tokenizer: a padded batch there and an unpadded call elsewhere
    # share the fast tokenizer's padding setting (a batch once came out unpadded: "Unable to create tensor")
    lengths = on_generation_thread(lambda: [prompt_tokens(loaded.tokenizer, c) for c in conversations])
    order = sorted(range(len(conversations)), key=lambda i: lengths[i])
    results: list[dict | None] = [None] * len(conversations)
    done = 0
    for chunk in token_batches(order, lengths, max(1, batch_size)):
        texts, ends = on_generation_thread(_generate_chunk, loaded, [conversations[i] for i in chunk], use_adapter,
                                           max_new_tokens)  # fmt: skip
        for i, text, ended in zip(chunk, texts, ends):
            results[i] = {"text": text, "ended_turn": ended}
        done += len(chunk)
        progress(done, len(order))
    return results


BATCH_PROMPT_TOKENS = 4096  # rows x longest prompt of one batch of generate_many


def prompt_tokens(tokenizer, conversation: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=True)["input_ids"])


def token_batches(order: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """`order` (shortest prompt first) cut into batches of at most batch_size rows and BATCH_PROMPT_TOKENS of
    padded prompt."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and lengths[i] * (len(batches[-1]) + 1) <= BATCH_PROMPT_TOKENS:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _generate_chunk(loaded, conversations, use_adapter, max_new_tokens):
    with answering_as(loaded, use_adapter):
        return generate_batch(loaded.model, loaded.tokenizer, conversations, max_new_tokens, with_ends=True)


def generate_once(
    loaded: LoadedChatModel, messages: list[dict], use_adapter: bool = True, max_new_tokens: int = 96
) -> dict:
    """One greedy reply with its cost: prompt tokens, seconds, and whether it ended at the end-of-turn token."""
    return on_generation_thread(_generate_once, loaded, messages, use_adapter, max_new_tokens)


def _generate_once(loaded: LoadedChatModel, messages: list[dict], use_adapter: bool, max_new_tokens: int) -> dict:
    import time

    import torch

    from ..models import end_of_turn_ids

    inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device, context_of(loaded.model))
    eos = end_of_turn_ids(loaded.model, loaded.tokenizer)
    started = time.time()
    with answering_as(loaded, use_adapter), torch.inference_mode():
        output = loaded.model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=loaded.tokenizer.pad_token_id,
            eos_token_id=eos,
        )
    new_tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    return {
        "text": loaded.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "new_tokens": len(new_tokens),
        "ended_turn": any(token in eos for token in new_tokens),
        "seconds": time.time() - started,
    }


def greedy_each(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int):
    """Greedy replies, one conversation at a time (no padding, so two models compare token for token):
    (prompt ids, reply ids, reply texts). The model as given: the caller holds it."""
    import torch

    from ..models import end_of_turn_ids

    prompts, replies, texts = [], [], []
    ends = end_of_turn_ids(model, tokenizer)
    for conversation in conversations:
        encoded = chat_inputs(tokenizer, conversation, context_of(model))
        with torch.inference_mode():
            output = model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=ends,
            )
        reply = output[0, encoded["input_ids"].shape[1] :].tolist()
        prompts.append(encoded["input_ids"][0].tolist())
        replies.append(reply)
        texts.append(tokenizer.decode(reply, skip_special_tokens=True).strip())
    return prompts, replies, texts


def probe_conversations(run_dir: Path, config) -> list[list[dict]]:
    """The prompts a run was probed with during training (else its pinned probes, else a greeting), as
    conversations: what a merged or exported model is checked on against base + adapter."""
    probes = read_probes(run_dir)
    prompts = probes[-1]["prompts"] if probes else config.probe_list() or ["Hello!"]
    return [[{"role": "user", "content": p}] for p in prompts]
