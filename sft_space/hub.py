"""Publishing a run: push the adapter or the merged model with a model card, export the run, run it on Jobs.

Owns the Hub token's handling (taken per call, never stored, logged or written; scrubbed from any message),
the model card written from the run directory, the one-commit push with retries, the merged-model check,
the export as a `trl sft` command, a YAML config and a standalone script, and submitting a run to Hugging Face
Jobs. It reads run directories and knows nothing about Gradio.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import hub_endpoint, network_error
from .config import BUNDLED_MODEL, RunConfig
from .models import is_hub_model_id
from .runs import read_config, read_json, read_metrics, read_probes, read_status, run_path, write_json_atomic

Progress = Callable[[float, str], None]
PUSH_ATTEMPTS = 4  # one try and three retries: about 14 s of backoff in all before giving up
BACKOFF_SECONDS = 2.0
PUBLISHED_FILE = "published.json"  # in the run directory: where it was pushed (never the token)
JOBS_FILE = "jobs.json"
JOB_FOLDER = "sft_space_job"  # the folder of a target repo that holds a Jobs run's script and data
JOB_FLAVORS = ["cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small", "a10g-large", "a100-large", "h100"]
REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")


def _no_progress(fraction: float, message: str) -> None:
    pass


# ------------------------------------------------------------------ tokens and errors
def resolve_token(explicit: str | None = None) -> str | None:
    """The token for one call: the signed-in or typed one, else (not on a Space) HF_TOKEN or a `hf auth login`.

    On a Space the environment's token is the Space owner's secret: a visitor must never push with it, so there
    only the visitor's own sign-in or pasted token counts. Never stored.
    """
    from huggingface_hub import get_token

    explicit = (explicit or "").strip()
    if explicit or os.environ.get("SPACE_ID"):
        return explicit or None
    return get_token()


def scrub(text: str, token: str | None) -> str:
    """A message with the token (and anything that looks like a Hub token) blanked out."""
    if token:
        text = text.replace(token, "hf_***")
    return re.sub(r"\bhf_[A-Za-z0-9]{8,}\b", "hf_***", text)


def _api(token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token or False)


def _status_code(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def readable(error: Exception, token: str | None, what: str) -> Exception:
    """A user-facing exception for a failed Hub call, with the token scrubbed."""
    code = _status_code(error)
    if code == 401:
        return PermissionError(f"The Hub did not accept your token while {what} (expired or revoked?): sign in again. "
                               "Nothing was lost: the run stays here and you can push again.")
    if code == 403:
        return PermissionError(f"Your token may not write there ({what}): use a token with write access, or a repo "
                               "under your own name or an organisation you can write to.")
    return RuntimeError(scrub(f"{what} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                              token))


def transient(error: Exception) -> bool:
    """Worth retrying: the network or the server, not the request."""
    code = _status_code(error)
    if code is not None:
        return code >= 500 or code == 429
    return network_error(error)


def with_retries(call, what: str, token: str | None, attempts: int = PUSH_ATTEMPTS, progress: Progress = _no_progress):
    """call() with exponential backoff on network and server errors; other errors at once."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if not transient(error) or attempt == attempts:
                raise readable(error, token, what) from None
            wait = BACKOFF_SECONDS * 2 ** (attempt - 1) * (0.8 + 0.4 * random.random())
            progress(0.5, f"{what}: attempt {attempt} failed ({type(error).__name__}); retrying in {wait:.0f} s")
            time.sleep(wait)


def signed_in_user(token: str | None) -> str:
    """The Hub username the token belongs to; PermissionError when there is no usable token."""
    if not token:
        raise PermissionError("Sign in with Hugging Face first (or paste a write token, or set HF_TOKEN).")
    info = with_retries(lambda: _api(token).whoami(), "checking your sign-in", token)
    return info["name"]


def repo_id_for(user: str, name: str) -> str:
    """owner/name from what the user typed: a bare name goes under their own account."""
    name = (name or "").strip()
    owner, _, bare = name.rpartition("/")
    if not REPO_NAME.match(bare or ""):
        raise ValueError(f"{name!r} is not a valid repo name: use letters, digits, '-', '_' or '.', e.g. my-sft-model.")
    return f"{owner or user}/{bare}"


def default_repo_name(run: str | Path) -> str:
    config = read_config(run)
    base = "smollm2-135m" if config.model == BUNDLED_MODEL else Path(config.model).name.lower()
    data = Path(config.dataset.replace("demo:", "")).stem.split("/")[-1].lower()
    return re.sub(r"[^a-z0-9.-]+", "-", f"{base}-{data}-lora").strip("-")[:90]


# ------------------------------------------------------------------ model card
def base_model_id(config: RunConfig) -> str | None:
    from .models import hub_model_id

    return hub_model_id(config.model)


def dataset_id(config: RunConfig) -> str | None:
    from .data import is_hub_id

    return config.dataset if is_hub_id(config.dataset) else None


def loss_curve_png(metrics: list[dict], width: int = 720, height: int = 360) -> bytes | None:
    """Train and validation loss against step, drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    series = {key: [(m["step"], float(m[key])) for m in metrics if isinstance(m.get(key), (int, float))]
              for key in ("loss", "eval_loss")}
    points = [p for values in series.values() for p in values]
    if not points:
        return None
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    steps = [s for s, _ in points]
    losses = [v for _, v in points]
    x0, x1 = min(steps), max(max(steps), min(steps) + 1)
    y0, y1 = min(0.0, min(losses)), max(losses) * 1.05 or 1.0

    def xy(step, value):
        return (left + (step - x0) / (x1 - x0) * (right - left), bottom - (value - y0) / (y1 - y0) * (bottom - top))

    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for i in range(5):
        value = y0 + (y1 - y0) * i / 4
        y = xy(x0, value)[1]
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((5, y - 6), f"{value:.2f}", fill="black")
    for step in (x0, (x0 + x1) // 2, x1):
        x = xy(step, y0)[0]
        draw.text((x - 8, bottom + 6), str(step), fill="black")
    draw.text(((left + right) // 2 - 12, height - 18), "step", fill="black")
    colours = {"loss": (37, 99, 235), "eval_loss": (234, 88, 12)}
    labels = {"loss": "train loss", "eval_loss": "validation loss"}
    for n, (key, values) in enumerate(series.items()):
        if len(values) > 1:
            draw.line([xy(s, v) for s, v in values], fill=colours[key], width=2)
        for s, v in values:
            x, y = xy(s, v)
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colours[key])
        draw.rectangle([right - 150, top + 4 + 16 * n, right - 138, top + 14 + 16 * n], fill=colours[key])
        draw.text((right - 132, top + 2 + 16 * n), labels[key], fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _yaml_list(key: str, values: list[str]) -> list[str]:
    return [f"{key}:"] + [f"- {json.dumps(v)}" for v in values] if values else []


def _last(metrics: list[dict], key: str) -> float | None:
    values = [m[key] for m in metrics if isinstance(m.get(key), (int, float))]
    return values[-1] if values else None


def _cell(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("|", "\\|") or "(empty)"


def model_card(run: str | Path, repo_id: str, merged: bool = False) -> str:
    """README.md for the pushed model, written from the run directory alone."""
    from .config import fields_by_name
    from .evaluate import summary_rows

    run_dir = run_path(run)
    config, status, metrics = read_config(run_dir), read_status(run_dir), read_metrics(run_dir)
    probes, evaluation = read_probes(run_dir), read_json(run_dir / "eval.json") or {}
    base, data = base_model_id(config), dataset_id(config)
    license_ = status.get("base_license")
    lines = ["---"]
    lines += [f"base_model: {base}"] if base else []
    lines += [f"library_name: {'transformers' if merged else 'peft'}", "pipeline_tag: text-generation"]
    lines += [f"license: {license_}"] if license_ else []
    lines += _yaml_list("datasets", [data] if data else [])
    tags = ["sft", "trl", "lora", "sft-space"] + (["merged"] if merged else ([f"base_model:adapter:{base}"] if base else []))
    lines += _yaml_list("tags", tags)
    lines += ["---", "", f"# {repo_id.split('/')[-1]}", ""]
    what = "a merged model (base weights with the LoRA update folded in)" if merged else "a LoRA adapter"
    base_link = f"[{base}](https://huggingface.co/{base})" if base else f"a local model (`{config.model}`)"
    data_text = f"[{data}](https://huggingface.co/datasets/{data})" if data else f"`{config.dataset}`"
    if config.dataset.startswith("demo:"):
        from .bundled import DEMO_DATASETS

        name = config.dataset[len("demo:"):]
        data_text = f"the SFT Space demo set `{name}` ({DEMO_DATASETS.get(name, 'bundled with the app').rstrip('.')})"
    lines += [f"This is {what} for {base_link}, fine-tuned with supervised fine-tuning (TRL `SFTTrainer`) on "
              f"{data_text}.", ""]

    lines += ["## Data", ""]
    lines += [f"- Dataset: {data_text}" + (f", subset `{config.dataset_config}`" if config.dataset_config else "")
              + (f", revision `{config.dataset_revision}`" if config.dataset_revision else "")
              + (f", split `{config.dataset_split}`" if config.dataset_split else "")]
    loss_on = status.get("loss_on") or ("the answers" if config.answers_only else "every token")
    lines += [f"- Format: {status.get('data_format', 'unknown')}; loss on {loss_on}"
              + (" (prompt tokens masked)" if config.answers_only else "")]
    lines += [f"- Rows: {status.get('train_rows', '?')} training, {status.get('validation_rows', '?')} validation"]
    lengths = status.get("token_lengths") or {}
    if lengths:
        lines += [f"- Tokens per training row: min {lengths['min']}, median {lengths['median']}, 95th percentile "
                  f"{lengths['p95']}, max {lengths['max']}; {lengths['at_max_length']:.1%} reach max_length "
                  f"{config.max_length}"]
    for note in status.get("data_notes") or []:
        lines += [f"- {note}"]
    lines += [""]

    lines += ["## Training", ""]
    steps = status.get("step")
    lines += [f"Trained for {steps} steps ({status.get('state', '?')}) in {status.get('elapsed_seconds', 0):.0f} s on "
              f"{status.get('device', 'unknown hardware')}, precision {status.get('precision', '?')}, gradient "
              f"checkpointing {'on' if status.get('gradient_checkpointing') else 'off'}. "
              f"{status.get('trainable_parameters', 0):,} trainable parameters of {status.get('total_parameters', 0):,}.",
              ""]
    if status.get("chatml_added"):
        lines += ["The base model had no chat template: ChatML (`<|im_start|>`, `<|im_end|>`) was set up and those "
                  "tokens' embedding rows were trained with the adapter.", ""]
    if (run_dir / "adapter").is_dir() and metrics:
        lines += ["![Training and validation loss](loss.png)", ""]
    final_train, final_eval = _last(metrics, "loss"), _last(metrics, "eval_loss")
    if final_train is not None:
        lines += [f"Final training loss **{final_train:.4f}**"
                  + (f", validation loss **{final_eval:.4f}**." if final_eval is not None else "."), ""]
    lines += ["| parameter | value | TRL / PEFT name |", "|---|---|---|"]
    skip = {"temperature", "top_p", "max_new_tokens", "repetition_penalty", "run_name", "probe_prompts"}
    for name, field in fields_by_name().items():
        if name in skip or field.metadata["group"] in ("Data", "Model"):
            continue
        hint = re.search(r"\(([a-z_]+)\)\.?$", field.metadata["hint"])
        lines += [f"| {name} | `{getattr(config, name)}` | {hint.group(1) if hint else ''} |"]
    lines += [""]

    if evaluation.get("base") and evaluation.get("tuned"):
        rows = evaluation["tuned"].get("heldout", {}).get("rows")
        checked = evaluation["tuned"].get("format", {}).get("count")
        scope = f"Loss on {rows} held-out rows" + (f"; format checks ({evaluation.get('scorer', {}).get('kind', '?')}) "
                                                    f"on {checked} held-out prompts, greedy decoding" if checked else "")
        lines += ["## Evaluation", "", f"{scope}; base model vs tuned.", "",
                  "| metric | base | tuned | better |", "|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in summary_rows(evaluation)]
        lines += [""]
    if evaluation.get("baselines"):
        from .baselines import table_rows

        headers, rows = table_rows(evaluation["baselines"])
        lines += ["Compared with prompting the base model:", "", f"| {' | '.join(headers)} |",
                  "|" + "---|" * len(headers)]
        lines += [f"| {' | '.join(row)} |" for row in rows]
        lines += ["", evaluation["baselines"].get("verdict", ""), ""]
    if len(probes) >= 2:
        first, last = probes[0], probes[-1]
        lines += ["## Probe prompts", "", f"Greedy replies before training and after step {last['step']}.", "",
                  "| prompt | base | tuned |", "|---|---|---|"]
        for prompt, before, after in zip(last["prompts"], first["replies"], last["replies"]):
            lines += [f"| {_cell(prompt, 160)} | {_cell(before)} | {_cell(after)} |"]
        lines += [""]

    lines += ["## Intended use and limitations", "",
              f"A small fine-tune for trying out supervised fine-tuning: it learned the format and style of "
              f"{data_text} from {status.get('train_rows', '?')} rows in {steps} steps. Use it for that task and "
              "check its answers; it is not meant for high-stakes decisions. It keeps the base model's limitations "
              "and biases, may state wrong facts confidently, and was evaluated only as shown above."]
    if status.get("note"):
        lines += ["", f"Note from training: {status['note']}"]
    lines += ["", "## Usage", "", "```python"]
    if merged:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")']
    else:
        lines += ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")  # the chat template used in training',
                  f'base = AutoModelForCausalLM.from_pretrained("{base or "PATH/TO/BASE"}")',
                  "base.resize_token_embeddings(len(tokenizer))  # a no-op unless training added tokens",
                  f'model = PeftModel.from_pretrained(base, "{repo_id}")']
    lines += ['messages = [{"role": "user", "content": "Hello!"}]',
              "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
              "return_dict=True)",
              "output = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
              'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", ""]
    lines += ["## Reproduce", "", "`train_sft.py` and `sft_config.yaml` in this repo (when exported with it) "
              "re-run the same training with TRL; see the run's settings above.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ files to push
def _probe_conversations(run_dir: Path, config: RunConfig) -> list[list[dict]]:
    probes = read_probes(run_dir)
    prompts = probes[-1]["prompts"] if probes else config.probe_list() or ["Hello!"]
    return [[{"role": "user", "content": p}] for p in prompts]


def save_merged(run: str | Path, target: Path, progress: Progress = _no_progress) -> None:
    """Base + adapter merged (merge_and_unload) into safetensors with the tokenizer; checked on the probe prompts."""
    import torch
    from peft import PeftModel

    from .chat import generate_batch
    from .models import fit_model_to_tokenizer, load_model, load_tokenizer, resolve_model

    run_dir = run_path(run)
    config = read_config(run_dir)
    progress(0.1, "Loading base model and adapter")
    tokenizer = load_tokenizer(run_dir / "adapter")
    base = load_model(resolve_model(config.model))
    fit_model_to_tokenizer(base, tokenizer)
    model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    conversations = _probe_conversations(run_dir, config)
    progress(0.3, "Answering the probe prompts with base + adapter")
    with torch.inference_mode():
        before = generate_batch(model, tokenizer, conversations, 48)
        merged = model.merge_and_unload()
        progress(0.6, "Answering them again with the merged model")
        after = generate_batch(merged, tokenizer, conversations, 48)
    if before != after:
        differing = sum(a != b for a, b in zip(before, after))
        raise RuntimeError(f"The merged model answers {differing} of {len(before)} probe prompts differently from base + "
                           "adapter, so it was not pushed: push the adapter instead.")
    progress(0.8, "Saving the merged model as safetensors")
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def require_adapter(run: str | Path) -> Path:
    """The run's directory, when it has a saved adapter to publish."""
    run_dir = run_path(run)
    if not (run_dir / "adapter" / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"Run {run_dir.name} has no adapter to push: wait for it to finish, or Stop & save it.")
    return run_dir


def publish_files(run: str | Path, repo_id: str, merged: bool = False, progress: Progress = _no_progress,
                  extra: dict[str, bytes] | None = None) -> Path:
    """A staging folder with everything one push commits: weights, tokenizer, README.md, loss.png, settings."""
    run_dir = require_adapter(run)
    staging = Path(tempfile.mkdtemp(prefix="sft-space-push-"))
    if merged:
        save_merged(run_dir, staging, progress)
    else:
        for path in (run_dir / "adapter").iterdir():
            if path.is_file():
                shutil.copy2(path, staging / path.name)
    (staging / "README.md").write_text(model_card(run_dir, repo_id, merged), encoding="utf-8")
    image = loss_curve_png(read_metrics(run_dir))
    if image:
        (staging / "loss.png").write_bytes(image)
    (staging / "sft_space_run.json").write_text(json.dumps(
        {"config": read_config(run_dir).to_dict(),
         "status": {k: v for k, v in read_status(run_dir).items() if k not in ("pid", "owner")}}, indent=2))
    for name, data in (extra or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    return staging


def ensure_repo(api, repo_id: str, private: bool, token: str | None, progress: Progress = _no_progress) -> None:
    """Create the model repo unless it exists already (an existing repo of the user's is pushed to as it is)."""
    if not with_retries(lambda: api.repo_exists(repo_id), f"looking up {repo_id}", token, progress=progress):
        with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True), f"creating {repo_id}", token,
                     progress=progress)


def push_run(run: str | Path, name: str, token: str | None, *, private: bool = False, merged: bool = False,
             progress: Progress = _no_progress) -> dict:
    """Push the run's adapter (or merged model) with its model card to the user's repo, in one commit."""
    from huggingface_hub import CommitOperationAdd

    run_dir = require_adapter(run)  # before any network call
    progress(0.02, "Checking your sign-in")
    user = signed_in_user(token)
    repo_id = repo_id_for(user, name)
    staging = publish_files(run_dir, repo_id, merged, progress)
    try:
        api = _api(token)
        progress(0.85, f"Creating {repo_id}")
        ensure_repo(api, repo_id, private, token, progress)
        operations = [CommitOperationAdd(path_in_repo=str(p.relative_to(staging)), path_or_fileobj=str(p))
                      for p in sorted(staging.rglob("*")) if p.is_file()]
        what = "merged model" if merged else "LoRA adapter"
        progress(0.9, f"Uploading {len(operations)} files in one commit")
        commit = with_retries(lambda: api.create_commit(repo_id, operations, commit_message=f"Upload {what} trained with "
                                                        f"SFT Space (run {run_dir.name})"),
                              f"uploading to {repo_id}", token, progress=progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {"repo_id": repo_id, "url": f"{hub_endpoint()}/{repo_id}", "kind": "merged" if merged else "adapter",
              "private": private, "commit": getattr(commit, "oid", None), "pushed_at": time.time()}
    history = read_json(run_dir / PUBLISHED_FILE) or {"pushes": []}
    history["pushes"].append(record)
    write_json_atomic(run_dir / PUBLISHED_FILE, history)
    progress(1.0, f"Pushed to {record['url']}")
    return record


# ------------------------------------------------------------------ export
EXPORT_FOLDER = "export"
SCRIPT_NAME = "train_sft.py"
YAML_NAME = "sft_config.yaml"


def _sft_settings(config: RunConfig, status: dict) -> dict:
    """The SFTConfig keyword arguments of this run that differ from TRL's defaults (output_dir and precision left
    out: precision is chosen for the machine that runs it)."""
    from trl import SFTConfig

    chosen = config.to_sft_config("out", gradient_checkpointing=bool(status.get("gradient_checkpointing")),
                                  assistant_only_loss=bool(status.get("assistant_only_loss")))
    defaults = SFTConfig(output_dir="out", bf16=False)  # TRL defaults to bf16, refused on a CPU
    settings = {}
    for name in ("num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "learning_rate", "warmup_steps", "lr_scheduler_type", "weight_decay",
                 "max_grad_norm", "logging_steps", "logging_first_step", "eval_strategy", "eval_steps", "save_strategy",
                 "save_steps", "save_total_limit", "max_length", "packing", "completion_only_loss", "assistant_only_loss",
                 "gradient_checkpointing", "seed", "report_to", "dataloader_num_workers"):
        value = getattr(chosen, name)
        value = value.value if hasattr(value, "value") else value  # enums (strategies, schedulers) as their names
        if isinstance(value, list) and value == ["none"]:
            value = "none"
        if value != (getattr(defaults, name).value if hasattr(getattr(defaults, name), "value") else getattr(defaults, name)):
            settings[name] = value
    return settings


def _lora_settings(config: RunConfig, status: dict) -> dict:
    targets = config.target_module_list()
    return {"r": config.lora_r, "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
            "target_modules": targets, "bias": "none", "task_type": "CAUSAL_LM"}


def _model_reference(config: RunConfig) -> tuple[str, str | None]:
    """(what the script loads, the Hub id to fall back on): a local folder here, or the Hub id elsewhere."""
    from .bundled import bundled_model_dir
    from .models import hub_model_id

    if config.model == BUNDLED_MODEL:
        return str(bundled_model_dir()), hub_model_id(config.model)
    return config.model, None


def export_data(run: str | Path, target: Path) -> dict[str, int]:
    """The exact training and validation rows of the run, in TRL's formats, as train.jsonl / validation.jsonl."""
    import dataclasses

    from .data import load_for_run, to_trl_rows

    config, status = read_config(run), read_status(run)
    splits = load_for_run(config)
    answers_only = config.answers_only and splits.format != "text"
    every_answer = answers_only and bool(status.get("assistant_only_loss"))
    config = dataclasses.replace(config, answers_only=answers_only)
    validation = splits.validation[: config.eval_max_rows] if config.eval_max_rows else splits.validation
    target.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, rows in (("train", splits.train), ("validation", validation)):
        trl_rows = to_trl_rows(rows, answers_only, every_answer)
        (target / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in trl_rows),
                                              encoding="utf-8")
        counts[name] = len(trl_rows)
    return counts


def trl_settings(run: str | Path, data_dir: str = "data") -> dict:
    """`trl sft` arguments for the run: the same model, data, LoRA and SFTConfig settings, in TRL's names."""
    config, status = read_config(run), read_status(run)
    model, _ = _model_reference(config)
    targets = config.target_module_list()
    settings = {"model_name_or_path": model, "dataset_name": data_dir, "dataset_train_split": "train",
                "dataset_test_split": "validation", "use_peft": True, "lora_r": config.lora_r,
                "lora_alpha": config.lora_alpha, "lora_dropout": config.lora_dropout,
                "lora_target_modules": targets if isinstance(targets, list) else [targets], "output_dir": "sft-output"}
    if status.get("precision") == "bf16":
        settings["bf16"] = True
        if str(status.get("device", "")).startswith("CPU"):
            settings["use_cpu"] = True  # bf16 autocast on a CPU
    settings.update(_sft_settings(config, status))
    return settings


def trl_yaml(run: str | Path, data_dir: str = "data") -> str:
    """A config for `trl sft --config sft_config.yaml` (JSON values are valid YAML)."""
    _, fallback = _model_reference(read_config(run))
    lines = [f"# SFT Space run {run_path(run).name}: trl sft --config {YAML_NAME}",
             f"# {data_dir}/ holds train.jsonl and validation.jsonl"
             + (f"; on another machine use model_name_or_path: {fallback}" if fallback else "")]
    lines += [f"{key}: {json.dumps(value)}" for key, value in trl_settings(run, data_dir).items()]
    return "\n".join(lines) + "\n"


def trl_command(run: str | Path, data_dir: str = "data") -> str:
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


SCRIPT_TEMPLATE = '''# /// script
# dependencies = [__DEPENDENCIES__]
# ///
"""Re-run SFT Space run __RUN_ID__ with TRL, PEFT, transformers and datasets only.

    python train_sft.py [--output_dir DIR] [--push_to_hub OWNER/NAME]

Data: data/train.jsonl and data/validation.jsonl next to this file (the run's exact rows), or, with --data_repo,
the same files from a Hub repo (how a Hugging Face Job gets them). The adapter and tokenizer go to --output_dir.
"""
import argparse
import os

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

MODEL = __MODEL__
MODEL_ON_THE_HUB = __FALLBACK__  # used when MODEL is not a folder on this machine
SFT_SETTINGS = __SFT__
LORA_SETTINGS = __LORA__
CHATML = __CHATML__


def chatml_setup(tokenizer):
    """A base model without a chat template gets ChatML; returns the token ids whose embeddings must be trained."""
    if tokenizer.chat_template:
        new_tokens = []
    else:
        original_eos = tokenizer.eos_token
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = CHATML
        tokenizer.eos_token = "<|im_end|>"
        new_tokens = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        if tokenizer.pad_token is None and original_eos and original_eos != "<|im_end|>":
            tokenizer.pad_token = original_eos
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        for candidate in (tokenizer.unk_token, "<|endoftext|>", "<pad>"):
            if candidate and candidate != tokenizer.eos_token and candidate in tokenizer.get_vocab():
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return new_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="sft-output")
    parser.add_argument("--data_repo", help="read the data from this Hub repo's __JOB_FOLDER__/ folder")
    parser.add_argument("--push_to_hub", help="push the adapter and tokenizer to this repo at the end")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    if args.data_repo:
        from huggingface_hub import hf_hub_download

        files = {split: hf_hub_download(args.data_repo, f"__JOB_FOLDER__/data/{split}.jsonl")
                 for split in ("train", "validation")}
    else:
        files = {split: os.path.join(here, "data", f"{split}.jsonl") for split in ("train", "validation")}
    data = load_dataset("json", data_files=files)
    model_path = MODEL if os.path.isdir(MODEL) or not MODEL_ON_THE_HUB else MODEL_ON_THE_HUB
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    new_tokens = chatml_setup(tokenizer)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16 if bf16 else torch.float32,
                                                 use_safetensors=True)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    lora = dict(LORA_SETTINGS)
    if new_tokens:  # train the new tokens' rows; the head too when it is not tied to the embeddings
        lora["trainable_token_indices"] = {"embed_tokens": new_tokens}
        if not model.config.get_text_config().tie_word_embeddings:
            lora["trainable_token_indices"]["lm_head"] = new_tokens
        from peft.utils.other import TrainableTokensWrapper  # TRL's fused LM head also reads .bias

        has, get = TrainableTokensWrapper._hasattr_wrapped, TrainableTokensWrapper._getattr_wrapped
        TrainableTokensWrapper._hasattr_wrapped = lambda self, name, modules: name == "bias" or has(self, name, modules)
        TrainableTokensWrapper._getattr_wrapped = lambda self, name, modules: (
            getattr(self.original_module, "bias", None) if name == "bias" else get(self, name, modules))
    config = SFTConfig(output_dir=args.output_dir, bf16=bf16, **SFT_SETTINGS)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data["train"], eval_dataset=data["validation"],
                         processing_class=tokenizer, peft_config=LoraConfig(**lora))
    trainer.train()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"trained {trainer.state.global_step} steps; adapter saved to {args.output_dir}")
    if args.push_to_hub:
        trainer.model.push_to_hub(args.push_to_hub, commit_message="Adapter trained by a Hugging Face Job")
        tokenizer.push_to_hub(args.push_to_hub)
        print(f"pushed to {args.push_to_hub}")


if __name__ == "__main__":
    main()
'''


def _dependencies() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("trl", "peft", "transformers", "datasets")] + ["torch"]


def standalone_script(run: str | Path) -> str:
    """A Python script that repeats the run with TRL/PEFT/transformers/datasets only (no SFT Space)."""
    from .models import CHATML_TEMPLATE

    config, status = read_config(run), read_status(run)
    model, fallback = _model_reference(config)
    settings = {**_sft_settings(config, status), "report_to": "none",
                "gradient_checkpointing": bool(status.get("gradient_checkpointing"))}
    replacements = {
        "__DEPENDENCIES__": ", ".join(json.dumps(d) for d in _dependencies()),
        "__RUN_ID__": run_path(run).name, "__MODEL__": repr(model), "__FALLBACK__": repr(fallback),
        "__SFT__": _pretty(settings), "__LORA__": _pretty(_lora_settings(config, status)),
        "__CHATML__": repr(CHATML_TEMPLATE), "__JOB_FOLDER__": JOB_FOLDER,
    }
    text = SCRIPT_TEMPLATE
    for key, value in replacements.items():
        text = text.replace(key, value)
    return text


def _pretty(values: dict) -> str:
    inner = ",\n".join(f"    {json.dumps(k)}: {v!r}" for k, v in values.items())
    return "{\n" + inner + ",\n}"


def export_run(run: str | Path) -> Path:
    """RUN_DIR/export: train_sft.py, sft_config.yaml, trl_command.sh, data/{train,validation}.jsonl and a zip of them."""
    run_dir = run_path(run)
    target = run_dir / EXPORT_FOLDER
    shutil.rmtree(target, ignore_errors=True)
    counts = export_data(run_dir, target / "data")
    (target / SCRIPT_NAME).write_text(standalone_script(run_dir), encoding="utf-8")
    (target / YAML_NAME).write_text(trl_yaml(run_dir), encoding="utf-8")
    (target / "trl_command.sh").write_text(trl_command(run_dir) + "\n", encoding="utf-8")
    (target / "README.md").write_text(
        f"# Run {run_dir.name}, exported\n\nThe exact rows ({counts['train']} training, {counts['validation']} "
        f"validation) and settings of the run.\n\n- `python {SCRIPT_NAME}`: the run with TRL, PEFT, transformers and "
        f"datasets only.\n- `trl sft --config {YAML_NAME}` or `bash trl_command.sh`: the same with TRL's command line "
        "(for a base model without a chat template, use the script: it sets up ChatML).\n"
        f"- `accelerate launch --num_processes 2 {SCRIPT_NAME}`: the script on several GPUs.\n", encoding="utf-8")
    archive = shutil.make_archive(str(run_dir / f"{run_dir.name}-export"), "zip", target)
    return Path(archive)


# ------------------------------------------------------------------ Hugging Face Jobs
# The job's command: fetch the script from the target repo (with the HF_TOKEN secret, so private repos work) and
# run it. Short, because run_uv_job checks every argument as a possible local file name.
JOB_BOOTSTRAP = ("import os,runpy,huggingface_hub as h;"
                 "runpy.run_path(h.hf_hub_download(os.environ['SFT_SPACE_REPO'],'" + JOB_FOLDER + "/" + SCRIPT_NAME + "'),"
                 "run_name='__main__')")


def submit_job(run: str | Path, name: str, token: str | None, *, flavor: str = "t4-small", private: bool = True,
               timeout: str = "2h", progress: Progress = _no_progress) -> dict:
    """Run the same training on Hugging Face Jobs: the script and the run's data go to the target repo in one
    commit, the job runs the script there, and the job pushes the adapter to that repo."""
    if flavor not in JOB_FLAVORS:
        raise ValueError(f"Unknown hardware flavor {flavor!r}: choose one of {', '.join(JOB_FLAVORS)}.")
    run_dir = run_path(run)  # any run, trained here or not: a run too big for this machine is the point of a job
    config = read_config(run_dir)
    model, fallback = _model_reference(config)
    if fallback is None and not is_hub_model_id(config.model):
        raise ValueError("A job cannot read a model folder on this machine: pick a Hub model (or the bundled "
                         "SmolLM2-135M-Instruct) to run this on Jobs.")
    user = signed_in_user(token)
    repo_id = repo_id_for(user, name)
    progress(0.1, "Exporting the run's script and data")
    export_run(run_dir)
    export = run_dir / EXPORT_FOLDER
    script = (export / SCRIPT_NAME).read_text()
    if fallback:  # the job's machine has no local copy: load the model from the Hub
        script = script.replace(f"MODEL = {model!r}", f"MODEL = {fallback!r}")
    api = _api(token)
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(f"{JOB_FOLDER}/{SCRIPT_NAME}", script.encode())]
    for split in ("train", "validation"):
        operations.append(CommitOperationAdd(f"{JOB_FOLDER}/data/{split}.jsonl", str(export / "data" / f"{split}.jsonl")))
    operations.append(CommitOperationAdd("README.md", model_card(run_dir, repo_id).encode()))
    progress(0.4, f"Uploading the script and data to {repo_id}")
    ensure_repo(api, repo_id, private, token, progress)
    with_retries(lambda: api.create_commit(repo_id, operations, commit_message=f"SFT Space job for run {run_dir.name}"),
                 f"uploading the job's files to {repo_id}", token, progress=progress)
    progress(0.7, f"Submitting the job ({flavor})")
    job = with_retries(lambda: _quiet(api.run_uv_job,
        "python", script_args=["-c", JOB_BOOTSTRAP, "--data_repo", repo_id, "--push_to_hub", repo_id],
        dependencies=_dependencies(), flavor=flavor, timeout=timeout, env={"SFT_SPACE_REPO": repo_id},
        secrets={"HF_TOKEN": token}, labels={"sft-space-run": run_dir.name}), "submitting the job", token)
    record = {"job_id": job.id, "url": job.url, "flavor": flavor, "repo_id": repo_id, "namespace": user,
              "submitted_at": time.time(), "stage": job.status.stage if job.status else None}
    history = read_json(run_dir / JOBS_FILE) or {"jobs": []}
    history["jobs"].append(record)
    write_json_atomic(run_dir / JOBS_FILE, history)
    progress(1.0, f"Job {job.id} submitted")
    return record


def _quiet(function, *args, **kwargs):
    """Call without huggingface_hub's 'experimental API' warning (Jobs), which means nothing to a user here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is experimental.*")
        return function(*args, **kwargs)


def job_report(run: str | Path, token: str | None, tail: int = 40) -> dict:
    """The latest job of a run: its stage and the last log lines, from the Hub."""
    history = read_json(run_path(run) / JOBS_FILE) or {"jobs": []}
    if not history["jobs"]:
        raise FileNotFoundError("This run has no job yet: submit one first.")
    record = history["jobs"][-1]
    api = _api(token)
    info = with_retries(lambda: api.inspect_job(job_id=record["job_id"], namespace=record["namespace"]),
                        "reading the job's status", token)
    logs = with_retries(lambda: list(api.fetch_job_logs(job_id=record["job_id"], namespace=record["namespace"],
                                                        follow=False)), "reading the job's logs", token)
    return {**record, "stage": info.status.stage, "message": info.status.message, "logs": logs[-tail:]}
