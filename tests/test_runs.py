"""The job runner: start the training process, stop it (adapter saved), notice a killed one."""

import os
import signal

import pytest

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.presets import preset_config
from sft_space.runs import lifecycle as runs
from sft_space.runs import queue as run_queue
from sft_space.training import estimates
from sft_space.ui import text

from helpers import wait_until


def tiny_config(tiny_model, **changes) -> RunConfig:
    settings = dict(
        model=str(tiny_model),
        dataset="demo:json-extract",
        max_steps=2000,
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=1000,
        save_steps=1000,
        eval_max_rows=4,
    )
    return RunConfig(**{**settings, **changes})


def test_stop_mid_run_saves_a_loadable_adapter(tiny_model, sft_home):
    run_id = runs.start_run(tiny_config(tiny_model, run_name="stop-me"))
    wait_until(lambda: runs.refresh(run_id).get("step", 0) >= 3, timeout=180, what="three training steps")
    waiting = runs.start_run(tiny_config(tiny_model, run_name="waits"))  # one job per device: this one queues
    assert runs.is_waiting(rundir.read_status(waiting)) and run_queue.queue_position(waiting)[:2] == (1, 1)
    assert "position 1 of 1 in the queue" in text.status_line(rundir.read_status(waiting))
    assert runs.cancel_run(waiting)["state"] == "cancelled"
    runs.stop_run(run_id)
    status = run_queue.wait_for(run_id, timeout=120)
    assert status["state"] == "stopped", status
    assert 3 <= status["step"] < 2000
    adapter = rundir.run_path(run_id) / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    assert any("lora_" in name for name, _ in model.named_parameters())
    listed = {r["run_id"]: r for r in runs.list_runs()}
    assert listed[run_id]["state"] == "stopped" and listed[run_id]["has_adapter"]


def test_a_killed_process_is_marked_interrupted(tiny_model, sft_home):
    run_id = runs.start_run(tiny_config(tiny_model, run_name="kill-me"))
    wait_until(lambda: runs.refresh(run_id).get("step", 0) >= 1, timeout=180, what="a training step")
    os.kill(rundir.read_status(run_id)["pid"], signal.SIGKILL)
    status = wait_until(
        lambda: runs.refresh(run_id) if runs.refresh(run_id)["state"] != "running" else None,
        timeout=30,
        what="the run to leave 'running'",
    )
    assert status["state"] == "interrupted" and "ended unexpectedly" in status["error"]
    assert run_queue.active_run() is None


def test_start_refuses_bad_settings_before_any_process(tiny_model, sft_home):
    before = set(os.listdir(rundir.runs_root()))
    with pytest.raises(ValueError, match="learning_rate"):
        runs.start_run(tiny_config(tiny_model, learning_rate=0.0))
    assert set(os.listdir(rundir.runs_root())) == before


def test_status_line_reads_like_the_design():
    line = text.status_line(
        {"state": "running", "step": 34, "max_steps": 60, "tokens_per_second": 312.4, "eta_seconds": 41}
    )
    assert line == "running · step 34/60 · 312 tok/s · ETA 0:41"


def test_a_precision_this_machine_cannot_run_is_refused_before_queueing(tiny_model, sft_home):
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("checks the rule for machines without a CUDA GPU")
    before = len(runs.list_runs(None))
    with pytest.raises(ValueError, match="precision fp16 needs a CUDA GPU"):
        runs.start_run(tiny_config(tiny_model, precision="fp16"))
    assert len(runs.list_runs(None)) == before  # nothing was queued


def test_a_finished_run_times_the_next_one(tiny_model, sft_home):
    """The pace a run measures (start-up, seconds per step, finishing) predicts the next run of the model here."""
    from sft_space.models import device_name
    from sft_space.ui.train_tab import preset_label

    assert preset_label("Quick demo", str(tiny_model) + "-never-trained") == "Quick demo · 3 min"  # its own time
    assert "time: measuring…" in preset_label("Full epoch", str(tiny_model) + "-never-trained")
    run_id = runs.start_run(tiny_config(tiny_model, max_steps=8, run_name="pace"))
    status = run_queue.wait_for(run_id, timeout=300)
    assert status["state"] == "completed", status
    assert status["steps_measured"] == 8 and status["device_name"] == device_name()
    assert status["seconds_per_step"] > 0 and status["startup_seconds"] > 0 and status["finish_seconds"] >= 0
    pace = estimates.measured_pace(str(tiny_model))
    assert pace["run_id"] == run_id
    estimate = estimates.estimate_seconds(str(tiny_model), 8)
    assert abs(estimate - status["elapsed_seconds"]) < 0.25 * status["elapsed_seconds"] + 1  # the parts add up
    assert estimates.estimate_seconds(str(tiny_model), 80) > estimate  # more steps, longer
    if device_name().startswith("CPU"):  # on a CPU a step with twice the rows takes about twice as long
        doubled = estimates.estimate_seconds(str(tiny_model), 8, rows=2 * 2)  # the run trained 2 rows a step
        assert doubled - estimate == pytest.approx(8 * status["seconds_per_step"], rel=0.01)
    # "train for N minutes": the steps expected to fit at that pace; the clock ends the run (it completes)
    minutes = (status["startup_seconds"] + status["finish_seconds"] + 5.5 * status["seconds_per_step"]) / 60
    timed = runs.start_run(
        tiny_config(tiny_model, max_steps=-1, num_train_epochs=1.0, train_minutes=minutes, run_name="minutes")
    )
    timed_status = run_queue.wait_for(timed, timeout=300)
    assert timed_status["state"] == "completed", timed_status
    assert timed_status["minutes_plan"]["steps"] == 5 and timed_status["minutes_plan"]["from_run"] == run_id
    assert 1 <= timed_status["step"] == timed_status["timed_schedule"]["ended_at_step"] <= 5
    assert timed_status["time_budget_seconds"] == pytest.approx(minutes * 60)
    assert estimates.measured_pace("someone/other-model") is None
    assert estimates.measured_pace(str(tiny_model), device="another device") is None  # a pace holds for its device
    label = preset_label("Full epoch", str(tiny_model))
    assert label.startswith("Full epoch · 1 epoch · ") and ("under 1 min" in label or " min" in label), label
    # a timed preset: its minutes, and the steps that fit at this model's pace here
    fitted = estimates.steps_in(preset_config("Quick demo", model=str(tiny_model)), 180)[0]
    assert preset_label("Quick demo", str(tiny_model)) == f"Quick demo · 3 min · about {fitted} steps here"
    # the Thorough demo's 12 minutes hold more steps than its three epochs take: the epochs are the end
    thorough = estimates.steps_in(preset_config("Thorough demo", model=str(tiny_model)), 720)[0]
    assert thorough == 3 * 576 // 4
    assert preset_label("Thorough demo", str(tiny_model)) == f"Thorough demo · 12 min · about {thorough} steps here"


def test_a_visitors_train_minutes_never_lifts_the_hosts_time_limit(tiny_model, sft_home):
    """train_minutes comes from the browser: it may shorten a run, never lengthen it past the host's limit."""
    from sft_space.training.run import fit_to_minutes

    for minutes, host, kept in ((600, 1800, 1800), (1, 1800, 60), (600, None, 36000)):
        status = {"time_budget_seconds": host}
        config = tiny_config(tiny_model, train_minutes=minutes, model=str(tiny_model) + "-no-pace")
        fit_to_minutes(config, status, resuming=False)
        assert status["time_budget_seconds"] == kept
    with pytest.raises(ValueError, match="train_minutes must be at most 1440"):
        tiny_config(tiny_model, train_minutes=10**9).validate()


def test_the_run_panel_empties_a_built_chart_instead_of_removing_it(tmp_path, monkeypatch):
    """poll's charts: None (an empty box) until a chart first has points; once built, a run with nothing logged yet
    gets the typed frame without points (a plot given None again throws in the page). The built list is a State,
    so whatever a browser sends in its place counts only for the chart names it holds."""
    from sft_space.charts import CHART_NAMES as CHARTS
    from sft_space.ui.charts import drawable
    from sft_space.ui.train_tab import loss_frame, poll

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))  # no run yet: nothing for the panel to show

    def charts(values):
        return values[4], values[5], values[6]  # loss, learning rate, gradient norm

    assert all(chart is None for chart in charts(poll(None, None, []))) and poll(None, None, [])[-1] == []
    built = poll(None, None, list(CHARTS))
    assert built[-1] == sorted(CHARTS)
    for chart in charts(built):
        assert chart is not None and not chart.iloc[:, 1].notna().any()  # the plot's columns, no point
    assert list(built[4].columns) == ["step", "loss", "series"]
    for forged in ("loss", 7, None, [{"x": 1}, "nonsense", ["loss"]]):
        values = poll(None, None, forged)
        assert all(chart is None for chart in charts(values)) and values[-1] == [], forged
    assert poll(None, None, ["loss", "evil"])[-1] == ["loss"]
    with_points = loss_frame([{"step": 1, "loss": 2.5}])
    assert drawable(with_points, "loss") is with_points  # points build the chart whether it was built or not


def test_the_run_panel_draws_gpu_memory_and_utilisation_when_a_card_logged_them(tmp_path, monkeypatch):
    """On a CUDA card each log line carries the memory in use, its peak and the card's size, and the utilisation
    (callbacks.gpu_metrics; no card here, so the lines are written as a card's run writes them): the panel's GPU
    charts draw them, one series each; a CPU run's lines have none and the charts stay empty."""
    from sft_space import rundir
    from sft_space.config import RunConfig
    from sft_space.ui.train_tab import poll

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    run_dir = rundir.runs_root() / "20990101-000000-gpu"
    run_dir.mkdir(parents=True)
    rundir.write_config(run_dir, RunConfig(max_steps=4))
    rundir.write_status(run_dir, state="completed", step=4, max_steps=4)
    for step in (2, 4):
        rundir.append_metric(
            run_dir,
            {
                "step": step,
                "loss": 1.0 / step,
                "gpu_memory_gib": 0.8,
                "gpu_peak_gib": 0.9 + step / 10,
                "gpu_card_gib": 79.2,
                "gpu_utilization": 40.0 + step,
            },
        )
    values = poll(run_dir.name, None, [])
    memory, utilization = values[7], values[8]
    drawn = memory.dropna(subset=["memory"])
    assert sorted(set(drawn["series"])) == ["card", "in use", "peak"] and len(drawn) == 6
    assert drawn[drawn.series == "peak"]["memory"].tolist() == [1.1, 1.3]
    assert utilization["gpu_utilization"].tolist() == [42.0, 44.0]
    assert {"gpu_memory", "gpu_utilization"} <= set(values[-1])

    cpu_run = rundir.runs_root() / "20990101-000001-cpu"
    cpu_run.mkdir()
    rundir.write_config(cpu_run, RunConfig(max_steps=4))
    rundir.write_status(cpu_run, state="completed", step=4, max_steps=4)
    rundir.append_metric(cpu_run, {"step": 2, "loss": 0.5})
    values = poll(cpu_run.name, None, [])
    assert values[7] is None and values[8] is None  # nothing to draw: the plots stay unbuilt
