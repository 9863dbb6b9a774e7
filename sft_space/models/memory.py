"""The training-memory estimate: will this run fit on this device, and if not, what to change.

Owns a deliberately cautious estimate of peak training memory from a model's
facts and a run's settings (weights, LoRA with its AdamW state, activations,
runtime), the auto rule for gradient checkpointing, and the advice and Markdown
report shown before a run. Arithmetic on ModelFacts and Device only: it imports
neither torch nor transformers, and knows nothing about downloading or loading.
"""

from __future__ import annotations

from dataclasses import dataclass

from .device import Device, detect_device
from .facts import ModelFacts

FITS_BELOW = 0.8  # share of the device's memory an estimate may use and still be called "fits"
OVERHEAD_BYTES = {"cuda": 900 * 2**20, "mps": 1024 * 2**20, "cpu": 1200 * 2**20}  # runtime, libraries, allocator
# On CUDA, calibrated against the peaks torch allocated training SmolLM2-135M on an H200 in bf16 at batch 4, 16 and
# 64, with and without gradient checkpointing (bench/gpu/results/h200-2026-11-26.json; tests/test_memory_estimate.py
# keeps every recorded measurement within 30%). The old estimate counted every row at max_length and the logits at
# 10 bytes a value: 4.25 / 13.4 / 50.0 GiB against 0.91 / 2.56 / 8.81 GiB used.
CUDA_CONTEXT_BYTES = 500 * 2**20  # the CUDA context and kernels: on the card, outside torch's allocations
CUDA_WORKSPACE_BYTES = 80 * 2**20  # the allocator's and cuBLAS's own share of the allocations
CUDA_ACTIVATION_SCALE = 1.12  # per token and layer: 16 x hidden + 6 x intermediate values, measured 12% more
CUDA_LOGIT_BYTES = 1.6  # per token and vocabulary entry: TRL's loss never holds full fp32 copies of the logits
CUDA_CHECKPOINTING_WEIGHT_SHARE = 1.1  # checkpointing's recomputation buffers: about the frozen weights' size again


@dataclass
class MemoryEstimate:
    weights: int
    adapter: int  # LoRA weights, gradients and AdamW state
    activations: int
    overhead: int
    available: int
    gradient_checkpointing: bool

    runtime: int = 0  # outside torch's allocations (the CUDA context): counted for the fit, not in `allocated`

    @property
    def allocated(self) -> int:
        """What torch's peak allocation is expected to be (torch.cuda.max_memory_allocated on a GPU)."""
        return self.weights + self.adapter + self.activations + self.overhead

    @property
    def total(self) -> int:
        return self.allocated + self.runtime

    @property
    def share(self) -> float:
        return self.total / max(self.available, 1)

    @property
    def verdict(self) -> str:
        return "fits" if self.share < FITS_BELOW else "tight" if self.share < 1.0 else "will not fit"


def expected_batch_length(lengths: list[int], batch: int, max_length: int) -> float:
    """The expected longest row of a batch of `batch` rows drawn from rows of these token lengths (a batch is
    padded to its longest row): sum over the sorted lengths of L_i x ((i/n)^b - ((i-1)/n)^b), at most max_length."""
    ordered = sorted(min(n, max_length) for n in lengths)
    count = len(ordered)
    if not count:
        return float(max_length)
    return sum(n * ((i / count) ** batch - ((i - 1) / count) ** batch) for i, n in enumerate(ordered, start=1))


def estimate_memory(
    facts: ModelFacts,
    config,
    device: Device,
    gradient_checkpointing: bool = False,
    precision: str | None = None,
    sequence_length: float | None = None,
) -> MemoryEstimate:
    """Peak training memory: weights + LoRA (weights, grads, AdamW) + activations at batch x the batch's length
    (`sequence_length`, the expected longest row of a batch when the data is known; else max_length: every row
    full) + runtime. On CUDA the coefficients are calibrated against measured peaks (see CUDA_* above).

    Activations per token and layer are counted as about 16 x hidden + 6 x intermediate values (attention inputs and
    outputs, LoRA dropout copies, MLP intermediates), plus heads x length attention probabilities on devices without
    flash attention; logits add vocab x (value + two fp32 copies for the loss). A rough, deliberately cautious model.
    """
    text = facts.text
    h = text.get("hidden_size") or text.get("n_embd") or 1024
    inter = text.get("intermediate_size") or 4 * h
    layers = text.get("num_hidden_layers") or text.get("n_layer") or 24
    heads = text.get("num_attention_heads") or 16
    vocab = text.get("vocab_size") or 32000
    configured = getattr(config, "precision", "auto")
    precision = precision or (
        configured
        if configured != "auto"
        else "bf16"
        if device.bf16 and device.kind != "mps"
        else "fp16"
        if device.kind == "cuda"
        else "fp32"
    )
    # 16-bit activations on a GPU; counted at 4 bytes on a CPU (autocast keeps some in fp32 there). bf16 training
    # keeps the frozen weights in bf16 on a GPU and on a CPU (models.training_dtype; the Quick demo's peak: 2.0 GB
    # with bf16 weights, 2.5 GB with fp32 ones).
    value = 2 if precision in ("bf16", "fp16") and device.kind == "cuda" else 4
    quantized = getattr(config, "quantization", "none") == "4bit"
    weight_bytes = 0.55 if quantized else (2 if device.kind in ("cuda", "cpu") and precision == "bf16" else 4)
    weights = int(facts.parameters * weight_bytes)
    adapter = facts.lora_parameters(config.lora_r, config.target_module_list()) * 16  # fp32 weight+grad+2 Adam moments
    length = min(sequence_length or config.max_length, config.max_length)
    tokens = config.per_device_train_batch_size * length
    per_layer = 16 * h + 6 * inter + (heads * length if device.kind != "cuda" else 0)
    if device.kind == "cuda":
        if gradient_checkpointing:
            activations = tokens * value * (layers * h + per_layer) + CUDA_CHECKPOINTING_WEIGHT_SHARE * weights
        else:
            activations = tokens * value * layers * per_layer * CUDA_ACTIVATION_SCALE
        activations += tokens * vocab * CUDA_LOGIT_BYTES
        return MemoryEstimate(
            weights,
            adapter,
            int(activations),
            CUDA_WORKSPACE_BYTES,
            device.memory,
            gradient_checkpointing,
            CUDA_CONTEXT_BYTES,
        )
    if gradient_checkpointing:
        activations = tokens * value * (layers * h + per_layer)
    else:
        activations = tokens * value * layers * per_layer
    activations += tokens * vocab * (value + 8)
    return MemoryEstimate(
        weights, adapter, int(activations), OVERHEAD_BYTES[device.kind], device.memory, gradient_checkpointing
    )


def needs_gradient_checkpointing(
    facts: ModelFacts, config, device: Device, sequence_length: float | None = None
) -> bool:
    """Auto rule: on only when the estimate without it is not a comfortable fit."""
    return estimate_memory(facts, config, device, False, sequence_length=sequence_length).verdict != "fits"


def largest_batch(facts: ModelFacts, config, device: Device, sequence_length: float | None = None) -> int | None:
    """The largest power-of-two batch (up to 1,024) whose estimate fits without gradient checkpointing; None if
    not even batch 1 does."""
    import dataclasses

    best = None
    batch = 1
    while batch <= 1024:
        candidate = dataclasses.replace(config, per_device_train_batch_size=batch)
        if estimate_memory(facts, candidate, device, False, sequence_length=sequence_length).verdict != "fits":
            break
        best, batch = batch, batch * 2
    return best


def gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 / 10 else f"{size / 2**20:.0f} MiB"


def fit_advice(facts: ModelFacts, config, device: Device) -> list[str]:
    """What to change, tried in order, until the estimate fits."""
    import dataclasses

    advice = []
    if estimate_memory(facts, config, device, True).verdict == "fits" and config.gradient_checkpointing != "on":
        advice.append("turn gradient checkpointing on (about 20% slower, far fewer activations)")
    candidate = config
    while candidate.per_device_train_batch_size > 1:
        candidate = dataclasses.replace(
            candidate,
            per_device_train_batch_size=candidate.per_device_train_batch_size // 2,
            gradient_accumulation_steps=candidate.gradient_accumulation_steps * 2,
        )
        if estimate_memory(facts, candidate, device, True).verdict == "fits":
            advice.append(
                f"lower the batch size to {candidate.per_device_train_batch_size} with gradient accumulation "
                f"{candidate.gradient_accumulation_steps} (same effective batch)"
            )
            break
    shorter = dataclasses.replace(config, max_length=max(64, config.max_length // 2), per_device_train_batch_size=1)
    if not advice and estimate_memory(facts, shorter, device, True).verdict == "fits":
        advice.append(f"batch size 1 and max length {shorter.max_length}")
    if device.kind == "cuda" and getattr(config, "quantization", "none") != "4bit":
        advice.append("load the model in 4 bits (QLoRA, needs bitsandbytes)")
    advice.append("or pick a smaller model")
    return advice


def fit_report(facts: ModelFacts, config, device: Device | None = None) -> tuple[str, str]:
    """(verdict, Markdown explaining it) for training `facts` with `config` on `device`."""
    device = device or detect_device()
    mode = getattr(config, "gradient_checkpointing", "auto")
    checkpointing = mode == "on" or (mode == "auto" and needs_gradient_checkpointing(facts, config, device))
    estimate = estimate_memory(facts, config, device, checkpointing)
    icon = {"fits": "Fits", "tight": "Tight", "will not fit": "Will not fit"}[estimate.verdict]
    lines = [
        f"**{icon}** on {device.describe()}: about **{gib(estimate.total)}** "
        f"({estimate.share:.0%}) at batch {config.per_device_train_batch_size} × {config.max_length} tokens.",
        f"Weights {gib(estimate.weights)} · LoRA + optimizer {gib(estimate.adapter)} · activations "
        f"{gib(estimate.activations)} · runtime {gib(estimate.overhead)}. Gradient checkpointing: "
        f"{'on' if checkpointing else 'off'}{' (auto)' if mode == 'auto' else ''}.",
    ]
    if estimate.verdict != "fits":
        lines.append("To make it fit: " + "; ".join(fit_advice(facts, config, device)) + ".")
    if device.kind == "cuda":
        best = largest_batch(facts, config, device)
        if best:
            lines.append(
                f"The largest batch that fits this card without gradient checkpointing: **{best}** with every row "
                f"at {config.max_length} tokens (the run measures its data's real lengths, usually far shorter, and "
                "decides again)."
            )
    return estimate.verdict, "\n\n".join(lines)
