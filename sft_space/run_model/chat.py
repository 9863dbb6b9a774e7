"""Chat with a tuned model: replies streamed with the chat template, as the tuned model (adapter merged into the
weights) or the base model (adapter out), from the one loaded model of run_model. It knows nothing about Gradio
or how runs are trained.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from . import LoadedChatModel, answering_as, build_inputs, fast_decode, on_generation_thread
from .decoding import context_of


def _stop_on(event: threading.Event):
    """A StoppingCriteria that ends generation as soon as `event` is set (Stop button, closed page)."""
    import torch
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopOnEvent()


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

    from ..models import end_of_turn_ids

    if not messages or messages[-1]["role"] != "user":
        raise ValueError("The conversation must end with a user message.")
    settings = {**loaded.config.to_generation_kwargs(), **generation}
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            # tokenised here, on the generation thread: an unpadded call anywhere else could change the fast
            # tokenizer's padding setting while an evaluation batch there is being padded
            inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device, context_of(loaded.model))
            with answering_as(loaded, use_adapter), torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                ends = end_of_turn_ids(loaded.model, loaded.tokenizer)
                tuned = use_adapter and loaded.has_adapter
                if fast_decode.generate(loaded.model, tuned, inputs, settings, ends, streamer, stop):
                    return  # decoded near the memory bandwidth (run_model.fast_decode)
                loaded.model.generate(
                    **inputs,
                    streamer=streamer,
                    pad_token_id=loaded.tokenizer.pad_token_id,
                    eos_token_id=ends,
                    stopping_criteria=StoppingCriteriaList([_stop_on(stop)]),
                    **settings,
                )
        except BaseException as error:  # surfaced to the caller below
            errors.append(error)
            streamer.end()

    done = threading.Thread(target=on_generation_thread, args=(run,), daemon=True)  # waits its turn there
    done.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        stop.set()  # the consumer went away (Stop, a closed page): end generation now
    done.join()
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
