"""The Quick demo as a newcomer first meets it: the bundled SmolLM2-135M-Instruct, the page's own defaults, in Chromium.

Nothing is changed on the page: the Quick demo preset and demo:json-extract are preselected, Start trains for 3
minutes. While it runs the loss curve grows and, from the first evaluation on, the probe column shows the model's
replies turning into the JSON the set teaches; then the run completes and its last probe replies are JSON objects of
the set's schema. The live screenshot lands in test-artifacts/quick-demo/live.png; `make screenshot` runs this test
with SFT_SPACE_SCREENSHOT=docs/screenshot.png, which copies it there (the README's main picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import CHROMIUM, CHROMIUM_FLAGS, ROOT, launched_app, wait_until

ARTIFACTS = Path(os.environ.get("SFT_SPACE_ARTIFACTS", ROOT / "test-artifacts")) / "quick-demo"
INTENTS = {"book_table", "order_product", "cancel_order", "schedule_delivery", "report_issue"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)"),
]

# The probe table's rows as the page shows them (Gradio's virtual table): [step, reply 1, reply 2, ...]
READ_PROBES = """() => [...document.querySelectorAll('#probe-table .virtual-row')].map(
  row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))"""
TRAIN_POINTS = """() => [...document.querySelectorAll('#loss-chart g.mark-line path')]
  .filter(p => (p.getAttribute('stroke') || '').toLowerCase() === '#2563eb')
  .map(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length).reduce((a, b) => a + b, 0)"""


def json_objects(replies: list[str]) -> list[dict]:
    found = []
    for reply in replies:
        try:
            value = json.loads(reply)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def test_the_quick_demo_on_the_bundled_model_shows_readable_replies(sft_home):
    from playwright.sync_api import sync_playwright

    from sft_space.models.bundled import ensure_bundled_model

    ensure_bundled_model()  # converted once, as the page's first Start would
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with launched_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1150})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(url)
        page.wait_for_selector("#dataset-counts >> text=test rows", timeout=30_000)
        page.get_by_role("tab", name="3 Train").click()
        assert page.locator("#preset input").input_value().startswith("Quick demo")
        page.locator("#start").click()
        bar = page.locator("#run-bar")
        wait_until(lambda: "running" in bar.inner_text(), timeout=60, poll=0.5, what="the run to start")

        # while it runs: the curve grows, and the first evaluation's probe replies appear beside it
        wait_until(lambda: page.evaluate(TRAIN_POINTS) >= 20, timeout=240, poll=1, what="the loss curve")
        wait_until(
            lambda: any(row and row[0] == "100" for row in page.evaluate(READ_PROBES)),
            timeout=240,
            poll=1,
            what="the probe replies of the evaluation at step 100",
        )
        assert "running" in bar.inner_text(), "the replies should show during the run, not after it"
        assert re.search(r"ETA \d+:\d\d", bar.inner_text()), bar.inner_text()
        page.evaluate("() => document.querySelectorAll('.toast-close').forEach(button => button.click())")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "live.png"))
        rows = page.evaluate(READ_PROBES)
        base_row = next(row for row in rows if row[0].startswith("0"))
        step_100 = next(row for row in rows if row[0] == "100")
        # the base model answers in prose; after 100 steps the replies are the set's JSON
        assert len(json_objects(step_100[1:])) > len(json_objects(base_row[1:])), rows
        assert all(obj.get("intent") in INTENTS for obj in json_objects(step_100[1:])), step_100

        wait_until(lambda: "completed" in bar.inner_text(), timeout=300, poll=2, what="the run to complete")
        last = page.evaluate(READ_PROBES)[-1]
        replies = json_objects(last[1:])
        assert len(replies) == len(last) - 1, last  # every probe reply is one JSON object ...
        assert all(list(r) == ["intent", "name", "date", "time", "quantity", "item"] for r in replies), last
        page.screenshot(path=str(ARTIFACTS / "completed.png"))
        browser.close()
    assert not problems, problems
    if os.environ.get("SFT_SPACE_SCREENSHOT"):
        shutil.copyfile(ARTIFACTS / "live.png", ROOT / os.environ["SFT_SPACE_SCREENSHOT"])
