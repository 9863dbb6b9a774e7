"""Quotas: what one visitor may ask of a machine that strangers share.

On a public host (a Space, or `app.py --public`) every visitor gets a fair share: one run training or waiting
per visitor (and per address when not signed in), a queue of bounded length, a budget of trained tokens and of
wall time per run (the run is stopped and saved when it is spent), caps on model size (read from the Hub's
metadata, before anything is downloaded), dataset rows and upload size, probe prompts, reply length, Evaluate
rows and chat tokens per hour, and an age after which old runs, uploads and unused models are removed. The
defaults depend on the hardware (a 2-vCPU Space is not an H100); the Space owner overrides any of them with the
environment variables below (0 switches a cap off). On a private machine nothing is capped unless a variable
asks for it.

A leaf policy: it judges what it is given (a run's settings and planned steps, a model's parameter count, the
runs a visitor has going, the queue's length) and reads nothing itself; the callers gather the facts. It imports
only the environment's leaves (hub.public, hardware's device kind), never torch, Gradio or an engine module.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time
from dataclasses import dataclass

from ..hub import on_a_space, public
from . import hardware


@dataclass(frozen=True)
class Limits:
    runs_per_visitor: int | None  # training or waiting at once, per visitor
    runs_per_address: int | None  # the same, for the anonymous visitors of one address together
    queue_size: int | None  # runs waiting for the device, all visitors together
    train_tokens: int | None  # steps x batch x accumulation x max_length of one run
    run_minutes: float | None  # wall time of one run, loading included; then it is stopped and saved
    model_billions: float | None  # parameters of the base model, in billions
    dataset_rows: int | None  # training rows one run reads (the rest are left out, and the run says so)
    upload_mb: float | None  # one uploaded dataset file
    checkpoints: int | None  # checkpoints one run writes (a checkpoint every step fills disk and time with saving)
    probe_prompts: int | None  # prompts answered at every evaluation
    max_new_tokens: int | None  # one reply, in chat, probes and Evaluate
    eval_rows: int | None  # rows one Evaluate or prompting comparison scores
    eval_prompt_tokens: int | None  # a held-out conversation Evaluate scores (longer ones are left out, and said)
    chat_tokens_per_hour: int | None  # generated in chat, per visitor, over the last hour
    keep_days: float | None  # finished runs, uploads and unused downloaded models older than this are removed
    lora_r: int | None  # the LoRA rank of one run (a rank of 1024 on a small CPU multiplies its step time)
    upload_files: int | None  # files one upload request may carry


# the environment variable of each field: what a Space owner sets under Settings > Variables
VARIABLES = {f.name: "SFT_SPACE_" + f.name.upper() for f in dataclasses.fields(Limits)}
FRACTIONAL = {f.name for f in dataclasses.fields(Limits) if str(f.type).startswith("float")}  # the rest are whole

# A free CPU Space (2 vCPU, 16 GB): the Quick demo takes 3 minutes there (SmolLM2-135M, about 190 steps of 2 rows,
# 40k tokens; at most its one epoch, 147k tokens at max_length); a run may take ten times that, and half an hour,
# so eight waiting runs mean at most a few hours of queue. 0.5B parameters is the largest curated model that
# trains there at all.
CPU_SPACE = Limits(
    runs_per_visitor=1,
    runs_per_address=1,
    queue_size=8,
    train_tokens=500_000,
    run_minutes=30,
    model_billions=0.5,
    dataset_rows=20_000,
    upload_mb=50,
    checkpoints=20,
    probe_prompts=5,
    max_new_tokens=512,
    eval_rows=200,
    eval_prompt_tokens=1_024,
    chat_tokens_per_hour=20_000,  # ~8 min of generation at ~40 tok/s: Evaluate 3,840 + baselines 7,680 + chat
    keep_days=3,
    lora_r=64,
    upload_files=1,
)
# A GPU Space: SmolLM2-360M trains at about 24k tokens/s at batch 16 on an H200 ([fast] measurements), so an
# hour's run is tens of millions of tokens; 8B parameters is the most a LoRA run fits on a 48-80 GB card.
GPU_SPACE = dataclasses.replace(
    CPU_SPACE,
    train_tokens=50_000_000,
    run_minutes=60,
    model_billions=8,
    dataset_rows=200_000,
    upload_mb=200,
    eval_rows=1_000,
    eval_prompt_tokens=8_192,
    chat_tokens_per_hour=60_000,
    keep_days=7,
    lora_r=256,
)
PRIVATE = Limits(**{name: None for name in VARIABLES})


def _override(name: str, default):
    """The owner's value for a field from the environment: a number, 0 or 'off' for no cap."""
    raw = os.environ.get(VARIABLES[name], "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "off", "none", "no"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{VARIABLES[name]}={raw!r} is not a number: set a number, or 0 for no cap.") from None
    return value if name in FRACTIONAL else int(value)


def current(device_kind: str | None = None) -> Limits:
    """The limits in force now: the hardware's defaults on a public host, none on a private machine, each
    overridden by its environment variable."""
    if public():
        base = CPU_SPACE if (device_kind or hardware.device_kind()) == "cpu" else GPU_SPACE
    else:
        base = PRIVATE
    return Limits(**{name: _override(name, getattr(base, name)) for name in VARIABLES})


def run_tokens(config, steps: int) -> int:
    """The most tokens a run can train on: its planned steps x rows per step x max_length."""
    return steps * config.per_device_train_batch_size * config.gradient_accumulation_steps * (config.max_length)


def check_model_size(model: str, parameters: int | None, limits: Limits | None = None) -> None:
    """Refuse a base model bigger than this host trains, from its metadata (before any download)."""
    limits = limits or current()
    if limits.model_billions and parameters and parameters > limits.model_billions * 1e9:
        raise ValueError(
            f"{model} has {parameters / 1e9:.1f}B parameters; this Space trains models up to "
            f"{limits.model_billions:g}B: pick a smaller model, or duplicate the Space onto bigger hardware."
        )


def check_run(config, steps: int | None, parameters: int | None = None, limits: Limits | None = None) -> None:
    """Refuse, with what to change, a run bigger than this host allows (before anything is queued).
    steps: the run's planned optimizer steps (estimates.planned_steps; None when they cannot be known)."""
    limits = limits or current()
    check_model_size(config.model, parameters, limits)
    if steps is None and (limits.train_tokens or limits.checkpoints):
        raise ValueError(
            "The steps of this run cannot be planned (its training data could not be read), so this Space cannot "
            "check it against its limits: fix the dataset, or set max_steps."
        )
    steps = steps or 0
    if limits.train_tokens:
        tokens = run_tokens(config, steps)
        if tokens > limits.train_tokens:
            raise ValueError(
                f"This run could train on up to {tokens:,} tokens (steps x batch x accumulation x max_length) and "
                f"this Space allows {limits.train_tokens:,} per run: lower max_steps, the batch or max_length."
            )
    if limits.lora_r and config.lora_r > limits.lora_r:
        raise ValueError(f"lora_r {config.lora_r}: this Space trains LoRA ranks up to {limits.lora_r}: lower it.")
    probes = len(config.probe_list())
    if limits.probe_prompts and probes > limits.probe_prompts:
        raise ValueError(
            f"{probes} probe prompts; this Space answers at most {limits.probe_prompts} at each evaluation: "
            "remove some."
        )
    if limits.max_new_tokens and config.max_new_tokens > limits.max_new_tokens:
        raise ValueError(
            f"max_new_tokens {config.max_new_tokens}: replies on this Space are at most {limits.max_new_tokens} "
            "tokens: lower it."
        )
    if limits.checkpoints and config.save_steps and steps // config.save_steps > limits.checkpoints:
        raise ValueError(
            f"save_steps {config.save_steps} writes {steps // config.save_steps} checkpoints in {steps} steps; "
            f"this Space writes at most {limits.checkpoints} per run: set save_steps to at least "
            f"{-(-steps // limits.checkpoints)}."
        )


def check_share(
    owner: str | None,
    mine: list[str],
    neighbours: list[str],
    waiting: int,
    ahead=None,
    limits: Limits | None = None,
) -> None:
    """A visitor has a bounded number of runs training or waiting, and the queue has room: one script cannot fill
    the machine for everyone. Runs from the command line (no owner) are the machine owner's and are not limited.

    mine: this visitor's runs training or waiting; neighbours: those of the anonymous visitors of the same address
    (for an anonymous visitor); waiting: runs in the queue; ahead: called only when the queue is full, (whether a
    run holds the device, the seconds until it is expected to finish or None)."""
    if owner is None:
        return
    limits = limits or current()
    if limits.runs_per_visitor and len(mine) >= limits.runs_per_visitor:
        raise RuntimeError(
            f"You already have a run training or waiting ({mine[0]}): stop or cancel it, or wait for it to "
            "finish, before starting another."
        )
    if limits.runs_per_address and len(neighbours) >= limits.runs_per_address:
        raise RuntimeError(
            "A run started from your address without signing in is training or waiting; this "
            f"Space allows {limits.runs_per_address} per address: wait for it to finish"
            + (", or sign in with Hugging Face to get a share of your own." if on_a_space() else ".")
        )
    if limits.queue_size and waiting >= limits.queue_size:
        busy, wait = ahead() if ahead else (False, None)
        when = f"try again in about {max(1, round(wait / 60))} minutes" if wait else "try again later"
        raise RuntimeError(
            f"The Space is busy: {waiting + (1 if busy else 0)} runs ahead of yours and the queue is full; "
            f"{when} (a place frees up when the run training now finishes)."
        )


def time_budget(limits: Limits, owner: str | None) -> float | None:
    """A visitor's run's wall-time limit on this host (command-line runs have none)."""
    return limits.run_minutes * 60 if limits.run_minutes and owner is not None else None


def check_eval_rows(count: int, limits: Limits | None = None) -> int:
    """The number of held-out prompts to score, refused above this host's cap."""
    limits = limits or current()
    if count < 1:
        raise ValueError("Score at least 1 held-out prompt.")
    if limits.eval_rows and count > limits.eval_rows:
        raise ValueError(f"{count} prompts: this Space scores at most {limits.eval_rows} per evaluation; lower it.")
    return count


CHAT_MESSAGE_CHARACTERS = 4_000  # one chat message on a public host
CHAT_CONVERSATION_CHARACTERS = 24_000  # the whole conversation sent back with each message


class ChatBudget:
    """Tokens each visitor generated over the last hour (chat replies, Evaluate's and the baselines' answers: one
    budget for everything that generates), so one visitor cannot keep the model busy for everyone; kept in memory
    (a restart forgets it, which errs on the visitor's side)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[str, collections.deque] = {}

    def _recent(self, visitor: str, now: float) -> collections.deque:
        spent = self._spent.setdefault(visitor, collections.deque())
        while spent and spent[0][0] < now - 3600:
            spent.popleft()
        return spent

    def reserve(self, visitor: str, limit: int | None, tokens: int) -> list | None:
        """Refuse a new reply when this hour's tokens are spent, saying when more are available; otherwise book
        the reply's most tokens at once (so parallel requests cannot all pass) and return the booking."""
        if not limit:
            return None
        now = time.time()
        with self._lock:
            spent = self._recent(visitor, now)
            used = sum(booked for _, booked in spent)
            wait = f"about {max(1, round((spent[0][0] + 3600 - now) / 60))} minutes" if spent else "a minute"
            if used >= limit:
                raise ValueError(
                    f"You have used this hour's {limit:,} chat tokens on this Space (chat, Evaluate and the baselines "
                    f"share them): try again in {wait}."
                )
            if used + tokens > limit:
                raise ValueError(
                    f"Up to {tokens:,} generated tokens would pass this hour's {limit:,} chat tokens on this Space "
                    f"({limit - used:,} left; chat, Evaluate and the baselines share them): ask for fewer "
                    f"(max_new_tokens or prompts), or try again in {wait}."
                )
            booking = [now, tokens]
            spent.append(booking)
            return booking

    def charge(self, visitor: str, limit: int | None, tokens: int) -> None:
        """Work found to cost more than was booked (Evaluate's rows unlike the training rows, known only once the
        data is read) is counted all the same: the next request pays for it."""
        if limit:
            with self._lock:
                self._recent(visitor, time.time()).append([time.time(), tokens])

    def settle(self, booking: list | None, tokens: int) -> None:
        """The reply is done: its booking becomes the tokens it really generated."""
        if booking is not None:
            with self._lock:
                booking[1] = tokens


chat_budget = ChatBudget()
