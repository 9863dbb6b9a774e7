"""What every tab shares: the ownership check, engine errors shown as messages, reading the Data settings.

Engine modules raise ordinary exceptions whose message says what was wrong and
how to fix it; `shown_as_error` turns them into a gr.Error (a toast, never a
traceback). `owned` is the one check before acting on a run.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import gradio as gr

from .. import rundir
from ..host import hardware
from ..hub import public
from ..runs import lifecycle as runs
from ..runs.choices import allowed_dataset, allowed_model
from ..training.slots import classify as classify_gpu_error

# The engine's way of saying "this input or state is wrong": the message is for the visitor.
ENGINE_ERRORS = (ValueError, TypeError, RuntimeError, FileNotFoundError, PermissionError)

# Data settings of RunConfig the Data tab owns, in the order its handlers receive them.
SOURCE_FIELDS = [
    "dataset",
    "data_format",
    "dataset_config",
    "dataset_split",
    "dataset_revision",
    "validation_share",
    "prompt_column",
    "response_column",
    "system_column",
    "text_template",
]


def message(error: Exception, scrub: Callable[[str], str] | None = None) -> str:
    return scrub(str(error)) if scrub else str(error)


@contextlib.contextmanager
def shown_as_error(scrub: Callable[[str], str] | None = None, errors: tuple = ENGINE_ERRORS):
    """Engine errors raised inside the block reach the page as a gr.Error with their message only.
    scrub: cleans the message first (a token must never be shown)."""
    try:
        yield
    except errors as error:
        raise gr.Error(message(error, scrub), print_exception=False) from None
    except BaseException as error:  # a Rust tokenizer's panic is a BaseException: the request must still answer
        if type(error).__name__ != "PanicException":
            raise
        raise gr.Error(
            f"The model's tokenizer crashed on this text ({str(error).splitlines()[0][:200]}): pick another model.",
            print_exception=False,
        ) from None


def owned(run_id: str | None, visitor: str | None, action: str) -> dict:
    """The run's status if this visitor may act on it; otherwise a readable error."""
    if not run_id:
        raise gr.Error(f"There is no run to {action}.", print_exception=False)
    if not rundir.is_run_id(run_id):  # a path or an unknown name: the same answer, whatever exists there
        raise gr.Error(f"There is no run {str(run_id)[:80]}.", print_exception=False)
    with shown_as_error(errors=(PermissionError, FileNotFoundError)):
        return runs.check_owner(run_id, visitor)


def data_settings(values) -> dict:
    """The Data tab's widget values (in SOURCE_FIELDS order) as RunConfig fields: empty boxes are empty strings.
    On a Space the dataset must be one a visitor may read (see visitor_dataset)."""
    settings = dict(zip(SOURCE_FIELDS, values))
    settings = {k: ("" if v is None and k != "validation_share" else v) for k, v in settings.items()}
    settings["data_format"] = settings["data_format"] or "auto"
    settings["dataset"] = visitor_dataset(settings["dataset"])
    return settings


def visitor_dataset(dataset) -> str:
    """On a Space, a visitor's dataset is one choices.allowed_dataset accepts (a demo set, a Hub id, an upload)."""
    if not public():
        return str(dataset or "").strip()
    with shown_as_error(errors=(ValueError,)):
        return allowed_dataset(dataset)


def visitor_model(model) -> str:
    """On a Space, a visitor's model is the bundled one or a Hub model id, never a folder on the server."""
    if not public():
        return str(model or "").strip()
    with shown_as_error(errors=(ValueError,)):
        return allowed_model(model)


def text_of(content) -> str:
    """Chatbot history content may come back as a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return content.get("text", "")
    return str(content)


def as_messages(history: list | None) -> list[dict]:
    return [{"role": m["role"], "content": text_of(m["content"])} for m in history or []]


UNSENT = (
    "The GPU worker could not {what} (it does not pickle: {detail}). This is a fault of SFT Space, not of your "
    "input or quota; please report it."
)


def unsent_as_error(error: BaseException) -> gr.Error | None:
    """On ZeroGPU what crosses between the app and the GPU worker is pickled: the `spaces` package raises a plain
    PicklingError for arguments that do not pickle and gr.Error("PicklingError") titled "ZeroGPU worker error" for a
    result that does not. Either as a message that says so; None for any other error."""
    if not hardware.on_zerogpu():
        return None
    kind = classify_gpu_error(error)
    if kind not in ("arguments", "result"):
        return None
    what = "receive this call's inputs" if kind == "arguments" else "send its answer back"
    detail = " ".join(str(getattr(error, "message", "") or error).split())[:200]
    return gr.Error(UNSENT.format(what=what, detail=detail), print_exception=False)


def in_gpu_slot(function):
    """hardware.gpu_slot(function) (a spaces.GPU call on ZeroGPU), with a call whose inputs or answer do not pickle
    said as such (unsent_as_error) instead of "ZeroGPU worker error: PicklingError"."""
    call = hardware.gpu_slot(function)
    if call is function:
        return function

    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            clear = unsent_as_error(error)
            if clear is None:
                raise
            raise clear from None

    return checked
