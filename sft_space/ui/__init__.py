"""The Gradio user interface: build_app() and one module per tab.

Handlers are thin: read widgets, call the engine, format the result. Engine
errors (ValueError and friends) become gr.Error messages; no traceback reaches
the page. The page polls the run directory with a gr.Timer, so a refresh or a
second tab reattaches to a running job.
The top package: it may import every other; none imports it (only app.py does).
"""

from __future__ import annotations

import html
import os

import gradio as gr
from starlette.middleware import Middleware

from .. import run_model, rundir
from ..host import hardware, templates
from ..hub import HUB_ID, on_a_space
from ..runs import idle_pause, liveness
from . import (
    chat_tab,
    data_tab,
    evaluate_tab,
    model_tab,
    publish_tab,
    runs_tab,
    settings_load,
    train_tab,
    visitor,
    widgets,
)
from .busy import BusyMark
from .uploads import UploadGuard

POLL_SECONDS = 2.0  # often enough to feel live, rare enough to cost nothing

CSS = """
.run-progress .bar { height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden; }
.run-progress .fill { height: 100%; background: #2563eb; transition: width .5s; }
.run-progress .bar.phase { height: 8px; }
.run-progress .bar.phase .fill { background: #7c3aed; }
.run-progress .phase-line { font-size: .85em; margin: 2px 0 8px; }
.run-progress .fill.state-completed { background: #16a34a; }
.run-progress .fill.state-failed, .run-progress .fill.state-interrupted { background: #dc2626; }
.run-progress .fill.state-stopped { background: #a16207; }
#run-bar { padding: 4px 10px; border-radius: 6px; background: var(--block-background-fill); }
.badge { font-size: .85em; padding: 2px 8px; border-radius: 10px; background: var(--neutral-100); }
"""


def sign_in_available() -> bool:
    """The Sign-in button only where the Space's real OAuth is configured (visitor.real_oauth). Anywhere else
    Gradio mocks sign-in with the machine's own token: every stranger pressing it would become the owner."""
    return visitor.real_oauth()


def _guide_links() -> str:
    """On a Space, links to the guide and the hosting notes in the Space's own repository (docs/)."""
    space = os.environ.get("SPACE_ID", "")
    if not on_a_space() or not HUB_ID.match(space):
        return ""
    base = f"https://huggingface.co/spaces/{space}/blob/main/docs"
    return f" [Guide]({base}/GUIDE.md) · [Hosting and quotas]({base}/HOSTING.md)"


def build_app() -> gr.Blocks:
    run_model.cap_threads_with(liveness.generation_threads)  # replies take one core while a run trains on the CPU
    templates.bound_chat_templates()  # a model's chat template is a stranger's code: every render bounded
    # delete_cache: the copies Gradio keeps of uploads and handed-out files go after an hour
    with gr.Blocks(title="SFT Space", delete_cache=(3600, 3600)) as demo:
        with gr.Row(equal_height=True):
            gr.Markdown(
                f"## SFT Space — fine-tune a small language model in your browser "
                f"<span class='badge' id='hardware'>{html.escape(hardware.detect().describe())}</span>\n"
                "Pick data and a model, train a LoRA adapter with TRL's `SFTTrainer`, watch the losses, chat with the "
                "result, publish it." + _guide_links(),
                elem_id="title",
            )
            if on_a_space():  # your own copy: private runs, your hardware (a GPU trains the presets in minutes)
                gr.DuplicateButton("Duplicate this Space", scale=0, min_width=200, elem_id="duplicate")
            if sign_in_available():
                gr.LoginButton(scale=0, min_width=220, elem_id="login")
        note = hardware.storage_note()
        if note or hardware.on_zerogpu():
            gr.Markdown(
                " ".join(n for n in (note, hardware.ZEROGPU_NOTE if hardware.on_zerogpu() else None) if n),
                elem_id="storage-note",
            )
        idle_pause.activity = lambda: events_in_flight(demo)  # a reply, an export or a push keeps the Space awake
        if idle_pause.enabled():  # the owner opted in: say beforehand when the Space pauses itself
            pause_note = gr.Markdown(idle_pause.note(), elem_id="pause-note")
            gr.Timer(5).tick(idle_pause.note, None, pause_note, api_name=False, show_progress="hidden", queue=False)
        current_run = gr.State(None)
        visitor_key = gr.State(None)
        browser_id = gr.BrowserState(None, storage_key="sft-space-visitor")
        run_bar = gr.Markdown("**Run:** none yet", elem_id="run-bar")
        with gr.Tabs():
            with gr.Tab("1 Data", id="data"):
                data_sources, inspector = data_tab.build(demo)
            with gr.Tab("2 Model", id="model"):
                model, check_model, model_report = model_tab.build()
            with gr.Tab("3 Train", id="train") as train:
                preset, settings, run_panel, (settings_run, load_outputs) = train_tab.build(
                    data_sources, model, current_run, run_bar, visitor_key
                )
            with gr.Tab("4 Chat", id="chat") as chat:
                chat_tab.build(current_run, visitor_key, chat)
            with gr.Tab("5 Evaluate", id="evaluate") as evaluation:
                evaluate_tab.build(current_run, visitor_key, evaluation)
            with gr.Tab("6 Publish", id="publish") as publish:
                publish_tab.build(current_run, visitor_key, publish)
            with gr.Tab("Runs", id="runs") as runs_list:
                runs_choice, runs_use_settings = runs_tab.build(current_run, visitor_key, runs_list)
        row_number, inspect_button, *inspect_outputs = inspector
        inspect_fields = ["model", "row_number", "answers_only", "max_length", "batch_size", "packing"]
        # the histogram is emptied first, so each dataset's is built afresh with its own bins (see charts.py)
        inspect_button.click(lambda: None, None, inspect_outputs[-1], api_name=False, show_progress="hidden").then(
            widgets.named(data_tab.inspect, [*data_tab.SOURCE_FIELDS, *inspect_fields], with_progress=True),
            [
                *data_sources,
                model,
                row_number,
                settings["answers_only"],
                settings["max_length"],
                settings["per_device_train_batch_size"],
                settings["packing"],
            ],
            inspect_outputs,
            api_name="what_the_model_sees",
        )
        check_inputs = [model, *[settings[name] for name in model_tab.CHECK_FIELDS]]
        check_handler = widgets.named(model_tab.check, ["model", *model_tab.CHECK_FIELDS])
        check_model.click(check_handler, check_inputs, model_report, api_name="check_model")
        model.change(check_handler, check_inputs, model_report, api_name=False)
        # "Use these settings" on the Runs tab fills the same forms as the Train tab's Load settings
        runs_use_settings.click(settings_load.use_run, [runs_choice, visitor_key], load_outputs, api_name=False)
        train.select(settings_load.run_choices, visitor_key, settings_run, api_name=False, show_progress="hidden")
        # preset durations follow the chosen model, and the pace measured by the run that just finished
        for event in (model.change, train.select):
            event(train_tab.preset_choices, model, preset, api_name=False, show_progress="hidden")
        timer = gr.Timer(POLL_SECONDS)
        charts_built = gr.State([])  # the run panel's charts that have drawn data (train_tab.poll)
        inputs, outputs = [current_run, visitor_key, charts_built], [current_run, run_bar, *run_panel, charts_built]
        timer.tick(train_tab.poll, inputs, outputs, api_name=False, show_progress="hidden", queue=False)
        demo.load(visitor.identify, browser_id, [visitor_key, browser_id], api_name=False).then(
            train_tab.poll, inputs, outputs, api_name="run_status"
        )
    return demo


def events_in_flight(demo: gr.Blocks) -> bool:
    """Whether the page's event queue is running or holding an event (a chat reply, an export, a push); the
    page's timers run outside the queue and do not count."""
    queue = getattr(demo, "_queue", None)
    if queue is None:
        return False
    if any(jobs for jobs in getattr(queue, "active_jobs", []) if jobs):
        return True
    return any(len(getattr(waiting, "queue", [])) for waiting in queue.event_queue_per_concurrency_id.values())


def queue_kwargs() -> dict:
    """demo.queue()'s settings: four handlers of one kind at once, and room for 100 waiting events. Set explicitly:
    on ZeroGPU (SPACES_ZERO_GPU=true) Gradio otherwise allows one waiting event for the whole Space, and a
    second visitor's click (a tab's refresh, a preset) got "This application is currently busy"."""
    return dict(default_concurrency_limit=4, max_size=100)


def launch_kwargs() -> dict:
    # blocked_paths: no file of any run (configs, logs, owners, adapters, training rows) is served by URL; the
    # Publish tab hands out a copy of an export zip from a temporary folder instead.
    return dict(
        css=CSS,
        theme=gr.themes.Soft(),
        max_file_size=f"{data_tab.max_upload_mb():g}mb",
        blocked_paths=[str(rundir.runs_root())],
        # Gradio's run history would keep every input of each call in the visitor's browser, the pasted Hub
        # token included: off (it also deletes what an earlier version of the page saved there)
        run_history=False,
        # how many files, and bytes, one upload request may carry (Gradio's max_file_size caps one file); a crowd
        # of requests beside a run training on the CPU takes a thread from training (busy.BusyMark)
        app_kwargs={"middleware": [Middleware(UploadGuard), Middleware(BusyMark)]},
    )
