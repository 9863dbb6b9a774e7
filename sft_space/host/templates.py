"""Chat templates rendered with a bound on every call. A model's chat template is code a stranger chose: it may loop
for minutes, or build gigabytes, only on a word of the conversation (the sandbox's check renders a fixed sample
once, so such a template passes it). In the app process every render goes to a worker process of its own, with an
address-space limit (RLIMIT_AS), a wall-clock deadline per call, and none of the app's secrets; a worker past its
deadline is killed and replaced, a render past its memory fails in the worker. Either way the caller gets
TemplateTooCostly (a ValueError, so the page shows its message) and the app's threads move on to the next visitor.

`bound_chat_templates()` (called once by the page) routes transformers' `render_jinja_template` through the
workers: chat, "What the model sees", Evaluate, the baselines, the probes' prompts and the exports' checks all
render through `apply_chat_template`, so all are bounded. The training process renders on its own (it is killed at
its run's deadline), and so does a process forked from the app for a ZeroGPU slot (the pool's pipes and locks
belong to the app; the platform kills the slot at its duration). Up to WORKERS renders run at once: one stranger's
slow template holds one worker, not another visitor's chat.

    python -m sft_space.host.templates MEMORY_MB    # a worker: pickled requests on stdin, JSON replies on stdout
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path

from .sandbox import ENVIRONMENT, _limit

RENDER_SECONDS = 1.0  # wall time of one render (a real template: a millisecond or two)
RENDER_MEMORY_MB = 512  # address space of a worker (the interpreter with transformers' template code: ~190 MB)
RENDERED_CHARACTERS = 256_000  # one render's output, at most (a long chat here renders to ~30k; the sandbox's cap)
WORKERS = 3  # renders at once
START_SECONDS = 60.0  # a worker's start-up (importing transformers' template code) on a busy 2-core machine


class TemplateTooCostly(ValueError):
    """A render past its time or memory, or failed in the worker: the message says which."""


class _Worker:
    def __init__(self) -> None:
        env = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
        env.update(PYTHONDONTWRITEBYTECODE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
        env["TRANSFORMERS_VERBOSITY"] = "error"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sft_space.host.templates", str(RENDER_MEMORY_MB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=env,
        )
        self.ready = False

    def _reply(self, seconds: float, request: bytes | None = None) -> tuple[dict, bool]:
        """The worker's next reply within `seconds` (after sending `request`), and whether time ran out."""
        answer: dict = {}

        def read() -> None:
            try:
                answer.update(_read_frame(self.process.stdout))
            except (EOFError, OSError, ValueError):
                pass

        reader = threading.Thread(target=read, daemon=True)
        if request is not None:
            try:
                _write_frame(self.process.stdin, request)
            except OSError:  # the worker died meanwhile: no answer, so the caller refuses and replaces it
                return {}, False
        reader.start()
        reader.join(seconds)
        return answer, reader.is_alive()

    def start(self) -> bool:
        """Wait for the worker's start-up (its imports), outside any render's deadline."""
        if not self.ready:
            answer, _late = self._reply(START_SECONDS)
            self.ready = answer.get("ready") is True
            if not self.ready:
                self.kill()
        return self.ready

    def ask(self, request: bytes, seconds: float) -> dict:
        """Send one request to a started worker and wait for its reply at most `seconds`."""
        answer, late = self._reply(seconds, request)
        if late or not answer:
            self.kill()
            if late:
                raise TemplateTooCostly(
                    f"This model's chat template took longer than {seconds:g} s to render this conversation, so it "
                    "is refused on this host. Try another model, or a conversation without what made it slow."
                )
            raise TemplateTooCostly(
                f"This model's chat template needed more than {RENDER_MEMORY_MB} MB to render this conversation, so "
                "it is refused on this host."
            )
        return answer

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


_idle: queue.LifoQueue = queue.LifoQueue()
_slots = threading.BoundedSemaphore(WORKERS)


def _start_spare() -> None:
    """A started worker waiting in the pool, so the render after a killed one does not wait for start-up."""

    def start() -> None:
        worker = _Worker()
        if worker.start():
            if _idle.qsize() < WORKERS:
                _idle.put(worker)
            else:
                worker.kill()

    threading.Thread(target=start, name="sft-space-template-worker", daemon=True).start()


def render(seconds: float = RENDER_SECONDS, **arguments) -> tuple[list[str], list]:
    """transformers' render_jinja_template(**arguments), run in a bounded worker; TemplateTooCostly when the
    render takes longer than `seconds`, more memory than the worker has, or more than RENDERED_CHARACTERS."""
    tools = arguments.get("tools")
    if tools:  # functions become their JSON schema here, as transformers does, so the request is plain data
        from transformers.utils import get_json_schema

        arguments["tools"] = [get_json_schema(t) if callable(t) else t for t in tools]
    try:
        request = pickle.dumps(arguments)
    except Exception as error:  # something in the conversation that is not plain data
        raise ValueError(f"This conversation cannot be rendered: {type(error).__name__}.") from None
    if not _slots.acquire(timeout=seconds * WORKERS + 1):  # every worker busy with a render past its bound
        raise TemplateTooCostly("The chat template renderer is busy: try again in a moment.")
    try:
        if _idle.qsize() <= 1:  # a started one waits for the next render, whatever this one does
            _start_spare()
        worker = None
        while worker is None or not worker.alive():
            try:
                worker = _idle.get_nowait()
            except queue.Empty:
                worker = _Worker()
            if not worker.start():
                raise TemplateTooCostly("The chat template renderer could not start on this host: try again.")
        answer = worker.ask(request, seconds)  # kills the worker on a refusal
        if worker.alive():
            if _idle.qsize() < WORKERS:
                _idle.put(worker)
            else:
                worker.kill()
    finally:
        _slots.release()
    if "error" in answer:
        raise TemplateTooCostly(answer["error"]) if answer.get("costly") else ValueError(answer["error"])
    return answer["rendered"], [[tuple(span) for span in spans] for spans in answer["indices"]]


def bound_chat_templates() -> None:
    """Route every chat-template render of this process through the bounded workers (idempotent)."""
    import transformers.processing_utils as processing
    import transformers.tokenization_utils_base as tokenization

    original, installed_in = tokenization.render_jinja_template, os.getpid()

    def bounded_render_jinja_template(**arguments):
        if os.getpid() != installed_in:  # a process forked from the app (a ZeroGPU slot's worker): the pool's pipes
            return original(**arguments)  # and locks are the app's; the slot trains as a training process does,
        return render(**arguments)  # bounded by its own deadline (the platform kills it at its duration)

    bounded_render_jinja_template.sft_space_bounded = True
    if not getattr(tokenization.render_jinja_template, "sft_space_bounded", False):
        tokenization.render_jinja_template = processing.render_jinja_template = bounded_render_jinja_template


def shutdown() -> None:
    """Stop the idle workers (tests; the app's exit ends them too: their stdin closes)."""
    while True:
        try:
            _idle.get_nowait().kill()
        except queue.Empty:
            return


# ------------------------------------------------------------------ the worker's side
def _write_frame(stream, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def _read_frame(stream) -> dict:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    size = struct.unpack(">I", head)[0]
    if size > RENDERED_CHARACTERS * 4 + 65536:  # UTF-8: at most 4 bytes a character
        raise ValueError("reply too large")
    return json.loads(stream.read(size))


def _serve(memory_mb: int) -> None:
    _limit(memory_mb)
    from transformers.utils.chat_template_utils import render_jinja_template

    source, sink = sys.stdin.buffer, sys.stdout.buffer
    _write_frame(sink, json.dumps({"ready": True}).encode())
    while True:
        head = source.read(4)
        if len(head) < 4:
            return
        arguments = pickle.loads(source.read(struct.unpack(">I", head)[0]))  # from the app: trusted
        try:
            rendered, indices = render_jinja_template(**arguments)
            size = sum(len(text) for text in rendered)
            if size > RENDERED_CHARACTERS:
                error = f"This model's chat template turned this conversation into {size:,} characters (at most "
                reply = {"costly": True, "error": error + f"{RENDERED_CHARACTERS:,}), so it is refused on this host."}
            else:
                reply = {"rendered": rendered, "indices": indices}
        except MemoryError:
            reply = {"costly": True, "error": f"This model's chat template needed more than {memory_mb} MB to render "
                     "this conversation, so it is refused on this host."}  # fmt: skip
        except Exception as error:  # the template's own error (raise_exception, a missing key): its message
            reply = {"error": f"The model's chat template failed on this conversation: {str(error)[:300]}"}
        _write_frame(sink, json.dumps(reply, ensure_ascii=False).encode())


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
