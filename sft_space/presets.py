"""The named presets: settings a visitor starts from, per hardware (CPU demos, GPU examples, ZeroGPU slots).

Each preset is a set of RunConfig fields (config.py declares them); the page adds each preset's duration measured
on this device (estimates). Add a preset here: a name and its fields; `presets_for` says where it is offered.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig

# The preset the guide's readers start from: the bundled 135M model on a 2-core CPU, enough steps for the JSON
# format to take hold. Names only: the page adds each preset's duration measured on this device.
QUICK_DEMO: dict[str, Any] = dict(
    train_minutes=3.0,  # start to finish; the steps are what fits (about 190 on a 2-core CPU)
    max_steps=-1,
    num_train_epochs=1.0,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=1,
    learning_rate=1.5e-3,
    warmup_ratio=0.1,
    lr_scheduler_type="linear",
    logging_steps=2,
    eval_steps=100,  # two or three evaluations with probe replies in 3 minutes (each costs a few seconds)
    save_steps=100,
    max_length=256,
    packing=False,
    lora_r=16,
    lora_alpha=32,
    lora_dropout=0.0,  # no dropout mask on 210 LoRA inputs per pass: 25% more tokens/s on a CPU
    # every linear layer of every block: LoRA on the top 12 of 30 blocks only (PEFT layers_to_transform) trained 1.7x
    # the steps in the 3 minutes (479 against 267 tokens/s) and scored no better on json-extract's hand-written
    # check requests (37% against 38% all fields exact; the generator's test rows 43% against 48%)
    lora_target_modules="all-linear",
    eval_max_rows=16,
)
PRESETS: dict[str, dict[str, Any]] = {
    "Quick demo": QUICK_DEMO,
    # The Quick demo learns the format, the intent, most names and items in 3 minutes; dates, names and items
    # nearly always right take about three epochs (all fields exact on json-extract's hand-written check requests:
    # 3 minutes 38%, three epochs 64%; bench/results_*demo.json). Batch 4: 347 tokens/s against 328 at batch 2.
    "Thorough demo": dict(QUICK_DEMO, train_minutes=12.0, num_train_epochs=3.0, per_device_train_batch_size=4),
    "Full epoch": dict(
        max_steps=-1,
        num_train_epochs=1.0,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        warmup_ratio=0.05,
        lr_scheduler_type="cosine",
        logging_steps=5,
        eval_steps=20,
        save_steps=40,
        max_length=512,
        packing=False,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        lora_target_modules="all-linear",
        eval_max_rows=40,
    ),
}
# On a CUDA card: the guide's own examples, sized to use the card. Small models are launch-bound at small batches
# (an H200 trained SmolLM2-135M at 1,088 tokens/s at batch 4 and 24,925 at batch 64, same step time), so the
# batch is large; bf16 where the card has it (precision auto), no gradient checkpointing (the memory check turns
# it on only when the run would not fit otherwise).
GPU_PRESETS: dict[str, dict[str, Any]] = {
    "GPU: SmolTalk on SmolLM2-135M (the guide's example)": dict(
        PRESETS["Full epoch"],
        model="HuggingFaceTB/SmolLM2-135M",  # a base model: it gets the ChatML template (setup_chat_format)
        dataset="HuggingFaceTB/smoltalk",
        dataset_config="all",
        max_steps=300,
        per_device_train_batch_size=32,
        max_length=1024,
        logging_steps=10,
        eval_steps=100,
        save_steps=100,
        eval_max_rows=200,
        gradient_checkpointing="off",
    ),
    "GPU: SmolTalk on DeepSeek-R1-Distill-Qwen-1.5B": dict(
        PRESETS["Full epoch"],
        model="deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        dataset="HuggingFaceTB/smoltalk",
        dataset_config="all",
        max_steps=200,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        max_length=2048,
        learning_rate=1e-4,
        logging_steps=10,
        eval_steps=100,
        save_steps=100,
        eval_max_rows=100,
        gradient_checkpointing="auto",
    ),
}
# On ZeroGPU a run trains in GPU slots (training/slots.py) and is counted in steps: the demos' recipes without their CPU
# minutes. Batch 4 as the Thorough demo (measured on the CPU: three epochs 81% all fields exact on json-extract's test
# rows, 64% on its hand-written check requests); on an H200 a step of batch 4 took 0.40 s (bench/gpu/results), so
# about 65 s and 3.2 min of GPU.
SLOT_PRESETS: dict[str, dict[str, Any]] = {
    "Quick demo (GPU slots)": dict(QUICK_DEMO, train_minutes=0.0, num_train_epochs=1.0, per_device_train_batch_size=4),
    "Thorough demo (GPU slots)": dict(PRESETS["Thorough demo"], train_minutes=0.0),
}
ALL_PRESETS = {**PRESETS, **GPU_PRESETS, **SLOT_PRESETS}
DEFAULT_PRESET = "Quick demo"


def presets_for(device_kind: str) -> list[str]:
    """The presets offered on this hardware: the CPU ones everywhere but ZeroGPU, the GPU ones on a CUDA card; on
    ZeroGPU the demos in GPU slots, the full epoch and the GPU examples (timed presets cannot train in slots)."""
    if device_kind == "zerogpu":
        return [*SLOT_PRESETS, "Full epoch", *GPU_PRESETS]
    return list(PRESETS) + (list(GPU_PRESETS) if device_kind == "cuda" else [])


def default_preset(device_kind: str) -> str:
    return presets_for(device_kind)[0]


def preset_config(name: str, **overrides: Any) -> RunConfig:
    if name not in ALL_PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(ALL_PRESETS)}")
    return RunConfig(**{**ALL_PRESETS[name], **overrides})
