"""RunConfig: validation messages a user would read, and the mapping onto TRL and PEFT."""

import dataclasses

import pytest

from sft_space.config import RunConfig
from sft_space.presets import PRESETS, preset_config


def refusal(**changes) -> str:
    with pytest.raises(ValueError) as info:
        dataclasses.replace(RunConfig(), **changes).validate(model_max_length=2048)
    return str(info.value)


def test_defaults_and_presets_are_valid():
    RunConfig().validate(model_max_length=8192)
    for name in PRESETS:
        preset_config(name).validate(model_max_length=8192)


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(learning_rate=0.0), ["learning_rate", "above 0"]),
        (dict(learning_rate=-1e-4), ["learning_rate", "above 0"]),
        (dict(max_steps=0, num_train_epochs=0.0), ["max_steps", "num_train_epochs", "both zero"]),
        (dict(per_device_train_batch_size=0), ["per_device_train_batch_size", "at least 1"]),
        (dict(lora_r=0), ["lora_r", "at least 1"]),
        (dict(max_length=16), ["max_length", "between 32 and 2048"]),
        (dict(max_length=4096), ["max_length", "2048 (the model limit)", "got 4096"]),
        (dict(warmup_ratio=1.5), ["warmup_ratio", "[0, 1)"]),
        (dict(learning_rate=float("nan")), ["learning_rate", "finite"]),
        (dict(lora_target_modules=" , "), ["lora_target_modules", "empty"]),
        (dict(lr_scheduler_type="steep"), ["lr_scheduler_type must be one of linear, cosine", "'steep'"]),
        (dict(precision="fp8"), ["precision must be one of auto, fp32, bf16, fp16", "'fp8'"]),
    ],
)
def test_bad_values_are_refused_with_field_and_range(changes, words):
    message = refusal(**changes)
    for word in words:
        assert word in message, message


def test_several_problems_are_named_together():
    message = refusal(learning_rate=0.0, lora_r=0)
    assert "learning_rate" in message and "lora_r" in message


def test_to_sft_config_sets_every_default_that_matters(tmp_path):
    config = RunConfig(
        max_steps=7,
        learning_rate=3e-4,
        warmup_ratio=0.2,
        logging_steps=3,
        eval_steps=4,
        save_steps=5,
        max_length=256,
        packing=True,
        answers_only=True,
    )
    args = config.to_sft_config(str(tmp_path))
    assert args.max_steps == 7 and args.learning_rate == 3e-4
    assert args.warmup_steps == 0.2  # the ratio, in transformers 5's warmup_steps
    assert (args.logging_steps, args.eval_steps, args.save_steps) == (3, 4, 5)
    assert args.eval_strategy == "steps" and args.save_strategy == "steps"
    assert args.max_length == 256 and args.packing is True and args.completion_only_loss is True
    assert args.bf16 is False and args.gradient_checkpointing is False  # TRL's defaults are True
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]


def test_to_lora_config_maps_targets():
    lora = RunConfig(lora_r=8, lora_alpha=16, lora_dropout=0.1, lora_target_modules="attention").to_lora_config()
    assert lora.r == 8 and lora.lora_alpha == 16 and lora.lora_dropout == 0.1
    assert set(lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert RunConfig().to_lora_config().target_modules == "all-linear"
    custom = RunConfig(lora_target_modules="q_proj, v_proj").to_lora_config()
    assert set(custom.target_modules) == {"q_proj", "v_proj"}


def test_json_round_trip_and_unknown_keys():
    config = RunConfig(max_steps=3, packing=True)
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="Unknown setting.*learning_rat"):
        RunConfig.from_dict({"learning_rat": 1e-4})
    with pytest.raises(ValueError, match="max_steps must be a whole number"):
        RunConfig.from_dict({"max_steps": "ten"})
    assert RunConfig.from_dict({"max_steps": "12", "packing": "true"}).max_steps == 12


def test_generation_kwargs_greedy_at_zero_temperature():
    assert RunConfig(temperature=0).to_generation_kwargs()["do_sample"] is False
    sampled = RunConfig(temperature=0.7, top_p=0.8).to_generation_kwargs()
    assert sampled["do_sample"] is True and sampled["top_p"] == 0.8
