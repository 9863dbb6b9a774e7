"""Exporting a run so it can be repeated without SFT Space: TRL's settings, a YAML config, a `trl sft` command, the
run's exact data, and the standalone training script with its settings file.

Owns the translation of a RunConfig into TRL's and PEFT's argument names (only what differs from TRL's defaults),
the export folder of a run and its zip. The script itself is `sft_space/export/train_sft.py`, a plain Python file
that imports TRL, PEFT, transformers and datasets only; this module copies it (with its dependency header pinned
to the versions installed here) beside `sft_settings.json`, which holds everything that belongs to the run. It
knows nothing about tokens, pushes, Jobs or Gradio.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from ..config import BUNDLED_MODEL, RunConfig
from ..rundir import adapter_dir, export_archive_stem, export_dir, has_adapter, read_config, read_status, run_path

SCRIPT_NAME = "train_sft.py"
SETTINGS_NAME = "sft_settings.json"  # read by the script from beside itself
YAML_NAME = "sft_config.yaml"
CONFIG_EXPORT_NAME = "sft_space_config.json"  # the run's settings as SFT Space reads them back
DATA_DIR = "data"
SCRIPT_SOURCE = Path(__file__).parent / SCRIPT_NAME  # sft_space/export/train_sft.py
DEPENDENCIES_LINE = re.compile(r"^# dependencies = \[.*\]$", re.M)  # inside the script's `# /// script` block


# ------------------------------------------------------------------ the run in TRL's and PEFT's names
def _sft_settings(config: RunConfig, status: dict) -> dict:
    """The SFTConfig keyword arguments of this run that differ from TRL's defaults (output_dir and precision left
    out: precision is chosen for the machine that runs it)."""
    from trl import SFTConfig

    chosen = config.to_sft_config(
        "out",
        gradient_checkpointing=bool(status.get("gradient_checkpointing")),
        assistant_only_loss=bool(status.get("assistant_only_loss")),
    )
    defaults = SFTConfig(output_dir="out", bf16=False)  # TRL defaults to bf16, refused on a CPU
    settings = {}
    for name in (
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "warmup_steps",
        "lr_scheduler_type",
        "weight_decay",
        "max_grad_norm",
        "logging_steps",
        "logging_first_step",
        "eval_strategy",
        "eval_steps",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "max_length",
        "packing",
        "completion_only_loss",
        "assistant_only_loss",
        "gradient_checkpointing",
        "seed",
        "report_to",
        "dataloader_num_workers",
    ):
        value = getattr(chosen, name)
        value = value.value if hasattr(value, "value") else value  # enums (strategies, schedulers) as their names
        if isinstance(value, list) and value == ["none"]:
            value = "none"
        if value != (
            getattr(defaults, name).value if hasattr(getattr(defaults, name), "value") else getattr(defaults, name)
        ):
            settings[name] = value
    return settings


def _lora_settings(config: RunConfig, status: dict) -> dict:
    targets = config.target_module_list()
    return {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": targets,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def model_reference(config: RunConfig) -> tuple[str, str | None]:
    """(what the script loads, the Hub id to fall back on): a local folder here, or the Hub id elsewhere."""
    from ..models import hub_model_id
    from ..models.bundled import bundled_model_dir

    if config.model == BUNDLED_MODEL:
        return str(bundled_model_dir()), hub_model_id(config.model)
    return config.model, None


def trl_settings(run: str | Path, data_dir: str = DATA_DIR) -> dict:
    """`trl sft` arguments for the run: the same model, data, LoRA and SFTConfig settings, in TRL's names."""
    config, status = read_config(run), read_status(run)
    model, _ = model_reference(config)
    targets = config.target_module_list()
    settings = {
        "model_name_or_path": model,
        "dataset_name": data_dir,
        "dataset_train_split": "train",
        "dataset_test_split": "validation",
        "use_peft": True,
        "lora_r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "lora_target_modules": targets if isinstance(targets, list) else [targets],
        "output_dir": "sft-output",
    }
    if status.get("precision") == "bf16":
        settings["bf16"] = True
        if str(status.get("device", "")).startswith("CPU"):
            settings["use_cpu"] = True  # bf16 autocast on a CPU
    elif status.get("precision"):  # TRL turns bf16 on unless told: a CPU refuses it, and the run trained without it
        settings["bf16"] = False
        if status["precision"] == "fp16":
            settings["fp16"] = True
    settings.update(_sft_settings(config, status))
    return settings


def trl_yaml(run: str | Path, data_dir: str = DATA_DIR) -> str:
    """A config for `trl sft --config sft_config.yaml` (JSON values are valid YAML)."""
    _, fallback = model_reference(read_config(run))
    lines = [
        f"# SFT Space run {run_path(run).name}: trl sft --config {YAML_NAME}",
        f"# {data_dir}/ holds train.jsonl and validation.jsonl"
        + (f"; on another machine use model_name_or_path: {fallback}" if fallback else ""),
    ]
    lines += [f"{key}: {json.dumps(value)}" for key, value in trl_settings(run, data_dir).items()]
    return "\n".join(lines) + "\n"


def trl_command(run: str | Path, data_dir: str = DATA_DIR) -> str:
    """The same run as one `trl sft` command line."""
    import shlex

    flags = []
    for key, value in trl_settings(run, data_dir).items():
        if isinstance(value, bool):
            flags.append(f"--{key}" if value else f"--{key} false")
        elif isinstance(value, list):
            flags.append(f"--{key} " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            flags.append(f"--{key} {shlex.quote(str(value))}")
    return "trl sft \\\n  " + " \\\n  ".join(flags)


# ------------------------------------------------------------------ the data
def run_tokenizer(run: str | Path):
    """The tokenizer the run trained with: the one saved beside its adapter, else the model's, prepared as the
    trainer prepares it (ChatML for a base model)."""
    from ..models import load_tokenizer, resolve_tokenizer

    return load_tokenizer(adapter_dir(run) if has_adapter(run) else resolve_tokenizer(read_config(run).model))


def export_data(run: str | Path, target: Path) -> dict[str, int]:
    """The exact training and validation rows of the run, in TRL's formats, as train.jsonl / validation.jsonl:
    read at the dataset commit the run trained on, and shaped by the same `trainer_rows` the trainer uses."""
    from ..data import load_for_run, trainer_rows

    config, status = read_config(run), read_status(run)
    splits = load_for_run(config, revision=status.get("data_revision"))
    rows = trainer_rows(config, run_tokenizer(run), splits)
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, trl_rows in zip(("train", "validation"), rows):
        (target / f"{name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in trl_rows), encoding="utf-8"
        )
        counts[name] = len(trl_rows)
    return counts


# ------------------------------------------------------------------ the standalone script
def dependencies() -> list[str]:
    """What the script needs, pinned to the versions that trained the run here (torch left to the machine)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("trl", "peft", "transformers", "datasets")] + ["torch"]


def standalone_script() -> str:
    """train_sft.py as exported: the package's script with its PEP 723 dependencies pinned to this install."""
    pinned = "# dependencies = [" + ", ".join(json.dumps(d) for d in dependencies()) + "]"
    text, replaced = DEPENDENCIES_LINE.subn(pinned, SCRIPT_SOURCE.read_text(encoding="utf-8"), count=1)
    if not replaced:
        raise RuntimeError(f"{SCRIPT_SOURCE} has lost its '# dependencies = [...]' header line")
    return text


def script_settings(run: str | Path) -> dict:
    """sft_settings.json: everything of the run the script needs (the script itself is the same for every run)."""
    from ..models import CHATML_TEMPLATE

    config, status = read_config(run), read_status(run)
    model, fallback = model_reference(config)
    sft = {
        **_sft_settings(config, status),
        "report_to": "none",
        "gradient_checkpointing": bool(status.get("gradient_checkpointing")),
    }
    return {
        "run": run_path(run).name,
        "model": model,
        "model_on_the_hub": fallback,
        "sft_settings": sft,
        "lora_settings": _lora_settings(config, status),
        "chatml_template": CHATML_TEMPLATE,
        "data_dir": DATA_DIR,
    }


def write_settings(settings: dict, path: Path) -> None:
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def export_run(run: str | Path) -> Path:
    """RUN_DIR/export: train_sft.py, sft_settings.json, sft_config.yaml, sft_space_config.json, trl_command.sh,
    data/{train,validation}.jsonl and README.md, and a zip of them beside the folder."""
    run_dir = run_path(run)
    target = export_dir(run_dir)  # the zip goes beside it
    shutil.rmtree(target, ignore_errors=True)
    counts = export_data(run_dir, target / DATA_DIR)
    (target / SCRIPT_NAME).write_text(standalone_script(), encoding="utf-8")
    write_settings(script_settings(run_dir), target / SETTINGS_NAME)
    (target / YAML_NAME).write_text(trl_yaml(run_dir), encoding="utf-8")
    # the run's own settings, exactly: what "Load settings" reads back from this folder's zip (settings_in.py)
    (target / CONFIG_EXPORT_NAME).write_text(read_config(run_dir).to_json() + "\n", encoding="utf-8")
    (target / "trl_command.sh").write_text(trl_command(run_dir) + "\n", encoding="utf-8")
    (target / "README.md").write_text(
        f"# Run {run_dir.name}, exported\n\nThe exact rows ({counts['train']} training, {counts['validation']} "
        f"validation) and settings of the run.\n\n- `python {SCRIPT_NAME}`: the run with TRL, PEFT, transformers and "
        f"datasets only (its settings are in `{SETTINGS_NAME}`).\n- `trl sft --config {YAML_NAME}` or "
        "`bash trl_command.sh`: the same with TRL's command line "
        "(for a base model without a chat template, use the script: it sets up ChatML).\n"
        f"- `accelerate launch --num_processes 2 {SCRIPT_NAME}`: the script on several GPUs.\n"
        f"- `{CONFIG_EXPORT_NAME}`: the run's settings for SFT Space (Train tab: Load settings, with this zip).\n",
        encoding="utf-8",
    )
    archive = shutil.make_archive(str(export_archive_stem(run_dir)), "zip", target)
    return Path(archive)
