"""Where a training step's time goes: torch.profiler over a few steps of our CLI (`python -m sft_space.train`, the
Quick demo on the bundled model), per op by self CPU time, split into matrix products and everything else.

    python bench/profile_step.py [--steps 4] [--warmup 3] [--top 25] [-- extra CLI flags]

Writes bench/results_profile.json (the table, the shares, the machine) and prints the table. Run it alone: another
torch process on the same cores changes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results_profile.json"
# ops whose self time is a matrix product (oneDNN / BLAS kernels); `linear`, `matmul` are wrappers around them
MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "mkldnn::",
    "aten::mkldnn_",
    "aten::_addmm_activation",
)


def is_matmul(name: str) -> bool:
    return any(name.startswith(op) for op in MATMUL_OPS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the profiled ones")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("extra", nargs="*", help="more CLI flags (after --)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("SFT_SPACE_HOME", tempfile.mkdtemp(prefix="sft-profile-"))

    import roofline
    import torch
    import trl
    from transformers import TrainerCallback

    window: dict = {}

    class Profiled(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kwargs):
            if state.global_step == args.warmup:
                window["profiler"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                window["profiler"].__enter__()
                window["started"] = time.perf_counter()

        def on_step_end(self, args_, state, control, **kwargs):
            if state.global_step == args.warmup + args.steps and "profiler" in window:
                window["seconds"] = time.perf_counter() - window["started"]
                window["profiler"].__exit__(None, None, None)

    base = trl.SFTTrainer

    class ProfiledTrainer(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback(Profiled())

    trl.SFTTrainer = ProfiledTrainer
    from sft_space.training.run import main as cli

    run_dir = Path(tempfile.mkdtemp(prefix="sft-profile-run-"))
    flags = ["--preset", "Quick demo", "--model", "bundled", "--dataset", "demo:json-extract", "--train_minutes", "0"]
    flags += ["--max_steps", str(args.warmup + args.steps), "--eval_steps", "100000", "--save_steps", "100000"]
    code = cli([*flags, *args.extra, "--output_dir", str(run_dir)])
    if code != 0 or "seconds" not in window:
        print((run_dir / "train.log").read_text()[-3000:] if (run_dir / "train.log").exists() else "no log")
        return 1
    events = window["profiler"].key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1
    rows = sorted(
        ({"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "calls": e.count} for e in events),
        key=lambda r: -r["self_ms"],
    )
    matmul = sum(r["self_ms"] for r in rows if is_matmul(r["op"]))
    status = json.loads((run_dir / "status.json").read_text())
    result = {
        "machine": roofline.cpu(),
        "threads": torch.get_num_threads(),
        "precision": status.get("precision"),
        "profiled_steps": args.steps,
        "wall_seconds": round(window["seconds"], 3),
        "profiled_self_ms": round(total / 1e3, 1),
        "matmul_share": round(matmul / (total / 1e3), 4),
        "top": [
            {
                **r,
                "self_ms": round(r["self_ms"], 1),
                "share": round(r["self_ms"] / (total / 1e3), 4),
                "matmul": is_matmul(r["op"]),
            }
            for r in rows[: args.top]
        ],  # fmt: skip
        "flags": args.extra,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['machine']['model']} ({', '.join(result['machine']['flags'])}), {result['threads']} threads, "
          f"precision {result['precision']}: {args.steps} steps in {result['wall_seconds']} s, "
          f"matrix products {result['matmul_share']:.0%} of op time")  # fmt: skip
    print("| op | self ms | share | calls | matmul |\n|---|---|---|---|---|")
    for r in result["top"]:
        print(f"| {r['op']} | {r['self_ms']} | {r['share']:.1%} | {r['calls']} | {'yes' if r['matmul'] else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
