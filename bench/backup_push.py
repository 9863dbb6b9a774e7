"""What backing a run up to the Hub costs: the Quick demo on the bundled model with and without checkpoint
pushes, alternating, in the same run.

The Hub here is the local Hub-compatible test server (tests/hub_server.py) driven by the real huggingface_hub
client, so push_seconds measures the client and the commit, not a real network. What a save waits for the
backup is `backup_stage_seconds` (a local copy of the checkpoint); the push itself runs in the background.
Reported as medians and as ratios against the run without backup, never as a pass/fail test.

    python bench/backup_push.py [--repeats 1] [--steps 40] [--save_steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TOKEN = "hf_benchBACKUPtoken0123456789abcdefgh"


def one_run(backed_up: bool, steps: int, save_steps: int) -> dict:
    from sft_space.presets import preset_config
    from sft_space.publishing import backup
    from sft_space.runs import lifecycle as runs
    from sft_space.runs import queue as run_queue

    config = preset_config("Quick demo", max_steps=steps, save_steps=save_steps)
    extra = dict(hub_token=TOKEN, backup_repo=backup.repo_for("bench")) if backed_up else {}
    run_id = runs.start_run(config, owner="hf:bench", **extra)
    status = run_queue.wait_for(run_id, timeout=3600)
    assert status["state"] == "completed", status
    if backed_up:  # the final push follows the run's end from the same process: wait for it before the next run
        from sft_space import rundir

        deadline = time.time() + 600
        while not (rundir.read_status(run_id).get("backup") or {}).get("final") and time.time() < deadline:
            time.sleep(1)
        status = rundir.read_status(run_id)
    record = status.get("backup") or {}
    return {
        "backed_up": backed_up,
        "wall_seconds": status["elapsed_seconds"],
        "seconds_per_step": status["seconds_per_step"],
        "stage_seconds": status.get("backup_stage_seconds"),
        "push_seconds": record.get("push_seconds"),
        "push_error": record.get("error"),
        "failures": record.get("failures", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save_steps", type=int, default=10)
    args = parser.parse_args()

    from hub_server import HubServer

    with HubServer() as server, tempfile.TemporaryDirectory() as scratch:
        server.users[TOKEN] = "bench"
        os.environ.update(
            HF_ENDPOINT=server.url, HF_HUB_OFFLINE="0", HF_HOME=str(Path(scratch) / "hf"), SFT_SPACE_HOME=scratch
        )
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = False
        from sft_space.models.bundled import ensure_bundled_model

        ensure_bundled_model()  # converted once before timing, so neither variant pays for it
        results = []
        for _ in range(args.repeats):
            for backed_up in (False, True):
                results.append(one_run(backed_up, args.steps, args.save_steps))
                print(json.dumps(results[-1]), flush=True)
        commits = [c for c in server.commits if c["repo"] == "bench/sft-space-runs"]
        checkpoint_bytes = max(
            (len(data) for path, data in server.repos[("model", "bench/sft-space-runs")].files.items()
             if "/checkpoint/" in path),
            default=0,
        )  # fmt: skip

    def median(key, backed_up):
        values = [r[key] for r in results if r["backed_up"] == backed_up and r[key] is not None]
        return statistics.median(values) if values else None

    plain, backed = median("wall_seconds", False), median("wall_seconds", True)
    summary = {
        "wall_seconds_without": plain,
        "wall_seconds_with": backed,
        "wall_ratio_with_vs_without": backed / plain,
        "seconds_per_step_ratio": median("seconds_per_step", True) / median("seconds_per_step", False),
        "stage_seconds_per_save": median("stage_seconds", True),
        "push_seconds_last": median("push_seconds", True),
        "commits_per_backed_up_run": len(commits) / args.repeats,
        "commit_messages": [c["message"].split(": ", 1)[-1] for c in commits],
        "largest_checkpoint_file_bytes": checkpoint_bytes,
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results" / "backup_push.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"runs": results, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
