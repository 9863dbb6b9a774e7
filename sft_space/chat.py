"""Chat with a tuned model: load base + adapter once, stream replies with the chat template.

Owns the one loaded chat model (cached by run, freed when another run is
chosen), in the dtype that generates fastest on this device (models.device.
generation_dtypes), with the adapter merged into the weights for tuned replies and
taken out again for base replies (one copy of the weights; a merged model runs
at the base model's speed, an unmerged adapter adds ~200 small matmuls per
token); turning a conversation into model input with the tokenizer's own chat
template, and streaming generated text. It knows nothing about Gradio or how
runs are trained; it reads a run's config.json and adapter/ folder.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .config import RunConfig
from .rundir import adapter_dir, read_config, run_path


@dataclass
class LoadedChatModel:
    key: str
    model: Any  # a PeftModel (base + adapter) or a plain base model
    tokenizer: Any
    config: RunConfig
    has_adapter: bool
    dtype: str = "float32"
    merge: bool = True  # False: tuned replies run through the unmerged LoRA layers (slower; for comparison)

    @property
    def merged(self) -> bool:
        """Whether the adapter is in the weights now (PEFT takes it out by itself when the adapter is disabled)."""
        return any(getattr(m, "merged", False) for m in self.model.modules() if hasattr(m, "merged_adapters"))


_cache: dict[str, LoadedChatModel] = {}
_lock = threading.Lock()  # one load at a time; generation itself runs per request

# ------------------------------------------------------------------ the generation thread
# Every model computation of this process (loading, replies, held-out loss) runs on one long-lived thread, in the
# order asked. torch's CPU kernels run on an OpenMP team per calling thread, and a team's workers keep spinning for
# a while after each piece of work: replies computed on a fresh thread each time competed with the spinning team of
# the previous one and streamed at half speed (20 vs 38 tokens/s measured here), sometimes at a tenth.
GENERATION_THREAD = "sft-space-generation"
_IMPORTED_IN = os.getpid()
_executor = None
_executor_pid = 0  # the process that made it: a process forked from this one (a ZeroGPU slot) makes its own
_executor_lock = threading.Lock()


# Threads a reply may use (None: torch's default, every core). The app lowers it while a run trains on the CPU,
# so training keeps the cores (set by whoever knows about runs; this module does not).
def _every_core() -> int | None:
    return None


generation_threads: Callable[[], int | None] = _every_core


def on_generation_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `function` on the generation thread and wait for its result (directly when already there)."""
    global _executor, _executor_pid
    if threading.current_thread().name.startswith(GENERATION_THREAD):
        return function(*args, **kwargs)
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():  # a forked child has the object, not its thread
            import concurrent.futures

            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=GENERATION_THREAD)
            _executor_pid = os.getpid()
    return _executor.submit(_with_threads, function, *args, **kwargs).result()


def _with_threads(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import torch

    if os.getpid() != _IMPORTED_IN:  # a process forked for a GPU call (ZeroGPU): torch's thread pool did not
        return function(*args, **kwargs)  # survive the fork, and changing its size there fails
    capped = generation_threads()
    wanted = capped or _default_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    if not capped:
        return function(*args, **kwargs)
    # A run trains on this CPU: say so while this work runs, so the training process gives up a core meanwhile
    # (callbacks.RunDirCallback reads the mark at each step): one thread each, no core shared by two.
    from . import GENERATING_MARK, home

    mark = home() / GENERATING_MARK
    try:
        mark.touch()
    except OSError:
        pass
    try:
        return function(*args, **kwargs)
    finally:
        mark.unlink(missing_ok=True)


@functools.cache
def _default_threads() -> int:
    """torch's thread count before anything here changed it (every core)."""
    import torch

    return torch.get_num_threads()


def load_chat_model(run: str | Path) -> LoadedChatModel:
    """Base model + the run's adapter, loaded once and kept until a different run is asked for."""
    return on_generation_thread(_load_chat_model, run)


def _load_chat_model(run: str | Path) -> LoadedChatModel:
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

        from .models import fit_model_to_tokenizer, generation_dtypes, load_model, load_tokenizer, resolve_model

        config = read_config(run_dir)
        tokenizer = load_tokenizer(adapter)  # saved by the run: its chat template and any tokens it added
        dtype, rows_dtype = generation_dtypes()
        for attempt in (dtype, "float32"):
            base = load_model(resolve_model(config.model), dtype=attempt)
            fit_model_to_tokenizer(base, tokenizer)
            if rows_dtype != attempt and not torch.cuda.is_available():
                _many_rows_in(base, rows_dtype)
            if attempt != "float32" and not torch.cuda.is_available():
                _attention_in_fp32(base)
            model = PeftModel.from_pretrained(base, adapter)
            model.eval()
            if torch.cuda.is_available():
                model.to("cuda")
            loaded = LoadedChatModel(key, model, tokenizer, config, True, attempt)
            if attempt == "float32" or _answers_finite(loaded):
                break  # a half dtype that overflows on this model (inf/NaN logits) falls back to fp32
            del model, base
        _cache[key] = loaded
        return loaded


def _many_rows_in(model, dtype: str) -> None:
    """Multiply passes over many tokens at once (a prompt, a held-out row) in `dtype`, one token at a time in the
    weights' own dtype: on a CPU whose half-precision weights read fastest one token at a time but whose bf16 units
    multiply many rows fastest (generation_dtypes), a prompt's first token comes 2-3x sooner."""
    import types

    import torch

    target = getattr(torch, dtype)

    def forward(self, x):
        if x.dim() > 1 and x.shape[:-1].numel() > 4:
            bias = None if self.bias is None else self.bias.to(target)
            return torch.nn.functional.linear(x.to(target), self.weight.to(target), bias).to(x.dtype)
        return torch.nn.functional.linear(x, self.weight, self.bias)

    for module in model.modules():
        if type(module) is torch.nn.Linear:  # the base layers; PEFT's LoRA layers call them
            module.forward = types.MethodType(forward, module)


FP32_ATTENTION = "sdpa_fp32_on_cpu"


def _attention_in_fp32(model) -> None:
    """Attention in fp32 for a half-precision model on a CPU: the CPU's SDPA kernels are slow in fp16 and bf16 for
    one query token (9 heads over 150 cached tokens: 215 us in fp16, 122 in bf16, 25 in fp32), and a reply pays that
    once per layer per token. The cached keys and values stay in the model's dtype; only the attention math is
    fp32 (as precise as or more than before)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def fp32_sdpa(module, query, key, value, attention_mask, **kwargs):
        dtype = query.dtype
        if attention_mask is not None and attention_mask.dtype.is_floating_point:
            attention_mask = attention_mask.float()
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
        return output.to(dtype), weights

    if FP32_ATTENTION not in AttentionInterface().valid_keys():  # registered once per process
        AttentionInterface.register(FP32_ATTENTION, fp32_sdpa)
        AttentionMaskInterface.register(FP32_ATTENTION, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":  # a model without SDPA keeps its own
        model.set_attn_implementation(FP32_ATTENTION)


def _answers_finite(loaded: LoadedChatModel) -> bool:
    """One forward pass over a templated message, adapter merged: are the logits finite in this dtype?"""
    import torch

    hello = [{"role": "user", "content": "Hello! What can you do?"}]
    inputs = build_inputs(loaded.tokenizer, hello, loaded.model.device)
    with _adapter(loaded, True), torch.inference_mode():
        logits = loaded.model(**inputs).logits
    return bool(torch.isfinite(logits).all())


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
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            # tokenised here, on the generation thread: an unpadded call anywhere else could change the fast
            # tokenizer's padding setting while an evaluation batch there is being padded
            inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device)
            with answering_as(loaded, use_adapter), torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
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

    from .models import end_of_turn_ids

    inputs = build_inputs(loaded.tokenizer, messages, loaded.model.device)
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
