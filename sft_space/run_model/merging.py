"""The adapter in and out of the weights: merged exactly for tuned replies (no LoRA matmuls per token, one copy of
the weights), taken out bit for bit for base replies, and the fair lock that holds the model for one reply or
one evaluation pass at a time.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import Iterator

from .loaded import LoadedChatModel


def _lora_linears(model):
    from peft.tuners.lora import Linear

    return [m for m in model.modules() if isinstance(m, Linear)]


def merge_exactly(model) -> None:
    """Add each LoRA layer's delta (PEFT's get_delta_weight) into its base weight, remembering the few weights
    that subtracting it again would not give back bit for bit (rounding in fp16/bf16: about 1,500 of 106 million
    for SmolLM2-135M), so unmerge_exactly restores the base weights exactly, however often replies alternate."""
    for layer in _lora_linears(model):
        if layer.merged:
            continue
        for name in layer.active_adapters:
            if name not in layer.lora_A:
                continue
            weight = layer.get_base_layer().weight.data
            delta = layer.get_delta_weight(name).to(weight.dtype)
            merged = weight + delta
            wrong = (merged - delta) != weight
            layer.exact_restore = (wrong.nonzero(as_tuple=True), weight[wrong])
            weight.copy_(merged)
            layer.merged_adapters.append(name)


def unmerge_exactly(model) -> None:
    for layer in _lora_linears(model):
        while layer.merged_adapters:
            name = layer.merged_adapters.pop()
            weight = layer.get_base_layer().weight.data
            weight.sub_(layer.get_delta_weight(name).to(weight.dtype))
            index, values = layer.__dict__.pop("exact_restore", (None, None))
            if index is not None:
                weight[index] = values


@contextlib.contextmanager
def _adapter(loaded: LoadedChatModel, use_adapter: bool) -> Iterator[None]:
    """The model as the tuned (adapter merged into the weights) or the base model (adapter out and off).
    Callers hold _generate_lock: merging changes the weights every request shares."""
    if use_adapter:
        if loaded.has_adapter and loaded.merge and not loaded.merged:
            merge_exactly(loaded.model)
        yield
        return
    if loaded.merged:
        unmerge_exactly(loaded.model)
    with loaded.model.disable_adapter() if loaded.has_adapter else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def answering_as(loaded: LoadedChatModel, use_adapter: bool) -> Iterator[None]:
    """Hold the model, as the tuned or the base model, for one reply or one evaluation pass."""
    with _generate_lock, _adapter(loaded, use_adapter):
        yield


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
