"""Settings loaded back: a run's settings from one of the visitor's runs, or from a file a visitor uploads (the
Reproduce export's sft_config.yaml, its zip, or a run's config.json), as a RunConfig and notes saying what was not
taken. The inverse of recipe.py: what it writes, this reads, and export -> load gives the same settings.

Every value goes through RunConfig's own checks (as if typed); unknown keys are named and refused, nothing is
started. Files are a stranger's: size-capped before parsing, YAML read with safe_load only, a zip's member read
only after its declared size is checked. Host rules (a path on a public Space, a model over the size cap) are the
caller's: the same ones a Start applies.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..config import RunConfig, fields_by_name
from ..rundir import read_config
from .recipe import CONFIG_EXPORT_NAME as CONFIG_NAME  # written by export_run beside sft_config.yaml: exact

MAX_BYTES = 256 * 1024  # a settings file is a few kilobytes
MAX_ZIP_BYTES = 2 * 1024 * 1024  # as every request body here (ui/uploads.py)
MAX_ZIP_ENTRIES = 200
SCALARS = (str, int, float, bool)

# sft_config.yaml (TRL's names) -> RunConfig fields; values taken as they are unless converted below
TRL_TO_FIELD = {
    "num_train_epochs": "num_train_epochs",
    "max_steps": "max_steps",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "learning_rate": "learning_rate",
    "warmup_ratio": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler_type",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "logging_steps": "logging_steps",
    "eval_steps": "eval_steps",
    "save_steps": "save_steps",
    "save_total_limit": "save_total_limit",
    "max_length": "max_length",
    "packing": "packing",
    "completion_only_loss": "answers_only",
    "seed": "seed",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
}
# TRL settings that belong to where and how the exported command ran, not to the run's recipe: read, not taken
NOT_TAKEN = {
    "output_dir": "where the command writes",
    "dataset_name": "the export's own data folder: pick the data in the Data tab",
    "dataset_train_split": "the export's split names",
    "dataset_test_split": "the export's split names",
    "use_peft": "always LoRA here",
    "bf16": "precision is chosen for this machine (Precision: auto)",
    "fp16": "precision is chosen for this machine (Precision: auto)",
    "use_cpu": "precision is chosen for this machine",
    "per_device_eval_batch_size": "the same as the training batch here",
    "logging_first_step": "always on here",
    "eval_strategy": "by steps here",
    "save_strategy": "by steps here",
    "report_to": "Trackio is a setting of its own here",
    "dataloader_num_workers": "chosen here",
    "assistant_only_loss": "chosen from the data and the chat template here",
    "gradient_checkpointing": "auto here: on only when the memory estimate needs it",
    "model_revision": "not a setting here",
}


class SettingsFileError(ValueError):
    """A settings file that cannot be loaded: the message names what is wrong."""


Loaded = tuple[RunConfig, list[str], set[str]]  # the settings, notes on what was not taken, the fields given


def from_run(run: str | Path) -> Loaded:
    """The settings a run trained with (its config.json): every field."""
    return read_config(run), [], set(fields_by_name())


def from_file(path: str | Path) -> Loaded:
    """Settings, notes and the fields the file gave, from an uploaded sft_config.yaml / .yml, the Reproduce zip,
    or a run's config.json (fields a file does not give keep the page's values). Whatever goes wrong reading a
    stranger's file (a deep nesting, a damaged zip, a number too big) is a SettingsFileError with its reason."""
    try:
        return _from_file(Path(path))
    except SettingsFileError:
        raise
    except Exception as error:  # noqa: BLE001  (a hostile file may raise anything while being read)
        raise SettingsFileError(
            f"{Path(path).name} could not be read as settings ({type(error).__name__}): nothing was loaded."
        ) from None


def _from_file(path: Path) -> Loaded:
    name = path.name.lower()
    if name.endswith(".zip"):
        if path.stat().st_size > MAX_ZIP_BYTES:  # before its directory is read: an export of a demo run is small
            raise SettingsFileError(f"{path.name} is {path.stat().st_size:,} bytes: a Reproduce zip here is at most "
                                    f"{MAX_ZIP_BYTES:,} (load its sft_space_config.json instead).")  # fmt: skip
        return _from_zip(path)
    if path.stat().st_size > MAX_BYTES:
        raise SettingsFileError(
            f"{path.name} is {path.stat().st_size:,} bytes: a settings file is at most {MAX_BYTES:,}."
        )
    text = path.read_bytes().decode("utf-8", errors="replace")
    if name.endswith((".yaml", ".yml")):
        return from_yaml(text)
    if name.endswith(".json"):
        return from_json(text)
    raise SettingsFileError(
        f"{path.name}: load a sft_config.yaml, the Reproduce zip (run-…-export.zip) or a run's config.json."
    )


def from_json(text: str) -> Loaded:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsFileError(f"This JSON file does not parse: {error.msg} (line {error.lineno}).") from None
    if not isinstance(data, dict):
        raise SettingsFileError('A run\'s config.json is one object of settings, such as {"lora_r": 16, …}.')
    if isinstance(data.get("sft_settings"), dict) and isinstance(data.get("lora_settings"), dict):  # TRL's names
        return _from_trl({**data["sft_settings"], **_lora_as_trl(data["lora_settings"]), "model": data.get("model")})
    return _config(data), [], set(data)


def from_yaml(text: str) -> Loaded:
    import yaml

    class NoAliases(yaml.SafeLoader):
        """safe_load without anchors and aliases: a few hundred bytes of nested aliases expand to gigabytes."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise SettingsFileError("This YAML file uses anchors and aliases (*name): write each value out.")
            return super().compose_node(parent, index)

    try:
        data = yaml.load(text, Loader=NoAliases)  # noqa: S506  (a SafeLoader: no Python objects)
    except yaml.YAMLError as error:
        raise SettingsFileError(f"This YAML file does not parse: {str(error).splitlines()[0]}.") from None
    if not isinstance(data, dict):
        raise SettingsFileError("sft_config.yaml is one mapping of TRL settings, such as `learning_rate: 0.0002`.")
    return _from_trl(data)


def _from_zip(path: Path) -> Loaded:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise SettingsFileError(f"{path.name} is not a zip file.") from None
    with archive:
        if len(archive.infolist()) > MAX_ZIP_ENTRIES:
            raise SettingsFileError(f"{path.name} holds more than {MAX_ZIP_ENTRIES} files: not a Reproduce export.")
        members = {Path(info.filename).name: info for info in archive.infolist() if not info.is_dir()}
        for wanted, parse in ((CONFIG_NAME, from_json), ("sft_config.yaml", from_yaml)):
            info = members.get(wanted)
            if info is None:
                continue
            if info.file_size > MAX_BYTES:
                raise SettingsFileError(f"{wanted} in {path.name} is {info.file_size:,} bytes: at most {MAX_BYTES:,}.")
            with archive.open(info) as member:
                text = member.read(MAX_BYTES + 1).decode("utf-8", errors="replace")
            return parse(text)
    raise SettingsFileError(f"{path.name} holds no {CONFIG_NAME} or sft_config.yaml: is it a Reproduce export?")


def _lora_as_trl(lora: dict) -> dict:
    targets = lora.get("target_modules")
    return {
        "lora_r": lora.get("r"),
        "lora_alpha": lora.get("lora_alpha"),
        "lora_dropout": lora.get("lora_dropout"),
        "lora_target_modules": targets,
    }


def _from_trl(data: dict) -> Loaded:
    """TRL's names (sft_config.yaml, sft_settings.json) -> RunConfig; unknown keys refused by name."""
    from trl import ModelConfig, ScriptArguments, SFTConfig

    known = set(SFTConfig.__dataclass_fields__) | set(ModelConfig.__dataclass_fields__)
    known |= set(ScriptArguments.__dataclass_fields__) | {"model"}
    unknown = sorted(str(key) for key in data if str(key) not in known)
    if unknown:
        raise SettingsFileError(
            f"Unknown setting(s) in the file: {', '.join(unknown[:12])}: not TRL's (SFTConfig, ModelConfig, "
            "ScriptArguments). Nothing was loaded."
        )
    settings, notes = {}, []
    for key, value in data.items():
        if value is None:
            continue
        listed = isinstance(value, list) and len(value) <= 64 and all(isinstance(v, SCALARS) for v in value)
        if not isinstance(value, SCALARS) and not listed:
            raise SettingsFileError(f"{key} must be a plain value (a number, true/false, text or a short list).")
        if key in TRL_TO_FIELD:
            settings[TRL_TO_FIELD[key]] = value
        elif key in ("model_name_or_path", "model"):
            settings["model"] = value
        elif key == "warmup_steps":
            if isinstance(value, (int, float)) and 0 <= value < 1:  # transformers 5: below 1 is a share of steps
                settings["warmup_ratio"] = value
            else:
                notes.append(f"warmup_steps {value}: warmup is a share of the steps here (Warmup share)")
        elif key == "lora_target_modules":
            settings["lora_target_modules"] = _targets(value)
        elif key in NOT_TAKEN:
            notes.append(f"{key}: not taken ({NOT_TAKEN[key]})")
        else:
            notes.append(f"{key}: a TRL setting this page does not offer, not taken")
    return _config(settings), notes, set(settings)


def _targets(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
        if names == ["all-linear"]:
            return "all-linear"
        if names == ["q_proj", "k_proj", "v_proj", "o_proj"]:
            return "attention"
        return ",".join(names)
    raise SettingsFileError(f"lora_target_modules must be a name or a list of names, not {str(value)[:60]!r}.")


def _config(settings: dict) -> RunConfig:
    """Checked as if typed: unknown fields named, each value converted and validated (RunConfig.validate)."""
    unknown = sorted(set(settings) - set(fields_by_name()))
    if unknown:
        raise SettingsFileError(f"Unknown setting(s): {', '.join(unknown[:12])}. Nothing was loaded.")
    try:
        config = RunConfig.from_dict(settings)
        config.validate()
    except (TypeError, ValueError) as error:
        raise SettingsFileError(str(error)) from None
    return config
