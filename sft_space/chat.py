"""Chat with a tuned model: load base + adapter once, stream replies with the chat template.

Owns the one loaded chat model (cached by run, freed when another run is
chosen), turning a conversation into model input with the tokenizer's own chat
template, and streaming generated text. It knows nothing about Gradio or how
runs are trained; it reads a run's config.json and adapter/ folder.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .config import RunConfig
from .rundir import adapter_dir, read_config, run_path


@dataclass
class LoadedChatModel:
    key: str
    model: Any  # a PeftModel (base + adapter) or a plain base model
    tokenizer: Any
    config: RunConfig
    has_adapter: bool


_cache: dict[str, LoadedChatModel] = {}
_lock = threading.Lock()  # one load at a time; generation itself runs per request


def load_chat_model(run: str | Path) -> LoadedChatModel:
    """Base model + the run's adapter, loaded once and kept until a different run is asked for."""
    run_dir = run_path(run)
    adapter = adapter_dir(run_dir)
    if not (adapter / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(
            f"Run {run_dir.name} has no saved adapter yet: wait for it to finish, or press Stop & save to keep "
            f"what it learned so far."
        )
    key = str(run_dir)
    with _lock:
        if key in _cache:
            return _cache[key]
        _cache.clear()  # one model copy in memory: free the previous run's
        import torch
        from peft import PeftModel

        from .models import fit_model_to_tokenizer, load_model, load_tokenizer, resolve_model

        config = read_config(run_dir)
        base = load_model(resolve_model(config.model))
        tokenizer = load_tokenizer(adapter)  # saved by the run: its chat template and any tokens it added
        fit_model_to_tokenizer(base, tokenizer)
        model = PeftModel.from_pretrained(base, adapter)
        model.eval()
        if torch.cuda.is_available():
            model.to("cuda")
        loaded = LoadedChatModel(key, model, tokenizer, config, True)
        _cache[key] = loaded
        return loaded


def unload() -> None:
    with _lock:
        _cache.clear()


def build_inputs(tokenizer, messages: list[dict], device) -> dict:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return {k: v.to(device) for k, v in encoded.items()}


def _stop_on(event: threading.Event):
    """A StoppingCriteria that ends generation as soon as `event` is set (Stop button, closed page)."""
    import torch
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopOnEvent()


class FairLock:
    """A lock taken in the order it was asked for: visitors waiting for the model are served first come, first
    served (threading.Lock promises no order, so one visitor's stream of requests could keep others waiting)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: collections.deque = collections.deque()

    def __enter__(self) -> None:
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
            while self._waiting[0] is not ticket:
                self._changed.wait()

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._waiting.popleft()
            self._changed.notify_all()


# Generation with the adapter switched off (PEFT disable_adapter) must not overlap a tuned reply on the same model.
_generate_lock = FairLock()


def stream_reply(
    loaded: LoadedChatModel,
    messages: list[dict],
    seed: int | None = None,
    use_adapter: bool = True,
    **generation: Any,
) -> Iterator[str]:
    """Yield the reply so far, growing, as the model generates it (stops at the end-of-turn token).

    use_adapter=False answers as the base model: the same weights with the LoRA adapter switched off,
    so base and tuned replies need one model copy. Closing the generator stops generation.
    """
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    from .models import end_of_turn_ids

    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with a user message.")
    settings = {**loaded.config.to_generation_kwargs(), **generation}
    inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with _generate_lock, torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                adapter = contextlib.nullcontext() if use_adapter else loaded.model.disable_adapter()
                with adapter:
                    loaded.model.generate(
                        **inputs,
                        streamer=streamer,
                        pad_token_id=loaded.tokenizer.pad_token_id,
                        eos_token_id=end_of_turn_ids(loaded.model, loaded.tokenizer),
                        stopping_criteria=StoppingCriteriaList([_stop_on(stop)]),
                        **settings,
                    )
        except BaseException as error:  # surfaced to the caller below
            errors.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()  # the consumer went away (Stop, a closed page): end generation now
    thread.join()
    if errors:
        raise errors[0]
    if not text:
        yield ""


def reply(loaded: LoadedChatModel, messages: list[dict], **generation: Any) -> str:
    """The whole reply at once (for scripts and evaluation)."""
    text = ""
    for text in stream_reply(loaded, messages, **generation):
        pass
    return text


def generate_batch(
    model, tokenizer, conversations: list[list[dict]], max_new_tokens: int, with_ends: bool = False
) -> list[str] | tuple[list[str], list[bool]]:
    """Greedy replies to several conversations in one left-padded batch (probes during training).

    with_ends: also return, per reply, whether it ended at an end-of-turn token (not at max_new_tokens).
    """
    import torch

    from .models import end_of_turn_ids

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    try:
        encoded = tokenizer.apply_chat_template(
            conversations, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True
        )
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


def generate_once(
    loaded: LoadedChatModel, messages: list[dict], use_adapter: bool = True, max_new_tokens: int = 96
) -> dict:
    """One greedy reply with its cost: prompt tokens, seconds, and whether it ended at the end-of-turn token."""
    import time

    import torch

    from .models import end_of_turn_ids

    inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device)
    eos = end_of_turn_ids(loaded.model, loaded.tokenizer)
    started = time.time()
    with _generate_lock, torch.inference_mode():
        adapter = contextlib.nullcontext() if use_adapter else loaded.model.disable_adapter()
        with adapter:
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
