"""Training throughput: the Quick demo settings against TRL's defaults, and fp32 against bf16, in the same run.

Each variant trains the bundled SmolLM2-135M-Instruct on demo:json-extract for a
few steps through the real entry point (`python -m sft_space.train`), in a fresh
process, repeated --repeats times in alternation. Throughput is real (non-padding)
tokens per second of training time after the first --warmup steps. Reported as
medians and as a ratio against the baseline, never as a pass/fail test.

    python bench/train_throughput.py [--steps 12] [--repeats 2] [--suite checkpointing|precision]

The precision suite compares fp32 with bf16 autocast on this device (what precision=auto chooses between on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "--model",
    "bundled",
    "--dataset",
    "demo:json-extract",
    "--per_device_train_batch_size",
    "8",
    "--max_length",
    "256",
    "--logging_steps",
    "1",
    "--eval_steps",
    "100000",
    "--save_steps",
    "100000",
]
SUITES = {
    "checkpointing": {
        # TRL's SFTConfig leaves gradient checkpointing on; everything else as in the Quick demo preset
        "baseline: TRL default (gradient checkpointing on)": ["--gradient_checkpointing", "on", "--precision", "fp32"],
        "sft-space Quick demo (gradient checkpointing off)": ["--gradient_checkpointing", "off", "--precision", "fp32"],
    },
    "precision": {
        "baseline: fp32": ["--gradient_checkpointing", "off", "--precision", "fp32"],
        "bf16 (autocast)": ["--gradient_checkpointing", "off", "--precision", "bf16"],
    },
}


def measure(flags: list[str], steps: int, warmup: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sft_space.train",
                *COMMON,
                "--max_steps",
                str(steps),
                "--output_dir",
                str(run_dir),
                *flags,
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        records = [r for r in records if "loss" in r]
        first = next(r for r in records if r["step"] == warmup)
        last = records[-1]
        return (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_seconds"] - first["elapsed_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--suite", choices=list(SUITES), default="checkpointing")
    args = parser.parse_args()
    variants = SUITES[args.suite]
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, flags in variants.items():
            results[name].append(measure(flags, args.steps, args.warmup))
    baseline = statistics.median(next(iter(results.values())))
    print(f"{'variant':55s} {'median tok/s':>12s} {'runs':>20s} {'ratio':>6s}")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:55s} {median:12.1f} {', '.join(f'{v:.0f}' for v in values):>20s} {median / baseline:6.2f}")


if __name__ == "__main__":
    main()
