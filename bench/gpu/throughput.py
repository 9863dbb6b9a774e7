"""GPU throughput: our training CLI against TRL's plain recipe, and chat generation speed, in one command.

Measures, on whatever device this runs on (written for one CUDA GPU):

1. LoRA SFT training throughput of SmolLM2-135M (random weights built from its real config; speed does not depend
   on the weights) on demo:json-extract at each --batches size: our CLI (`python -m sft_space.train`, run as the
   CLI runs, in a fresh process) against the plain TRL recipe (SFTTrainer, SFTConfig defaults except max_steps,
   per_device_train_batch_size, bf16=True, max_length=512, report_to=none; LoRA r16 alpha32 dropout0.05
   all-linear through peft.LoraConfig; the model given to SFTTrainer as a folder path, as TRL's quickstart does).
   Both get the same timing hook: a TrainerCallback that synchronises the GPU at the end of step --warmup and of
   step --warmup + --steps, and a training_step wrapper that sums the non-padding tokens of each batch on the
   device. tokens/s = those tokens / that window's seconds. Peak GPU memory = torch.cuda.max_memory_allocated
   at the end of training (the whole process).
2. Chat generation speed through sft_space.run_model.chat (load_chat_model on the run directory the CLI just produced,
   reply() greedy, exactly --chat-tokens new tokens), with the adapter on and off, as loaded by load_chat_model
   and after casting to bf16, plus plain model.generate on the bf16 model for comparison.
3. The same ours-vs-plain comparison on a Qwen2.5-0.5B-Instruct-sized model (random init from its config) at
   --qwen-batch.
4. Extras, if the --budget-s allows: the plain recipe with bf16 weights (model_init_kwargs dtype=bfloat16), and
   our CLI with gradient checkpointing forced on, both at --extra-batch on SmolLM2-135M.

Sections run in that order; one that would start after --budget-s seconds is skipped (and says so). Results are
written to --out after every measurement (default $OUT/gpu_throughput.json when OUT is set, else
bench/results/gpu_throughput.json), so a run cut short keeps what it measured.

    python bench/gpu/throughput.py                          # the full run (on a GPU)
    python bench/gpu/throughput.py --wheels .whl            # first install missing/too-old packages from wheels
    python bench/gpu/throughput.py --code SNAPSHOT            # measure a snapshot's sft_space (SNAPSHOT/sft_space)
    python bench/gpu/throughput.py --tiny --batches 2 --warmup 1 --steps 2 --chat-tokens 8   # a CPU smoke test

How long it takes: on the lent H200 (2026-11-26) each training process took 30-60 s of wall time (imports, model
load, tokenising, the CLI's probe replies before and after training), so the SmolLM2 section alone (3 batch sizes x
2 recipes) took about 4 minutes, and greedy chat generation ran at only 11-41 tokens/s, so the 6 chat variants x 3
replies of 128 tokens take about 3 minutes. The whole run needs about 10 minutes there: on a lent machine split
it into two calls, e.g. `--chat-tokens 0 --qwen-batch 0 --extra-batch 0` first, then `--batches ""` with the same
--work folder (the chat section reuses the B=16 run directory of the first call; --chat-batch names another).
Each call that uses the device's python needs the carried wheels (.whl: trl, datasets, dill, multiprocess; peft,
pyarrow, fsspec, xxhash only when the installed one is too old or too new for datasets 5.2) and --wheels .whl.

The tokenizer comes from --tokenizer (a folder with tokenizer.json), else the bundled model's converted copy
under $SFT_SPACE_HOME/models, ~/.cache/sft_space/models or /tmp/sft-space-tests-*/models.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The folder whose sft_space package is measured (--code; the parent passes it on to its children).
CODE = Path(os.environ.get("BENCH_CODE") or ROOT)
DEMO_TRAIN = CODE / "sft_space" / "demo_data" / "json-extract.train.jsonl"
DEMO_TEST = CODE / "sft_space" / "demo_data" / "json-extract.test.jsonl"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
# What the CLI's own entry point sets before training (sft_space.train.MALLOC_ENV, via a re-exec).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
# Minimum versions the project needs; older (or missing) ones are installed from --wheels.
NEEDED = {
    "trl": "1.16",
    "datasets": "4.7",
    "peft": "0.21",
    "pyarrow": "24",
    "dill": "0.3",
    "multiprocess": "0.70",
    "xxhash": "0",
    "fsspec": "2023.1",
}
# Newest versions datasets 5.2 accepts; newer installed ones are replaced by the wheel.
AT_MOST = {"fsspec": "2026.9.0", "dill": "0.4.1", "multiprocess": "0.70.19"}
SITE = "/tmp/site"

# SmolLM2-135M(-Instruct)'s config (sft_space.models.facts.SMOLLM2_135M_CONFIG plus the fields of the real
# config.json that the facts leave out).
SMOLLM2_EXTRA = {
    "head_dim": 64,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "attention_bias": False,
    "mlp_bias": False,
}
QWEN25_05B_CONFIG = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "hidden_act": "silu",
}
TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
TINY_QWEN = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


# ------------------------------------------------------------------ setup
def version_of(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def install_wheels(folder: Path) -> dict:
    """pip-install (into SITE) each wheel in `folder` whose package is missing or older than NEEDED."""
    from packaging.version import Version

    wanted = []
    report = {}
    for wheel in sorted(folder.glob("*.whl")):
        name = wheel.name.split("-")[0].lower().replace("_", "-")
        have = version_of(name)
        low, high = NEEDED.get(name), AT_MOST.get(name)
        if (
            have is None
            or (low is not None and Version(have) < Version(low))
            or (high is not None and Version(have) > Version(high))
        ):
            wanted.append(str(wheel))
            report[name] = f"{have or 'missing'} -> {wheel.name.split('-')[1]} (wheel)"
        else:
            report[name] = f"{have} (installed, kept)"
    if wanted:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--no-cache-dir",
                "--upgrade",
                "--target",
                SITE,
                *wanted,
            ],
            check=True,
        )
        sys.path.insert(0, SITE)
        os.environ["PYTHONPATH"] = os.pathsep.join([SITE, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return report


def find_tokenizer(given: str | None) -> Path:
    candidates = [given] if given else []
    if os.environ.get("SFT_SPACE_HOME"):
        candidates.append(os.path.join(os.environ["SFT_SPACE_HOME"], "models", "SmolLM2-135M-Instruct"))
    candidates += [
        str(ROOT / ".whl" / "tokenizer-smollm2"),
        os.path.expanduser("~/.cache/sft_space/models/SmolLM2-135M-Instruct"),
        *sorted(glob.glob("/tmp/sft-space-tests-*/models/SmolLM2-135M-Instruct"), reverse=True),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "tokenizer.json").is_file():
            return Path(candidate)
    raise SystemExit(f"no tokenizer folder found (tried {candidates}): pass --tokenizer FOLDER")


def make_model(folder: Path, kind: str, tokenizer: Path, tiny: bool) -> dict:
    """A random-weight model folder (bf16 safetensors, like the real checkpoints) with the bundled tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if kind == "smollm2":
        sys.path.insert(0, str(CODE))
        from sft_space.models.facts import SMOLLM2_135M_CONFIG

        settings = {**SMOLLM2_135M_CONFIG, **SMOLLM2_EXTRA, **(TINY_LLAMA if tiny else {})}
    else:
        settings = {**QWEN25_05B_CONFIG, **(TINY_QWEN if tiny else {})}
    settings = dict(settings)
    model_type = settings.pop("model_type")
    settings.update(bos_token_id=1, eos_token_id=2, pad_token_id=2, dtype="bfloat16")
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    started = time.time()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, folder / name)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    return {
        "folder": str(folder),
        "parameters": parameters,
        "seconds_to_build": round(time.time() - started, 1),
        "config": {k: v for k, v in settings.items() if k not in ("architectures",)},
    }


# ------------------------------------------------------------------ children (each in a fresh process)
def timed_trainer_class():
    """trl.SFTTrainer with the timing hook (the same for our CLI and for the plain recipe)."""
    import torch
    import trl
    from transformers import TrainerCallback

    spec = json.loads(os.environ["BENCH_SPEC"])
    warmup, steps = spec["warmup"], spec["steps"]
    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    class Timing(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer
            self.marks: dict[int, float] = {}
            self.step_ends: dict[int, float] = {}
            self.result: dict = {}

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends[state.global_step] = time.perf_counter()  # no sync: the host's view of each step
            if state.global_step in (warmup, warmup + steps):
                sync()
                self.marks[state.global_step] = time.perf_counter()

        def on_train_end(self, args, state, control, model=None, **kwargs):
            sync()
            trainer = self.trainer
            window = [(s, t, n, lbl) for s, t, n, lbl in trainer.bench_batches if warmup < s <= warmup + steps]
            tokens = sum(int(t) for _, t, _, _ in window)
            padded = sum(n for _, _, n, _ in window)
            loss_tokens = sum(int(lbl) for _, _, _, lbl in window if lbl is not None)
            result = {
                "steps_done": state.global_step,
                "warmup": warmup,
                "timed_steps": steps,
                "train_seconds_all_steps": round(time.perf_counter() - self.started, 3),
            }
            if warmup in self.marks and warmup + steps in self.marks:
                seconds = self.marks[warmup + steps] - self.marks[warmup]
                result.update(
                    timed_seconds=round(seconds, 4),
                    seconds_per_step=round(seconds / steps, 5),
                    tokens=tokens,
                    padded_tokens=padded,
                    loss_tokens=loss_tokens,
                    padding_share=round(1 - tokens / padded, 4) if padded else None,
                    tokens_per_second=round(tokens / seconds, 1),
                    padded_tokens_per_second=round(padded / seconds, 1),
                )
            ends = self.step_ends
            gaps = [ends[s] - ends[s - 1] for s in range(warmup + 1, warmup + steps + 1) if s in ends and s - 1 in ends]
            if gaps:
                result["step_seconds_host"] = {
                    "median": round(statistics.median(gaps), 4),
                    "min": round(min(gaps), 4),
                    "max": round(max(gaps), 4),
                    "all": [round(g, 4) for g in gaps],
                }
            m = trainer.model
            result["gradient_checkpointing"] = bool(
                getattr(m, "is_gradient_checkpointing", False)
                or getattr(getattr(m, "base_model", None), "is_gradient_checkpointing", False)
                or getattr(getattr(getattr(m, "base_model", None), "model", None), "is_gradient_checkpointing", False)
            )
            dtypes: dict[str, int] = {}
            for p in m.parameters():
                key = f"{'trainable' if p.requires_grad else 'frozen'} {str(p.dtype).replace('torch.', '')}"
                dtypes[key] = dtypes.get(key, 0) + p.numel()
            result["parameter_dtypes"] = dtypes
            result["args"] = {
                k: getattr(args, k, None)
                for k in (
                    "bf16",
                    "fp16",
                    "gradient_checkpointing",
                    "logging_steps",
                    "per_device_train_batch_size",
                    "max_length",
                    "packing",
                    "padding_free",
                    "completion_only_loss",
                    "assistant_only_loss",
                    "include_num_input_tokens_seen",
                    "logging_nan_inf_filter",
                    "dataloader_num_workers",
                    "use_liger_kernel",
                    "eval_strategy",
                    "save_strategy",
                    "torch_compile",
                )
            }
            result["args"] = {
                k: str(v) if not isinstance(v, (bool, int, float, type(None))) else v for k, v in result["args"].items()
            }
            if cuda:
                result["peak_gpu_allocated_bytes"] = int(torch.cuda.max_memory_allocated())
                result["peak_gpu_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
                result["gpu"] = torch.cuda.get_device_name()
            self.result = result
            Path(spec["result"]).write_text(json.dumps(result, indent=2))

    class TimedSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bench_batches: list = []
            self.add_callback(Timing(self))

        def training_step(self, model, inputs, *args, **kwargs):
            step = self.state.global_step + 1  # the optimizer step this batch belongs to
            mask = inputs.get("attention_mask")
            ids = inputs["input_ids"]
            real = mask.sum() if mask is not None else ids.numel()
            labels = inputs.get("labels")
            counted = (labels != -100).sum() if labels is not None else None
            self.bench_batches.append((step, real, ids.numel(), counted))
            return super().training_step(model, inputs, *args, **kwargs)

    return TimedSFTTrainer


def child_ours(spec: dict) -> None:
    """Our CLI, as `python -m sft_space.train ARGS` runs it (the MALLOC env is set by the parent), plus the hook."""
    import trl

    trl.SFTTrainer = timed_trainer_class()  # sft_space.train does `from trl import SFTTrainer` inside build_trainer
    from sft_space.models import choose_precision, detect_device, training_dtype
    from sft_space.training.run import main

    device = detect_device()
    chosen = {
        "detect_device": {"kind": device.kind, "name": device.name, "memory": device.memory, "bf16": device.bf16},
        "choose_precision_auto": choose_precision("auto"),
        "training_dtype_auto": training_dtype(choose_precision("auto"), device.kind),
    }
    code = main(spec["cli_args"])
    result = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).is_file() else {}
    status_file = Path(spec["run_dir"]) / "status.json"
    status = json.loads(status_file.read_text()) if status_file.is_file() else {}
    result["cli_exit_code"] = code
    result["cli_choices"] = chosen
    result["cli_status"] = {
        k: status.get(k)
        for k in (
            "state",
            "error",
            "precision",
            "gradient_checkpointing",
            "device",
            "memory_estimate",
            "tokens_per_second",
            "seconds_per_step",
            "startup_seconds",
            "peak_memory",
            "elapsed_seconds",
            "finish_seconds",
            "loss_on",
            "trainable_parameters",
            "total_parameters",
            "token_lengths",
        )
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=2))
    if code != 0:
        raise SystemExit(code)


def child_plain(spec: dict) -> None:
    """The plain TRL recipe (SFTConfig defaults except the named fields)."""
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig

    TimedSFTTrainer = timed_trainer_class()
    dataset = load_dataset("json", data_files=str(DEMO_TRAIN), split="train")
    config = dict(
        output_dir=spec["output_dir"],
        max_steps=spec["warmup"] + spec["steps"],
        per_device_train_batch_size=spec["batch"],
        bf16=True,
        max_length=512,
        report_to="none",
    )
    if spec.get("bf16_weights"):
        config["model_init_kwargs"] = {"dtype": "bfloat16"}
    if spec.get("use_cpu"):
        config["use_cpu"] = True
    trainer = TimedSFTTrainer(
        model=spec["model"],
        args=SFTConfig(**config),
        train_dataset=dataset,
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()


def child_chat(spec: dict) -> None:
    """Greedy generation of exactly spec['tokens'] new tokens through sft_space.chat."""
    import dataclasses

    import torch

    from sft_space import run_model
    from sft_space.run_model import chat

    cuda = torch.cuda.is_available()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    started = time.perf_counter()
    loaded = run_model.load_chat_model(spec["run_dir"])
    sync()
    load_seconds = time.perf_counter() - started
    tokens = spec["tokens"]
    # temperature 0 is how a user asks the chat tab for greedy replies; min_new_tokens makes every reply full length
    loaded.config = dataclasses.replace(loaded.config, temperature=0.0, max_new_tokens=tokens)
    prompt = json.loads(DEMO_TEST.read_text().splitlines()[0])["messages"][0]["content"]
    messages = [{"role": "user", "content": prompt}]
    prompt_tokens = int(run_model.build_inputs(loaded.tokenizer, messages, "cpu")["input_ids"].shape[1])
    partial = {
        "load_seconds": round(load_seconds, 2),
        "prompt_tokens": prompt_tokens,
        "tokens": tokens,
        "rows": [],
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "complete": False,
    }

    def one_stream(use_adapter: bool) -> dict:
        sync()
        t0 = time.perf_counter()
        first = None
        text = ""
        for text in chat.stream_reply(loaded, messages, use_adapter=use_adapter, min_new_tokens=tokens):
            if first is None and text:
                first = time.perf_counter() - t0
        sync()
        return {"seconds": time.perf_counter() - t0, "first_text_seconds": first, "chars": len(text)}

    def one_generate(use_adapter: bool) -> dict:
        import contextlib

        inputs = run_model.build_inputs(loaded.tokenizer, messages, loaded.model.device)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode(), contextlib.nullcontext() if use_adapter else loaded.model.disable_adapter():
            out = loaded.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        sync()
        return {"seconds": time.perf_counter() - t0, "new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1])}

    def measure(name: str, fn, use_adapter: bool) -> dict:
        for _ in range(spec["warmup"]):
            fn(use_adapter)
        runs = [fn(use_adapter) for _ in range(spec["repeats"])]
        seconds = statistics.median(r["seconds"] for r in runs)
        row = {
            "variant": name,
            "adapter": "on" if use_adapter else "off (disable_adapter)",
            "weights_dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
            "device": str(loaded.model.device),
            "new_tokens": runs[0].get("new_tokens", tokens),
            "median_seconds": round(seconds, 4),
            "tokens_per_second": round(tokens / seconds, 1),
            "runs_seconds": [round(r["seconds"], 4) for r in runs],
        }
        if runs[0].get("first_text_seconds") is not None:
            row["median_first_text_seconds"] = round(statistics.median(r["first_text_seconds"] for r in runs), 4)
        print(json.dumps(row), flush=True)
        partial["rows"].append(row)
        Path(spec["result"]).write_text(json.dumps(partial, indent=2))  # kept if a later variant is cut short
        return row

    rows = [
        measure("stream_reply, as load_chat_model loads it", one_stream, True),
        measure("stream_reply, as load_chat_model loads it", one_stream, False),
    ]
    loaded.model.to(torch.bfloat16)
    rows += [
        measure("stream_reply, model cast to bf16", one_stream, True),
        measure("stream_reply, model cast to bf16", one_stream, False),
        measure("plain model.generate (no streamer), bf16", one_generate, True),
    ]
    merged = loaded.model.merge_and_unload()
    loaded.model = merged
    rows.append(measure("plain model.generate, bf16, adapter merged (merge_and_unload)", one_generate, True))
    partial.update(rows=rows, complete=True)
    Path(spec["result"]).write_text(json.dumps(partial, indent=2))


# ------------------------------------------------------------------ parent
class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.started = time.time()
        self.work = Path(args.work or tempfile.mkdtemp(prefix="sft-gpu-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict = {
            "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "settings": vars(args),
            "training": [],
            "chat": None,
            "skipped": [],
            "failures": [],
        }

    def elapsed(self) -> float:
        return time.time() - self.started

    def save(self) -> None:
        self.data["elapsed_seconds"] = round(self.elapsed(), 1)
        self.out.write_text(json.dumps(self.data, indent=2, default=str))

    def save_logs(self) -> None:
        """The children's logs and the run directories' small files, beside --out (a few hundred KiB)."""
        import tarfile

        target = self.out.with_name(self.out.stem + "_logs.tar.gz")
        keep = ("status.json", "metrics.jsonl", "train.log", "probes.jsonl", "config.json")
        with tarfile.open(target, "w:gz") as tar:
            for path in sorted(self.work.glob("*.log")) + sorted(self.work.glob("*.json")):
                tar.add(path, arcname=path.name)
            for path in sorted((self.work / "runs").glob("*/*")):
                if path.name in keep:
                    tar.add(path, arcname=f"runs/{path.parent.name}/{path.name}")

    def in_budget(self, what: str) -> bool:
        if self.elapsed() > self.args.budget_s:
            self.data["skipped"].append(f"{what} (budget of {self.args.budget_s} s spent at {self.elapsed():.0f} s)")
            print(f"[bench] skipped {what}: over budget", flush=True)
            self.save()
            return False
        return True

    def env(self, malloc: bool) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in [str(CODE), env.get("PYTHONPATH", "")] if p)
        env["BENCH_CODE"] = str(CODE)
        env["SFT_SPACE_HOME"] = str(self.work / "home")
        env["HF_HOME"] = str(self.work / "hf")
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("SFT_SPACE_LOG_CAPTURED", None)
        for key in MALLOC_ENV:
            env.pop(key, None)
        if malloc:
            env.update(MALLOC_ENV)
        return env

    def child(self, name: str, spec: dict, malloc: bool = False) -> dict | None:
        spec["result"] = str(self.work / f"{name}.json")
        log = self.work / f"{name}.log"
        env = self.env(malloc)
        env["BENCH_SPEC"] = json.dumps(spec)
        t0 = time.time()
        print(f"[bench] {name} ... ({self.elapsed():.0f} s in)", flush=True)
        timeout = self.args.child_timeout_s * (2 if spec["kind"] == "chat" else 1)
        with open(log, "w") as handle:
            try:
                code = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", spec["kind"]],
                    cwd=CODE,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                ).returncode
            except subprocess.TimeoutExpired:
                code = f"timed out after {timeout:.0f} s"
        wall = time.time() - t0
        result = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).is_file() else None
        if code != 0 or result is None:
            tail = log.read_text(errors="replace")[-3000:]
            self.data["failures"].append({"name": name, "exit_code": code, "log_tail": tail})
            print(f"[bench] {name} FAILED (exit {code}); log tail:\n{tail}", flush=True)
            self.save()
            if result is not None and spec["kind"] == "chat":
                return result  # the variants measured before it stopped
            return None
        result["process_wall_seconds"] = round(wall, 1)
        print(
            f"[bench] {name}: {wall:.1f} s wall, "
            f"{result.get('tokens_per_second', '?')} tok/s, {result.get('seconds_per_step', '?')} s/step",
            flush=True,
        )
        return result

    def ours(
        self,
        model: str,
        label: str,
        batch: int,
        warmup: int,
        steps: int,
        extra: list[str] | None = None,
        name: str | None = None,
    ) -> dict | None:
        name = name or f"ours-{label}-b{batch}"
        run_dir = self.work / "runs" / name
        precision = self.args.precision
        cli = [
            "--model",
            model,
            "--dataset",
            "demo:json-extract",
            "--max_steps",
            str(warmup + steps),
            "--precision",
            precision,
            "--per_device_train_batch_size",
            str(batch),
            "--max_length",
            "512",
            "--eval_steps",
            "100000",
            "--save_steps",
            "100000",
            "--output_dir",
            str(run_dir),
            *(extra or []),
        ]
        spec = {"kind": "ours", "warmup": warmup, "steps": steps, "cli_args": cli, "run_dir": str(run_dir)}
        result = self.child(name, spec, malloc=True)
        if result is not None:
            result.update(
                recipe="ours",
                model=label,
                batch=batch,
                run_dir=str(run_dir),
                command=("python -m sft_space.train " + " ".join(cli)),
            )
        return result

    def plain(
        self,
        model: str,
        label: str,
        batch: int,
        warmup: int,
        steps: int,
        bf16_weights: bool = False,
        name: str | None = None,
    ) -> dict | None:
        name = name or f"plain-{label}-b{batch}"
        spec = {
            "kind": "plain",
            "warmup": warmup,
            "steps": steps,
            "batch": batch,
            "model": model,
            "output_dir": str(self.work / "plain" / name),
            "bf16_weights": bf16_weights,
            "use_cpu": self.args.tiny and not self.args.cuda,
        }
        result = self.child(name, spec)
        if result is not None:
            result.update(recipe="plain TRL" + (" (bf16 weights)" if bf16_weights else ""), model=label, batch=batch)
        return result

    def pair(self, model: str, label: str, batch: int, warmup: int, steps: int) -> None:
        for result in (self.ours(model, label, batch, warmup, steps), self.plain(model, label, batch, warmup, steps)):
            if result is not None:
                self.data["training"].append(result)
            self.save()

    def run(self) -> None:
        args = self.args
        self.data["environment"] = environment()
        self.data["code"] = code_description()
        if args.wheels:
            self.data["wheels"] = install_wheels(Path(args.wheels))
            self.data["environment"]["after_wheels"] = {n: version_of(n) for n in NEEDED}
        print(json.dumps(self.data["environment"], indent=1), flush=True)
        tokenizer = find_tokenizer(args.tokenizer)
        self.data["tokenizer"] = str(tokenizer)
        smol = self.work / "models" / "smollm2-135m-random"
        self.data["models"] = {"smollm2-135m": make_model(smol, "smollm2", tokenizer, args.tiny)}
        self.save()
        batches = [int(b) for b in args.batches.split(",") if b]
        for batch in batches:
            if not self.in_budget(f"SmolLM2-135M B={batch}"):
                continue
            self.pair(str(smol), "smollm2-135m", batch, args.warmup, args.steps)
        chat_run = self.work / "runs" / f"ours-smollm2-135m-b{args.chat_batch}"
        if args.chat_tokens and self.in_budget("chat generation"):
            if (chat_run / "adapter" / "adapter_model.safetensors").is_file():
                self.data["chat"] = self.child(
                    "chat",
                    {
                        "kind": "chat",
                        "run_dir": str(chat_run),
                        "tokens": args.chat_tokens,
                        "warmup": 1,
                        "repeats": args.chat_repeats,
                    },
                )
            else:
                self.data["skipped"].append(f"chat generation: no adapter in {chat_run}")
            self.save()
        if args.qwen_batch and self.in_budget("Qwen2.5-0.5B-sized model"):
            qwen = self.work / "models" / "qwen2.5-0.5b-random"
            self.data["models"]["qwen2.5-0.5b"] = make_model(qwen, "qwen", tokenizer, args.tiny)
            self.save()
            self.pair(str(qwen), "qwen2.5-0.5b", args.qwen_batch, args.qwen_warmup, args.qwen_steps)
        if args.extra_batch:
            b = args.extra_batch
            if self.in_budget("extra: plain TRL with bf16 weights"):
                result = self.plain(
                    str(smol),
                    "smollm2-135m",
                    b,
                    args.warmup,
                    args.steps,
                    bf16_weights=True,
                    name=f"plain-bf16w-smollm2-135m-b{b}",
                )
                if result:
                    self.data["training"].append(result)
                self.save()
            if self.in_budget("extra: ours with gradient checkpointing on"):
                result = self.ours(
                    str(smol),
                    "smollm2-135m",
                    b,
                    args.warmup,
                    args.steps,
                    ["--gradient_checkpointing", "on"],
                    name=f"ours-gc-on-smollm2-135m-b{b}",
                )
                if result:
                    result["recipe"] = "ours (gradient_checkpointing on)"
                    self.data["training"].append(result)
                self.save()
        self.data["finished"] = True
        self.save()
        print_tables(self.data)
        print(f"[bench] results: {self.out}", flush=True)


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "packages": {
            n: version_of(n)
            for n in (
                "torch",
                "transformers",
                "trl",
                "peft",
                "datasets",
                "accelerate",
                "pyarrow",
                "tokenizers",
                "safetensors",
            )
        },
    }
    if shutil.which("nvidia-smi"):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        info["nvidia_smi"] = out
    info["cpu_count"] = os.cpu_count()
    return info


def code_description() -> dict:
    """Which sft_space is measured: the folder, and its commit (a COMMIT file beside a snapshot, else git)."""
    info = {"folder": str(CODE)}
    if (CODE / "COMMIT").is_file():
        info["commit"] = (CODE / "COMMIT").read_text().strip()
    else:
        try:
            info["commit"] = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=CODE, capture_output=True, text=True
            ).stdout.strip()
            info["dirty_files"] = subprocess.run(
                ["git", "status", "--short", "--", "sft_space"], cwd=CODE, capture_output=True, text=True
            ).stdout.splitlines()
        except OSError:
            pass
    return info


def gib(value) -> str:
    return f"{value / 2**30:.2f}" if isinstance(value, (int, float)) else "-"


def print_tables(data: dict) -> None:
    rows = data["training"]
    if rows:
        print("\n## Training throughput (timed window after warm-up)")
        head = (
            f"{'model':14s} {'B':>3s} {'recipe':34s} {'tok/s':>9s} {'s/step':>8s} {'pad tok/s':>10s} "
            f"{'peak GiB':>8s} {'ckpt':>5s} {'wall s':>7s}"
        )
        print(head)
        for r in rows:
            print(
                f"{r['model']:14s} {r['batch']:>3d} {r['recipe']:34s} {r.get('tokens_per_second', 0):>9.0f} "
                f"{r.get('seconds_per_step', 0):>8.4f} {r.get('padded_tokens_per_second', 0):>10.0f} "
                f"{gib(r.get('peak_gpu_allocated_bytes')):>8s} {str(r.get('gradient_checkpointing'))[:5]:>5s} "
                f"{r.get('process_wall_seconds', 0):>7.1f}"
            )
        print("\n## Ours / plain TRL (same model, same B)")
        print(f"{'model':14s} {'B':>3s} {'tok/s ratio':>11s} {'s/step ratio':>12s} {'peak mem ratio':>14s}")
        for r in rows:
            if r["recipe"] != "ours":
                continue
            base = next(
                (
                    p
                    for p in rows
                    if p["recipe"] == "plain TRL" and p["model"] == r["model"] and p["batch"] == r["batch"]
                ),
                None,
            )
            if base and base.get("tokens_per_second") and r.get("tokens_per_second"):
                mem = (r.get("peak_gpu_allocated_bytes") or 0) / (base.get("peak_gpu_allocated_bytes") or 1)
                print(
                    f"{r['model']:14s} {r['batch']:>3d} {r['tokens_per_second'] / base['tokens_per_second']:>11.2f} "
                    f"{r['seconds_per_step'] / base['seconds_per_step']:>12.2f} {mem:>14.2f}"
                )
    chat = data.get("chat")
    if chat:
        print(f"\n## Chat generation ({chat['tokens']} new tokens, greedy, prompt {chat['prompt_tokens']} tokens)")
        print(f"{'variant':62s} {'adapter':22s} {'dtype':9s} {'tok/s':>7s} {'s':>7s}")
        for row in chat["rows"]:
            print(
                f"{row['variant']:62s} {row['adapter']:22s} {row['weights_dtype']:9s} "
                f"{row['tokens_per_second']:>7.1f} {row['median_seconds']:>7.3f}"
            )
    for item in data["skipped"]:
        print(f"skipped: {item}")
    for item in data["failures"]:
        print(f"FAILED: {item['name']} (exit {item['exit_code']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = (
        Path(os.environ["OUT"]) / "gpu_throughput.json"
        if os.environ.get("OUT")
        else ROOT / "bench" / "results" / "gpu_throughput.json"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(default_out))
    parser.add_argument("--work", help="scratch folder (models, run directories, logs); default a new temp folder")
    parser.add_argument("--wheels", help="install missing/too-old packages from the wheels in this folder first")
    parser.add_argument(
        "--code",
        help="measure the sft_space package in this folder (e.g. a snapshot made with "
        "git archive HEAD sft_space) instead of the working tree's",
    )
    parser.add_argument("--tokenizer", help="a folder holding tokenizer.json (the bundled SmolLM2 tokenizer)")
    parser.add_argument("--batches", default="4,16,64")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--chat-batch", type=int, default=16, help="whose run directory the chat section loads")
    parser.add_argument("--chat-tokens", type=int, default=128, help="0 skips the chat section")
    parser.add_argument("--chat-repeats", type=int, default=2)
    parser.add_argument("--qwen-batch", type=int, default=16, help="0 skips the Qwen-sized section")
    parser.add_argument("--qwen-warmup", type=int, default=3)
    parser.add_argument("--qwen-steps", type=int, default=15)
    parser.add_argument("--extra-batch", type=int, default=16, help="0 skips the extras")
    parser.add_argument("--budget-s", type=float, default=420, help="sections starting later than this are skipped")
    parser.add_argument("--child-timeout-s", type=float, default=240)
    parser.add_argument("--tiny", action="store_true", help="tiny models (2 layers, hidden 64): a CPU smoke test")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(os.environ["BENCH_SPEC"])
        {"ours": child_ours, "plain": child_plain, "chat": child_chat}[args.child](spec)
        return
    if args.code:
        global CODE, DEMO_TRAIN, DEMO_TEST
        CODE = Path(args.code).resolve()
        DEMO_TRAIN = CODE / "sft_space" / "demo_data" / "json-extract.train.jsonl"
        DEMO_TEST = CODE / "sft_space" / "demo_data" / "json-extract.test.jsonl"
    args.cuda = bool(shutil.which("nvidia-smi"))
    if args.batches and args.chat_batch not in [int(b) for b in args.batches.split(",") if b]:
        args.chat_batch = int(args.batches.split(",")[0])
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.save()
        bench.save_logs()


if __name__ == "__main__":
    main()
