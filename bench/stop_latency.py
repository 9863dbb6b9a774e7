"""How long Stop & save takes to take effect: time from the stop request to 'stopped' with an adapter on disk.

Trains the bundled SmolLM2-135M-Instruct (Quick demo settings) and presses Stop at a few
random moments; prints each latency and the median, and the step time for scale.

    python bench/stop_latency.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SFT_SPACE_HOME", tempfile.mkdtemp(prefix="sft-stop-"))
    from sft_space import rundir
    from sft_space.presets import preset_config
    from sft_space.runs import lifecycle as runs
    from sft_space.runs import queue as run_queue

    latencies, step_times = [], []
    for i in range(args.repeats):
        run_id = runs.start_run(preset_config("Quick demo", max_steps=500, run_name=f"stop-{i}"))
        target = random.Random(i).randint(3, 8)
        while runs.refresh(run_id).get("step", 0) < target:
            time.sleep(0.05)
        time.sleep(random.Random(100 + i).uniform(0, 2))  # somewhere inside a step
        status = rundir.read_status(run_id)
        step_times.append(status["elapsed_seconds"] / max(status["step"], 1))
        asked = time.time()
        runs.stop_run(run_id)
        final = run_queue.wait_for(run_id, timeout=300, poll=0.05)
        latency = time.time() - asked
        assert final["state"] == "stopped", final
        assert (rundir.run_path(run_id) / "adapter" / "adapter_model.safetensors").is_file()
        latencies.append(latency)
        print(f"stop {i + 1}: at step {final['step']}, stopped with adapter saved after {latency:.2f}s")
    print(
        f"median stop latency {statistics.median(latencies):.2f}s; median step time "
        f"{statistics.median(step_times):.2f}s"
    )


if __name__ == "__main__":
    main()
