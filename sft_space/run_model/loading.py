"""Loading a run's model: the base model and the run's adapter, with the tokenizer the run saved.

For chat and evaluation (`load_chat_model`): loaded once and kept until another run is asked for, in the dtype
that generates fastest on this device (models.device.generation_dtypes; a half dtype whose logits are not finite
falls back to fp32). For a merge or an export (`load_base_and_adapter`): in the weights' own dtype, not cached.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..rundir import adapter_dir, read_config, run_path
from .decoding import build_inputs
from .fast_decode import fuse_projections
from .loaded import LoadedChatModel
from .merging import _adapter
from .thread import on_generation_thread

_cache: dict[str, LoadedChatModel] = {}
_lock = threading.Lock()  # one load at a time; generation itself runs per request


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

        from ..models import fit_model_to_tokenizer, generation_dtypes, load_model, load_tokenizer, resolve_model

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
            if not torch.cuda.is_available():
                fuse_projections(base)  # one product per input in fast_decode's steps
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


def unload() -> None:
    with _lock:
        _cache.clear()


def load_base_and_adapter(run: str | Path, folder: Path | None = None):
    """(base + adapter as a PeftModel in eval mode, the run's tokenizer, its settings) in the weights' own dtype,
    for merging (merge_and_unload) and exports; folder: the base model's local folder when the caller resolved it."""
    from peft import PeftModel

    from ..models import fit_model_to_tokenizer, load_model, load_tokenizer, resolve_model

    run_dir = run_path(run)
    config = read_config(run_dir)
    tokenizer = load_tokenizer(adapter_dir(run_dir))
    base = load_model(folder or resolve_model(config.model))
    fit_model_to_tokenizer(base, tokenizer)
    return PeftModel.from_pretrained(base, adapter_dir(run_dir)).eval(), tokenizer, config
