"""The Quick demo's result on json-extract, per field and in total, on three sets of requests, with the run's wall time.

Trains the Quick demo preset (or --preset, e.g. "Thorough demo"; --set KEY=VALUE overrides a setting) on the bundled
SmolLM2-135M-Instruct (through the command line, as the app's Start does; the model converted beforehand) unless
--run names a finished run, then answers, greedily and with the user message only (no instructions in the prompt),
base model and tuned model:
- the generator's 120 test rows (never trained on, never used to choose a setting): how well it learnt what the
  generator writes;
- the 132 hand-written check requests (json-extract.check.jsonl: written by people, not by the generator): what a
  user typing their own request will see;
- the previous generator's 120 test rows (bench/json-extract.previous-test.jsonl: short lists of names, products
  and phrasings), so a new set is seen not to lose what the old one taught.
Each reply is scored: schema-valid, each field equal to the reference (names and items case-insensitively, as
json-extract-rules.md says), all fields exact, and whether it ended at the end-of-turn token. Then the same for the
pirate-chat demo with a check that fits it: the share of replies in character (a lexical check, PIRATE_WORDS) and
the held-out answer loss. Replies are generated 16 at a time (run_model.generate_many, as the Evaluate tab does).
Prints a table and the misses by field, and writes bench/results_quick_demo.json (another preset:
bench/results_<preset>.json; --out another file).

    python bench/quick_demo_eval.py [--preset NAME] [--set KEY=VALUE] [--run RUN_DIR] [--rows 120] [--no-base]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results_quick_demo.json"
FIELDS = ["intent", "name", "date", "time", "quantity", "item"]
CHECK = ROOT / "sft_space" / "demo_data" / "json-extract.check.jsonl"
# the 120 test rows of the set's previous generator (short lists of names, products and phrasings), kept to check
# that the new set did not make the model worse on what it used to be scored on
PREVIOUS = ROOT / "bench" / "json-extract.previous-test.jsonl"
SPLIT_NAMES = {
    "test": "generator's test rows",
    "check": "hand-written check requests",
    "previous": "previous generator's test rows",
}


# In character for Cookie, the pirate-chat set's ship's cook: every one of its 119 training answers says at least
# one of these (checked in pirate_check); a plain assistant's answer rarely does.
PIRATE_WORDS = re.compile(
    r"\b(matey|mateys|arr+|ye|yer|aye|ahoy|hearty|hearties|galley|cap'n|captain|landlubbers?|ship|sails?|seas?|crew|"
    r"treasure|plank|deck|shipmates?|savvy|doubloons?|barnacles?|'em|o'|[a-z]+in')(?=\W|$)",
    re.IGNORECASE,
)


def train(
    home: Path, dataset: str = "demo:json-extract", preset: str = "Quick demo", overrides: list[str] = ()
) -> tuple[Path, float]:
    run_dir = home / "runs" / f"{preset.lower().replace(' ', '-')}-{dataset.split(':')[-1]}"
    flags = [part for item in overrides for part in (f"--{item.split('=', 1)[0]}", item.split("=", 1)[1])]
    env = {**os.environ, "SFT_SPACE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "sft_space.train", "--preset", preset, "--model", "bundled", "--dataset", dataset,
         "--output_dir", str(run_dir), *flags],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return run_dir, time.time() - started


def pirate_check(loaded, max_new_tokens: int) -> dict:
    """The pirate-chat demo's held-out conversations: replies in character (PIRATE_WORDS), ended turns, and the
    held-out answer loss, base against tuned. Each prompt is the conversation up to its last user turn."""
    from sft_space.run_model import generate_many, heldout_loss

    train_answers = [
        m["content"]
        for line in (ROOT / "sft_space/demo_data/pirate-chat.train.jsonl").read_text().splitlines()
        for m in json.loads(line)["messages"]
        if m["role"] == "assistant"
    ]
    rows = [json.loads(line) for line in (ROOT / "sft_space/demo_data/pirate-chat.test.jsonl").read_text().splitlines()]
    prompts = [r["messages"][:-1] for r in rows]
    result = {
        "rows": len(rows),
        "training_answers_in_character": sum(bool(PIRATE_WORDS.search(a)) for a in train_answers) / len(train_answers),
    }
    for side in ("base", "tuned"):
        replies = generate_many(loaded, prompts, side == "tuned", max_new_tokens)
        result[side] = {
            "in_character": sum(bool(PIRATE_WORDS.search(r["text"])) for r in replies) / len(rows),
            "ended_turn": sum(r["ended_turn"] for r in replies) / len(rows),
            "heldout_loss": heldout_loss(loaded, rows, side == "tuned")["loss"],
            "examples": [{"prompt": p[-1]["content"], "reply": r["text"]} for p, r in zip(prompts[:4], replies[:4])],
        }
    return result


def same(field: str, got, expected) -> bool:
    """A field's value against the reference: names and items compared case-insensitively (the rules)."""
    if field in ("name", "item") and isinstance(got, str) and isinstance(expected, str):
        return got.strip().casefold() == expected.strip().casefold()
    return got == expected and type(got) is type(expected)


def score(rows: list[dict], replies: list[dict], schema: dict) -> dict:
    from sft_space.judging.scorers import parse_json_object, schema_errors

    per_field = collections.Counter()
    valid = schema_valid = exact = ended = 0
    failures: dict[str, list] = collections.defaultdict(list)
    for row, reply in zip(rows, replies):
        expected = json.loads(row["messages"][-1]["content"])
        value = parse_json_object(reply["text"])
        valid += value is not None
        schema_valid += value is not None and not schema_errors(value, schema)
        ended += reply["ended_turn"]
        right = [f for f in FIELDS if value is not None and f in value and same(f, value[f], expected[f])]
        per_field.update(right)
        exact += len(right) == len(FIELDS)
        for f in FIELDS:
            if f not in right:
                failures[f].append(
                    {"prompt": row["messages"][0]["content"], "expected": expected[f], "got": (value or {}).get(f)}
                )
    replies_kept = [r["text"] for r in replies]
    n = len(rows)
    return {
        "rows": n,
        "valid_json": valid / n,
        "schema_valid": schema_valid / n,
        "all_fields_exact": exact / n,
        "ended_turn": ended / n,
        "fields": {f: per_field[f] / n for f in FIELDS},
        "failures": failures,
        "replies": replies_kept,
    }


def score_rows(loaded, rows: list[dict], use_adapter: bool, max_new_tokens: int = 96) -> dict:
    """Greedy replies to each row's user message (batched), scored per field against its reference answer."""
    from sft_space.demo_data.make_demo_data import JSON_EXTRACT_SCHEMA
    from sft_space.run_model import generate_many

    started = time.time()
    replies = generate_many(loaded, [r["messages"][:1] for r in rows], use_adapter, max_new_tokens)
    result = score(rows, replies, JSON_EXTRACT_SCHEMA)
    result["seconds"] = round(time.time() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="Quick demo", help="the preset to train (default: Quick demo)")
    parser.add_argument("--run", help="a finished run directory to evaluate (default: train the preset now)")
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--pirate-run", help="a finished pirate-chat run to check (default: train one now)")
    parser.add_argument("--no-pirate", action="store_true", help="skip the pirate-chat demo")
    parser.add_argument("--no-base", action="store_true", help="score the tuned model only")
    parser.add_argument("--set", action="append", default=[], help="a setting over the preset's: KEY=VALUE")
    parser.add_argument("--check", default=str(CHECK), help="the hand-written check split (default: the demo's)")
    parser.add_argument("--out", help="the results file (default: bench/results_<preset>.json)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sft-quick-eval-"))
    os.environ.setdefault("SFT_SPACE_HOME", str(home))
    from sft_space.models.bundled import ensure_bundled_model
    from sft_space.run_model import load_chat_model, unload

    ensure_bundled_model()
    wall = None
    if args.run:
        run_dir = Path(args.run)
    else:
        run_dir, wall = train(home, preset=args.preset, overrides=args.set)
    test_file = ROOT / "sft_space/demo_data/json-extract.test.jsonl"
    splits = {
        "test": [json.loads(line) for line in test_file.read_text().splitlines()][: args.rows],
        "check": [json.loads(line) for line in Path(args.check).read_text().splitlines()],
        "previous": [json.loads(line) for line in PREVIOUS.read_text().splitlines()][: args.rows],
    }
    loaded = load_chat_model(run_dir)
    results = {"run": str(run_dir), "wall_seconds": wall, "status": json.loads((run_dir / "status.json").read_text())}
    sides = ("tuned",) if args.no_base else ("base", "tuned")
    for split, rows in splits.items():
        results[split] = {side: score_rows(loaded, rows, side == "tuned", args.max_new_tokens) for side in sides}
    if not args.no_pirate:
        unload()
        pirate_run, pirate_wall = (
            (Path(args.pirate_run), None) if args.pirate_run else train(home, "demo:pirate-chat", args.preset)
        )
        results["pirate"] = {"run": str(pirate_run), "wall_seconds": pirate_wall}
        results["pirate"].update(pirate_check(load_chat_model(pirate_run), args.max_new_tokens))
    out = OUT if args.preset == "Quick demo" else OUT.with_name(f"results_{args.preset.lower().replace(' ', '_')}.json")
    out = Path(args.out) if args.out else out
    results["preset"] = args.preset
    results["overrides"] = args.set
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"{args.preset} run: {wall:.0f} s wall" if wall else f"run {run_dir}")
    print("| model | split | " + " | ".join(["schema-valid", "all fields exact", "ended turn", *FIELDS]) + " |")
    print("|---" * (5 + len(FIELDS)) + "|")
    for side in sides:
        for split in splits:
            r = results[split][side]
            cells = [r["schema_valid"], r["all_fields_exact"], r["ended_turn"], *r["fields"].values()]
            print(f"| {side} | {SPLIT_NAMES[split]} ({r['rows']}) | " + " | ".join(f"{c:.0%}" for c in cells) + " |")
    if "pirate" in results:
        pirate = results["pirate"]
        print(f"\npirate-chat, {pirate['rows']} held-out conversations ({pirate['wall_seconds'] or 0:.0f} s run):")
        print("| | in character | ended turn | held-out loss |\n|---|---|---|---|")
        for side in ("base", "tuned"):
            r = pirate[side]
            print(f"| {side} | {r['in_character']:.0%} | {r['ended_turn']:.0%} | {r['heldout_loss']:.3f} |")
    for split in splits:
        print(f"\nTuned model's misses by field, {SPLIT_NAMES[split]} (first 5 each):")
        for field, misses in results[split]["tuned"]["failures"].items():
            print(f"- {field}: {len(misses)}")
            for miss in misses[:5]:
                print(f"    {miss['prompt'][:90]!r}: expected {miss['expected']!r}, got {miss['got']!r}")
    print(f"[bench] results: {out}")


if __name__ == "__main__":
    main()
