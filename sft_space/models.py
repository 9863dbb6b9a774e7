"""Models: turn a user's model choice into a local folder, and load it set up right.

Owns resolving 'bundled' or a local folder, the safety rules (safetensors only,
never trust_remote_code), the model's context limit read from its config, the
tokenizer's pad token, and the device/precision choice. Heavy imports (torch,
transformers) happen inside functions so the UI starts fast. It knows nothing
about datasets, training loops or Gradio.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .bundled import BUNDLED_MAX_LENGTH, BUNDLED_NAME, Progress, _no_progress, ensure_bundled_model
from .config import BUNDLED_MODEL


def model_label(choice: str) -> str:
    return BUNDLED_NAME if choice == BUNDLED_MODEL else choice


def resolve_model(choice: str, progress: Progress = _no_progress) -> Path:
    """A local folder holding the model's config, safetensors weights and tokenizer."""
    choice = choice.strip()
    if choice == BUNDLED_MODEL:
        return ensure_bundled_model(progress)
    folder = Path(choice).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"Model {choice!r} was not found: offline, use 'bundled' (SmolLM2-135M-Instruct) "
            "or the path of a local folder with config.json and *.safetensors."
        )
    check_model_folder(folder)
    return folder


def check_model_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a transformers model folder.")
    if not any(folder.glob("*.safetensors")):
        pickles = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        raise ValueError(
            f"{folder} has no .safetensors weights"
            + (" (only pickle .bin/.pt files, which can run code when loaded and are refused)" if pickles else "")
            + ": convert the weights with save_pretrained(safe_serialization=True)."
        )
    config = json.loads((folder / "config.json").read_text())
    if config.get("auto_map"):
        raise ValueError(f"{folder} needs custom code (auto_map / trust_remote_code), which is refused for safety.")


def model_max_length(choice: str) -> int | None:
    """The model's context limit from its config.json, without loading torch; None if unknown yet."""
    if choice.strip() == BUNDLED_MODEL:
        return BUNDLED_MAX_LENGTH
    config = Path(choice).expanduser() / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    return data.get("max_position_embeddings") or data.get("n_positions")


def choose_precision() -> dict[str, bool]:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (the safe, always-finite choice)."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": True, "fp16": False} if torch.cuda.is_bf16_supported() else {"bf16": False, "fp16": True}
    return {"bf16": False, "fp16": False}


def hardware_summary() -> str:
    """A one-line description of where training would run, without importing torch."""
    if shutil.which("nvidia-smi") and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != "":
        return "GPU (CUDA)"
    return f"CPU {os.cpu_count()} vCPU"


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    if not tokenizer.chat_template:
        raise ValueError(
            f"{folder} has no chat template: pick an instruct/chat model such as the bundled SmolLM2-135M-Instruct."
        )
    if tokenizer.pad_token is None:
        # Labels are padded with -100 by TRL's collator, so padding with the end-of-turn token never masks it.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(folder: Path, dtype: str = "float32", device: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=False
    )
    if device:
        model.to(device)
    return model
