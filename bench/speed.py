"""Where users wait, measured against the guide's plain recipe in the same run: `make bench`.

Each figure is measured in fresh processes, repeated --repeats times in alternation (plain, ours, plain, ours...)
so a burst of other work on the machine hits every variant, and reported as the median with the spread:

1. Training tokens/s (non-padding tokens of the timed steps, after --warmup steps; the same timing hook for every
   variant: bench/gpu/throughput.py's TrainerCallback + training_step wrapper) on the bundled SmolLM2-135M-Instruct
   and demo:json-extract, --steps steps at the Quick demo's batch and max_length:
   - plain: the guide's recipe: SFTTrainer with SFTConfig's defaults (bf16, gradient checkpointing, lr 2e-5, loss
     on every token) except output_dir, max_steps, batch and max_length; LoraConfig r16 alpha32 dropout 0.05
     all-linear; the model given as a folder;
   - ours: `python -m sft_space.train --preset "Quick demo"` with the same steps (what a user gets);
   - ours, guide's settings: our process with the plain recipe's settings (our overhead).
   `train_speedup_vs_plain_recipe` = median tokens/s of ours / median of plain.
2. Validation loss after those steps (the same rows and tokens for every variant): mean loss on the answer tokens
   of the first --loss-rows held-out rows, base + adapter in fp32.
3. Start to first loss: from launching `python -m sft_space.train` (Quick demo, model converted already) to the
   first loss line in metrics.jsonl.
4. App start to page answering: `python app.py` until GET / returns 200.
5. Chat: first-token latency and tokens/s of replies streamed by run_model.chat (as the Chat tab streams them),
   tuned and base, with the adapter unmerged in fp32 (how the chat loaded before), as load_chat_model loads it now
   (the adapter merged, in the dtype measured fastest here) through transformers' generate, and the same with
   run_model.fast_decode (what the Chat tab runs). tokens/s counts the whole reply; decode tokens/s the tokens after
   the first (one token at a time: what the bandwidth bound and llama.cpp's tg figure measure).

6. The machine's own limits, in the same run (bench/roofline.py): matmul GFLOP/s in fp32, bf16 and fp16 at the
   model's shapes, memory read and copy bandwidth, the CPU model and flags; then training as a fraction of the peak
   of the precision it trains in (matrix-product FLOPs of the useful work: roofline.training_flops), and chat as a
   fraction of the bandwidth bound (read bandwidth / bytes of weights read per generated token).

7. llama.cpp (llama-bench tg, F16 weights written by the project's GGUF writer, the same threads and the chat
   prompt's length as context), in each round of the chat section, where a llama-bench binary is found
   (LLAMA_BENCH or PATH): chat as a fraction of it.

Writes bench/results.json (machine, versions, every measurement) and prints one table.

    python bench/speed.py [--repeats 3] [--steps 10] [--warmup 2] [--sections roofline,train,start,app,chat]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results.json"
DEMO = ROOT / "sft_space" / "demo_data"
PRESET = "Quick demo"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _gpu_bench():
    """bench/gpu/throughput.py as a module: its timing hook is the one every training variant here gets."""
    spec = importlib.util.spec_from_file_location("gpu_throughput", ROOT / "bench" / "gpu" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ children (each in a fresh process)
def child_ours(spec: dict) -> None:
    _gpu_bench().child_ours(spec)


def child_plain(spec: dict) -> None:
    """The guide's recipe, SFTConfig's defaults except the named fields."""
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig

    TimedSFTTrainer = _gpu_bench().timed_trainer_class()
    dataset = load_dataset("json", data_files=str(DEMO / "json-extract.train.jsonl"), split="train")
    args = SFTConfig(
        output_dir=spec["output_dir"],
        max_steps=spec["warmup"] + spec["steps"],
        per_device_train_batch_size=spec["batch"],
        max_length=spec["max_length"],
        report_to="none",
        **({"use_cpu": True} if spec["cpu"] else {}),  # the Trainer refuses bf16 on a CPU without it
    )
    trainer = TimedSFTTrainer(
        model=spec["model"],
        args=args,
        train_dataset=dataset,
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        ),
    )
    trainer.train()
    trainer.save_model(spec["adapter"])


def child_loss(spec: dict) -> None:
    """Mean loss on the answer tokens of held-out rows: base + the adapter (fp32), the same rows for every run."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_space.run_model import answer_loss

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    base = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32, use_safetensors=True)
    model = PeftModel.from_pretrained(base, spec["adapter"]).eval()
    rows = [json.loads(line) for line in (DEMO / "json-extract.test.jsonl").read_text().splitlines()]
    total, tokens = answer_loss(model, tokenizer, rows[: spec["rows"]])
    Path(spec["result"]).write_text(json.dumps({"loss": total / max(tokens, 1), "tokens": tokens}))


def child_chat(spec: dict) -> None:
    """First-token latency and tokens/s of streamed greedy replies, tuned and base, in one way of loading."""
    import dataclasses

    import torch

    from sft_space import run_model
    from sft_space.run_model import chat

    started = time.perf_counter()
    if spec["variant"] == "fp32, adapter unmerged":
        import sft_space.models

        sft_space.models.generation_dtypes = lambda: ("float32", "float32")  # how chat loaded before
    if spec["variant"] != "as loaded now":
        from sft_space.run_model import fast_decode

        fast_decode.ENABLED = False  # every token through transformers' generate
    loaded = run_model.load_chat_model(spec["run_dir"])
    loaded.merge = spec["variant"] != "fp32, adapter unmerged"
    load_seconds = time.perf_counter() - started
    tokens = spec["tokens"]
    loaded.config = dataclasses.replace(loaded.config, temperature=0.0, max_new_tokens=tokens)
    prompt = json.loads((DEMO / "json-extract.test.jsonl").read_text().splitlines()[0])["messages"][0]["content"]
    messages = [{"role": "user", "content": prompt}]

    greedy = loaded.config
    sampled = dataclasses.replace(greedy, temperature=0.7, top_p=0.9)  # the Chat tab's defaults

    def one(side: str) -> dict:
        loaded.config = sampled if side == "tuned, sampled" else greedy
        t0 = time.perf_counter()
        first = None
        for text in chat.stream_reply(loaded, messages, use_adapter=side != "base", min_new_tokens=tokens, seed=0):
            if first is None and text:
                first = time.perf_counter() - t0
        return {"seconds": time.perf_counter() - t0, "first": first}

    encoded = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    prompt_tokens = len(encoded["input_ids"])

    result = {"variant": spec["variant"], "dtype": loaded.dtype, "load_seconds": round(load_seconds, 2), "rows": {}}
    for side in ("tuned", "base", "tuned, sampled"):
        one(side)  # warm up
        runs = [one(side) for _ in range(spec["repeats"])]
        result["rows"][side] = {
            "tokens_per_second": [round(tokens / r["seconds"], 1) for r in runs],
            # after the first token: one token at a time, what the bandwidth bound and llama.cpp's tg measure
            "decode_tokens_per_second": [round((tokens - 1) / (r["seconds"] - r["first"]), 1) for r in runs],
            "first_token_seconds": [round(r["first"], 3) for r in runs],
        }
    result["threads"] = torch.get_num_threads()
    result["prompt_tokens"] = prompt_tokens
    Path(spec["result"]).write_text(json.dumps(result))


def child_gguf(spec: dict) -> None:
    """The bundled model as an F16 GGUF (the project's own writer), for llama-bench."""
    from sft_space.export.gguf_tensors import write_gguf
    from sft_space.models import load_model, load_tokenizer
    from sft_space.models.bundled import bundled_model_dir

    folder = bundled_model_dir()
    write_gguf(load_model(folder, dtype="float32"), load_tokenizer(folder), Path(spec["path"]), "f16", "bundled")
    Path(spec["result"]).write_text(json.dumps({"path": spec["path"]}))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def child_roofline(spec: dict) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import roofline

    config = roofline.bundled_config()
    Path(spec["result"]).write_text(json.dumps({**roofline.limits(config), "model_config": config}))


CHILDREN = {
    "ours": child_ours,
    "plain": child_plain,
    "loss": child_loss,
    "chat": child_chat,
    "gguf": child_gguf,
    "roofline": child_roofline,
}


# ------------------------------------------------------------------ parent
def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "runs": [round(v, 4) for v in values],
    }


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="sft-bench-"))
        self.home = self.work / "home"
        self.results: dict = {"started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": vars(args)}

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(ROOT),
            SFT_SPACE_HOME=str(self.home),
            HF_HUB_OFFLINE="1",
            GRADIO_ANALYTICS_ENABLED="False",
            PYTHONUNBUFFERED="1",
        )
        env.pop("SFT_SPACE_LOG_CAPTURED", None)
        env.update(extra)
        return env

    def child(self, kind: str, spec: dict, malloc: bool = False) -> dict:
        name = spec.setdefault("name", kind)
        spec["result"] = str(self.work / f"{name}.json")
        env = self.env(BENCH_SPEC=json.dumps(spec), **(MALLOC_ENV if malloc else {}))
        log = self.work / f"{name}.log"
        started = time.time()
        with open(log, "w") as handle:
            code = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", kind],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=1800,
            ).returncode
        if code != 0 or not Path(spec["result"]).is_file():
            raise SystemExit(f"{name} failed (exit {code}):\n{log.read_text(errors='replace')[-3000:]}")
        result = json.loads(Path(spec["result"]).read_text())
        result["process_wall_seconds"] = round(time.time() - started, 1)
        return result

    def save(self) -> None:
        OUT.write_text(json.dumps(self.results, indent=2, default=str) + "\n")

    # -------------------------------------------------------------- sections
    def model_folder(self) -> Path:
        sys.path.insert(0, str(ROOT))
        os.environ["SFT_SPACE_HOME"] = str(self.home)
        from sft_space.models.bundled import ensure_bundled_model

        return ensure_bundled_model()

    def quick_demo(self) -> dict:
        from sft_space.presets import PRESETS

        return PRESETS[PRESET]

    def train(self) -> None:
        args = self.args
        model = self.model_folder()
        preset = self.quick_demo()
        batch, max_length = preset["per_device_train_batch_size"], preset["max_length"]
        total = args.warmup + args.steps
        common = [
            "--model",
            "bundled",
            "--dataset",
            "demo:json-extract",
            "--max_steps",
            str(total),
            "--train_minutes",
            "0",
        ]
        common += ["--eval_steps", "100000", "--save_steps", "100000", "--logging_steps", "1"]
        guide = ["--precision", "bf16", "--gradient_checkpointing", "on", "--learning_rate", "2e-5"]
        guide += ["--warmup_ratio", "0", "--answers_only", "false", "--lora_dropout", "0.05"]
        variants = {
            "plain": None,
            "ours": ["--preset", PRESET],
            "ours, guide's settings": ["--preset", PRESET, *guide],
        }
        measured: dict[str, list[dict]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, flags in variants.items():
                label = f"{name.replace(', ', '-').replace(' ', '-').replace(chr(39), '')}-{repeat}"
                spec = {"name": label, "warmup": args.warmup, "steps": args.steps}
                adapter = self.work / "adapters" / label
                if flags is None:
                    spec.update(
                        model=str(model),
                        batch=batch,
                        max_length=max_length,
                        output_dir=str(self.work / "plain" / label),
                        adapter=str(adapter),
                        cpu=not _cuda(),
                    )
                    result = self.child("plain", spec)
                else:
                    run_dir = self.work / "runs" / label
                    spec.update(cli_args=[*flags, *common, "--output_dir", str(run_dir)], run_dir=str(run_dir))
                    result = self.child("ours", spec, malloc=True)
                    adapter = run_dir / "adapter"
                loss = self.child(
                    "loss",
                    {"name": f"loss-{label}", "model": str(model), "adapter": str(adapter), "rows": args.loss_rows},
                )
                result["validation_loss"] = loss["loss"]
                measured[name].append(result)
                print(
                    f"[bench] {label}: {result.get('tokens_per_second')} tok/s, validation loss {loss['loss']:.4f}",
                    flush=True,
                )
                self.results["training_runs"] = measured
                self.save()
        summary = {}
        for name, runs in measured.items():
            summary[name] = {
                "tokens_per_second": spread([r.get("tokens_per_second") for r in runs]),
                "validation_loss": spread([r.get("validation_loss") for r in runs]),
                "padding_share": spread([r.get("padding_share") for r in runs]),
                "gradient_checkpointing": runs[0].get("gradient_checkpointing"),
                "precision": (runs[0].get("cli_status") or {}).get("precision"),
            }
        plain = summary["plain"]["tokens_per_second"]["median"]
        summary["train_speedup_vs_plain_recipe"] = round(summary["ours"]["tokens_per_second"]["median"] / plain, 3)
        summary["overhead_of_our_process"] = round(
            1 - summary["ours, guide's settings"]["tokens_per_second"]["median"] / plain, 4
        )
        summary["setup"] = {"batch": batch, "max_length": max_length, "warmup": args.warmup, "steps": args.steps}
        self.results["training"] = summary
        self.results["train_speedup_vs_plain_recipe"] = summary["train_speedup_vs_plain_recipe"]
        self.save()

    def start(self) -> None:
        self.model_folder()
        seconds = []
        for repeat in range(self.args.repeats):
            run_dir = self.work / "start" / f"run-{repeat}"
            command = [sys.executable, "-m", "sft_space.train", "--preset", PRESET, "--model", "bundled"]
            command += ["--dataset", "demo:json-extract", "--logging_steps", "1", "--output_dir", str(run_dir)]
            started = time.time()
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            first = None
            try:
                while process.poll() is None and time.time() - started < 600:
                    metrics = run_dir / "metrics.jsonl"
                    if metrics.is_file() and any('"loss"' in line for line in metrics.read_text().splitlines()):
                        first = time.time() - started
                        break
                    time.sleep(0.05)
            finally:
                process.kill()
                process.wait()
            seconds.append(first)
            print(f"[bench] start to first loss #{repeat}: {first:.1f} s", flush=True)
        self.results["start_to_first_loss_seconds"] = spread(seconds)
        self.save()

    def app(self) -> None:
        seconds = []
        for _ in range(self.args.repeats):
            port = _free_port()
            started = time.time()
            process = subprocess.Popen(
                [sys.executable, "app.py"],
                cwd=ROOT,
                env=self.env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            answered = None
            try:
                while process.poll() is None and time.time() - started < 300:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                            if response.status == 200:
                                answered = time.time() - started
                                break
                    except OSError:
                        time.sleep(0.1)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            seconds.append(answered)
            print(f"[bench] app start to page: {answered:.1f} s", flush=True)
        self.results["app_start_to_page_seconds"] = spread(seconds)
        self.save()

    def chat(self) -> None:
        runs = sorted((self.work / "runs").glob("ours-[0-9]*"))
        if not runs:  # the training section was skipped: train a short run to chat with
            run_dir = self.work / "runs" / "ours-chat"
            subprocess.run(
                [sys.executable, "-m", "sft_space.train", "--preset", PRESET, "--max_steps", "4",
                 "--output_dir", str(run_dir)],
                cwd=ROOT, env=self.env(), check=True, capture_output=True,
            )  # fmt: skip
            runs = [run_dir]
        rows, llama_rows = {}, []
        for variant in ("fp32, adapter unmerged", "as loaded now, generate", "as loaded now"):
            rows[variant] = []
        for repeat in range(self.args.repeats):
            for variant in rows:
                spec = {
                    "name": f"chat-{len(rows[variant])}-{variant.split(',')[0].replace(' ', '-')}",
                    "variant": variant,
                    "run_dir": str(runs[0]),
                    "tokens": self.args.chat_tokens,
                    "repeats": 2,
                }
                rows[variant].append(self.child("chat", spec))
            first = rows["as loaded now"][0]
            llama = self.llama_cpp(first["prompt_tokens"], first["threads"])  # in the same rounds: the same noise
            if llama:
                llama_rows.append(llama)
        if llama_rows:
            self.results["llama_cpp"] = {
                **{k: v for k, v in llama_rows[0].items() if k != "tokens_per_second"},
                "tokens_per_second": spread([r["tokens_per_second"] for r in llama_rows]),
                "threads": rows["as loaded now"][0]["threads"],
                "depth": rows["as loaded now"][0]["prompt_tokens"],
            }
        else:
            print("[bench] llama.cpp: no llama-bench (set LLAMA_BENCH): not compared", flush=True)
        summary = {}
        for variant, results in rows.items():
            entry = {"dtype": results[0]["dtype"], "load_seconds": spread([r["load_seconds"] for r in results])}
            entry["prompt_tokens"] = results[0]["prompt_tokens"]
            entry["threads"] = results[0]["threads"]
            for side in ("tuned", "base", "tuned, sampled"):
                entry[side] = {
                    "tokens_per_second": spread([v for r in results for v in r["rows"][side]["tokens_per_second"]]),
                    "decode_tokens_per_second": spread(
                        [v for r in results for v in r["rows"][side]["decode_tokens_per_second"]]
                    ),
                    "first_token_seconds": spread([v for r in results for v in r["rows"][side]["first_token_seconds"]]),
                }
            summary[variant] = entry
            print(f"[bench] chat {variant}: {json.dumps(entry)}", flush=True)
        self.results["chat"] = summary
        self.save()

    def llama_cpp(self, depth: int, threads: int) -> dict | None:
        """One llama-bench tg measurement (3 repetitions): llama.cpp's own decode speed on this machine with the
        bundled model's weights in F16 as the project's GGUF export writes them, at the chat prompt's length.
        None where no llama-bench is found (LLAMA_BENCH or PATH; docs/DEVELOPING.md says how to build one)."""
        binary = os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench")
        if not binary or not Path(binary).is_file():
            return None
        gguf = self.work / "bundled-f16.gguf"
        if not gguf.is_file():
            self.child("gguf", {"name": "llama-cpp-gguf", "path": str(gguf)})
        command = [binary, "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(self.args.chat_tokens),
                   "-d", str(depth), "-r", "3", "-o", "json"]  # fmt: skip
        env = {**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            print(f"[bench] llama-bench failed: {done.stderr[-500:]}", flush=True)
            return None
        row = json.loads(done.stdout)[0]
        print(f"[bench] llama.cpp F16: {row['avg_ts']:.1f} tok/s", flush=True)
        return {"tokens_per_second": row["avg_ts"], "model_bytes": row.get("model_size"),
                "build": row.get("build_commit"), "cpu_info": row.get("cpu_info")}  # fmt: skip

    def roofline(self) -> None:
        """This machine's limits, in a fresh process like every other figure."""
        self.results["roofline"] = self.child("roofline", {"name": "roofline"})
        self.save()

    def run(self) -> None:
        self.results["machine"] = machine()
        self.save()
        sections = [s.strip() for s in self.args.sections.split(",") if s.strip()]
        for section in ("roofline", "train", "start", "app", "chat"):
            if section in sections:
                print(f"[bench] {section} ...", flush=True)
                getattr(self, section)()
        self.results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
        print_table(self.results)  # also records each figure's share of this machine's limit ("fractions")
        self.save()
        print(f"[bench] results: {OUT.relative_to(ROOT)}")
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def _cuda() -> bool:
    return bool(shutil.which("nvidia-smi")) and os.environ.get("CUDA_VISIBLE_DEVICES", "0") != ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "gradio"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


def _fmt(entry: dict | None, digits: int = 1) -> str:
    if not entry or entry.get("median") is None:
        return "-"
    return f"{entry['median']:.{digits}f} ({entry['min']:.{digits}f}-{entry['max']:.{digits}f})"


def print_table(results: dict) -> None:
    lines = ["| measurement | median (range) |", "|---|---|"]
    training = results.get("training")
    if training:
        for name in ("plain", "ours", "ours, guide's settings"):
            lines.append(f"| training tokens/s, {name} | {_fmt(training[name]['tokens_per_second'])} |")
        for name in ("plain", "ours", "ours, guide's settings"):
            lines.append(
                f"| validation loss after the same steps, {name} | {_fmt(training[name]['validation_loss'], 3)} |"
            )
        lines.append(f"| train_speedup_vs_plain_recipe | {training['train_speedup_vs_plain_recipe']:.2f}x |")
        lines.append(
            f"| our process's overhead (guide's settings vs plain) | {training['overhead_of_our_process']:+.1%} |"
        )
    if results.get("start_to_first_loss_seconds"):
        lines.append(f"| start to first loss, s (model cached) | {_fmt(results['start_to_first_loss_seconds'])} |")
    if results.get("app_start_to_page_seconds"):
        lines.append(f"| app start to page answering, s | {_fmt(results['app_start_to_page_seconds'])} |")
    for variant, entry in (results.get("chat") or {}).items():
        for side in [side for side in ("tuned", "base", "tuned, sampled") if side in entry]:
            lines.append(
                f"| chat {side}, {variant} ({entry['dtype']}): tokens/s; decode tokens/s; first token s | "
                f"{_fmt(entry[side]['tokens_per_second'])}; {_fmt(entry[side].get('decode_tokens_per_second'))}; "
                f"{_fmt(entry[side]['first_token_seconds'], 3)} |"
            )
    lines += roofline_rows(results)
    print("\n".join(lines))


def roofline_rows(results: dict) -> list[str]:
    """The machine's limits and each figure as a fraction of its own limit (all measured in this run)."""
    limits = results.get("roofline")
    if not limits:
        return []
    sys.path.insert(0, str(ROOT / "bench"))
    import roofline

    config, peak = limits["model_config"], limits["model_shape_peak_gflops"]
    cpu = limits["cpu"]
    lines = [
        f"| CPU | {cpu['model']}; flags {', '.join(cpu['flags']) or 'none of note'}; {limits['threads']} threads |",
        "| matmul peak at the model's shapes, GFLOP/s: fp32 / bf16 / fp16 | "
        f"{peak['float32']:.0f} / {peak['bfloat16']:.0f} / {peak['float16']:.0f} |",
        f"| memory bandwidth, GB/s: read / copy | {limits['memory']['read_gb_s']} / {limits['memory']['copy_gb_s']} |",
    ]
    training = results.get("training_runs") or {}
    names = {"ours": "ours", "plain": "plain recipe"}
    for name, label in names.items():
        runs = [r for r in training.get(name, []) if r.get("tokens_per_second")]
        if not runs:
            continue
        precision = (runs[0].get("cli_status") or {}).get("precision") or "bf16"  # the plain recipe: SFTConfig's bf16
        checkpointing = bool(runs[0].get("gradient_checkpointing", name == "plain"))
        fractions = []
        for r in runs:
            flops = roofline.training_flops(config, r["tokens"], r.get("loss_tokens") or r["tokens"], checkpointing)
            gflops = flops / r["timed_seconds"] / 1e9
            fractions.append(gflops / peak["bfloat16" if precision == "bf16" else "float32"])
        fraction = statistics.median(fractions)
        lines.append(f"| training, {label}: share of the {precision} matmul peak (useful FLOPs) | {fraction:.1%} |")
        results.setdefault("fractions", {})[f"training_{name}_of_{precision}_peak"] = round(fraction, 4)
    llama = results.get("llama_cpp")
    if llama:
        lines.append(f"| llama.cpp F16 decode, tok/s ({llama['threads']} threads, context {llama['depth']}) | "
                     f"{_fmt(llama['tokens_per_second'])} |")  # fmt: skip
    for variant, entry in (results.get("chat") or {}).items():
        size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(entry["dtype"], 4)
        bound = limits["memory"]["read_gb_s"] * 1e9 / roofline.decode_bytes(config, size)
        speed = (entry["tuned"].get("decode_tokens_per_second") or entry["tuned"]["tokens_per_second"])["median"]
        lines.append(f"| chat tuned decode, {variant}: share of the bandwidth bound ({bound:.0f} tok/s in "
                     f"{entry['dtype']}) | {speed / bound:.1%} |")  # fmt: skip
        results.setdefault("fractions", {})[f"chat_{variant}_of_bandwidth_bound"] = round(speed / bound, 4)
        if llama and entry["dtype"] in ("float16", "bfloat16"):
            share = speed / llama["tokens_per_second"]["median"]
            lines.append(f"| chat tuned decode, {variant}: share of llama.cpp F16 | {share:.1%} |")
            results["fractions"][f"chat_{variant}_of_llama_cpp_f16"] = round(share, 4)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=2, help="training steps before the timed ones")
    parser.add_argument("--loss-rows", type=int, default=40)
    parser.add_argument("--chat-tokens", type=int, default=96)
    parser.add_argument("--sections", default="roofline,train,start,app,chat")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, logs)")
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(ROOT))
        CHILDREN[args.child](json.loads(os.environ["BENCH_SPEC"]))
        return
    Bench(args).run()


if __name__ == "__main__":
    main()
