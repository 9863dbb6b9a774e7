"""Queue behaviour with N simultaneous visitors: launch the app, N gradio_client sessions start a run at once.

Prints, per visitor, the queue position and estimated wait the app showed right after
Start, when its run was launched and when it ended, and checks that runs trained one at
a time in arrival order. Uses a small random model built here (fast) unless --model is given.

    python bench/queue_visitors.py [--visitors 5] [--steps 15] [--model bundled]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=5)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    os.environ.setdefault("SFT_SPACE_HOME", tempfile.mkdtemp(prefix="sft-queue-"))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

    from gradio_client import Client

    from sft_space import rundir
    from sft_space.runs import queue as run_queue
    from sft_space.ui import build_app, launch_kwargs

    from conftest import build_tiny_model

    model = args.model or str(build_tiny_model(Path(tempfile.mkdtemp(prefix="tiny-"))))
    run_queue.start_queue_worker()
    demo = build_app()
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    clients = [Client(url, verbose=False) for _ in range(args.visitors)]
    bars: list[str | None] = [None] * args.visitors
    settings = dict(
        dataset="demo:json-extract",
        model=model,
        max_steps=args.steps,
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=5,
        eval_steps=1000,
        save_steps=1000,
        eval_max_rows=4,
    )

    def start(i: int) -> None:
        bars[i] = clients[i].predict(**settings, api_name="/start_run")

    started = time.time()
    threads = [threading.Thread(target=start, args=(i,)) for i in range(args.visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [re.search(r"\*\*Run:\*\* (\S+)", bar).group(1) for bar in bars]
    for run_id in ids:
        run_queue.wait_for(run_id, timeout=1800)
    print(f"{'visitor':8s} {'shown after Start':60s} {'launched':>9s} {'ended':>7s} {'state':>10s}")
    statuses = [rundir.read_status(r) for r in ids]
    for i, (bar, status) in enumerate(zip(bars, statuses)):
        shown = bar.split(" · ", 1)[1][:60]
        print(
            f"{i + 1:<8d} {shown:60s} {status['launched_at'] - started:8.1f}s {status['ended_at'] - started:6.1f}s "
            f"{status['state']:>10s}"
        )
    order = sorted(range(len(ids)), key=lambda i: statuses[i]["queued_at"])
    spans = [(statuses[i]["launched_at"], statuses[i]["ended_at"]) for i in order]
    overlaps = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1] - 0.5)
    print(
        f"arrival order kept: {spans == sorted(spans)}; overlapping runs: {overlaps}; "
        f"total {time.time() - started:.1f}s for {args.visitors} runs of {args.steps} steps"
    )
    demo.close()


if __name__ == "__main__":
    main()
