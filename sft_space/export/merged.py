"""The merged model: base + adapter folded into one set of weights (PEFT's merge_and_unload), saved as safetensors
with the run's tokenizer, refused when the merged model answers the probe prompts differently from base + adapter.
The Publish tab pushes it ("Merged model"); the GGUF export writes its own merge into GGUF files.
"""

from __future__ import annotations

from pathlib import Path

from .. import Progress, no_progress
from ..rundir import run_path


def save_merged(run: str | Path, target: Path, progress: Progress = no_progress) -> None:
    """Base + adapter merged (merge_and_unload) into safetensors with the tokenizer; checked on the probe prompts."""
    import torch

    from ..run_model import generate_batch, load_base_and_adapter, probe_conversations

    progress(0.1, "Loading base model and adapter")
    model, tokenizer, config = load_base_and_adapter(run)
    conversations = probe_conversations(run_path(run), config)
    progress(0.3, "Answering the probe prompts with base + adapter")
    with torch.inference_mode():
        before = generate_batch(model, tokenizer, conversations, 48)
        merged = model.merge_and_unload()
        progress(0.6, "Answering them again with the merged model")
        after = generate_batch(merged, tokenizer, conversations, 48)
    if before != after:
        differing = sum(a != b for a, b in zip(before, after))
        raise RuntimeError(
            f"The merged model answers {differing} of {len(before)} probe prompts differently from base + "
            "adapter, so it was not pushed: push the adapter instead."
        )
    progress(0.8, "Saving the merged model as safetensors")
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
