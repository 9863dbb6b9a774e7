"""The Quick demo's result on every held-out json-extract row: per field and in total, with the run's wall time.

Trains the Quick demo preset on the bundled SmolLM2-135M-Instruct (through the command line, as the app's Start
does; the model converted beforehand) unless --run names a finished run, then answers all 120 held-out prompts
greedily (no instructions in the prompt: the user message only), base model and tuned model, and scores each reply:
valid JSON, schema-valid, each field equal to the reference, all fields exact, and whether the reply ended at the
end-of-turn token. Prints a table and the failures by field, and writes bench/results_quick_demo.json.

    python bench/quick_demo_eval.py [--run RUN_DIR] [--rows 120] [--max-new-tokens 96]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_quick_demo.json"
FIELDS = ["intent", "name", "date", "time", "quantity", "item"]


def train(home: Path) -> tuple[Path, float]:
    run_dir = home / "runs" / "quick-demo"
    env = {**os.environ, "SFT_SPACE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "sft_space.train", "--preset", "Quick demo", "--model", "bundled", "--output_dir",
         str(run_dir)],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return run_dir, time.time() - started


def score(rows: list[dict], replies: list[dict], schema: dict) -> dict:
    from sft_space.scorers import parse_json_object, schema_errors

    per_field = collections.Counter()
    valid = schema_valid = exact = ended = 0
    failures: dict[str, list] = collections.defaultdict(list)
    for row, reply in zip(rows, replies):
        expected = json.loads(row["messages"][-1]["content"])
        value = parse_json_object(reply["text"])
        valid += value is not None
        schema_valid += value is not None and not schema_errors(value, schema)
        ended += reply["ended_turn"]
        right = [f for f in FIELDS if value is not None and f in value and value[f] == expected[f]]
        per_field.update(right)
        exact += len(right) == len(FIELDS)
        for f in FIELDS:
            if f not in right:
                failures[f].append(
                    {"prompt": row["messages"][0]["content"], "expected": expected[f], "got": (value or {}).get(f)}
                )
    n = len(rows)
    return {
        "rows": n,
        "valid_json": valid / n,
        "schema_valid": schema_valid / n,
        "all_fields_exact": exact / n,
        "ended_turn": ended / n,
        "fields": {f: per_field[f] / n for f in FIELDS},
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run directory to evaluate (default: train the Quick demo now)")
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sft-quick-eval-"))
    os.environ.setdefault("SFT_SPACE_HOME", str(home))
    from sft_space.bundled import ensure_bundled_model

    ensure_bundled_model()
    wall = None
    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir, wall = train(home)
    from sft_space.chat import generate_once, load_chat_model
    from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA

    test_file = ROOT / "sft_space/demo_data/json-extract.test.jsonl"
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    rows = rows[: args.rows]
    loaded = load_chat_model(run_dir)
    results = {"run": str(run_dir), "wall_seconds": wall, "status": json.loads((run_dir / "status.json").read_text())}
    for side in ("base", "tuned"):
        started = time.time()
        replies = [
            generate_once(loaded, [r["messages"][0]], use_adapter=side == "tuned", max_new_tokens=args.max_new_tokens)
            for r in rows
        ]
        results[side] = score(rows, replies, JSON_EXTRACT_SCHEMA)
        results[side]["seconds"] = round(time.time() - started, 1)
    OUT.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"Quick demo run: {wall:.0f} s wall" if wall else f"run {run_dir}")
    print("| | " + " | ".join(["valid JSON", "schema-valid", "all fields exact", "ended turn", *FIELDS]) + " |")
    print("|---" * (5 + len(FIELDS)) + "|")
    for side in ("base", "tuned"):
        r = results[side]
        cells = [r["valid_json"], r["schema_valid"], r["all_fields_exact"], r["ended_turn"], *r["fields"].values()]
        print(f"| {side} | " + " | ".join(f"{c:.0%}" for c in cells) + " |")
    print("\nTuned model's misses by field (first 5 each):")
    for field, misses in results["tuned"]["failures"].items():
        print(f"- {field}: {len(misses)}")
        for miss in misses[:5]:
            print(f"    {miss['prompt'][:90]!r}: expected {miss['expected']!r}, got {miss['got']!r}")
    print(f"[bench] results: {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
