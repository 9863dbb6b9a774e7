"""The generation thread: every model computation of the app process (loading, replies, held-out loss) and every
use of a loaded model's tokenizer runs on one long-lived thread, in the order asked.

torch's CPU kernels run on an OpenMP team per calling thread, and a team's workers keep spinning for a while after
each piece of work: replies computed on a fresh thread each time competed with the spinning team of the previous
one and streamed at half speed (20 vs 38 tokens/s measured here), sometimes at a tenth.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Callable

GENERATION_THREAD = "sft-space-generation"
_IMPORTED_IN = os.getpid()
_executor = None
_executor_pid = 0  # the process that made it: a process forked from this one (a ZeroGPU slot) makes its own
_executor_lock = threading.Lock()


# Threads a reply may use (None: torch's default, every core). The app lowers it while a run trains on the CPU,
# so training keeps the cores (set by whoever knows about runs; this module does not).
def _every_core() -> int | None:
    return None


generation_threads: Callable[[], int | None] = _every_core


def on_generation_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `function` on the generation thread and wait for its result (directly when already there)."""
    global _executor, _executor_pid
    if threading.current_thread().name.startswith(GENERATION_THREAD):
        return function(*args, **kwargs)
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():  # a forked child has the object, not its thread
            import concurrent.futures

            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=GENERATION_THREAD)
            _executor_pid = os.getpid()
    return _executor.submit(_with_threads, function, *args, **kwargs).result()


def _with_threads(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    import torch

    if os.getpid() != _IMPORTED_IN:  # a process forked for a GPU call (ZeroGPU): torch's thread pool did not
        return function(*args, **kwargs)  # survive the fork, and changing its size there fails
    capped = generation_threads()
    wanted = capped or _default_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    if not capped:
        return function(*args, **kwargs)
    # A run trains on this CPU: say so while this work runs, so the training process gives up a core meanwhile
    # (callbacks.RunDirCallback reads the mark at each step): one thread each, no core shared by two.
    from .. import GENERATING_MARK, home

    mark = home() / GENERATING_MARK
    try:
        mark.touch()
    except OSError:
        pass
    try:
        return function(*args, **kwargs)
    finally:
        mark.unlink(missing_ok=True)


@functools.cache
def _default_threads() -> int:
    """torch's thread count before anything here changed it (every core)."""
    import torch

    return torch.get_num_threads()


def cap_threads_with(threads: Callable[[], int | None]) -> None:
    """Who decides the threads model work may use (the app: one while a run it started trains on the CPU)."""
    global generation_threads
    generation_threads = threads
