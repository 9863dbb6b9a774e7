"""A ZeroGPU page in a real headless Chromium, as a ZeroGPU Space runs it: SYSTEM=spaces (Gradio hands every handler to
the package's gradio_auto_wrap, a no-op unless SPACES_GRADIO_AUTO_WRAP is set, as on a Space), SPACE_ID (a public
Space's rules), the Space's OAuth variables, the REAL `spaces` package (imported first, as app.py does) against the
local device API (tests/zerogpu/device_api.py: what cannot exist here) with the few torch attributes a CPU build
lacks (tests/zerogpu/cpu_torch.py), and the model a Hub id served by the local Hub-compatible server (a public Space
takes no model folder). A visitor starts the Quick demo in GPU slots, watches the slots and one continuous curve
while it trains, and chats with the result; another run's page is closed between slots (the run pauses) and Resume
from a new page completes it. Screenshots, the server's log and the device API's calls land in
test-artifacts/zerogpu/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_newcomer_path import TRAIN_COLOUR, logged, open_group, points, set_number, state_of
from zerogpu.device_api import DeviceAPI

from helpers import CHROMIUM, CHROMIUM_FLAGS, ROOT, build_tiny_model, free_port, send_and_wait_for_replies, wait_until
from hub_server import HubServer

ARTIFACTS = Path(os.environ.get("SFT_SPACE_ARTIFACTS", ROOT / "test-artifacts")) / "zerogpu"
HUB_MODEL = "acme/tiny-zerogpu"
SPACE = "alice/sft-space-zero"
OAUTH = {  # a Space with hf_oauth: true (the provider is never reached here: nobody signs in)
    "OAUTH_CLIENT_ID": "client-id",
    "OAUTH_CLIENT_SECRET": "client-secret",
    "OPENID_PROVIDER_URL": "http://127.0.0.1:9/openid",
    "OAUTH_SCOPES": "openid profile",
}
SETTINGS = {"max_steps": 160, "max_length": 128, "logging_steps": 2, "eval_steps": 80, "learning_rate": 0.005}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)"),
]

SERVER = """
import os, sys
import cpu_torch  # what a CPU build of torch lacks for the real package (tests/zerogpu/cpu_torch.py)
import spaces  # first, as app.py does on ZeroGPU
from sft_space.runs import queue
from sft_space.ui import build_app, launch_kwargs, queue_kwargs
queue.start_queue_worker()
demo = build_app()
demo.queue(**queue_kwargs()).launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True,
                                                **launch_kwargs())
"""


@pytest.fixture(scope="module")
def zerogpu_page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("zerogpu-home")
    model = build_tiny_model(tmp_path_factory.mktemp("zerogpu") / "tiny-llama", hidden_size=32, initializer_range=0.2)
    api = DeviceAPI().__enter__()
    hub = HubServer().__enter__()
    hub.add_repo(HUB_MODEL, {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}, kind="model")
    port = free_port()
    env = {
        **os.environ,
        **OAUTH,
        "SYSTEM": "spaces",
        "SPACE_ID": SPACE,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(home / "hf-home"),
        "SFT_SPACE_HOME": str(home),
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": api.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "zerogpu"), str(ROOT)]),
        "SFT_SPACE_SLOT_SECONDS": "8",  # short slots, so the run takes several
        "SFT_SPACE_SLOT_SAVE_SECONDS": "3",
    }
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        env.pop(name, None)
    output = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
    )
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: _up(url) or server.poll() is not None, timeout=120, what="the ZeroGPU app to start")
        assert server.poll() is None, (home / "server.log").read_text()[-3000:]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            context = browser.new_context(viewport={"width": 1400, "height": 1050})  # its pages: one visitor
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "response",
                lambda r: problems.append(f"HTTP {r.status}: {r.url} {r.text()[:300]}") if r.status >= 400 else None,
            )
            page.goto(url)
            page.wait_for_selector("text=SFT Space", timeout=30_000)
            yield page, problems, home, model, api
            browser.close()
    finally:
        api.__exit__()
        hub.__exit__()
        (ARTIFACTS / "device-api-calls.json").write_text(json.dumps(api.calls, indent=1))
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        output.close()
        shutil.copy(home / "server.log", ARTIFACTS / "server.log")


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def started(page) -> None:
    """The run's first slot announced in the run bar (else: what the page said instead)."""
    try:
        page.wait_for_function("() => /slot 1/.test(document.getElementById('run-bar').innerText)", timeout=60_000)
    except Exception:
        shot(page, "not-started")
        toasts = page.locator(".toast-body").all_inner_texts()
        raise AssertionError(f"no slot 1: run bar {state_of(page)!r}, messages {toasts}") from None


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_a_visitor_trains_the_quick_demo_in_gpu_slots_and_chats(zerogpu_page):
    page, problems, home, model, api = zerogpu_page
    assert "ZeroGPU" in page.locator("#hardware").inner_text()
    assert "trains in GPU slots" in page.locator("#storage-note").inner_text()

    page.get_by_role("tab", name="2 Model").click()
    box = page.locator("#model input")
    box.fill(HUB_MODEL)
    box.press("Enter")
    page.get_by_role("tab", name="3 Train").click()
    box = page.locator("#back-up input")  # not signed in: no backup offered as if it would happen
    wait_until(lambda: "Sign in" in page.locator("#back-up").inner_text(), timeout=20, what="the backup box's note")
    assert not box.is_checked() and box.is_disabled()
    preset = page.locator("#preset input").input_value()
    assert preset.startswith("Quick demo (GPU slots)") and "in GPU slots of up to 8 s" in preset, preset
    for group in ("Batch", "Learning rate", "Monitoring", "Sequence"):
        open_group(page, group)
    for field, value in SETTINGS.items():
        set_number(page, field, value)
    page.locator("#start").click()
    started(page)
    run_id = re.search(r"Run: (\S+)", state_of(page)).group(1)
    run_dir = home / "runs" / run_id

    # while it trains: the second slot is announced with the GPU seconds used, and the curve goes on across slots
    wait_until(
        lambda: re.search(r"slot 2 of about \d+ · \d+ s of GPU used", state_of(page)),
        timeout=120,
        poll=0.3,
        what="the second slot in the run bar",
    )
    page.evaluate("() => document.querySelectorAll('.toast-close').forEach(button => button.click())")
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) >= 5 and "running" in state_of(page),
        timeout=60,
        poll=0.3,
        what="the loss curve drawn during slot 2",
    )
    shot(page, "01-training-in-slots")
    wait_until(lambda: "completed" in state_of(page), timeout=300, poll=1, what="the run to complete")
    status = json.loads((run_dir / "status.json").read_text())
    assert len(status["slot_log"]) >= 2 and status["step"] == SETTINGS["max_steps"], status.get("slot_log")
    steps = logged(run_dir, "loss")
    assert steps == sorted(set(steps)) and steps[-1] == SETTINGS["max_steps"]  # one curve, each step once
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) == len(steps),
        timeout=20,
        poll=0.5,
        what="the chart to draw every logged step",
    )
    assert re.search(r"slots \d+ · \d+ s of GPU used", state_of(page)), state_of(page)
    shot(page, "02-completed")
    granted = [c for c in api.calls if c["call"] == "release"]
    assert len(granted) >= len(status["slot_log"])  # a GPU call per slot (and the page's other handlers' calls)
    assert api.calls[0]["call"] == "startup-report"  # the package reported the app's start, as on a Space

    # chat with the result: each reply is a GPU call of its own (a worker of the package, reused while idle)
    before = len([c for c in api.calls if c["call"] == "release"])
    page.get_by_role("tab", name="4 Chat").click()
    wait_until(lambda: page.locator("#chat-run input").input_value() == run_id, timeout=20, what="the chat's run")
    send_and_wait_for_replies(page, "Table for two at 7pm on Friday, name Sam")
    shot(page, "03-chat")
    wait_until(
        lambda: len([c for c in api.calls if c["call"] == "release"]) > before, timeout=30, what="the chat's GPU call"
    )
    assert not [c for c in api.calls if c["call"] == "release" and c["fail"]]  # every GPU call ended well
    assert not problems, problems


def test_closing_the_page_between_slots_pauses_the_run_and_resume_completes_it(zerogpu_page):
    """A run's page is closed while its slots go on: Gradio closes the page's request, the driver asks for no other
    slot and pauses the run ("the page asking for its GPU slots was closed", its last checkpoint's adapter kept). The
    same visitor (the same browser) opens it from the Runs tab on a new page and presses Resume: the slots go on
    from the checkpoint and the run completes, every step once."""
    page, problems, home, model, api = zerogpu_page
    steps = 1500  # more than two 8 s slots train (about 180 steps a slot here)
    first = page.context.new_page()
    first.goto(page.url)
    first.wait_for_selector("text=SFT Space", timeout=30_000)
    first.get_by_role("tab", name="2 Model").click()
    box = first.locator("#model input")
    box.fill(HUB_MODEL)
    box.press("Enter")
    first.get_by_role("tab", name="3 Train").click()
    for group in ("Batch", "Learning rate", "Monitoring", "Sequence"):
        open_group(first, group)
    for field, value in {**SETTINGS, "max_steps": steps}.items():
        set_number(first, field, value)
    before = len([c for c in api.calls if c["call"] == "schedule"])
    first.locator("#start").click()
    started(first)
    wait_until(lambda: re.search(r"slot 2 of about \d+", state_of(first)), timeout=120, poll=0.3, what="slot 2")
    run_id = re.search(r"Run: (\S+)", state_of(first)).group(1)
    run_dir = home / "runs" / run_id
    first.close()  # the tab closed while slot 2 trains

    def status() -> dict:
        return json.loads((run_dir / "status.json").read_text())

    wait_until(lambda: status().get("state") == "stopped", timeout=90, poll=0.5, what="the run to pause")
    paused = status()
    assert "the page asking for its GPU slots was closed" in paused["note"], paused.get("note")
    assert 0 < paused["step"] < steps and (run_dir / "adapter" / "adapter_model.safetensors").is_file(), paused
    asked = [c for c in api.calls if c["call"] == "schedule"][before:]
    assert len(asked) == len(paused["slot_log"]) == 2, paused["slot_log"]  # slot 2 (under way at the close) ended
    time.sleep(3)
    assert len([c for c in api.calls if c["call"] == "schedule"]) == before + 2  # and no slot was asked for after

    second = page.context.new_page()  # the same browser: the same visitor (its id is kept by the browser)
    second.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    second.goto(page.url)
    second.wait_for_selector("text=SFT Space", timeout=30_000)
    second.get_by_role("tab", name="Runs").click()
    wait_until(lambda: run_id in second.locator("#runs-table").inner_text(), timeout=30, what="the run listed")
    choice = second.locator("#open-run input")
    choice.fill(run_id)
    choice.press("Enter")
    second.get_by_role("button", name="Open", exact=True).click()
    second.get_by_role("tab", name="3 Train").click()
    wait_until(lambda: "stopped" in state_of(second), timeout=30, what="the paused run in the run bar")
    shot(second, "04-paused-after-the-page-closed")
    second.locator("#resume").click()
    wait_until(lambda: "completed" in state_of(second), timeout=400, poll=1, what="the resumed run to complete")
    done = status()
    assert done["step"] == steps, done
    logged_steps = logged(run_dir, "loss")
    assert logged_steps == sorted(set(logged_steps)) and logged_steps[-1] == steps  # every step once, in order
    resumed = done["slot_log"][len(paused["slot_log"]) :]
    assert resumed and resumed[0]["from_step"] == paused["step"], done["slot_log"]  # from the checkpoint it kept
    shot(second, "05-resumed-and-completed")
    assert not problems, problems
