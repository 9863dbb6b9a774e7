"""Loading a model's weights, and the checks that must pass before a run is queued.

Owns loading a local model folder with transformers (safetensors only, never
remote code; 4-bit QLoRA through bitsandbytes) and check_model_choice: every
refusal that can be made from metadata and this machine before a run is queued
(gated model, LoRA targets, quantization, precision against the device). torch
and transformers are imported inside functions. It knows nothing about
downloading, the tokenizer or the training loop.
"""

from __future__ import annotations

from pathlib import Path

from .device import detect_device
from .facts import ModelFacts, check_target_modules, model_facts


def load_model(folder: Path, dtype: str = "float32", device: str | None = None, quantization: str = "none"):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if quantization == "4bit":
        kwargs["quantization_config"] = four_bit_config(dtype)
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False, **kwargs
    )
    if device and quantization != "4bit":
        model.to(device)
    return model


def check_quantization(quantization: str) -> None:
    """4-bit QLoRA needs a CUDA GPU and bitsandbytes; say so before anything loads."""
    if quantization != "4bit":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ValueError("4-bit QLoRA needs a CUDA GPU: set quantization to none on this machine.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            "4-bit QLoRA needs the bitsandbytes package: pip install bitsandbytes, or set quantization to none."
        )


def four_bit_config(dtype: str):
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, dtype if dtype != "float32" else "bfloat16"),
    )


def check_model_choice(config) -> ModelFacts:
    """Everything about the model that can be refused before a run is queued: metadata only, nothing downloaded."""
    facts = model_facts(config.model)
    if facts.gated and facts.notes:
        raise ValueError(facts.notes[0])
    check_target_modules(config.target_module_list(), facts)
    if config.quantization == "4bit":
        check_quantization(config.quantization)
    device = detect_device()
    if config.precision == "fp16" and device.kind != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU and this is {device.name}: use auto, bf16 or fp32.")
    if config.precision == "bf16" and device.kind == "cuda" and not device.bf16:
        raise ValueError(f"{device.name} does not support bf16 (it is older than Ampere): use auto or fp16.")
    return facts
