"""What went wrong in a training process, told apart: memory ran out, the disk filled up (ENOSPC anywhere in the
chain, or torch.save's errno-less write failure on a nearly full drive), and what a visitor reads then; the
partial files a failed save leaves are removed first. Used by train.fail.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import sys
from pathlib import Path

from .. import rundir
from ..config import RunConfig
from ..rundir import last_complete_checkpoint
from .run_writer import log


def peak_memory() -> int:
    """Peak bytes this process used: GPU memory allocated on CUDA, else resident memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * (1 if sys.platform == "darwin" else 1024)


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# What a write cut short says where no errno reaches Python: torch.save's C++ stream writer ("basic_ios::clear:
# iostream error", "unexpected pos ..."), safetensors' serializer.
WRITE_FAILURES = ("iostream error", "unexpected pos", "PytorchStreamWriter failed", "file write failed", "serializ")
LOW_DISK_BYTES = 256 * 2**20  # a failed write with less than this free is taken for a full disk


def is_disk_full(error: BaseException, where: Path | None = None) -> bool:
    """A full disk: ENOSPC anywhere in the chain (libraries wrap the OSError), or a write failure without an errno
    (torch.save raises RuntimeError) while the run's drive has next to nothing free."""
    while error is not None:
        text = str(error)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left on device" in text:
            return True
        if where is not None and any(words in text for words in WRITE_FAILURES):
            with contextlib.suppress(OSError):
                if shutil.disk_usage(where).free < LOW_DISK_BYTES:
                    return True
        error = error.__cause__ or error.__context__
    return False


def remove_partial_files(run_dir: Path) -> list[str]:
    """After a failed write: checkpoints never marked complete, the adapter's staging folder, temp JSON files."""
    removed = []
    for path in [
        *(p for p in rundir.checkpoints_dir(run_dir).glob("checkpoint-*") if not (p / rundir.CHECKPOINT_MARK).exists()),
        rundir.adapter_dir(run_dir).with_name(rundir.ADAPTER + ".partial"),
        *run_dir.glob(".*.tmp"),
    ]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)
        else:
            continue
        removed.append(path.name)
    return removed


def disk_full_message(run_dir: Path, config: RunConfig) -> str:
    """What a visitor reads when the disk filled up: how much is free now, what to do, where to resume from."""
    removed = remove_partial_files(run_dir)
    log.error("Disk full; removed the partial files %s", removed)
    free_mb = shutil.disk_usage(run_dir).free / 1e6
    point = last_complete_checkpoint(run_dir)
    where = (
        f"resume from {point.name} (step {point.name.split('-')[-1]}), the last complete checkpoint"
        if point
        else "start the run again (no checkpoint was complete)"
    )
    return (
        f"The disk is full ({free_mb:,.0f} MB free now on the drive holding the run): free some space (delete old "
        f"runs on the Runs tab) or keep fewer checkpoints (save_total_limit, now {config.save_total_limit}), then "
        f"{where}. The unfinished checkpoint was removed."
    )
