"""The training process through its command line, on a tiny Llama: what a run directory holds afterwards."""

import json
import math
import re

import pytest
from safetensors.torch import load_file

from sft_space.config import RunConfig

from helpers import TINY_FAST, run_cli


def test_run_directory_is_complete(trained_run):
    for name in (
        "config.json",
        "status.json",
        "metrics.jsonl",
        "train.log",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/tokenizer_config.json",
    ):
        assert (trained_run / name).is_file(), name
    status = json.loads((trained_run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 3 and status["max_steps"] == 3
    assert status["tokens_seen"] > 0 and status["tokens_per_second"] > 0
    config = json.loads((trained_run / "config.json").read_text())
    assert config["max_steps"] == 3 and config["dataset"] == "demo:json-extract"


def test_losses_are_logged_and_finite(trained_run):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(train) == 3, records  # logging_steps=1
    # eval_steps=2, and the Trainer evaluates once more at the last step
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 3], records
    assert all(isinstance(v, float) and math.isfinite(v) for v in train + evals)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert all(r["tokens_seen"] > 0 for r in records)


def test_lora_weights_changed_and_base_weights_did_not(trained_run, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = load_file(str(trained_run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in key for key in adapter), list(adapter)[:5]
    # PEFT initialises lora_B to zeros: non-zero B means training moved the adapter.
    b_weights = [v for k, v in adapter.items() if "lora_B" in k]
    assert b_weights and any(v.abs().max() > 0 for v in b_weights)

    original = load_file(str(tiny_model / "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    tuned = PeftModel.from_pretrained(base, trained_run / "adapter")
    merged_view = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in tuned.state_dict().items()
        if "lora_" not in k
    }
    for name, tensor in original.items():
        assert torch.equal(merged_view[name], tensor), f"base weight {name} changed"
    # and the adapter makes a difference to the output
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        with_adapter = tuned(ids).logits
        with tuned.disable_adapter():
            without = tuned(ids).logits
    assert not torch.allclose(with_adapter, without)


def test_probe_prompts_recorded_before_training_and_at_each_evaluation(trained_run):
    from sft_space.rundir import read_probes

    raw = [json.loads(line) for line in (trained_run / "probes.jsonl").read_text().splitlines()]
    # the random tiny model never ends its turn, so the end-of-turn check re-asked at step 3 with a longer budget
    assert [r["step"] for r in raw] == [0, 2, 3, 3] and raw[-1]["ended"] == [False] * 3
    status = json.loads((trained_run / "status.json").read_text())
    assert status["end_of_turn"] == {"ended": 0, "checked": 3} and "did not end its turn on 3 of 3" in status["note"]
    records = read_probes(trained_run)
    assert [r["step"] for r in records] == [0, 2, 3]  # step 0 = the base model, then every evaluation
    for record in records:
        assert len(record["prompts"]) == 3 and len(record["replies"]) == 3
        assert all(isinstance(reply, str) for reply in record["replies"])
    assert records[0]["prompts"] == records[-1]["prompts"]
    from sft_space.data import load_dataset_source

    first_validation = load_dataset_source("demo:json-extract").validation[0]["messages"][0]["content"]
    assert records[0]["prompts"][0] == first_validation  # no pinned prompts: the first validation prompts


def test_checkpoint_written_as_safetensors(trained_run):
    checkpoints = sorted((trained_run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "save_steps=2 should have written checkpoint-2"
    assert (checkpoints[0] / "adapter_model.safetensors").is_file()
    # model weights are never pickled (training_args.bin is the Trainer's own settings file, not weights)
    assert not [p.name for p in checkpoints[0].glob("*.bin") if p.name != "training_args.bin"]


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--learning_rate", "0"], ["learning_rate", "above 0"]),
        (["--max_steps", "-1", "--num_train_epochs", "0"], ["both zero"]),
        (["--per_device_train_batch_size", "0"], ["per_device_train_batch_size", "at least 1"]),
        (["--lora_r", "0"], ["lora_r", "at least 1"]),
        (["--max_length", "8"], ["max_length", "between 32"]),
        (["--max_length", "100000"], ["max_length", "8192 (the model limit)"]),
        (["--max_steps", "many"], ["max_steps must be a whole number"]),
    ],
)
def test_bad_input_prints_one_line_and_exits_nonzero(flags, words, tmp_path):
    run_dir = tmp_path / "refused"
    result = run_cli("--model", "bundled", "--output_dir", str(run_dir), *flags, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0]
    assert not run_dir.exists(), "nothing is written for a refused run"


def test_missing_model_folder_is_refused_clearly(tmp_path):
    result = run_cli(
        "--model", str(tmp_path / "nope"), "--max_steps", "1", "--output_dir", str(tmp_path / "r"), timeout=120
    )
    assert result.returncode == 2  # bad input: one line, exit 2, the traceback in train.log only
    assert len(result.stderr.strip().splitlines()) == 1 and "was not found" in result.stderr
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["state"] == "failed" and "was not found" in status["error"]


def test_the_base_models_probe_replies_follow_the_first_loss_and_are_reused(tiny_model, tmp_path):
    """The base model's replies to the probe prompts never hold up the first loss: the first run of a model answers
    them after its first logged step (adapter off: the base model), later runs reuse them (greedy, same weights)."""
    import shutil

    model = tmp_path / "model"  # weights no other test has trained from: nothing cached for them yet
    shutil.copytree(tiny_model, model)
    runs = []
    for name in ("first", "again"):
        run_dir = tmp_path / name
        result = run_cli("--model", str(model), "--max_steps", "2", "--output_dir", str(run_dir), *TINY_FAST)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        runs.append([json.loads(line) for line in (run_dir / "probes.jsonl").read_text().splitlines()])
    first, again = (records[0] for records in runs)
    assert first["step"] == 0 and "cached" not in first and first["seconds"] > 0
    train_log = (tmp_path / "first" / "train.log").read_text()
    # the first loss is logged before the base model answers
    assert train_log.index("step 1:") < train_log.index("base model's probe replies: answered")
    assert again["step"] == 0 and again["cached"] is True and again["seconds"] == 0.0
    assert again["replies"] == first["replies"] and again["ended"] == first["ended"]


def test_train_for_minutes_ends_the_schedule_when_the_time_is_up(tiny_model, tmp_path):
    """train_minutes on a first run (no pace measured): the learning rate follows the clock, warms up, falls to
    zero as the time runs out, and the run completes with a last evaluation inside its time, with far fewer steps
    than its epochs allow."""
    run_dir = tmp_path / "timed"
    flags = [*TINY_FAST, "--eval_steps", "1000", "--save_steps", "1000", "--warmup_ratio", "0.2"]
    result = run_cli(
        "--model", str(tiny_model), "--output_dir", str(run_dir), *flags,
        "--max_steps", "-1", "--num_train_epochs", "100", "--train_minutes", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "completed", status  # the schedule ended: not stopped by the hard limit
    timed = status["timed_schedule"]
    ended = timed["ended_at_step"]
    # 576 training rows less those whose prompt alone fills max_length 128 (TRL leaves them out), 2 a step
    left_out = re.match(r"(\d+) of 576 training rows left out", status.get("rows_left_out", "0 of 576 training"))
    kept = 576 - int(left_out.group(1))
    assert kept > 500 and 5 < ended < timed["most_steps"] == 100 * kept // 2
    assert status["step"] == status["max_steps"] == ended
    assert status["elapsed_seconds"] <= 30 and status["time_budget_seconds"] == 30
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [m["learning_rate"] for m in metrics if "learning_rate" in m]
    peak = max(rates)
    assert peak == pytest.approx(0.005, rel=0.25)  # warm-up reached the rate asked for
    top = rates.index(peak)
    assert 0 < top < len(rates) - 1 and rates[0] < peak  # up during the warm-up, then down
    assert all(b <= a for a, b in zip(rates[top:], rates[top + 1 :])) and rates[-1] < 0.15 * peak
    assert metrics[-1]["step"] == ended and any(m.get("step") == ended and "eval_loss" in m for m in metrics)


def test_rows_whose_prompt_fills_max_length_are_named_not_a_sampler_error(tiny_model, tmp_path):
    """Every prompt longer than max_length: TRL drops each row (no answer token is left), and the run fails before
    training with what to change, in one line and in status.json, instead of 'num_samples=0'."""
    long_prompt = " ".join(["word"] * 100)
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"prompt": long_prompt, "completion": f"ok {i}"}) + "\n" for i in range(12)))
    run_dir = tmp_path / "run"
    result = run_cli(
        "--model", str(tiny_model), "--dataset", str(data), "--max_length", "32", "--max_steps", "2",
        "--output_dir", str(run_dir),
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "num_samples" not in result.stderr
    assert "rows were left out: their prompt alone fills max_length (32 tokens)" in result.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "Raise max_length" in status["error"]
    assert not (run_dir / "adapter").exists()


def test_a_timed_run_that_trained_far_fewer_steps_than_planned_says_why(tiny_model, tmp_path):
    """A Quick demo once 'completed' after 4 of ~120 steps with nothing said. Here the pace this machine measured
    earlier (a finished run of the same model: 1 ms a step) promises thousands of steps in 0.25 min; the run trains
    far fewer, and its note says so and why."""
    import shutil

    from sft_space import rundir
    from sft_space.models import device_name
    from sft_space.training import estimates

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)  # a model of its own: no other test's pace applies
    earlier = rundir.runs_root() / "20990101-000000-stale-pace"
    earlier.mkdir(parents=True)
    rundir.write_config(
        earlier, RunConfig(model=str(model), dataset="demo:json-extract", per_device_train_batch_size=2)
    )
    rundir.write_status(
        earlier, state="completed", device_name=device_name(), steps_measured=estimates.PACE_MIN_STEPS,
        seconds_per_step=0.001, startup_seconds=1.0, finish_seconds=0.1,
    )  # fmt: skip
    run_dir = tmp_path / "timed"
    try:
        result = run_cli(
            "--model", str(model), "--output_dir", str(run_dir), *TINY_FAST, "--eval_steps", "1000", "--save_steps",
            "1000", "--max_steps", "-1", "--num_train_epochs", "100", "--train_minutes", "0.25",
        )  # fmt: skip
    finally:
        shutil.rmtree(earlier)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads((run_dir / "status.json").read_text())
    plan = status["minutes_plan"]["steps"]
    assert status["state"] == "completed" and status["step"] < plan / 2, (status["step"], plan)
    # the start-up may take a share of the 15 s too (a busy machine): then the note names both reasons
    assert status["note"].startswith(f"trained {status['step']} steps in 0.25 min: "), status
    assert f"about {plan} steps fit" in status["note"], status["note"]
    assert "the machine was busier this time" in status["note"]


def test_a_run_resumed_at_its_last_step_trains_no_step_past_it(tiny_model, tmp_path):
    """A process that ended after its last checkpoint and before its adapter (a GPU slot ended there, a kill) is
    resumed: Trainer.train would train one step past max_steps at learning rate 0; the checkpoint's adapter is the
    run's instead, and no step N+1 is logged."""
    import shutil

    from sft_space import rundir

    run_dir = tmp_path / "run"
    result = run_cli("--model", str(tiny_model), *TINY_FAST, "--max_steps", "4", "--output_dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    assert rundir.checkpoint_step(rundir.last_complete_checkpoint(run_dir)) == 4
    shutil.rmtree(rundir.adapter_dir(run_dir))  # what the process leaves when it ends before saving the adapter
    rundir.write_status(run_dir, state="interrupted")
    result = run_cli("--resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    status = rundir.read_status(run_dir)
    assert status["state"] == "completed" and status["step"] == 4 and rundir.has_adapter(run_dir)
    assert max(row["step"] for row in rundir.read_metrics(run_dir)) == 4
