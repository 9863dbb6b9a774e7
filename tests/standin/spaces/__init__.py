"""A stand-in for the `spaces` package's ZeroGPU contract, for tests on machines without a GPU.

It keeps what the real package (spaces 0.51, zero/wrappers.py, zero/client.py) does to the code it runs, and
mocks only the scheduler that lends a card (it cannot exist here):

- `spaces.GPU` is the task itself unless SPACES_ZERO_GPU is true; with or without arguments, `duration` a number,
  a timedelta or a function of the call's arguments (default 60 s).
- Each call runs in a process forked from the app, in a thread of that process (not its main thread: no
  signal handlers), with its arguments and its result pickled across; a generator's items each pickled.
- One card, lent first come first served; the next call waits until the current one ends.
- A call still running at its duration is ended (its process killed): gradio.Error "GPU task aborted", title
  "ZeroGPU worker error", as the real client raises when its worker dies.
- An exception in the task: a gradio.Error comes back as it is, any other as gradio.Error(<its class name>).
- The quota (SPACES_STANDIN_QUOTA_SECONDS, all callers together; 0: none): a call asking for more seconds than
  are left raises gradio.Error "You have exceeded your free ZeroGPU quota (Xs requested vs. Ys left). Try again
  in H:MM:SS.", title "ZeroGPU quota exceeded", before any work. Seconds used are given back
  SPACES_STANDIN_QUOTA_WINDOW seconds after they were spent (the real quota regenerates over hours).
- A duration above SPACES_STANDIN_MAX_DURATION (default 300) raises "ZeroGPU illegal duration".
- "CUDA only inside a call": a model's forward pass in the app's own process raises RuntimeError, as CUDA work
  outside a call fails on ZeroGPU; inside a call the card is this machine's CPU.
- A record of every call (start, end, outcome) in the file SPACES_STANDIN_LOG, when set (tests read it).
"""

from __future__ import annotations

import functools
import inspect
import json
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from datetime import timedelta

__version__ = "0.0-standin"

ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")
DEFAULT_DURATION = 60
_fork = multiprocessing.get_context("fork")
_in_call = False  # True in a call's forked process
_card = threading.Condition()
_waiting: list[int] = []  # tickets, first come first served
_busy = False
_ticket = 0
_spent: list[tuple[float, float]] = []  # (when, seconds) of the calls so far


def _number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _log(record: dict) -> None:
    path = os.environ.get("SPACES_STANDIN_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _error(title: str, message: str):
    import gradio as gr

    return gr.Error(message, title=title, print_exception=False)


def _seconds(duration) -> float:
    if duration is None:
        return DEFAULT_DURATION
    if isinstance(duration, timedelta):
        return duration.total_seconds()
    return float(duration)


def _check_quota(requested: float) -> None:
    maximum = _number("SPACES_STANDIN_MAX_DURATION", 300)
    if requested > maximum:
        raise _error(
            "ZeroGPU illegal duration",
            f"The requested GPU duration ({round(requested)}s) is larger than the maximum allowed",
        )
    quota = _number("SPACES_STANDIN_QUOTA_SECONDS", 0)
    if not quota:
        return
    window = _number("SPACES_STANDIN_QUOTA_WINDOW", 3600)
    now = time.time()
    live = [(when, s) for when, s in _spent if now - when < window]
    left = max(0.0, quota - sum(s for _, s in live))
    if requested <= left:
        return
    # the wait until enough of the spent seconds are given back
    wait, freed = 0.0, left
    for when, s in sorted(live):
        freed += s
        wait = when + window - now
        if freed >= requested:
            break
    raise _error(
        "ZeroGPU quota exceeded",
        f"You have exceeded your free ZeroGPU quota ({round(requested)}s requested vs. {int(left)}s left). "
        f"Try again in {timedelta(seconds=int(wait) + 1)}. ",
    )


def _acquire() -> None:
    global _busy, _ticket
    with _card:
        _ticket += 1
        mine = _ticket
        _waiting.append(mine)
        while _busy or _waiting[0] != mine:
            _card.wait()
        _waiting.pop(0)
        _busy = True


def _release() -> None:
    global _busy
    with _card:
        _busy = False
        _card.notify_all()


def _child(task, payload: bytes, conn, generator: bool) -> None:
    """The forked process: unpickle the arguments, run the task in a thread (as the real worker does), send back."""
    global _in_call
    _in_call = True
    _close_inherited_sockets(conn)

    def send(kind: str, value=None) -> None:
        try:
            data = pickle.dumps((kind, value))
        except pickle.PicklingError as error:  # the real worker reports this one...
            data = pickle.dumps(("error", ("PicklingError", str(error), None)))
        except Exception:  # noqa: BLE001 - ...and dies of any other (the caller gets "GPU task aborted")
            os._exit(1)
        conn.send_bytes(data)

    def failed(error: BaseException) -> None:
        import gradio as gr

        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        kept = error if isinstance(error, gr.Error) else None
        send("error", (type(error).__name__, text, kept))

    def run() -> None:
        try:
            args, kwargs = pickle.loads(payload)
            if generator:
                for item in task(*args, **kwargs):
                    send("item", item)
                send("end")
            else:
                send("ok", task(*args, **kwargs))
        except Exception as error:  # noqa: BLE001 - as the real worker: an Exception goes back to the caller
            failed(error)

    worker = threading.Thread(target=run, name="zerogpu-task")
    worker.start()
    worker.join()
    conn.close()


def _close_inherited_sockets(keep) -> None:
    """As the real worker does first (worker_init): let go of the app's sockets this process inherited (the
    server's connections), so nothing here can write to or shut down a visitor's connection. Each is replaced by
    /dev/null rather than closed, so its number is not handed to a file opened here and then closed under it when
    the socket's Python object is collected."""
    null = os.open(os.devnull, os.O_RDWR)
    for entry in list(os.scandir("/proc/self/fd")):
        try:
            fd = int(entry.name)
            if fd not in (keep.fileno(), null) and os.readlink(entry.path).startswith("socket:"):
                os.dup2(null, fd)
        except (OSError, ValueError):
            continue
    os.close(null)


def _raise(value) -> None:
    name, text, kept = value
    if kept is not None:
        raise kept
    print(text)
    raise _error("ZeroGPU worker error", name)


def _call(task, duration, generator: bool, args, kwargs):
    requested = _seconds(duration(*args, **kwargs) if callable(duration) else duration)
    _check_quota(requested)
    payload = pickle.dumps((args, kwargs))  # arguments that do not pickle fail before a card is taken
    _acquire()
    started = time.time()
    outcome = "ok"
    receive, send = _fork.Pipe(duplex=False)
    process = _fork.Process(target=_child, args=(task, payload, send, generator), daemon=True)
    try:
        process.start()
        send.close()
        deadline = started + requested
        while True:
            left = deadline - time.time()
            if left <= 0 or not receive.poll(left):
                outcome = "aborted"
                process.kill()
                raise _error("ZeroGPU worker error", "GPU task aborted")
            try:
                kind, value = pickle.loads(receive.recv_bytes())
            except EOFError:
                outcome = "aborted"
                raise _error("ZeroGPU worker error", "GPU task aborted") from None
            if kind == "error":
                outcome = "error"
                _raise(value)
            if kind == "ok":
                yield value
                return
            if kind == "end":
                return
            yield value  # a generator's item
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        receive.close()
        spent = time.time() - started
        _spent.append((started, spent))
        _release()
        _log(
            {
                "task": getattr(task, "__name__", "task"),
                "started": started,
                "ended": time.time(),
                "requested": requested,
                "seconds": round(spent, 3),
                "outcome": outcome,
                "args": _describe(args),
            }
        )


def _describe(args) -> list:
    return [a if isinstance(a, (str, int, float)) else type(a).__name__ for a in args]


def GPU(task=None, *, duration=None, size=None, **kwargs):
    """spaces.GPU: a task run in a lent GPU slot (see the module's docstring)."""
    if task is None or not callable(task):
        if task is not None and duration is None:
            duration = task
        return functools.partial(GPU, duration=duration, size=size)
    if not ZERO_GPU:
        return task
    if inspect.isgeneratorfunction(task):

        @functools.wraps(task)
        def stream(*args, **kwargs):
            if _in_call:
                yield from task(*args, **kwargs)
                return
            yield from _call(task, duration, True, args, kwargs)

        return stream

    @functools.wraps(task)
    def call(*args, **kwargs):
        if _in_call:
            return task(*args, **kwargs)
        results = _call(task, duration, False, args, kwargs)
        try:
            return next(results)
        finally:
            results.close()  # the card is given back here

    return call


def _refuse_forward_outside_calls() -> None:
    import torch

    def hook(module, args):
        if not _in_call:
            raise RuntimeError(
                "CUDA is only available inside a @spaces.GPU call on ZeroGPU (stand-in): a model ran in the app's "
                f"own process ({type(module).__name__})"
            )

    torch.nn.modules.module.register_module_forward_pre_hook(hook)


if ZERO_GPU:
    _refuse_forward_outside_calls()
