"""The page tells the truth about the hardware and the storage under the environment a Space sets (simulated: a
CPU Space, a GPU Space through a stand-in nvidia-smi, a ZeroGPU Space), and offers presets for what it found."""

import dataclasses
import os
import stat
import sys

import gradio.oauth as gradio_oauth
import pytest

from sft_space.config import RunConfig
from sft_space.host import hardware, limits
from sft_space.presets import GPU_PRESETS, PRESETS, preset_config, presets_for
from sft_space.runs import lifecycle as runs
from sft_space.runs import liveness
from sft_space.training import estimates


@pytest.fixture
def gpu_space(tmp_path, monkeypatch):
    """A GPU Space as far as detection can tell: nvidia-smi (a stand-in: no card here) answers for two A10Gs."""
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 'NVIDIA A10G, 23028, 8.6'\necho 'NVIDIA A10G, 23028, 8.6'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_a_cpu_space_is_described_with_its_cores_and_memory(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    found = hardware.detect()
    assert found.kind == "cpu" and found.cpu_cores >= 1 and found.memory_gib > 0.5
    assert found.describe() == f"CPU only · {found.cpu_cores} vCPU · {found.memory_gib:.0f} GB RAM"
    assert presets_for(found.kind) == list(PRESETS)
    assert limits.current(found.kind).model_billions == 0.5


def test_every_cpu_preset_runs_within_a_free_cpu_spaces_limits(monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    cpu = limits.current("cpu")
    for name in PRESETS:
        config = preset_config(name)
        limits.check_run(
            config, estimates.planned_steps(config), 135_000_000, cpu
        )  # tokens, checkpoints, probes: no refusal
        assert not config.train_minutes or config.train_minutes <= cpu.run_minutes, name
    with pytest.raises(ValueError, match="cannot be planned"):  # unknown steps cannot pass the token budget unchecked
        limits.check_run(preset_config("Full epoch"), None, 135_000_000, cpu)
    thorough = preset_config("Thorough demo")  # three epochs of json-extract, 12 minutes on the CPU at most
    assert limits.run_tokens(thorough, estimates.planned_steps(thorough)) == 3 * 576 // 4 * 4 * 256 <= cpu.train_tokens


def test_a_gpu_space_lists_its_cards_and_offers_gpu_presets(gpu_space):
    from sft_space.ui import train_tab

    found = hardware.detect()
    assert found.kind == "cuda" and [g.name for g in found.gpus] == ["NVIDIA A10G"] * 2
    assert found.describe().startswith("2 x NVIDIA A10G 22 GB (bf16) · ")
    assert presets_for("cuda") == list(PRESETS) + list(GPU_PRESETS)
    assert limits.current("cuda").model_billions == 8
    labels = [label for label, _ in train_tab.preset_choices(None, "cuda").choices]
    guide = next(label for label in labels if label.startswith("GPU: SmolTalk on SmolLM2-135M"))
    # 300 steps x 32 rows x 1024 tokens at the conservative 8,000 tokens/s, plus a minute of loading
    assert guide.endswith("300 steps · up to about 21 min (estimate until a run here measures it)"), guide
    preset = train_tab.apply_preset("GPU: SmolTalk on SmolLM2-135M (the guide's example)")
    assert preset[-3:] == ["HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/smoltalk", "all"]
    size = train_tab.TRAIN_FIELDS.index("per_device_train_batch_size")
    assert preset[size] == 32  # a small model is launch-bound at small batches: the card gets a big one


def test_zerogpu_trains_in_slots_says_so_and_offers_a_duplicate(monkeypatch, tiny_model):
    # the environment a Space sets (real OAuth routes, no mocked sign-in): its provider is never called here
    for name, value in dict(
        SYSTEM="spaces",
        SPACE_ID="someone/sft-space",
        OAUTH_CLIENT_ID="client",
        OAUTH_CLIENT_SECRET="secret",
        OPENID_PROVIDER_URL="http://127.0.0.1:9",
        OAUTH_SCOPES="openid profile",
    ).items():
        monkeypatch.setenv(name, value)
        if name.startswith(("OAUTH", "OPENID")):  # gradio read these when it was imported
            monkeypatch.setattr(gradio_oauth, name, value, raising=False)
    # the real `spaces` package (a test dependency) would patch torch for this whole session when imported with
    # ZeroGPU on and assert its device API's URL: here it is absent, as on a machine without it (tests/zerogpu/ run
    # the real package in processes of their own)
    monkeypatch.setitem(sys.modules, "spaces", None)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    found = hardware.detect()
    assert found.kind == "zerogpu" and found.describe().startswith("ZeroGPU (a GPU lent in slots")
    assert presets_for("zerogpu")[:2] == ["Quick demo (GPU slots)", "Thorough demo (GPU slots)"]
    assert all(not preset_config(name).train_minutes for name in presets_for("zerogpu"))
    # a timed run cannot be cut into slots: refused before anything is written, with what to do instead
    with pytest.raises(ValueError, match="counted in steps, not minutes.*max_steps"):
        runs.start_run(RunConfig(model=str(tiny_model), train_minutes=3.0), owner="browser:x")
    assert not runs.list_runs("browser:x")
    # a run in steps is created for its page to drive, slot by slot; no training process is started for it
    run_id = runs.start_run(RunConfig(model=str(tiny_model), max_steps=2, train_minutes=0), owner="browser:x")
    status = runs.refresh(run_id)
    assert status["gpu_slots"] and status["state"] == "running" and status["phase"] == "waiting for a GPU slot"
    assert run_id not in liveness._children
    # the endpoint no button of a stranger's page calls: another visitor cannot drive (nor spend slots on) this run
    import gradio as gr

    from sft_space.ui.train_tab import drive_slots

    asked = []
    with pytest.raises(gr.Error, match="another visitor"):
        list(drive_slots(run_id, "browser:stranger", lambda *args: asked.append(args)))
    assert not asked and runs.refresh(run_id)["state"] == "running"
    # a second driver of a run another driver holds (its lease run out) asks for nothing and takes nothing: the
    # token and backup choice handed for the run stay for the driver that holds it
    from sft_space.runs import queue as run_queue
    from sft_space.training import slots

    run_queue._hand_token(run_id, "hf_visitorTOKEN", "x/sft-space-runs")
    with slots._registered(run_id) as mine:
        assert mine
        handover = lambda: run_queue.slot_environment(run_id)  # noqa: E731
        assert list(slots.drive(run_id, lambda *args: asked.append(args), handover)) == [] and not asked
        assert run_queue._tokens[run_id]["HF_TOKEN"] == "hf_visitorTOKEN"
    env, backup_to = run_queue.slot_environment(run_id)
    assert env["set"] == {"HF_TOKEN": "hf_visitorTOKEN"} and backup_to["repo"] == "x/sft-space-runs"
    runs.cancel_run(run_id, "browser:x")  # no page drives it here: cancelled at once, between slots
    assert runs.refresh(run_id)["state"] == "cancelled"

    from sft_space.ui import build_app

    page = build_app().config
    texts = [c.get("props", {}).get("value") for c in page["components"]]
    assert any(isinstance(t, str) and "A run trains in GPU slots" in t for t in texts)
    assert any(
        c.get("type") == "duplicatebutton" or c.get("props", {}).get("elem_id") == "duplicate"
        for c in page["components"]
    )


def test_storage_is_told_on_a_space(monkeypatch):
    assert hardware.storage_note() is None  # a laptop: nothing to say
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    if not hardware.persistent_storage():  # this machine has no /data: as a Space without storage
        assert hardware.storage_note() == (
            "This Space has no persistent storage: runs on this Space are lost on restart unless they are backed "
            "up to the Hub (sign in)."
        )


def test_trackio_is_refused_clearly_when_missing_and_logs_the_run_when_present(monkeypatch, tiny_model, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match="trackio is on but the trackio package is not installed: pip install trackio"):
        RunConfig(trackio=True).validate()
    monkeypatch.undo()
    pytest.importorskip("trackio", reason="optional: pip install trackio to log runs there")

    from helpers import TINY_FAST, run_cli

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    result = run_cli(
        "--model", str(tiny_model), "--max_steps", "3", "--trackio", "true", "--output_dir", str(tmp_path / "run"),
        *TINY_FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    stored = list((tmp_path / "trackio").rglob("sft-space*"))
    assert stored, list((tmp_path / "trackio").rglob("*"))  # the project's local store, named after the project


def test_on_zerogpu_chat_and_evaluation_ask_for_a_gpu_slot(monkeypatch):
    """With the `spaces` package (a stand-in here: it exists only on Spaces), chat, evaluation and the prompting
    comparison are wrapped in spaces.GPU, so each call gets a slot; training asks for its slots one by one, each of
    the duration the driver computes (slot_worker.slot_duration: the seconds it passes)."""
    import sys
    import types

    wrapped = []

    durations = {}

    def gpu(function, duration=None):
        def slot(*args, **kwargs):
            return function(*args, **kwargs)

        slot.__wrapped__ = function
        wrapped.append(function.__name__)
        durations[function.__name__] = duration
        return slot

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    assert hardware.gpu_slot(len) is len  # not ZeroGPU: unchanged
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")

    from sft_space.ui import build_app

    build_app()
    assert sorted(wrapped) == ["compare", "evaluate", "replies", "run_slot"]  # chat's model work (Send and Enter)
    assert durations["run_slot"]("/runs/a", 95.0, {}) == 95.0


def test_a_full_queue_refuses_a_new_visitor_and_says_how_many_are_ahead(tmp_path, monkeypatch):
    """The fair share is judged by limits.check_share on the runs ownership gathers: with the queue full, a new
    visitor's Start is refused with the runs ahead and the expected wait; the run ahead is looked up only then."""
    from sft_space import rundir
    from sft_space.config import RunConfig
    from sft_space.runs.ownership import check_fair_share

    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path))
    monkeypatch.setenv("SFT_SPACE_PUBLIC", "1")
    monkeypatch.setenv("SFT_SPACE_QUEUE_SIZE", "2")
    for i in range(2):  # two runs of other visitors waiting for the device
        run_dir = rundir.runs_root() / f"20990101-00000{i}-queued"
        run_dir.mkdir(parents=True)
        rundir.write_config(run_dir, RunConfig(max_steps=4))
        rundir.write_owner(run_dir, f"browser:other{i}", f"address{i}")
        rundir.write_status(run_dir, state="queued", queued_at=float(i))
    with pytest.raises(RuntimeError, match="2 runs ahead of yours and the queue is full; try again later"):
        check_fair_share("browser:newcomer", "address-new")
    check_fair_share(None)  # the command line's runs are the machine owner's

    asked = []
    cpu = limits.current("cpu")
    limits.check_share("browser:a", [], [], 1, lambda: asked.append(1) or (True, 300.0), cpu)
    assert asked == []  # the queue has room: nobody looks for the run ahead
    with pytest.raises(RuntimeError, match="9 runs ahead of yours .* try again in about 5 minutes"):
        limits.check_share("browser:a", [], [], 8, lambda: (True, 300.0), dataclasses.replace(cpu, queue_size=8))
    with pytest.raises(RuntimeError, match="already have a run training or waiting \\(run-1\\)"):
        limits.check_share("browser:a", ["run-1"], [], 0, None, cpu)
    with pytest.raises(RuntimeError, match="from your address without signing in"):
        limits.check_share("browser:a", [], ["run-2"], 0, None, cpu)
