"""The training-memory estimate on CUDA against every measurement recorded on a real card (bench/gpu/results: peaks
torch allocated while training, with the batch's real padded length). No GPU is needed: the measurements are data."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sft_space.config import RunConfig
from sft_space.models import Device, estimate_memory, expected_batch_length, fit_report, model_facts

from helpers import ROOT

GIB = 2**30
RESULTS = sorted((ROOT / "bench" / "gpu" / "results").glob("*.json"))


def measurements() -> list[dict]:
    found = []
    for path in RESULTS:
        for section in json.loads(path.read_text()).values():
            if isinstance(section, dict):
                found += [r for r in section.get("training", []) if r.get("peak_gpu_allocated_bytes")]
    return found


def test_every_recorded_gpu_peak_is_within_30_percent_of_the_estimate():
    records = measurements()
    assert len(records) >= 6  # batch 4, 16, 64, with and without gradient checkpointing
    facts = model_facts("bundled")  # SmolLM2-135M's shapes: the model measured (random weights, same config)
    worst = 0.0
    for record in records:
        assert record["model"].startswith("smollm2-135m"), record["model"]
        batch = record["args"]["per_device_train_batch_size"]
        config = RunConfig(
            per_device_train_batch_size=batch,
            max_length=record["args"]["max_length"],
            lora_r=16,
            lora_target_modules="all-linear",
        )
        length = record["padded_tokens"] / record["steps_done"] / batch  # the batches' real padded length
        estimate = estimate_memory(
            facts,
            config,
            Device("cuda", record["gpu"], 140 * GIB, True),
            record["gradient_checkpointing"],
            "bf16",
            sequence_length=length,
        )
        measured = record["peak_gpu_allocated_bytes"]
        error = abs(estimate.allocated - measured) / measured
        worst = max(worst, error)
        assert error < 0.30, (batch, record["gradient_checkpointing"], estimate.allocated / GIB, measured / GIB)
    print(f"worst relative error {worst:.0%} over {len(records)} measurements")


def test_expected_batch_length_is_the_mean_longest_row():
    assert expected_batch_length([10, 20], 1, 512) == pytest.approx(15)
    assert expected_batch_length([10, 20], 2, 512) == pytest.approx(17.5)  # 10 only when both draws are 10
    assert expected_batch_length([10, 1000], 64, 512) == pytest.approx(512, rel=1e-6)  # capped at max_length
    assert expected_batch_length([], 8, 256) == 256


def test_auto_checkpointing_and_the_largest_batch_on_a_card():
    facts = model_facts("bundled")
    card = Device("cuda", "NVIDIA L4", 22 * GIB, True)
    config = RunConfig(per_device_train_batch_size=8, max_length=1024, gradient_checkpointing="auto")
    verdict, text = fit_report(facts, config, card)
    assert "Gradient checkpointing: off (auto)" in text and verdict == "fits", text  # 135M at batch 8: no need
    verdict, text = fit_report(facts, replace(config, per_device_train_batch_size=32), card)
    assert "Gradient checkpointing: on (auto)" in text and verdict == "fits", text  # 32 x 1024 needs it here
    assert "largest batch that fits this card without gradient checkpointing: **" in text
    best = int(text.split("checkpointing: **")[1].split("**")[0])
    assert estimate_memory(facts, replace(config, per_device_train_batch_size=best), card).verdict == "fits"
    assert estimate_memory(facts, replace(config, per_device_train_batch_size=2 * best), card).verdict != "fits"
