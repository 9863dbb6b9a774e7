"""Pause when idle, against the local Hub-compatible server with the real huggingface_hub client (the pause request
and the runtime it asks for are the parts of the Hub that cannot be reached here): paused after the idle minutes on
paid hardware only, never while a run trains or waits, never on the free CPU or ZeroGPU; and in Chromium, the
page of a Space (SPACE_ID, a Hub model) saying when it pauses, a run keeping it awake, then the pause."""

from __future__ import annotations

import shutil
import time
from types import SimpleNamespace

import pytest

from sft_space.runs import idle_pause
from sft_space.runs import queue as run_queue

from helpers import (
    app_page,
    build_tiny_model,
    launched_app,
    load_settings_file,
    page_run_id,
    short_run_file,
    use_test_hub,
    wait_until,
)
from hub_server import HubServer

OWNER = "hf_space_owner_token_1234"
SPACE = "alice/sft-space"


def folder_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        server.users[OWNER] = "alice"
        use_test_hub(monkeypatch, server.url, tmp_path / "hf-home")
        monkeypatch.setenv("SPACE_ID", SPACE)
        monkeypatch.setenv("HF_TOKEN", OWNER)
        monkeypatch.setenv(idle_pause.VARIABLE, "1")
        # these tests drive the clock themselves (check(now=...)): a queue worker an earlier test of this session
        # started would check with the real clock meanwhile (1000 s after reset(now=1000.0) is long ago) and pause
        # first; the browser test puts the real check back
        monkeypatch.setattr(run_queue, "idle_pause", SimpleNamespace(check=lambda: False))
        idle_pause.reset(now=1000.0)
        yield server
        idle_pause.reset()


def test_paused_after_the_idle_minutes_on_paid_hardware_only(hub, monkeypatch):
    hub.add_space(SPACE, "a10g-small")
    assert idle_pause.enabled() and idle_pause.pause_at() == 1060.0
    assert "pauses at" in idle_pause.note() and "1 minutes" in idle_pause.note()
    assert not idle_pause.check(now=1059.0) and hub.paused == []
    assert idle_pause.check(now=1061.0) and hub.paused == [SPACE]
    assert hub.spaces[SPACE]["stage"] == "PAUSED"
    assert not idle_pause.check(now=2000.0) and hub.paused == [SPACE]  # once
    assert idle_pause.note() is None or "pauses at" not in idle_pause.note()
    for hardware in ("cpu-basic", "zero-a10g"):  # free: it only says so
        hub.add_space(SPACE, hardware)
        idle_pause.reset(now=1000.0)
        assert not idle_pause.check(now=5000.0) and hub.paused == [SPACE]
        assert not idle_pause.enabled()  # and stops asking
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    idle_pause.reset(now=1000.0)
    assert not idle_pause.enabled()


def test_not_without_the_owners_token_or_the_setting(hub, monkeypatch):
    hub.add_space(SPACE, "a10g-small")
    monkeypatch.delenv("HF_TOKEN")
    assert not idle_pause.check(now=5000.0) and hub.paused == []
    for value in ("", "0", "-5", "soon", "nan"):
        monkeypatch.setenv(idle_pause.VARIABLE, value)
        idle_pause.reset(now=1000.0)
        assert not idle_pause.enabled(), value


def test_never_while_a_run_trains_or_waits(hub, monkeypatch):
    hub.add_space(SPACE, "t4-small")
    monkeypatch.setattr(idle_pause, "busy", lambda: True)  # the state of the runs folder: tested in the page below
    assert not idle_pause.check(now=9000.0) and hub.paused == []
    assert idle_pause.pause_at() == 9060.0  # the idle minutes start again when the last run leaves
    monkeypatch.setattr(idle_pause, "busy", lambda: False)
    assert not idle_pause.check(now=9059.0) and idle_pause.check(now=9061.0) and hub.paused == [SPACE]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_page_says_when_then_a_run_keeps_it_awake_then_it_pauses(hub, tmp_path, monkeypatch):
    from sft_space.rundir import read_status, run_path

    monkeypatch.setattr(run_queue, "idle_pause", idle_pause)  # the queue worker pauses it, on the real clock
    model = build_tiny_model(tmp_path / "tiny")
    hub.add_repo("alice/tiny-chat", folder_files(model), kind="model")
    hub.add_space(SPACE, "a10g-small")
    minutes = 0.5
    monkeypatch.setenv(idle_pause.VARIABLE, str(minutes))
    idle_pause.reset()
    config = short_run_file(tmp_path / "config.json", "alice/tiny-chat", max_steps=60)
    with launched_app() as url, app_page(url) as page:
        note = page.wait_for_selector("#pause-note >> text=pauses itself after 0.5 minutes", timeout=30_000)
        assert "pauses at" in note.inner_text() and "unless a run starts" in note.inner_text()
        page.screenshot(path=str(tmp_path / "note.png"))
        load_settings_file(page, config)
        page.locator("#start").click()
        page.wait_for_selector("#run-bar >> text=/\\d{8}-\\d{6}-/", timeout=60_000)
        run_id = page_run_id(page)
        page.wait_for_selector("#pause-note >> text=stays awake", timeout=30_000)
        wait_until(lambda: read_status(run_path(run_id)).get("state") == "completed", timeout=300, what="the run")
        ended = time.time()
        assert hub.paused == [], "paused while a run trained"
        wait_until(lambda: hub.paused == [SPACE], timeout=minutes * 60 + 30, what="the pause")
        waited = time.time() - ended
        assert minutes * 60 - 5 <= waited, f"paused {waited:.0f} s after the run, before its {minutes} minutes"
        assert hub.spaces[SPACE]["stage"] == "PAUSED"
        page.screenshot(path=str(tmp_path / "paused.png"))


def test_page_work_keeps_it_awake_a_refusing_token_stops_it_asking(hub, monkeypatch):
    hub.add_space(SPACE, "a10g-small")
    monkeypatch.setattr(idle_pause, "activity", lambda: True)  # a chat reply or a push in the page's queue
    assert not idle_pause.check(now=5000.0) and hub.paused == []
    monkeypatch.setattr(idle_pause, "activity", lambda: False)
    hub.users["hf_reader_only_token_99"] = "bob"  # a token of someone who may not pause alice's Space
    monkeypatch.setenv("HF_TOKEN", "hf_reader_only_token_99")
    assert not idle_pause.check(now=5061.0) and hub.paused == []
    assert not idle_pause.enabled()  # refused: it stops asking
    posts = [r for r in hub.requests if r.endswith("/pause")]
    idle_pause.check(now=9999.0)
    assert [r for r in hub.requests if r.endswith("/pause")] == posts
    for value in ("inf", "1e400"):
        monkeypatch.setenv(idle_pause.VARIABLE, value)
        assert idle_pause.minutes() is None
    monkeypatch.setenv(idle_pause.VARIABLE, "1e9")
    assert idle_pause.minutes() == idle_pause.MOST_MINUTES
