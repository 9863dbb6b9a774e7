"""Chat tab: talk to a tuned model, and see the base model answer the same message beside it.

One model copy: base replies come from the same weights with the LoRA adapter
switched off. Both replies use the same sampling settings and the same seed.
"""

from __future__ import annotations

import functools
import math

import gradio as gr

from ..config import RunConfig
from ..host import hardware, limits
from ..hub import public
from ..runs import lifecycle as runs
from . import votes_panel
from .common import as_messages, owned, shown_as_error, text_of, unsent_as_error  # noqa: F401  (text_of: tests)
from .widgets import Number, build_groups

DEFAULT_SEED = 0  # the same seed for base and tuned, so sampling differences come from the weights


def chat_choices(visitor: str | None = None) -> list[str]:
    return [r["run_id"] for r in runs.list_runs(visitor) if r["has_adapter"]]


def refresh_choices(selected: str | None, current: str | None = None, visitor: str | None = None):
    """This visitor's runs with an adapter; keep their pick, else the run on the Train tab, else the newest."""
    choices = chat_choices(visitor)
    for candidate in (selected, current):
        if candidate in choices:
            return gr.Dropdown(choices=choices, value=candidate)
    return gr.Dropdown(choices=choices, value=choices[0] if choices else None)


def respond(
    message: str,
    tuned_history: list,
    base_history: list,
    run_id: str | None,
    system_prompt: str,
    compare: bool,
    seed,
    temperature,
    top_p,
    max_new_tokens,
    repetition_penalty,
    visitor: str | None = None,
    base_first: bool = False,
):
    """Stream the tuned model's reply, then (when comparing) the base model's reply to the same conversation
    (base_first: the other way round).

    The checks and the visitor's generation budget stay in the app process; the model work is `replies`, which on
    ZeroGPU runs in a GPU worker that the `spaces` package reuses for other visitors (a budget kept there would be
    that worker's, and lost with it)."""
    if not message or not message.strip():
        raise gr.Error("Type a message first.", print_exception=False)
    if not run_id:
        raise gr.Error(
            "No tuned model yet: train a run on the Train tab (or pick a finished run above).", print_exception=False
        )
    owned(run_id, visitor, "chat with")
    quota = limits.current()
    with shown_as_error():
        check_chat_size(message, tuned_history, base_history, system_prompt)
        if quota.max_new_tokens and int(max_new_tokens) > quota.max_new_tokens:
            raise ValueError(f"max_new_tokens {int(max_new_tokens)}: replies here are at most {quota.max_new_tokens}.")
        settings = RunConfig(
            temperature=float(temperature),
            top_p=float(top_p),
            max_new_tokens=int(max_new_tokens),
            repetition_penalty=float(repetition_penalty),
        ).validate()
        most = int(max_new_tokens) * (2 if compare else 1)
        booking = limits.chat_budget.reserve(visitor, quota.chat_tokens_per_hour, most)
    system = [{"role": "system", "content": system_prompt.strip()}] if system_prompt and system_prompt.strip() else []
    user = {"role": "user", "content": message}
    tuned = as_messages(tuned_history) + [user, {"role": "assistant", "content": ""}]
    base = (
        as_messages(base_history) + [user, {"role": "assistant", "content": ""}]
        if compare
        else as_messages(base_history)
    )
    seed = int(seed) if seed is not None else DEFAULT_SEED
    spent = None
    try:
        for tuned_text, base_text, counted in gpu_replies()(
            run_id,
            system,
            tuned[:-1],
            base[:-1] if compare else None,
            seed,
            settings.to_generation_kwargs(),
            base_first and compare,
        ):
            tuned[-1]["content"] = tuned_text
            if compare:
                base[-1]["content"] = base_text
            if counted is not None:
                spent = counted
            yield "", tuned, base
    except Exception as error:  # ZeroGPU: what crossed to the GPU worker or back did not pickle
        clear = unsent_as_error(error)
        if clear is None:
            raise
        raise clear from None
    finally:  # a reply cut short by Stop (its count never came back) is charged about what it generated
        texts = tuned[-1]["content"] + (base[-1]["content"] if compare else "")
        limits.chat_budget.settle(booking, spent if spent is not None else min(most, math.ceil(len(texts) / 3)))


def respond_panes(
    message: str,
    tuned_history: list,
    base_history: list,
    run_id: str | None,
    system_prompt: str,
    compare: bool,
    seed,
    temperature,
    top_p,
    max_new_tokens,
    repetition_penalty,
    visitor: str | None = None,
    sides: dict | None = None,
):
    """respond, with the two panes holding the tuned and the base model on the sides drawn for this conversation
    (votes_panel: blind votes shuffle them). The left pane's model answers first, whichever it is, so the order
    of the replies does not reveal the sides. Without sides (an API call): tuned on the left, as the names say
    (tuned_history is the left pane, base_history the right)."""
    left, right = tuned_history, base_history
    tuned_is_left = votes_panel.tuned_left(sides)
    tuned, base = (left, right) if tuned_is_left else (right, left)
    settings = (seed, temperature, top_p, max_new_tokens, repetition_penalty, visitor)
    turns = respond(message, tuned, base, run_id, system_prompt, compare, *settings, base_first=not tuned_is_left)
    for cleared, tuned, base in turns:
        yield (cleared, tuned, base) if tuned_is_left else (cleared, base, tuned)


def replies(
    run_id: str, system: list, tuned: list, base: list | None, seed: int, settings: dict, base_first: bool = False
):
    """The model work of one chat message: (tuned text, base text, None) as they grow, then the tokens generated
    (a last item with the count); base_first: the base model answers first. Arguments and items are plain data:
    on ZeroGPU they cross to a GPU worker."""
    from ..run_model import load_chat_model, on_generation_thread
    from ..run_model.chat import stream_reply

    with shown_as_error():
        loaded = load_chat_model(run_id)
    tuned_text = base_text = ""
    try:
        if base is not None and base_first:
            for base_text in stream_reply(loaded, system + base, seed=seed, use_adapter=False, **settings):
                yield tuned_text, base_text, None
        for tuned_text in stream_reply(loaded, system + tuned, seed=seed, **settings):
            yield tuned_text, base_text, None
        if base is not None and not base_first:
            for base_text in stream_reply(loaded, system + base, seed=seed, use_adapter=False, **settings):
                yield tuned_text, base_text, None
    finally:
        texts = tuned_text + base_text
        # counted on the generation thread: the tokenizer's padding setting is shared with the batches there
        count = on_generation_thread(lambda: len(loaded.tokenizer(texts, add_special_tokens=False)["input_ids"]))
    yield tuned_text, base_text, count


_replies_call = replies  # `replies`, in a GPU slot on ZeroGPU: set by build(), when the page is built (the package
# must see it before launch); elsewhere `replies` as it is


def gpu_replies():
    return _replies_call


def check_chat_size(message: str, tuned_history, base_history, system_prompt: str) -> None:
    """On a public host, a message and the conversation sent back with it have a size limit (a huge prompt keeps
    the model busy for everyone as surely as a long reply)."""
    if not public():
        return
    if len(message) > limits.CHAT_MESSAGE_CHARACTERS:
        raise ValueError(
            f"The message has {len(message):,} characters; at most {limits.CHAT_MESSAGE_CHARACTERS:,} here."
        )
    total = len(system_prompt or "") + sum(
        len(m["content"]) for m in as_messages(tuned_history) + as_messages(base_history)
    )
    if total > limits.CHAT_CONVERSATION_CHARACTERS:
        raise ValueError("This conversation is too long for this Space: press Clear to start a new one.")


def build(current_run: gr.State, visitor: gr.State, tab: gr.Tab):
    with gr.Row():
        run = gr.Dropdown(
            choices=[],
            label="Tuned model (run)",
            scale=3,
            elem_id="chat-run",
            allow_custom_value=True,
            info="Runs with a saved adapter. The base model is loaded once; the adapter is switched on and off.",
        )
        refresh = gr.Button("Refresh list", scale=1, size="sm")
    with gr.Row():
        system_prompt = gr.Textbox(
            label="System prompt (optional)",
            scale=3,
            elem_id="chat-system",
            info="Leave empty to chat as the training data did.",
        )
        compare = gr.Checkbox(value=True, label="Also answer with the base model", scale=1, elem_id="chat-compare")
        seed = Number(value=DEFAULT_SEED, precision=0, label="Seed", scale=1, info="Same for both models.")
    sides = gr.State(None)  # which pane holds the tuned model in this conversation (votes_panel)
    with gr.Row(equal_height=True):
        # the left pane (elem_id chatbot) holds the tuned model unless blind votes shuffled the sides
        tuned_chat = gr.Chatbot(label=votes_panel.NAMES[True][0], height=420, elem_id="chatbot")
        base_chat = gr.Chatbot(label=votes_panel.NAMES[True][1], height=420, elem_id="chatbot-base")
    with gr.Row():
        message = gr.Textbox(
            placeholder="Ask something, e.g. 'Table for two on 3 May 2026 at 7pm, name Sam'",
            show_label=False,
            scale=5,
            elem_id="chat-input",
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=1)
    blind, (better_left, tie, better_right), rate = votes_panel.build(run, visitor)
    settings = build_groups([("Generation", False)])
    inputs = [message, tuned_chat, base_chat, run, system_prompt, compare, seed, *settings.values(), visitor, sides]
    outputs = [message, tuned_chat, base_chat]
    panes = [sides, tuned_chat, base_chat]
    global _replies_call
    _replies_call = hardware.gpu_slot(replies)
    turn = dict(fn=votes_panel.before_turn, inputs=[tuned_chat, base_chat, blind, sides], outputs=panes)
    sent = send.click(**turn, api_name=False, show_progress="hidden").then(
        respond_panes, inputs, outputs, api_name="chat"
    )
    submitted = message.submit(**turn, api_name=False, show_progress="hidden").then(
        respond_panes, inputs, outputs, api_name=False
    )
    stop.click(None, None, None, cancels=[sent, submitted], api_name=False)
    fresh = dict(fn=votes_panel.new_conversation, inputs=blind, outputs=panes, api_name=False, show_progress="hidden")
    clear.click(lambda: ([], []), None, [tuned_chat, base_chat], api_name=False).then(**fresh)
    refresh.click(refresh_choices, [run, current_run, visitor], run, api_name=False)
    tab.select(refresh_choices, [run, current_run, visitor], run, api_name=False)
    run.change(lambda: ([], []), None, [tuned_chat, base_chat], api_name=False).then(**fresh).then(
        votes_panel.rate_text, [run, visitor], rate, api_name=False, show_progress="hidden"
    )
    judged = [tuned_chat, base_chat, run, sides, visitor, system_prompt, settings["temperature"], settings["top_p"]]
    for button, choice in ((better_left, "left"), (tie, "tie"), (better_right, "right")):
        button.click(functools.partial(votes_panel.vote, choice), judged, [*panes, rate], api_name=f"vote_{choice}")
    return run
