"""Data timings: preview of a Hub dataset against the local Hub test server, and inspecting a 50k-row upload.

    python bench/data_timing.py [--rows 50000]

Prints seconds for: Hub dataset (2,000 rows, parquet) info + download + read; a 50k-row
Alpaca jsonl file read and converted (the Data tab's preview); the 'what the model sees'
statistics over it with the bundled model's tokenizer.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    os.environ.setdefault("SFT_SPACE_HOME", tempfile.mkdtemp(prefix="sft-data-"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sft_space.data import length_stats, load_dataset_source
    from sft_space.models import load_tokenizer, resolve_model

    from hub_server import HubServer

    rows = [
        {
            "instruction": f"Summarise note {i}: the meeting moved to room {i % 40}.",
            "input": "",
            "output": f"Meeting now in room {i % 40}.",
        }
        for i in range(args.rows)
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows[:2000]), buffer)
    with HubServer() as hub:
        hub.add_repo("bench/notes", {"data/train-00000-of-00001.parquet": buffer.getvalue()})
        os.environ["HF_ENDPOINT"] = hub.url
        os.environ["HF_HUB_OFFLINE"] = "0"
        started = time.time()
        splits = load_dataset_source("bench/notes")
        print(
            f"Hub preview (2,000 rows, parquet, local test server): {time.time() - started:.2f} s "
            f"({len(splits.train)} train / {len(splits.validation)} validation)"
        )

    path = Path(tempfile.mkdtemp()) / "upload.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    started = time.time()
    splits = load_dataset_source(str(path))
    print(f"{args.rows}-row Alpaca jsonl read and converted: {time.time() - started:.2f} s")
    tokenizer = load_tokenizer(resolve_model("bundled"))
    started = time.time()
    stats = length_stats(tokenizer, splits.train, True, 256, 4)
    print(
        f"what the model sees, length statistics ({stats['rows']} sampled of {stats['total_rows']} rows): "
        f"{time.time() - started:.2f} s"
    )


if __name__ == "__main__":
    main()
