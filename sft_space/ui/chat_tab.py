"""Chat tab: talk to a tuned model (base + the run's LoRA adapter), replies streamed."""

from __future__ import annotations

import gradio as gr

from .. import runs
from ..config import RunConfig
from .widgets import build_groups


def chat_choices() -> list[str]:
    return [r["run_id"] for r in runs.list_runs() if r["has_adapter"]]


def refresh_choices(selected: str | None, current: str | None = None):
    """Newest runs with an adapter; keep the user's pick, else the run on the Train tab, else the newest."""
    choices = chat_choices()
    for candidate in (selected, current):
        if candidate in choices:
            return gr.Dropdown(choices=choices, value=candidate)
    return gr.Dropdown(choices=choices, value=choices[0] if choices else None)


def respond(message: str, history: list, run_id: str | None, temperature, top_p, max_new_tokens, repetition_penalty):
    from ..chat import load_chat_model, stream_reply

    if not message or not message.strip():
        raise gr.Error("Type a message first.", print_exception=False)
    if not run_id:
        raise gr.Error("No tuned model yet: train a run on the Train tab (or pick a finished run above).", print_exception=False)
    try:
        settings = RunConfig(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens),
                             repetition_penalty=float(repetition_penalty)).validate()
        loaded = load_chat_model(run_id)
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise gr.Error(str(error), print_exception=False) from None
    conversation = [{"role": m["role"], "content": text_of(m["content"])} for m in history or []]
    conversation.append({"role": "user", "content": message})
    shown = conversation + [{"role": "assistant", "content": ""}]
    for text in stream_reply(loaded, conversation, **settings.to_generation_kwargs()):
        shown[-1]["content"] = text
        yield "", shown


def text_of(content) -> str:
    """Chatbot history content may come back as a string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    if isinstance(content, dict):
        return content.get("text", "")
    return str(content)


def build(current_run: gr.State, tab: gr.Tab):
    with gr.Row():
        run = gr.Dropdown(choices=chat_choices(), label="Tuned model (run)", scale=3, elem_id="chat-run", allow_custom_value=True,
                          info="Runs with a saved adapter. The base model is loaded once with the adapter on top.")
        refresh = gr.Button("Refresh list", scale=1, size="sm")
    chatbot = gr.Chatbot(label="Tuned model", height=420, elem_id="chatbot")
    with gr.Row():
        message = gr.Textbox(placeholder="Ask something, e.g. 'Table for two tomorrow at 7pm, name Sam'",
                             show_label=False, scale=5, elem_id="chat-input")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        clear = gr.Button("Clear", scale=1)
    settings = build_groups([("Generation", False)])
    inputs = [message, chatbot, run, *settings.values()]
    send.click(respond, inputs, [message, chatbot], api_name="chat")
    message.submit(respond, inputs, [message, chatbot], api_name=False)
    clear.click(lambda: [], None, chatbot, api_name=False)
    refresh.click(refresh_choices, [run, current_run], run, api_name=False)
    tab.select(refresh_choices, [run, current_run], run, api_name=False)
    return run
