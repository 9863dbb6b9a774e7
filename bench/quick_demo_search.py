"""Choose the Quick demo's settings on validation rows only: train each candidate, score it, keep the table.

Each candidate is the Quick demo preset plus a few overrides, trained on the bundled SmolLM2-135M-Instruct through
the command line (as the app's Start does), then scored on the run's validation rows: rows carved out of the
json-extract training rows (the set's 120 test rows are never read here, so no choice sees them). Per field and
in total, greedy, the user message only. Results are appended to bench/results_quick_demo_search.json, one entry
per candidate, so a search can be resumed and read later.

    python bench/quick_demo_search.py NAME='{"learning_rate": 1e-3, "max_steps": 60}' [NAME=...] [--rows 64]

Run it on a quiet machine: the wall time of each run is recorded, and two torch processes on a small CPU slow
each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_quick_demo_search.json"


def train(home: Path, name: str, overrides: dict) -> tuple[Path, float]:
    run_dir = home / "runs" / f"search-{name}"
    flags = []
    for key, value in overrides.items():
        flags += [f"--{key}", str(value)]
    env = {**os.environ, "SFT_SPACE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "sft_space.train", "--preset", "Quick demo", "--model", "bundled", "--output_dir",
         str(run_dir), *flags],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{name}: training failed\n{done.stderr[-3000:]}")
    return run_dir, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help='NAME={"setting": value, ...}')
    parser.add_argument("--rows", type=int, default=64, help="validation rows scored (all of them by default)")
    parser.add_argument("--home", default=str(Path.home() / ".cache" / "sft-quick-search"))
    args = parser.parse_args()
    home = Path(args.home)
    os.environ["SFT_SPACE_HOME"] = str(home)
    from quick_demo_eval import score_rows

    from sft_space.data import load_for_run
    from sft_space.models.bundled import ensure_bundled_model
    from sft_space.presets import preset_config
    from sft_space.run_model import load_chat_model, unload

    ensure_bundled_model()
    results = json.loads(OUT.read_text()) if OUT.is_file() else []
    for candidate in args.candidates:
        name, _, text = candidate.partition("=")
        overrides = json.loads(text or "{}")
        run_dir, wall = train(home, name, overrides)
        status = json.loads((run_dir / "status.json").read_text())
        splits = load_for_run(preset_config("Quick demo", model="bundled", **overrides))
        rows = splits.validation[: args.rows]
        unload()
        scored = score_rows(load_chat_model(run_dir), rows, use_adapter=True)
        failures = scored.pop("failures")
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
        entry = {
            "name": name,
            "overrides": overrides,
            "wall_seconds": round(wall, 1),
            "steps": status.get("step"),
            "seconds_per_step": round(status.get("seconds_per_step") or 0, 2),
            "probe_seconds": round(status.get("probe_seconds") or 0, 1),
            "tokens_seen": status.get("tokens_seen"),
            "validation_loss": eval_losses[-1] if eval_losses else None,
            "validation": scored,
            "failures": failures,  # per field: what the model answered for which request
            "at": time.strftime("%Y-%m-%d %H:%M"),
        }
        results.append(entry)
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        fields = " ".join(f"{k} {v:.0%}" for k, v in scored["fields"].items())
        print(
            f"{name}: {wall:.0f} s, {entry['steps']} steps, val loss {entry['validation_loss']}, schema-valid "
            f"{scored['schema_valid']:.0%}, all exact {scored['all_fields_exact']:.0%} | {fields}",
            flush=True,
        )


if __name__ == "__main__":
    main()
