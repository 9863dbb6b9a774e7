"""Train tab: parameters on the left (the SFT guide's groups), the live run on the right."""

from __future__ import annotations

import functools
import html

import gradio as gr
import pandas as pd

from .. import rundir
from ..charts import CHART_GROUPS, LOSS_CHART, RUN_CHARTS
from ..host import hardware
from ..hub import on_a_space
from ..judging import health
from ..models import CURATED_MODELS
from ..presets import DEFAULT_PRESET, GPU_PRESETS, default_preset, preset_config, presets_for
from ..publishing import backup
from ..runs import lifecycle as runs
from ..runs import ownership
from ..runs import queue as run_queue
from ..training import estimates, slot_worker, slots
from . import settings_load, text
from .charts import chart_frame, plot, run_chart_values
from .common import SOURCE_FIELDS, data_settings, owned, shown_as_error, visitor_dataset, visitor_model
from .visitor import address, new_visitor_id
from .widgets import TRAIN_FIELDS, TRAIN_GROUPS, build_groups, named, read_config


def first_warning(findings: list[health.Finding]) -> int | None:
    """The step of the first warning sign, marked on the loss chart (the health line below it names them all)."""
    marked = [f.step for f in findings if f.severity != "ok" and f.step is not None]
    return min(marked) if marked else None


def loss_frame(records: list[dict], findings: list[health.Finding] = ()) -> pd.DataFrame:
    """Train and validation loss against step, long format for a LinePlot, plus a vertical marker at the first
    warning."""
    return chart_frame(LOSS_CHART, records, first_warning(findings))


def diagnose(run_id: str | None, records: list[dict]) -> list[health.Finding]:
    if not run_id:
        return []
    try:
        learning_rate = rundir.read_config(run_id).learning_rate
    except (ValueError, FileNotFoundError, TypeError):
        learning_rate = None
    return health.diagnose(records, learning_rate)


def health_text(findings: list[health.Finding]) -> str:
    return "**Health:** " + health.describe(findings).replace("\n", "  \n") if findings else ""


def probe_table(run_id: str | None) -> pd.DataFrame:
    """One row per evaluation, one column per probe prompt: how the answers change as the loss falls."""
    records = rundir.read_probes(run_id) if run_id else []
    if not records:
        return pd.DataFrame(columns=["step", "probe 1"])
    columns = [f"probe {i + 1}" for i in range(len(records[0]["replies"]))]
    rows = [[("0 (base)" if r["step"] == 0 else str(r["step"])), *r["replies"]] for r in records]
    return pd.DataFrame(rows, columns=["step", *columns])


def probe_prompts_text(run_id: str | None) -> str:
    records = rundir.read_probes(run_id) if run_id else []
    if not records:
        return "Replies to a few validation prompts appear here at every evaluation (step 0 is the base model)."
    return "  \n".join(f"**probe {i + 1}:** {html.escape(p)}" for i, p in enumerate(records[0]["prompts"]))


def progress_html(status: dict) -> str:
    """A bar with step, tokens/s and ETA for the run."""
    if not status:
        return "<div class='run-progress'><p>No run yet: choose settings and press <b>Start training</b>.</p></div>"
    step, total = status.get("step", 0), status.get("max_steps") or 0
    share = 100.0 if status.get("state") == "completed" else (100.0 * step / total if total else 0.0)
    state = status.get("state", "")
    phase = ""
    if state in runs.ACTIVE_STATES and status.get("phase_progress") is not None:
        eta = text.format_duration(status.get("phase_eta"))
        phase = (
            f"<div class='bar phase'><div class='fill' style='width:{100 * status['phase_progress']:.1f}%'></div></div>"
            f"<p class='phase-line'>{html.escape(status.get('phase') or '')}: "
            f"{status['phase_progress']:.0%} · ETA {eta}</p>"
        )
    return (
        f"<div class='run-progress' data-state='{html.escape(state)}'>{phase}"
        f"<div class='bar'><div class='fill state-{html.escape(state)}' style='width:{share:.1f}%'></div></div>"
        f"<p>{html.escape(text.status_line(status))}</p></div>"
    )


BACK_UP_INFO = {
    True: "Each checkpoint goes to your private repo <you>/sft-space-runs, so the run survives a restart of this "
    "Space (Runs tab: Restore).",
    False: "Sign in (top of the page) to back up each checkpoint to a private repo of yours, so the run survives a "
    "restart of this Space.",
}


def back_up_choice(visitor: str | None):
    """The backup box as this visitor can use it: ticked and open once signed in, off and closed otherwise."""
    signed_in = str(visitor or "").startswith("hf:")
    return gr.Checkbox(value=signed_in, interactive=signed_in, info=BACK_UP_INFO[signed_in])


def hub_handover(visitor: str | None, oauth_token: gr.OAuthToken | None, back_up: bool) -> dict:
    """For a signed-in visitor: their own token for their run's Hub reads, and (when ticked) the repo their
    checkpoints are backed up to. Nothing for anyone else."""
    if oauth_token is None or not str(visitor or "").startswith("hf:"):
        return {}
    repo = backup.repo_for(visitor.removeprefix("hf:")) if back_up else None
    return {"hub_token": oauth_token.token, "backup_repo": repo}


def start(request: gr.Request, oauth_token: gr.OAuthToken | None, visitor: str | None, model: str, back_up, *values):
    visitor = visitor or new_visitor_id()
    data = data_settings(values[: len(SOURCE_FIELDS)])
    settings = dict(zip(TRAIN_FIELDS, values[len(SOURCE_FIELDS) :]))
    with shown_as_error():
        config = read_config({**settings, **data, "model": visitor_model(model)})
        run_id = runs.start_run(
            config, owner=visitor, address=address(request), **hub_handover(visitor, oauth_token, bool(back_up))
        )
    status = runs.refresh(run_id)
    if slots.is_slot_run(status):
        gr.Info(
            f"Run {run_id} created: it trains in GPU slots while this page stays open (each slot continues "
            "from the last checkpoint). Closing the page pauses it; Resume continues."
        )
    elif runs.is_waiting(status):
        gr.Info(f"Run {run_id} is queued behind another training job; it starts by itself when the device is free.")
    else:
        gr.Info(f"Run {run_id} started. The chart updates every few seconds; you can leave this page and come back.")
    return run_id, run_bar_text(run_id, status), visitor


def resume(
    request: gr.Request, oauth_token: gr.OAuthToken | None, run_id: str | None, visitor: str | None, back_up=True
):
    owned(run_id, visitor, "resume")
    with shown_as_error():
        stored = rundir.read_config(run_id)  # a restored run's settings came from outside: the same paths as a start
    visitor_dataset(stored.dataset), visitor_model(stored.model)
    with shown_as_error():
        runs.resume_run(run_id, visitor, address(request), **hub_handover(visitor, oauth_token, bool(back_up)))
    gr.Info(f"Resuming {run_id} from its last checkpoint; the chart continues where it left off.")
    return run_id, run_bar_text(run_id, runs.refresh(run_id))


def drive_slots(run_id: str | None, visitor: str | None, slot_call=None):
    """On ZeroGPU: ask for the run's GPU slots one after another while this page is open (slots.drive); each call
    is made in this request, so it spends this visitor's GPU quota. Elsewhere, or for a run not in slots: nothing."""
    if not hardware.on_zerogpu() or not run_id:
        yield gr.skip()
        return
    if slot_call is None:  # never train in the page's own process: without the package there is no slot
        raise gr.Error(
            "This ZeroGPU Space lacks the `spaces` package: no GPU slot can be asked for.", print_exception=False
        )
    status = owned(run_id, visitor, "train")
    if not slots.is_slot_run(status) or status.get("state") not in runs.ACTIVE_STATES:
        yield gr.skip()
        return
    if slots.driving(run_id):  # another tab of this visitor drives it already
        yield gr.skip()
        return
    handover = functools.partial(run_queue.slot_environment, run_id)  # taken by the driver that registers
    for status in slots.drive(run_id, slot_call, handover):
        yield run_bar_text(run_id, status)
    yield run_bar_text(run_id, runs.refresh(run_id))


def retry_smaller(request: gr.Request, run_id: str | None, visitor: str | None):
    """After running out of memory: the same run with half the batch and twice the accumulation."""
    owned(run_id, visitor, "retry")
    config = runs.retry_config(run_id)
    if config is None:
        raise gr.Error("Retry with a smaller batch is offered after a run runs out of memory.", print_exception=False)
    visitor_dataset(config.dataset), visitor_model(config.model)
    with shown_as_error():
        new_id = runs.start_run(config, owner=visitor, address=address(request))
    return new_id, run_bar_text(new_id, runs.refresh(new_id))


def stop(run_id: str | None, visitor: str | None):
    status = owned(run_id, visitor, "stop")
    if status.get("state") in runs.ACTIVE_STATES:
        runs.stop_run(run_id, visitor)
        gr.Info("Stopping after the current step; the adapter trained so far will be saved.")
    return run_id


def cancel(run_id: str | None, visitor: str | None):
    status = owned(run_id, visitor, "cancel")
    if status.get("state") in runs.ACTIVE_STATES:
        runs.cancel_run(run_id, visitor)
        gr.Info("Cancelled: the run leaves the queue or stops without saving an adapter.")
    return run_id


def poll(run_id: str | None, visitor: str | None, built=None):
    """Follow this visitor's active run (started here or in another tab), else keep showing the chosen one.

    built: the page's charts that have drawn data already (a State, so untrusted: only its known names count);
    they are never given None again (charts.drawable)."""
    if run_id and not ownership.visible_run(run_id, visitor):
        run_id = None
    run_id = ownership.own_active_run(visitor) or run_id or ownership.latest_run(visitor)
    status = runs.refresh(run_id) if run_id else {}
    records = rundir.read_metrics(run_id) if run_id else []
    findings = diagnose(run_id, records)
    values = run_chart_values(records, built, first_warning(findings))
    return (
        run_id,
        run_bar_text(run_id, status),
        progress_html(status),
        health_text(findings),
        *values.values(),  # RUN_CHARTS order, as build() lays the plots out
        probe_prompts_text(run_id),
        probe_table(run_id),
        sorted(name for name, value in values.items() if value is not None),
    )


def run_bar_text(run_id: str | None, status: dict) -> str:
    return f"**Run:** {run_id} · {text.status_line(status)}" if run_id else "**Run:** none yet"


def show_log(run_id: str | None, visitor: str | None) -> str:
    owned(run_id, visitor, "show")
    return rundir.tail_log(run_id, 80)


UNREAD = object()  # preset_label's pace when the caller has not read it


def preset_label(name: str, model: str | None, pace=UNREAD, device_kind: str | None = None) -> str:
    """'Quick demo · 40 steps · about 3 min' from this model's measured pace on this device; on an unmeasured CUDA
    card a GPU preset's conservative estimate; else 'measuring…'.
    pace: the model's measured_pace (None: not measured) when the caller has read it already, so all presets
    share one scan of the runs. A GPU preset names its own model, so it reads its own pace."""
    own_model = name in GPU_PRESETS
    config = preset_config(name) if own_model else preset_config(name, model=model or preset_config(name).model)
    pace = estimates.measured_pace(config.model) if pace is UNREAD or own_model else pace
    steps = config.max_steps if config.max_steps > 0 else None
    size = f"{steps} steps" if steps else f"{config.num_train_epochs:g} epoch"
    if config.train_minutes:  # a timed preset: its length is its time; the steps are what fits on this device
        fitted = estimates.steps_in(config, config.train_minutes * 60, pace) if pace is not None else None
        about = f" · about {fitted[0]} steps here" if fitted else ""
        return f"{name} · {config.train_minutes:g} min{about}"
    if (device_kind or hardware.device_kind()) == "zerogpu":
        steps = steps or estimates.planned_steps(config)
        return f"{name} · {size}{f' ({steps} steps)' if steps else ''} · in GPU slots of up to {slots.slot_cap():.0f} s"
    if pace is None:  # nothing measured: a GPU preset's conservative estimate, else no number
        guess = estimates.conservative_gpu_seconds(config, curated_parameters(config.model)) if own_model else None
        if guess is None or (device_kind or hardware.device_kind()) != "cuda":
            return f"{name} · {size} · time: measuring…"
        return f"{name} · {size} · up to about {round(guess / 60)} min (estimate until a run here measures it)"
    rows = estimates.rows_per_step(config.to_dict())
    seconds = estimates.seconds_at(pace, steps or estimates.planned_steps(config), rows=rows)
    if seconds is None:
        return f"{name} · {size} · time: measuring…"
    return f"{name} · {size} · " + ("under 1 min" if seconds < 60 else f"about {round(seconds / 60)} min")


def curated_parameters(model: str) -> int | None:
    return next((count for repo, _, count in CURATED_MODELS if repo == model), None)


def preset_choices(model: str | None, device_kind: str | None = None) -> gr.Dropdown:
    kind = device_kind or hardware.device_kind()
    pace = estimates.measured_pace(model or preset_config(DEFAULT_PRESET).model)
    return gr.Dropdown(choices=[(preset_label(name, model, pace, kind), name) for name in presets_for(kind)])


def apply_preset(name: str):
    """Every Train field from the preset; a GPU preset also picks its model and dataset (Model and Data tabs)."""
    config = preset_config(name)
    own = name in GPU_PRESETS
    keep = gr.skip()
    return [getattr(config, field) for field in TRAIN_FIELDS] + [
        config.model if own else keep,
        config.dataset if own else keep,
        config.dataset_config if own else keep,
    ]


def build(data_sources: list, model: gr.Dropdown, current_run: gr.State, run_bar: gr.Markdown, visitor: gr.State):
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            preset = gr.Dropdown(
                choices=[(preset_label(name, None), name) for name in presets_for(hardware.device_kind())],
                value=default_preset(hardware.device_kind()),
                label="Preset",
                elem_id="preset",
                info="Fills every field below; change any of them after. Quick demo: the format and most "
                "fields; Thorough demo: three epochs, what the harder fields (times) take. Times come from "
                "earlier runs of the chosen model on this device; 'measuring…' until the first one finishes.",
            )
            with gr.Row():
                start_button = gr.Button("Start training", variant="primary", elem_id="start")
                stop_button = gr.Button("Stop & save", variant="stop", elem_id="stop")
            back_up = gr.Checkbox(
                value=False,
                interactive=False,
                label="Back up checkpoints to my Hub account",
                info=BACK_UP_INFO[False],
                elem_id="back-up",
                visible=on_a_space(),
            )
            with gr.Row():
                cancel_button = gr.Button("Cancel", size="sm", elem_id="cancel")
                resume_button = gr.Button("Resume", size="sm", elem_id="resume")
                retry_button = gr.Button("Retry with half the batch", size="sm", elem_id="retry")
            loader = settings_load.build()
            widgets = build_groups(TRAIN_GROUPS)
            assert list(widgets) == TRAIN_FIELDS
            for name, value in zip(
                TRAIN_FIELDS, apply_preset(default_preset(hardware.device_kind()))[: len(TRAIN_FIELDS)]
            ):
                widgets[name].value = value
        with gr.Column(scale=2):
            progress = gr.HTML(progress_html({}), elem_id="run-progress")
            plots = {}
            for group, (title, is_open, devices) in CHART_GROUPS.items():  # the run panel's charts (charts.py)
                charts = [chart for chart in RUN_CHARTS if chart.group == group]
                if title is None:
                    plots.update({chart.name: plot(chart) for chart in charts})
                else:
                    with gr.Accordion(
                        title, open=is_open, visible=devices is None or hardware.device_kind() in devices
                    ):
                        with gr.Row():
                            plots.update({chart.name: plot(chart) for chart in charts})
                if group == "main":  # the health line right under the loss
                    health_box = gr.Markdown(elem_id="health")
            with gr.Accordion("What the model says during training (probe prompts)", open=True):
                probe_prompts = gr.Markdown(probe_prompts_text(None), elem_id="probe-prompts")
                probes = gr.Dataframe(
                    probe_table(None), wrap=True, interactive=False, elem_id="probe-table", max_height=300
                )
            with gr.Accordion("Log", open=False):
                log_button = gr.Button("Show the end of the log", size="sm")
                log_box = gr.Textbox(lines=16, max_lines=30, show_label=False, elem_id="log")
    widget_list = list(widgets.values())
    # input, not change: only a visitor's pick fills the fields (new duration labels must not reset their edits)
    dataset_boxes = [data_sources[SOURCE_FIELDS.index(name)] for name in ("dataset", "dataset_config")]
    preset.input(apply_preset, preset, [*widget_list, model, *dataset_boxes], api_name=False)
    started = start_button.click(
        named(
            start, ["visitor", "model", "back_up", *SOURCE_FIELDS, *TRAIN_FIELDS], with_request=True, with_oauth=True
        ),
        [visitor, model, back_up, *data_sources, *widget_list],
        [current_run, run_bar, visitor],
        api_name="start_run",
    )
    # ZeroGPU: the run's GPU slots, asked for by this page (its visitor's quota) after Start and Resume; each one a
    # spaces.GPU call of slot_worker.run_slot whose duration is the one the driver asks for
    slot_call = (
        hardware.gpu_slot(slot_worker.run_slot, duration=slot_worker.slot_duration) if hardware.on_zerogpu() else None
    )
    slot_call = None if slot_call is slot_worker.run_slot else slot_call  # not wrapped: no `spaces` package

    def train_in_gpu_slots(run_id: str | None, visitor_id: str | None):
        yield from drive_slots(run_id, visitor_id, slot_call)

    # each driver holds a worker thread for its slots: a bounded number at once, the others wait their turn
    slot_driver = dict(concurrency_limit=slots.DRIVERS, concurrency_id="gpu-slots", show_progress="hidden")
    started.success(train_in_gpu_slots, [current_run, visitor], run_bar, api_name="train_in_gpu_slots", **slot_driver)
    stop_button.click(stop, [current_run, visitor], current_run, api_name="stop_run")
    cancel_button.click(cancel, [current_run, visitor], current_run, api_name="cancel_run")
    visitor.change(back_up_choice, visitor, back_up, api_name=False, show_progress="hidden")
    resume_button.click(resume, [current_run, visitor, back_up], [current_run, run_bar], api_name="resume_run").success(
        train_in_gpu_slots, [current_run, visitor], run_bar, api_name=False, **slot_driver
    )
    retry_button.click(retry_smaller, [current_run, visitor], [current_run, run_bar], api_name="retry_run").success(
        train_in_gpu_slots, [current_run, visitor], run_bar, api_name=False, **slot_driver
    )
    log_button.click(show_log, [current_run, visitor], log_box, api_name="show_log")
    settings_run, use_settings, settings_file, settings_note = loader
    load_outputs = [*data_sources, model, *widget_list, settings_note]
    use_settings.click(settings_load.use_run, [settings_run, visitor], load_outputs, api_name="use_run_settings")
    settings_file.upload(
        settings_load.use_file, [settings_file, visitor], load_outputs, api_name="load_settings_file"
    ).then(lambda: None, None, settings_file, api_name=False, show_progress="hidden")  # ready for another file
    return (
        preset,
        widgets,
        (
            progress,
            health_box,
            *(plots[chart.name] for chart in RUN_CHARTS),  # poll's order
            probe_prompts,
            probes,
        ),
        (settings_run, load_outputs),
    )
