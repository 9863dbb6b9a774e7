"""How long a run takes and what it needs, before and while it runs.

Owns the planned number of steps, the pace measured by finished runs of a model
on this device (start-up, seconds per step, finishing) and the estimates made
from it (preset durations, queue waits), and the disk a run needs. Knows
nothing about processes or pages; reads run directories through `rundir`.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from pathlib import Path

from .. import home
from ..config import BUNDLED_MODEL, RunConfig
from ..rundir import list_run_dirs, read_config_dict, read_json, read_status

MEASURED_AFTER_STEPS = 3  # a run's own pace is trusted for its ETA after this many steps (the first ones warm up)
PACE_MIN_STEPS = 5  # a finished run predicts later runs when it trained at least this many steps


def planned_steps(config: RunConfig) -> int | None:
    """Optimizer steps the run will take (max_steps, or epochs over the training rows)."""
    if config.max_steps > 0:
        return config.max_steps
    from ..hub import HUB_ID, public

    cap = None
    if public() and HUB_ID.match(config.dataset.strip()):
        from ..host.limits import current

        cap = current().dataset_rows  # the most rows the run reads: no Hub dataset is downloaded into the app
    if cap:
        rows = cap
    else:
        try:
            from ..data import load_for_run

            rows = len(load_for_run(config).train)
        except (ValueError, FileNotFoundError):
            return None
    batches = math.ceil(rows / config.per_device_train_batch_size)
    return max(1, math.ceil(batches / config.gradient_accumulation_steps * config.num_train_epochs))


def measured_pace(model: str | None, device: str | None = None) -> dict | None:
    """How the newest finished run of `model` on this device went: start-up seconds (process start, model and data
    loading), wall seconds per step (evaluations included) and finishing seconds (adapter, last probes).
    None until such a run trained PACE_MIN_STEPS steps: then estimates say 'measuring'."""
    from ..models import device_name

    device = device or device_name()
    for run_dir in list_run_dirs():
        status = read_status(run_dir)
        if (
            status.get("state") in ("completed", "stopped")
            and status.get("device_name") == device
            and (status.get("steps_measured") or 0) >= PACE_MIN_STEPS
            and status.get("seconds_per_step")
            and read_config_dict(run_dir).get("model") == model
        ):
            return {
                "startup_seconds": status.get("startup_seconds") or 0.0,
                "seconds_per_step": status["seconds_per_step"],
                "finish_seconds": status.get("finish_seconds") or 0.0,
                "rows_per_step": rows_per_step(read_config_dict(run_dir)),
                "device_name": device,
                "run_id": run_dir.name,
            }
    return None


def steps_in(config: RunConfig, seconds: float, pace: dict | None = None) -> tuple[int, dict] | None:
    """The steps of `config` that fit in `seconds` of wall time, start-up and finishing included, at its model's
    pace measured on this device (never more than the run plans by itself); None while no pace is measured.
    pace: measured_pace(config.model) when the caller has read it already."""
    pace = pace or measured_pace(config.model)
    if pace is None:
        return None
    per_step = seconds_at(pace, 1, rows_per_step(asdict(config))) - pace["startup_seconds"] - pace["finish_seconds"]
    fit = int((seconds - pace["startup_seconds"] - pace["finish_seconds"]) // max(per_step, 1e-6))
    planned = planned_steps(config)
    return max(1, min(fit, planned) if planned else fit), pace


def rows_per_step(config: dict) -> int:
    """Examples one optimizer step trains on (batch x accumulation), from a config's fields."""
    return int(config.get("per_device_train_batch_size") or 1) * int(config.get("gradient_accumulation_steps") or 1)


def estimate_seconds(
    model: str | None, steps: int | None, device: str | None = None, rows: int | None = None
) -> float | None:
    """Wall seconds a run of `steps` steps of `model` takes on this device, from its measured pace; None if unknown.

    rows: examples per step of the run to estimate. On a CPU a step's time grows with them, so the measured pace
    is scaled by rows / the measured run's rows; on a GPU small models take about the same time per step whatever
    the batch (bench/gpu), so the pace is used as measured."""
    return seconds_at(measured_pace(model, device), steps, rows)


def seconds_at(pace: dict | None, steps: int | None, rows: int | None = None) -> float | None:
    """estimate_seconds from a pace already read (measured_pace), for callers that estimate several runs."""
    if pace is None or not steps:
        return None
    per_step = pace["seconds_per_step"]
    if rows and pace["device_name"].startswith("CPU"):
        per_step *= rows / pace["rows_per_step"]
    return pace["startup_seconds"] + steps * per_step + pace["finish_seconds"]


# Before any run of a model on this CUDA card: tokens/s it sustains at least, by model size. The H200 measured
# 24,925 tokens/s for SmolLM2-135M at batch 64, 23,716 for 360M and 22,155 for 1.7B at batch 16 (bench/gpu);
# a T4 or an L4 is several times slower, so these are a third or less of that, and loading is a minute.
CONSERVATIVE_GPU_TOKENS_PER_SECOND = ((0.5e9, 8_000), (2e9, 4_000), (math.inf, 1_500))
CONSERVATIVE_STARTUP_SECONDS = 60


def conservative_gpu_seconds(config: RunConfig, parameters: int) -> float | None:
    """A duration to expect on an unmeasured CUDA card: every row filled to max_length, the slow end of cards."""
    steps = config.max_steps if config.max_steps > 0 else None
    if not steps or not parameters:
        return None
    rate = next(rate for size, rate in CONSERVATIVE_GPU_TOKENS_PER_SECOND if parameters <= size)
    tokens = steps * config.per_device_train_batch_size * config.gradient_accumulation_steps * config.max_length
    return CONSERVATIVE_STARTUP_SECONDS + tokens / rate


def expected_seconds(run_id: str, paces: dict | None = None) -> float | None:
    """How long a queued run will take, from its planned steps and its model's measured pace; None if unknown.
    paces: {model: measured_pace} already read, shared by a caller that estimates several runs (filled here)."""
    config = read_config_dict(run_id)
    model = config.get("model")
    paces = {} if paces is None else paces
    if model not in paces:
        paces[model] = measured_pace(model)
    return seconds_at(paces[model], read_status(run_id).get("planned_steps"), rows=rows_per_step(config))


# ----------------------------------------------------------------- disk
DISK_MARGIN_BYTES = 100 * 2**20  # logs, tokenised data caches and the unexpected


def free_bytes() -> int:
    return shutil.disk_usage(home()).free


def needed_bytes(config: RunConfig, facts=None) -> int:
    """Checkpoints (LoRA weights + Adam moments) x kept + the adapter, + the bundled model's conversion, + the
    download of a Hub model not in the cache yet (its safetensors, sized from the Hub's metadata: `facts`)."""
    from ..models.bundled import bundled_model_dir, is_converted

    need = DISK_MARGIN_BYTES
    if facts is not None and facts.source == "hub":
        from ..models.cache import cached_snapshot

        if cached_snapshot(config.model) is None:
            need += facts.weight_bytes
    folder = bundled_model_dir() if config.model == BUNDLED_MODEL else Path(config.model).expanduser()
    if config.model == BUNDLED_MODEL and not is_converted():
        need += 600 * 2**20  # the float32 safetensors copy of SmolLM2-135M
    model_config = read_json(folder / "config.json")
    hidden = model_config.get("hidden_size", 1024)
    inner = model_config.get("intermediate_size", 4 * hidden)
    layers = model_config.get("num_hidden_layers", 24)
    lora_params = layers * config.lora_r * (4 * 2 * hidden + 3 * (hidden + inner))
    per_checkpoint = lora_params * 4 * 3 + 2**20  # float32 weights + two Adam moments + tokenizer/state files
    return need + per_checkpoint * (config.save_total_limit + 1)


def check_download(model: str, facts) -> None:
    """Before downloading a Hub model on its own (Prepare): its weights must fit on the disk."""
    from ..models.cache import cached_snapshot

    if facts.source != "hub" or cached_snapshot(model) is not None:
        return
    need, free = facts.weight_bytes + DISK_MARGIN_BYTES, free_bytes()
    if free < need:
        raise RuntimeError(
            f"Not enough disk space to download {model}: its weights take {facts.weight_bytes / 2**20:,.0f} MB and "
            f"{free / 2**20:,.0f} MB is free. Delete old runs or pick a smaller model."
        )


def check_disk(config: RunConfig, facts=None) -> None:
    need, free = needed_bytes(config, facts), free_bytes()
    if free < need:
        raise RuntimeError(
            f"Not enough disk space: this run needs about {need / 2**20:,.0f} MB (the model's download if it is not "
            f"cached yet, checkpoints and adapter) and "
            f"{free / 2**20:.0f} MB is free under {home()}. Delete old runs or lower save_total_limit."
        )
