"""Work whose cost a stranger controls, tried first where it can be bounded and killed: a fresh Python process with
an address-space limit (RLIMIT_AS) and a wall clock, started without the app's secrets. The app process shares one
machine with every visitor, so a regex that needs gigabytes to compile, a chat template that loops for minutes or
builds a 400 MB string, or a tokenizer whose split pattern makes it panic is refused here, with the reason, before
the app itself ever runs it. What passes is bounded the same way when the app runs it.

    python -m sft_space.host.sandbox JOB   # reads the job's JSON argument on stdin, writes its JSON result on stdout

Imports neither torch nor Gradio; the jobs import what they need in the child only.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

MB = 2**20
# what a job may take: seconds of wall time, megabytes of address space (the bare interpreter with transformers'
# template code and tokenizers reaches ~190 MB of address space, with the regex package ~16 MB)
BUDGETS = {"compile_regex": (3.0, 256), "check_tokenizer": (10.0, 768)}
# the parts of the environment a job sees: never a Hub token or the visitor-signing secret
ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR", "VIRTUAL_ENV")
RENDER_SECONDS = 0.5  # CPU time to render the sample conversation once (a real template: milliseconds)
RENDERED_CHARACTERS = 256_000  # a chat template's rendering of the sample conversations, at most
# a conversation as long as a public host lets a chat message be, so a template slow on long messages shows it
SAMPLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello! " + "How are you today? " * 200},
    {"role": "assistant", "content": "I am fine, thank you. " * 150},
    {"role": "user", "content": "Book a table for two at 7pm, please."},
]


class TooCostly(ValueError):
    """The work hit its time or memory limit, or failed in the child: the message says which and why. transient:
    it ran out of wall time (which a busy machine can cause), not of memory or CPU time."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _limit(memory_mb: int) -> None:
    """Called first thing in the child (a preexec_fn could deadlock a forked copy of this threaded app)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * MB, memory_mb * MB))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(5)  # below the app's own threads


CACHED = 256  # results (and refusals) remembered, newest kept
_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()
_running = threading.BoundedSemaphore(2)  # checks at once: a stranger repeating one cannot fill the machine


def bounded_tokenizer(folder: Path) -> None:
    """Refuse (TooCostly) a tokenizer or chat template that is too costly to run in the app: checked once per
    version of its files."""
    run_bounded("check_tokenizer", tokenizer_stamp(Path(folder)), "This model's tokenizer or chat template")


def bounded_regex(pattern: str) -> None:
    """Refuse (TooCostly) a pattern that takes too long or too much memory to compile."""
    run_bounded("compile_regex", pattern, f"The pattern {pattern[:80]!r}")


def run_bounded(job: str, argument, what: str):
    """The job's result, run in a bounded child process; TooCostly naming `what` when it ran out of time or memory
    or failed. Results are remembered per (job, argument): the same pattern or files cost once."""
    key = (job, json.dumps(argument, sort_keys=True))
    with _cache_lock:
        if key in _cache:
            return _remembered(_cache[key])
    with _running:
        try:
            result = _run(job, argument, what)
        except TooCostly as refusal:
            if refusal.transient:  # out of wall time: a busy machine may say otherwise later, so not remembered
                raise
            result = refusal
    with _cache_lock:
        _cache[key] = result
        while len(_cache) > CACHED:
            _cache.pop(next(iter(_cache)))
    return _remembered(result)


def _remembered(result):
    if isinstance(result, TooCostly):
        raise TooCostly(str(result))
    return result


def _run(job: str, argument, what: str):
    seconds, memory_mb = BUDGETS[job]
    env = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
    env.update(PYTHONDONTWRITEBYTECODE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sft_space.host.sandbox", job, str(memory_mb)],
            input=json.dumps(argument),
            capture_output=True,
            text=True,
            timeout=seconds,
            cwd=str(Path(__file__).resolve().parents[2]),
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise TooCostly(
            f"{what} took longer than {seconds:g} s to check, so it is refused on this host.", transient=True
        ) from None
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if done.returncode != 0 or "ok" not in result:
        reason = result.get("error") or _crash(done.stderr, memory_mb)
        raise TooCostly(f"{what} was refused: {reason}")
    return result["ok"]


def _crash(stderr: str, memory_mb: int) -> str:
    if "MemoryError" in stderr or "memory allocation" in stderr or "Cannot allocate" in stderr:
        return f"it needs more than {memory_mb} MB to check."
    if "panicked" in stderr or "PanicException" in stderr:
        return "it made the tokenizer crash."
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "the check ended without an answer"
    return last[:300]


# ------------------------------------------------------------------ jobs (they run in the child process)
def compile_regex(pattern: str):
    import regex

    try:
        regex.compile(pattern, regex.DOTALL)
    except regex.error as error:
        raise ValueError(f"it is not a valid regular expression: {error}.") from None
    return True


def _templates(folder: Path) -> list[str]:
    templates = []
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        templates.append(jinja.read_text(encoding="utf-8"))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    for extra in sorted((folder / "additional_chat_templates").glob("*.jinja")):  # named templates transformers loads
        templates.append(extra.read_text(encoding="utf-8"))
    found = config.get("chat_template")
    if isinstance(found, str):
        templates.append(found)
    elif isinstance(found, list):
        templates += [t["template"] for t in found if isinstance(t, dict) and isinstance(t.get("template"), str)]
    return templates


def tokenizer_stamp(folder: Path) -> dict:
    """check_tokenizer's argument: the folder, and the size and time of its tokenizer files (a changed file is
    checked again)."""
    files = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    files += [f"additional_chat_templates/{p.name}" for p in sorted((folder / "additional_chat_templates").glob("*"))]
    stamps = [[name, (folder / name).stat().st_size, (folder / name).stat().st_mtime] for name in files
              if (folder / name).is_file()]  # fmt: skip
    return {"folder": str(folder), "files": stamps}


def check_tokenizer(argument: dict):
    """Encode a sample with the folder's tokenizer.json, and render each chat template on the sample conversation
    (with and without the generation prompt): every template a model ships is run by the app on visitors' rows."""
    path = Path(argument["folder"])
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.encode(" ".join(m["content"] for m in SAMPLE))
        for letter in "a1 ":  # long runs: a split pattern that backtracks on them panics (onig's retry limit)
            tokenizer.encode(letter * 5000 + "!")
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    specials = {k: v for k, v in config.items() if k.endswith("_token") and isinstance(v, str)}
    longest = 0
    for template in _templates(path):
        from transformers.utils.chat_template_utils import render_jinja_template

        for conversation, prompt in ((SAMPLE[:3], False), (SAMPLE, True)):
            started = time.process_time()
            rendered, _ = render_jinja_template(
                [conversation], chat_template=template, add_generation_prompt=prompt, **specials
            )
            spent = time.process_time() - started
            if spent > RENDER_SECONDS:
                raise ValueError(
                    f"its chat template took {spent:.1f} s of CPU to render one short conversation (at most "
                    f"{RENDER_SECONDS:g} s): the app renders it for every row and every reply."
                )
            longest = max(longest, len(rendered[0]))
            if longest > RENDERED_CHARACTERS:
                raise ValueError(
                    f"its chat template turns a short conversation into {longest:,} characters (at most "
                    f"{RENDERED_CHARACTERS:,})."
                )
    return longest


JOBS = {"compile_regex": compile_regex, "check_tokenizer": check_tokenizer}


def main() -> int:
    _limit(int(sys.argv[2]))
    job = JOBS[sys.argv[1]]
    try:
        result = {"ok": job(json.loads(sys.stdin.read()))}
    except MemoryError:
        result = {"error": f"it needs more than {BUDGETS[sys.argv[1]][1]} MB to check."}
    except ValueError as error:  # a check's own refusal
        result = {"error": str(error)[:300]}
    except BaseException as error:  # the visitor reads why (a tokenizer's panic too); the child's traceback is no use
        result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    print(json.dumps(result))
    return 0 if "ok" in result else 1


if __name__ == "__main__":
    sys.exit(main())
