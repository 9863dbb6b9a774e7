"""Runs backed up on the Hub survive a restart with an empty disk: checkpoints pushed as they are saved (the real
huggingface_hub client against the test Hub server), the runs folder deleted, the run listed and restored from
the Hub, resumed to completion with its curve continuing; failed pushes are retried and never fail the run."""

import os
import shutil
import signal

import pytest

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.publishing import backup
from sft_space.runs import lifecycle as runs
from sft_space.runs import ownership, restore
from sft_space.runs import queue as run_queue

from helpers import build_tiny_model, use_test_hub, wait_until
from hub_server import HubServer

TOKEN = "hf_aliceBACKUPtoken0123456789abcdef"  # fake, known: grepped for afterwards
REPO = "alice/sft-space-runs"
HUB_MODEL = "acme/tiny-backup"


@pytest.fixture(scope="module")
def server(model):
    with HubServer() as hub_server:
        hub_server.users.update({TOKEN: "alice"})
        # the tiny model as a Hub model: what a restored run may name (a server folder is refused)
        hub_server.add_repo(HUB_MODEL, {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}, kind="model")
        yield hub_server


@pytest.fixture
def online(server, tmp_path, monkeypatch):
    use_test_hub(monkeypatch, server.url, tmp_path / "hf-home")
    monkeypatch.setenv("SFT_SPACE_HOME", str(tmp_path / "home"))
    return server


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def config(model, **changes) -> RunConfig:
    settings = dict(
        model=str(model),
        dataset="demo:json-extract",
        per_device_train_batch_size=2,
        max_length=128,
        logging_steps=1,
        eval_steps=1000,
        eval_max_rows=4,
        save_steps=5,
    )
    return RunConfig(**{**settings, **changes})


def test_only_a_signed_in_visitor_hands_over_a_token():
    import gradio as gr

    from sft_space.ui.train_tab import hub_handover

    signed_in = gr.OAuthToken(token=TOKEN, scope="openid", expires_at=2**31)
    assert hub_handover("hf:alice", signed_in, True) == {"hub_token": TOKEN, "backup_repo": REPO}
    assert hub_handover("hf:alice", signed_in, False) == {"hub_token": TOKEN, "backup_repo": None}
    assert hub_handover("browser:abc", signed_in, True) == {}  # a token without the matching identity: nothing
    from sft_space.ui.train_tab import back_up_choice

    offered, refused = back_up_choice("hf:alice"), back_up_choice("browser:abc")  # the box as each sees it
    assert offered.value is True and offered.interactive is True and "private repo" in offered.info
    assert refused.value is False and refused.interactive is False and refused.info.startswith("Sign in")
    assert hub_handover("hf:alice", None, True) == {}


def no_token_on_disk(home):
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_checkpoints_are_pushed_as_they_are_saved_and_failures_retried(online, model, tmp_path):
    online.refuse_commits = 1  # the first push is refused once (a 412 the client itself does not retry)
    run_id = runs.start_run(
        config(model, max_steps=12), owner="hf:alice", hub_token=TOKEN, backup_repo=backup.repo_for("alice")
    )
    status = run_queue.wait_for(run_id, timeout=240)
    assert status["state"] == "completed", status
    # the final push (the completed status and the adapter) follows the run's end, from the same process
    status = wait_until(lambda: (s := rundir.read_status(run_id)).get("backup", {}).get("final") and s, timeout=120)
    record = status["backup"]
    assert record["repo"] == REPO and record["error"] is None and record["step"] == 12, record
    assert record["failures"] >= 1 and 0 < record["push_seconds"] < 60
    assert "Backup of checkpoint 5 to alice/sft-space-runs failed (attempt 1)" in rundir.log_path(run_id).read_text()
    assert status["backup_stage_seconds"] < 5  # what a save waits for the backup: a local copy
    messages = [c["message"] for c in online.commits if c["repo"] == REPO]
    expected = [f"{run_id}: checkpoint {step}" for step in (5, 10, 12)] + [f"{run_id}: final"]  # 12: the last step
    assert messages == expected, messages
    repo = online.repos[("model", REPO)]
    assert repo.private
    assert f"{run_id}/checkpoint/adapter_model.safetensors" in repo.files
    assert f"{run_id}/adapter/adapter_model.safetensors" in repo.files
    assert b'"state": "completed"' in repo.files[f"{run_id}/status.json"]
    no_token_on_disk(tmp_path / "home")
    for data in repo.files.values():
        assert TOKEN.encode() not in data


def test_a_restart_with_an_empty_disk_resumes_from_the_hub(online, model, tmp_path):
    run_id = runs.start_run(
        config(HUB_MODEL, max_steps=30), owner="hf:alice", hub_token=TOKEN, backup_repo=backup.repo_for("alice")
    )
    wait_until(
        lambda: (rundir.read_status(run_id).get("backup") or {}).get("step", 0) >= 10, timeout=240, what="2 pushes"
    )
    os.kill(rundir.read_status(run_id)["pid"], signal.SIGKILL)  # the machine goes away...
    run_queue.wait_for(run_id, states=("interrupted",), timeout=30)
    shutil.rmtree(rundir.runs_root())  # ...and its disk with it

    # the Runs tab's handlers, as the signed-in visitor's page calls them (gradio passes the sign-in token)
    import gradio as gr

    from sft_space.ui import runs_tab

    signed_in = gr.OAuthToken(token=TOKEN, scope="openid profile write-repos", expires_at=2**31)
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        runs_tab.hub_runs("browser:someone", None)
    table, offered, note = runs_tab.hub_runs("hf:alice", signed_in)
    listed = table.to_dict("records")
    mine = next(r for r in listed if r["run"] == run_id)
    pushed = mine["checkpoint on the Hub"]
    assert pushed >= 10 and mine["state"] == "running" and mine["model"] == HUB_MODEL
    assert run_id in offered.choices[0] and "not on this Space's disk" in note
    assert restore.list_backups(TOKEN, "bob") == []  # nobody else's repo, nothing listed

    opened, _ = runs_tab.restore(run_id, "hf:alice", signed_in)
    assert opened == run_id
    assert runs.refresh(run_id)["state"] == "interrupted"
    assert rundir.last_complete_checkpoint(run_id).name == f"checkpoint-{pushed}"
    assert not ownership.visible_run(run_id, "hf:bob") and ownership.visible_run(run_id, "hf:alice")
    with pytest.raises(RuntimeError, match="already on this Space"):
        restore.restore(run_id, TOKEN, "alice")

    runs.resume_run(run_id, "hf:alice", hub_token=TOKEN, backup_repo=backup.repo_for("alice"))
    status = run_queue.wait_for(run_id, timeout=300)
    assert status["state"] == "completed" and status["step"] == 30 and status["resumed_from"] == pushed, status
    steps = [r["step"] for r in rundir.read_metrics(run_id) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] == 30  # the curve continues from the Hub's
    assert rundir.has_adapter(run_id)
    no_token_on_disk(tmp_path / "home")


MALLORY = "hf_malloryBACKUPtoken0123456789abcd"


def test_a_crafted_backup_is_checked_before_it_joins_the_runs(online, model):
    """A stranger's own backup repo is theirs to fill with anything: restored files are checked, and a bad one
    leaves no trace that would trip the queue, the page or the clean-up."""
    import json

    online.users[MALLORY] = "mallory"
    config = RunConfig(model="bundled", dataset="demo:json-extract", max_steps=5).to_dict()
    status = {
        "state": "running",
        "step": 3,
        "steps_measured": "lots",  # would break the pace estimate of every visitor's preset label
        "seconds_per_step": 1e-9,
        "device_name": "CPU 2 vCPU",
        "ended_at": 1e12,  # would keep it from the clean-up for ever
        "time_budget_seconds": None,
        "pid": 1,
    }
    online.add_repo(
        "mallory/sft-space-runs",
        {
            "20990101-000000-zzz/config.json": json.dumps(config),
            "20990101-000000-zzz/status.json": json.dumps(status),
            "20990101-000001-list/config.json": json.dumps(config),
            "20990101-000001-list/status.json": "[]",
            "20990101-000002-bad/config.json": json.dumps({**config, "learning_rate": -1}),
            "20990101-000002-bad/status.json": "{}",
        },
        kind="model",
        private=True,
        allowed_tokens={MALLORY},
    )
    restored = restore.restore("20990101-000000-zzz", MALLORY, "mallory")
    kept = rundir.read_status(restored)
    assert kept["state"] == "interrupted" and kept["step"] == 3
    assert not {"steps_measured", "seconds_per_step", "device_name", "ended_at", "pid"} & set(kept)
    assert restore.restore("20990101-000001-list", MALLORY, "mallory").name == "20990101-000001-list"
    assert rundir.read_status("20990101-000001-list")["state"] == "interrupted"  # a list is no status: replaced
    with pytest.raises(ValueError, match="settings that are not valid: .*learning_rate"):
        restore.restore("20990101-000002-bad", MALLORY, "mallory")
    assert sorted(p.name for p in rundir.runs_root().iterdir() if not p.name.startswith(".")) == [
        "20990101-000000-zzz",
        "20990101-000001-list",
    ]
    assert not [p for p in rundir.runs_root().iterdir() if p.name.endswith(".restoring")]
    assert {r["run_id"] for r in runs.list_runs("hf:mallory")} == {"20990101-000000-zzz", "20990101-000001-list"}
    assert runs.list_runs("hf:alice") == []
    from sft_space.training import estimates

    assert estimates.measured_pace("bundled") is None  # nothing measured here: the planted pace was dropped


def test_a_backup_naming_server_files_is_not_restored(online, model, tiny_model, monkeypatch):
    """A backup's config.json naming a file or a folder of the server (a dataset read by Evaluate and the
    Reproduce zip, a base model loaded by chat) is refused with the reason, and nothing joins the runs."""
    import json

    online.users[MALLORY] = "mallory"
    server_file = rundir.runs_root().parent / "server-secret.jsonl"
    server_file.write_text(json.dumps({"prompt": "secret", "completion": "server data"}) + "\n")
    good = RunConfig(model="bundled", dataset="demo:json-extract", max_steps=5).to_dict()
    online.add_repo(
        "mallory/sft-space-runs",
        {
            "20990102-000000-file/config.json": json.dumps({**good, "dataset": str(server_file)}),
            "20990102-000000-file/status.json": "{}",
            "20990102-000001-dir/config.json": json.dumps({**good, "model": str(tiny_model)}),
            "20990102-000001-dir/status.json": "{}",
            "20990102-000002-ok/config.json": json.dumps(good),
            "20990102-000002-ok/status.json": "{}",
            # an adapter of rank 4,000,000 behind settings of rank 16: chat and Evaluate would load it in the app
            "20990102-000003-rank/config.json": json.dumps(good),
            "20990102-000003-rank/adapter/adapter_config.json": json.dumps(
                {"peft_type": "LORA", "r": 4_000_000, "lora_alpha": 32, "target_modules": "all-linear"}
            ),
            "20990102-000004-big/config.json": json.dumps({**good, "lora_r": 1024, "lora_alpha": 2048}),
        },
        kind="model",
        private=True,
        allowed_tokens={MALLORY},
    )
    with pytest.raises(ValueError, match="was not restored: On this Space a dataset is a demo set"):
        restore.restore("20990102-000000-file", MALLORY, "mallory")
    with pytest.raises(ValueError, match="was not restored: On this Space the base model is the bundled one"):
        restore.restore("20990102-000001-dir", MALLORY, "mallory")
    with pytest.raises(ValueError, match=r"adapter/adapter_config.json describes \('LORA', 4000000, 32\)"):
        restore.restore("20990102-000003-rank", MALLORY, "mallory")
    monkeypatch.setenv("SFT_SPACE_LORA_R", "64")  # this host's limits hold for a restored run as for a Start
    with pytest.raises(ValueError, match="lora_r 1024: this Space trains LoRA ranks up to 64"):
        restore.restore("20990102-000004-big", MALLORY, "mallory")
    assert restore.restore("20990102-000002-ok", MALLORY, "mallory").name == "20990102-000002-ok"
    names = {p.name for p in rundir.runs_root().iterdir()}
    assert not {"20990102-000000-file", "20990102-000001-dir", "20990102-000003-rank", "20990102-000004-big"} & names
    assert not [n for n in names if n.endswith(".restoring")]
