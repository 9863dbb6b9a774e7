"""What training in GPU slots costs against one continuous run, on this machine (a benchmark, not a test).

The same run (bundled SmolLM2-135M-Instruct, the "Quick demo (GPU slots)" settings, a fixed number of steps) is
trained twice through the ZeroGPU driver (sft_space/training/slots.py) and the REAL `spaces` package (pinned in
requirements-dev.txt; its worker forked from this process and reused from slot to slot while the card is idle, as
on ZeroGPU) against the local device API of the tests (tests/zerogpu/device_api.py) and the few torch attributes a
CPU build lacks (tests/zerogpu/cpu_torch.py): once in one slot long enough for the whole run, once in short slots.
Reported: wall seconds, the seconds each slot boundary costs (save, the call's end and the next one's scheduling,
loading the model and data again, resuming), tokens/s of training proper, and whether the losses match.
On a CPU this measures our side of a boundary; on a ZeroGPU card the model's move to the GPU adds to it.

    python bench/slots.py [--steps 60] [--slot-seconds 30] [--out bench/results_slots.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--slot-seconds", type=float, default=30.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_slots.json"))
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sft-slots-bench-"))
    os.environ.update(
        SFT_SPACE_HOME=str(home), HF_HUB_OFFLINE="1", SPACES_ZERO_GPU="true", TOKENIZERS_PARALLELISM="false"
    )
    os.environ["SFT_SPACE_SLOT_SAVE_SECONDS"] = "1000000"  # saves only at a slot's end: the boundary's own cost
    sys.path[:0] = [str(ROOT / "tests" / "zerogpu"), str(ROOT)]
    from device_api import DeviceAPI

    api = DeviceAPI().__enter__()  # no quota, no longest duration: the one-slot baseline asks for an hour
    os.environ["SPACES_ZERO_DEVICE_API_URL"] = api.url  # before `spaces` is imported: it asserts the URL then
    import cpu_torch  # noqa: F401  (what a CPU build of torch lacks for the package)
    import spaces

    from sft_space import rundir
    from sft_space.models import bundled
    from sft_space.presets import preset_config
    from sft_space.runs import lifecycle as runs
    from sft_space.runs import queue as run_queue
    from sft_space.training import slot_worker, slots

    bundled.ensure_bundled_model()  # converted once, before anything is timed
    call = spaces.GPU(slot_worker.run_slot, duration=slot_worker.slot_duration)
    results: dict = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "steps": args.steps,
        "spaces": importlib.metadata.version("spaces"),
        "runs": {},
    }
    for name, cap in (("one slot", 3600.0), (f"slots of {args.slot_seconds:g} s", args.slot_seconds)):
        os.environ["SFT_SPACE_SLOT_SECONDS"] = str(cap)
        shutil.rmtree(home / "probe_replies", ignore_errors=True)  # each run answers its base probes itself
        config = preset_config("Quick demo (GPU slots)", max_steps=args.steps, eval_steps=1000, save_steps=1000)
        run_id = runs.start_run(config, run_id=f"20990101-00000{len(results['runs'])}-slots")
        api.calls.clear()
        started = time.time()
        for _ in slots.drive(run_id, call, *run_queue.slot_environment(run_id)):
            pass
        wall = time.time() - started
        status = rundir.read_status(run_id)
        log = status.get("slot_log") or []
        records = rundir.read_metrics(run_id)
        results["runs"][name] = {
            "state": status.get("state"),
            "wall_seconds": round(wall, 1),
            "slots": len(log),
            "gpu_seconds": status.get("gpu_seconds"),
            "startup_seconds_last_slot": status.get("startup_seconds"),
            "save_seconds": status.get("save_seconds"),
            "slot_log": log,
            "new_worker_processes": len({c["pid"] for c in api.calls if c["call"] == "allow"}),
            "losses": {r["step"]: r["loss"] for r in records if isinstance(r.get("loss"), float)},
            "tokens_seen": status.get("tokens_seen"),
        }
        print(name, json.dumps({k: v for k, v in results["runs"][name].items() if k not in ("slot_log", "losses")}))
    one, many = results["runs"].values()
    boundaries = max(1, many["slots"] - one["slots"])
    results["seconds_per_boundary"] = round((many["wall_seconds"] - one["wall_seconds"]) / boundaries, 1)
    results["wall_ratio_slots_vs_one"] = round(many["wall_seconds"] / one["wall_seconds"], 3)
    common = set(one["losses"]) & set(many["losses"])
    results["largest_loss_difference"] = max((abs(one["losses"][s] - many["losses"][s]) for s in common), default=None)
    results["same_steps_logged"] = sorted(one["losses"]) == sorted(many["losses"])
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
