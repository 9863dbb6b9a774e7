"""Strangers on one Space: two gradio_client sessions queue behind each other and cannot see or stop each other's
runs."""

import json
import subprocess
import sys

import pytest
from gradio_client import Client

from sft_space import rundir
from sft_space.config import RunConfig
from sft_space.runs import lifecycle as runs
from sft_space.runs import liveness
from sft_space.runs import queue as run_queue
from sft_space.training import estimates

from helpers import ROOT, app_settings, launched_app, run_id_of, wait_until


@pytest.fixture(scope="module")
def app_url():
    with launched_app() as url:
        yield url


def test_two_visitors_queue_and_stay_apart(app_url, tiny_model, monkeypatch):
    monkeypatch.setenv("SFT_SPACE_RUNS_PER_VISITOR", "1")  # a public host's default; a laptop has no cap
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    alice_run = run_id_of(alice.predict(**app_settings(tiny_model, 3000), api_name="/start_run"))
    wait_until(lambda: rundir.read_status(alice_run).get("step", 0) >= 2, timeout=120, what="alice's run to train")
    with pytest.raises(Exception, match="You already have a run training or waiting"):  # one run at a time each
        alice.predict(**app_settings(tiny_model, 4), api_name="/start_run")

    bob_bar = bob.predict(**app_settings(tiny_model, 4), api_name="/start_run")
    bob_run = run_id_of(bob_bar)
    assert "queued" in bob_bar and "position 1 of 1 in the queue" in bob_bar and "estimated wait" in bob_bar

    bob_view = bob.predict(api_name="/run_status")[0]
    assert bob_run in bob_view and alice_run not in bob_view  # bob sees his own queued run, not alice's
    with pytest.raises(Exception, match="belongs to another visitor"):
        bob.predict(alice_run, api_name="/open_run")
    assert rundir.read_status(alice_run)["state"] == "running"  # bob could not touch it

    alice.predict(api_name="/stop_run")  # alice's Stop & save frees the device...
    assert run_queue.wait_for(alice_run, timeout=120)["state"] == "stopped"
    status = wait_until(
        lambda: runs.refresh(bob_run) if runs.refresh(bob_run)["state"] == "completed" else None,
        timeout=180,
        what="bob's run to start by itself and finish",
    )  # ...and bob's starts
    assert status["step"] == 4
    assert rundir.read_status(bob_run)["launched_at"] >= rundir.read_status(alice_run)["ended_at"] - 1


def test_a_restarted_app_finds_runs_interrupted_and_resumable(tiny_model, sft_home):
    config = RunConfig(**{**app_settings(tiny_model, 3000), "save_steps": 3})
    run_id = runs.start_run(config)
    wait_until(lambda: (rundir.read_status(run_id).get("last_checkpoint") or 0) >= 3, timeout=120, what="a checkpoint")
    # A Space restart takes the training process down with the app: kill it, then look with a fresh process
    # that never started it (what the restarted app is).
    liveness._children[run_id].kill()
    liveness._children[run_id].wait()
    liveness._children.pop(run_id)
    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from sft_space.runs import liveness; from sft_space.ui import text; s = liveness.refresh({run_id!r}); "
            "print(s['state']); print(text.status_line(s))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    state, line = fresh.stdout.strip().splitlines()
    assert state == "interrupted" and "resumable from step" in line
    runs.resume_run(run_id)
    wait_until(lambda: rundir.read_status(run_id).get("resumed_from"), timeout=120, what="the resumed run")
    runs.cancel_run(run_id)
    assert run_queue.wait_for(run_id, timeout=120)["state"] == "cancelled"
    assert not (rundir.run_path(run_id) / "adapter").exists()  # Cancel keeps no adapter


def test_start_refuses_when_the_disk_is_too_full(tiny_model, sft_home, monkeypatch):
    # A nearly full disk cannot be produced safely on a shared machine: the free-space reading is replaced.
    monkeypatch.setattr(estimates, "free_bytes", lambda: 5 * 2**20)
    with pytest.raises(RuntimeError, match=r"Not enough disk space: this run needs about \d+ MB .* 5 MB is free"):
        runs.start_run(RunConfig(**app_settings(tiny_model, 3)))


def test_signed_in_visitors_are_keyed_by_hub_username(monkeypatch):
    import gradio as gr
    from gradio import utils

    from sft_space.ui.visitor import OAUTH_VARIABLES, identify

    monkeypatch.setenv("SYSTEM", "spaces")  # a Space with OAuth configured (hf_oauth: true)
    for name in OAUTH_VARIABLES:
        monkeypatch.setenv(name, "set")

    # gradio injects the signed-in profile by this annotation (no Hub sign-in is possible offline)
    assert utils.get_type_hints(identify)["profile"] == (gr.OAuthProfile | None)
    profile = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""})
    key, kept = identify(None, None)
    assert key.startswith("browser:") and kept.startswith(key + ".")  # the browser keeps it signed
    assert identify(kept, profile) == ("hf:alice", kept)
    assert identify(kept, None) == (key, kept)  # a refresh is the same visitor
    monkeypatch.delenv("SYSTEM")  # no real OAuth (a copy run elsewhere): a profile is Gradio's mock, never trusted
    assert identify(kept, profile) == (key, kept)


def test_a_visitor_id_the_server_did_not_sign_is_replaced():
    """The browser's stored id is untrusted: typed in, edited, or naming a Hub user, it gets a fresh identity."""
    from sft_space.ui.visitor import identify

    key, kept = identify(None, None)
    forged = kept[:-1] + ("0" if kept[-1] != "0" else "1")
    for sent in ("hf:alice", ["hf:alice"], key, forged, "browser:abc", {"id": key}):
        new_key, new_kept = identify(sent, None)
        assert new_key not in (key, "hf:alice") and new_key.startswith("browser:"), sent
        assert identify(new_kept, None)[0] == new_key


def test_on_a_space_typed_paths_reach_no_server_file(tmp_path, monkeypatch, tiny_model):
    """On a Space a visitor's dataset is a demo set, a Hub id or their upload, the model is bundled or a Hub id, and
    a run is a plain id: a path to anything else on the server is refused with the same words whether it exists."""
    import gradio as gr

    from sft_space import home
    from sft_space.runs.cleanup import UPLOADS
    from sft_space.ui import data_tab
    from sft_space.ui.common import SOURCE_FIELDS, owned, visitor_model

    def preview(dataset):
        fields = {"dataset": dataset, "validation_share": 0.1, "data_format": "auto"}
        return data_tab.preview(*[fields.get(f, "") for f in SOURCE_FIELDS])

    secret = tmp_path / "someone-elses.jsonl"
    secret.write_text(
        "".join(
            f'{{"messages": [{{"role": "user", "content": "x{i}"}}, {{"role": "assistant", "content": "y"}}]}}\n'
            for i in range(4)
        )
    )
    assert "format" in preview(str(secret))[0]  # on a laptop: any file of the user's
    monkeypatch.setenv("SPACE_ID", "someone/sft-space")
    messages = []
    for path in (secret, tmp_path / "missing.jsonl", "../../etc/passwd.csv"):
        with pytest.raises(gr.Error) as refused:
            preview(str(path))
        messages.append(refused.value.message)
    assert len(set(messages)) == 1 and "a file you upload on the Data tab" in messages[0]
    upload = home() / UPLOADS / "abc-mine.jsonl"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_text(secret.read_text())
    assert "format" in preview(str(upload))[0]  # the visitor's own upload is fine
    assert "576" in preview("demo:json-extract")[0]
    with pytest.raises(gr.Error, match="bundled one or a Hub model id"):
        visitor_model(str(tiny_model))
    assert visitor_model("bundled") == "bundled" and visitor_model("acme/tiny") == "acme/tiny"
    for run in ("/etc", "../runs", str(rundir.runs_root())):
        with pytest.raises(gr.Error, match="There is no run"):
            owned(run, None, "open")


def raw_call(app_url: str, session: str, fn_index: int, data: list) -> list:
    """One event through Gradio's queue protocol, as a script can send it without the page or gradio_client:
    join the queue, then read the session's event stream until that event completes."""
    import json
    import urllib.request

    base = app_url.rstrip("/")
    body = json.dumps({"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None}).encode()
    request = urllib.request.Request(f"{base}/gradio_api/queue/join", body, {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    with urllib.request.urlopen(f"{base}/gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream:
            if line.startswith(b"data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message.get("output", {}).get("data") or [message.get("output")]
    return []


def test_a_forged_browser_id_sent_to_the_page_load_event_reaches_no_ones_runs(app_url, tiny_model):
    """A crafted call no button makes: the page-load event given a stored id naming someone else (`hf:alice`, or
    another visitor's key), then the run status of that session, shows none of their runs."""
    from gradio_client import Client

    victim = Client(app_url, verbose=False)
    victim_run = run_id_of(victim.predict(**app_settings(tiny_model, 2), api_name="/start_run"))
    victim_key = json.loads((rundir.run_path(victim_run) / rundir.OWNER).read_text())["owner"]
    run_queue.wait_for(victim_run, timeout=180)
    config = victim.config["dependencies"]
    # the page-load event that reads the browser's stored id: inputs [the stored id], outputs [key, id to keep]
    load = next(
        i
        for i, d in enumerate(config)
        if any(t[1] == "load" for t in d.get("targets", [])) and len(d["inputs"]) == 1 and len(d["outputs"]) == 2
    )
    status = next(i for i, d in enumerate(config) if d.get("api_name") == "run_status")
    for forged in ("hf:alice", victim_key, victim_key + ".0" * 32):
        session = f"stranger{abs(hash(forged))}"
        _, kept = raw_call(app_url, session, load, [forged])[:2]  # the session's key stays on the server
        assert kept.startswith("browser:") and not kept.startswith(victim_key) and kept != forged, forged
        bar = raw_call(app_url, session, status, [])[0]
        assert victim_run not in str(bar), forged
