"""The whole newcomer path in a real headless Chromium, watched while it happens.

Data (preview, what the model sees) -> Model (Check) -> Train (Start, the loss chart grows during the run,
Stop & save, Resume, complete) -> Chat (tuned and base reply) -> Evaluate (table and chart) -> Publish (push
to the Hub test server with a pasted token, the card preview) -> Runs (listed, its curve in the overlay), then a
reload. The charts are read back from the page itself: the SVG the plot draws, its axes' scale types and the
number of points on each line, compared with metrics.jsonl. The browser console must stay free of errors.

A screenshot per step lands in test-artifacts/newcomer/ (or $SFT_SPACE_ARTIFACTS); docs/screenshot.png comes from
test_quick_demo_page.py (the bundled model). The Hub is the local test server (tests/hub_server.py): the real one
cannot be reached here.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from helpers import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    ROOT,
    build_tiny_model,
    launched_app,
    send_and_wait_for_replies,
    use_test_hub,
    wait_until,
)
from hub_server import HubServer

TOKEN = "hf_newcomerSECRETwriteToken012345"  # fake, known to the test Hub only
ARTIFACTS = Path(os.environ.get("SFT_SPACE_ARTIFACTS", ROOT / "test-artifacts")) / "newcomer"
TRAIN_COLOUR, VALIDATION_COLOUR = "#2563eb", "#f97316"

# A run of the tiny model long enough to be watched (a few hundred steps of about 50 ms) and stopped half-way.
SETTINGS = {
    "train_minutes": 0,  # steps, not the Quick demo's 3 minutes: the run is stopped and resumed by its step
    "max_steps": 600,
    "per_device_train_batch_size": 2,
    "max_length": 128,
    "learning_rate": 0.005,
    "logging_steps": 2,
    "eval_steps": 100,
    "save_steps": 50,
    "eval_max_rows": 4,
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)"),
]

# What the page draws, read from the DOM: one entry per line of a LinePlot (stroke colour, number of points) and
# the ARIA descriptions Vega writes for its axes ("... for a linear scale with values from 0 to 600").
READ_CHART = """(id) => {
  const root = document.getElementById(id);
  if (!root) return null;
  const lines = [...root.querySelectorAll('g.mark-line path')].map(p => ({
    stroke: (p.getAttribute('stroke') || '').toLowerCase(),
    points: ((p.getAttribute('d') || '').match(/[ML]/g) || []).length}));
  const axes = [...root.querySelectorAll('g.role-axis')].map(a => a.getAttribute('aria-label') || '');
  const labels = [...root.querySelectorAll('g.role-axis-label text')].map(t => t.textContent);
  return {lines, axes, labels};
}"""


# Everything this page keeps in the browser: local and session storage and every IndexedDB store, as one string.
BROWSER_STORAGE = """async () => {
  const kept = [JSON.stringify({...localStorage}), JSON.stringify({...sessionStorage})];
  for (const info of await indexedDB.databases()) {
    const db = await new Promise((ok, fail) => {
      const request = indexedDB.open(info.name);
      request.onsuccess = () => ok(request.result);
      request.onerror = () => fail(request.error);
    });
    for (const name of db.objectStoreNames) {
      const rows = await new Promise((ok) => {
        const request = db.transaction(name).objectStore(name).getAll();
        request.onsuccess = () => ok(request.result);
        request.onerror = () => ok([]);
      });
      kept.push(JSON.stringify(rows));
    }
    db.close();
  }
  return kept.join("\\n");
}"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer() as server:
        server.users[TOKEN] = "newcomer"
        with pytest.MonkeyPatch.context() as patch:
            use_test_hub(patch, server.url, tmp_path_factory.mktemp("hf-home"))
            yield server


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    # a wider initial spread than the default tiny model so a few hundred steps visibly teach it the JSON replies
    return build_tiny_model(tmp_path_factory.mktemp("newcomer") / "tiny-llama", hidden_size=32, initializer_range=0.2)


@pytest.fixture(scope="module")
def browser_page(hub, model_folder):
    from playwright.sync_api import sync_playwright

    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    with launched_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(url)
        page.wait_for_selector("text=SFT Space", timeout=30_000)
        yield page, problems
        browser.close()


def shot(page, name: str, full_page: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def chart(page, element_id: str) -> dict:
    return page.evaluate(READ_CHART, element_id) or {"lines": [], "axes": [], "labels": []}


def points(page, element_id: str, colour: str | None = None) -> int:
    """Points on the chart's line of that colour (all lines when None)."""
    return sum(line["points"] for line in chart(page, element_id)["lines"] if colour in (None, line["stroke"]))


def chart_holds(page, train_steps: list[int], validation_steps: list[int]) -> bool:
    """The loss chart draws exactly the logged train and validation points."""
    return points(page, "loss-chart", TRAIN_COLOUR) == len(train_steps) and points(
        page, "loss-chart", VALIDATION_COLOUR
    ) == len(validation_steps)


def assert_numeric_axes(page, element_id: str) -> None:
    drawn = chart(page, element_id)
    axes = [axis for axis in drawn["axes"] if axis]  # grid lines are axes without a description
    assert len(axes) == 2 and all("linear scale" in axis for axis in axes), axes
    assert drawn["labels"] and all(
        re.fullmatch(r"[-−]?[\d.,]+(e[-−]?\d+)?[kmµ]?", label) for label in drawn["labels"]
    ), drawn["labels"]


def logged(run_dir: Path, key: str) -> list[int]:
    """Steps at which metrics.jsonl holds a finite value of `key`."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r["step"] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def state_of(page) -> str:
    return page.locator("#run-bar").inner_text()


def open_group(page, name: str) -> None:
    """Open a closed accordion of the Train settings."""
    button = page.get_by_role("button", name=re.compile(rf"^\s*{re.escape(name)}")).first  # not 'Retry ... batch'
    if "open" not in (button.get_attribute("class") or "").split():
        button.click()


def set_number(page, field: str, value) -> None:
    box = page.locator(f"#cfg-{field} input")
    box.fill(str(value))
    box.press("Tab")


def test_newcomer_path(browser_page, hub, model_folder):
    page, problems = browser_page

    # 1 Data: the demo set is preselected and previewed
    page.wait_for_selector("#dataset-counts >> text=576", timeout=30_000)
    assert "120" in page.locator("#dataset-counts").inner_text()
    assert '"intent"' in page.locator("#dataset-preview").inner_text()  # the first rows, as a table
    shot(page, "01-data")

    # 2 Model: a local folder, checked before training
    page.get_by_role("tab", name="2 Model").click()
    model_box = page.locator("#model input")
    model_box.fill(str(model_folder))
    model_box.press("Enter")
    page.locator("#check-model").click()
    page.wait_for_selector("#model-report >> text=Fits", timeout=30_000)
    report = page.locator("#model-report").inner_text()
    assert "parameters" in report and "LoRA can target these layers" in report, report
    shot(page, "02-model")

    # back to 1 Data: what the model sees, with this model's tokenizer
    page.get_by_role("tab", name="1 Data").click()
    page.get_by_role("button", name="What the model sees").click()
    page.locator("#inspect").click()
    page.wait_for_selector("#inspect-stats >> text=training rows", timeout=60_000)
    assert "576 training rows" in page.locator("#inspect-stats").inner_text()
    assert "trained" in page.locator("#inspect-view").inner_text()
    wait_until(
        lambda: page.evaluate("() => document.querySelectorAll('#length-histogram g.mark-rect path').length"),
        timeout=20,
        poll=0.3,
        what="the token-length histogram's bars",
    )
    assert_numeric_axes(page, "length-histogram")
    shot(page, "01b-what-the-model-sees")

    # 3 Train: the Quick demo says its time (the steps that fit are not measured yet); the chart is empty
    page.get_by_role("tab", name="3 Train").click()
    assert page.locator("#preset input").input_value() == "Quick demo · 3 min"
    assert points(page, "loss-chart") == 0
    for group in ("Batch", "Learning rate", "Monitoring", "Sequence"):
        open_group(page, group)
    for field, value in SETTINGS.items():
        set_number(page, field, value)
    page.locator("#start").click()
    page.wait_for_function("() => /running/.test(document.getElementById('run-bar').innerText)", timeout=60_000)
    run_id = re.search(r"Run: (\S+)", state_of(page)).group(1)
    run_dir = Path(os.environ["SFT_SPACE_HOME"]) / "runs" / run_id
    assert "ETA measuring…" in state_of(page) or "loading" in state_of(page)

    # while it runs: the curve grows, it plots exactly what metrics.jsonl holds, on numeric axes
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) >= 3,
        timeout=120,
        poll=0.3,
        what="the live loss chart to draw a train curve",
    )
    assert "running" in state_of(page), "the chart should draw during the run, not after it"
    page.evaluate("() => document.querySelectorAll('.toast-close').forEach(button => button.click())")
    page.wait_for_timeout(2500)  # a few more points, and the 'started' note gone
    shot(page, "03-train-live")
    assert_numeric_axes(page, "loss-chart")
    on_file = len(logged(run_dir, "loss"))
    drawn = points(page, "loss-chart", TRAIN_COLOUR)
    assert drawn <= len(logged(run_dir, "loss")), "the chart shows points that metrics.jsonl does not hold"
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) >= on_file + 1,
        timeout=30,
        poll=0.3,
        what="the chart to follow metrics.jsonl",
    )
    assert "running" in state_of(page)
    assert re.search(r"ETA \d+:\d\d", state_of(page)), state_of(page)
    live_speed = float(re.search(r"(\d+) tok/s", state_of(page)).group(1))
    page.get_by_role("button", name="Learning rate and gradient norm").click()
    wait_until(
        lambda: points(page, "lr-chart") >= 3 and points(page, "grad-chart") >= 3,
        timeout=30,
        poll=0.3,
        what="the learning-rate and gradient-norm charts",
    )
    assert_numeric_axes(page, "lr-chart")

    # Stop & save half-way: the chart then matches the file exactly
    page.locator("#stop").click()
    wait_until(lambda: "stopped" in state_of(page), timeout=120, poll=0.5, what="the run to stop")
    stopped_at = logged(run_dir, "loss")
    assert len(stopped_at) < SETTINGS["max_steps"] // SETTINGS["logging_steps"], "stopped before the end"
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) == len(logged(run_dir, "loss")),
        timeout=20,
        poll=0.5,
        what="the chart to show every logged training loss",
    )
    assert "resumable from step" in state_of(page)
    shot(page, "04-train-stopped")

    # Resume: the curve continues from the checkpoint while the run goes on, then completes
    page.locator("#resume").click()
    page.wait_for_function("() => /running/.test(document.getElementById('run-bar').innerText)", timeout=60_000)
    wait_until(
        lambda: (
            points(page, "loss-chart", TRAIN_COLOUR) > len(stopped_at) - 25 // SETTINGS["logging_steps"]
            and "running" in state_of(page)
            and logged(run_dir, "loss")[-1] > stopped_at[-1]
        ),
        timeout=120,
        poll=0.3,
        what="the resumed run to add points",
    )
    shot(page, "05-train-resumed")
    wait_until(lambda: "completed" in state_of(page), timeout=300, poll=1, what="the run to complete")
    train_steps, validation_steps = logged(run_dir, "loss"), logged(run_dir, "eval_loss")
    assert train_steps[-1] == SETTINGS["max_steps"] and train_steps == sorted(set(train_steps))
    wait_until(
        lambda: chart_holds(page, train_steps, validation_steps),
        timeout=20,
        poll=0.5,
        what="the finished chart to hold every logged loss",
    )
    assert len(validation_steps) >= 6  # every 100 steps
    assert_numeric_axes(page, "loss-chart")
    assert "took" in state_of(page) and page.locator("#health").inner_text().strip()
    speed = float(re.search(r"(\d+) tok/s", state_of(page)).group(1))
    assert live_speed / 3 < speed < live_speed * 3, "after a resume, tokens/s counts only the resumed part's tokens"
    assert "100.0%" in page.locator("#run-progress .fill").first.get_attribute("style").replace(" ", "")
    shot(page, "06-train-completed")

    # the preset now shows the steps that fit in its 3 minutes at the pace measured for this model
    page.get_by_role("tab", name="2 Model").click()
    page.get_by_role("tab", name="3 Train").click()
    wait_until(
        lambda: re.search(r"3 min · about \d+ steps here", page.locator("#preset input").input_value()),
        timeout=20,
        poll=0.5,
        what="the preset to show a measured duration",
    )
    assert page.locator("#cfg-max_steps input").input_value() == str(SETTINGS["max_steps"])  # the edits stay

    # 4 Chat: the tuned model and the base model answer the same message
    page.get_by_role("tab", name="4 Chat").click()
    wait_until(
        lambda: page.locator("#chat-run input").input_value() == run_id,
        timeout=20,
        poll=0.5,
        what="the chat to pick the run",
    )
    send_and_wait_for_replies(page, "Table for two at 7pm on Friday, name Sam")
    shot(page, "07-chat")

    # 5 Evaluate: the table, then the prompting comparison and its chart
    page.get_by_role("tab", name="5 Evaluate").click()
    wait_until(
        lambda: page.locator("#eval-run input").input_value() == run_id,
        timeout=20,
        poll=0.5,
        what="the evaluation to pick the run",
    )
    set_eval = page.locator("#eval-count input")
    set_eval.fill("4")
    set_eval.press("Tab")
    page.locator("#evaluate").click()
    wait_until(
        lambda: "perplexity" in page.locator("#eval-table").inner_text(),
        timeout=180,
        poll=0.5,
        what="the evaluation table",
    )
    assert re.search(r"\d+\.\d{3}", page.locator("#eval-table").inner_text())
    # a demo set is scored on its test split (never trained on), per field, with the share of ended turns
    about = page.locator("#eval-about").inner_text()
    assert "test rows (never trained on nor used to choose settings)" in about and "4 held-out prompts" in about
    assert all(f"field '{f}' right" in page.locator("#eval-table").inner_text() for f in ("intent", "time"))
    page.locator("#compare-baselines").click()
    wait_until(lambda: chart(page, "baseline-chart-0")["axes"], timeout=240, poll=0.5, what="the prompting comparison")
    table = page.locator("#baseline-table").inner_text()
    assert all(label in table for label in ("base, zero-shot", "base + instructions", "base, few-shot", "tuned"))
    bars = page.evaluate("() => document.querySelectorAll('#baseline-chart-0 g.mark-rect path').length")
    assert bars == 4, "a bar per approach"
    shot(page, "08-evaluate", full_page=True)

    # 6 Publish: the card preview, then a push with a pasted token
    page.get_by_role("tab", name="6 Publish").click()
    wait_until(
        lambda: page.locator("#publish-repo textarea").input_value(),
        timeout=20,
        poll=0.5,
        what="a default repository name",
    )
    card = page.locator("#model-card").inner_text()
    assert "LoRA" in card and "loss" in card.lower(), card[:500]
    assert page.locator("#model-card img").first.get_attribute("src").startswith("data:image/png")  # the loss curve
    page.locator("#publish-token input, #publish-token textarea").fill(TOKEN)
    page.locator("#push").click()
    page.wait_for_selector("#push-result >> text=Pushed the LoRA adapter", timeout=120_000)
    repo = page.locator("#publish-repo textarea").input_value()
    assert ("model", f"newcomer/{repo}") in hub.repos
    assert "README.md" in hub.repos[("model", f"newcomer/{repo}")].files
    shot(page, "09-publish", full_page=True)
    stored = page.evaluate(BROWSER_STORAGE)
    assert TOKEN not in stored, "the pasted token must not be kept by the browser (run history, storage)"
    assert "runs" not in page.locator("footer").inner_text().lower()  # no run history to reload calls from

    # Runs: the run is listed, its curve in the overlay
    page.get_by_role("tab", name="Runs").click()
    wait_until(
        lambda: run_id in page.locator("#runs-table").inner_text(),
        timeout=20,
        poll=0.5,
        what="the run in the Runs table",
    )
    page.locator("#compare-runs label").filter(has_text=run_id).click()
    wait_until(
        lambda: points(page, "runs-chart") == len(validation_steps),
        timeout=20,
        poll=0.5,
        what="the run's validation curve in the overlay",
    )
    assert_numeric_axes(page, "runs-chart")
    shot(page, "10-runs")

    # a reload shows the same curves
    page.reload()
    page.wait_for_selector("text=SFT Space", timeout=30_000)
    page.get_by_role("tab", name="3 Train").click()
    wait_until(
        lambda: chart_holds(page, train_steps, validation_steps),
        timeout=30,
        poll=0.5,
        what="the chart after a reload",
    )
    shot(page, "11-reloaded")

    assert "Traceback" not in page.content()
    assert problems == [], problems


def test_a_timed_run_in_the_page(browser_page, model_folder):
    """Train for N minutes as a visitor sees it: the run bar says the time limit and counts down to a predicted
    last step while the loss curve grows, and the run completes inside its minutes (its epochs would take far
    longer), the learning rate falling to near zero by then. The visitor's second run: it continues the page of
    test_newcomer_path (its charts drawn, its run on the Runs tab)."""
    page, problems = browser_page
    page.get_by_role("tab", name="2 Model").click()
    model_box = page.locator("#model input")
    model_box.fill(str(model_folder))
    model_box.press("Enter")
    page.get_by_role("tab", name="3 Train").click()
    page.locator("#preset input").click()
    page.get_by_role("option", name=re.compile(r"^Thorough demo")).click()  # a timed preset: 12 minutes
    wait_until(
        lambda: page.locator("#cfg-train_minutes input").input_value() == "12",
        timeout=20,
        poll=0.3,
        what="the preset to fill the minutes",
    )
    for group in ("Duration", "Sequence", "Monitoring"):
        open_group(page, group)
    for field, value in {"train_minutes": 0.5, "num_train_epochs": 100, "max_length": 128, "logging_steps": 2}.items():
        set_number(page, field, value)
    page.locator("#start").click()
    page.wait_for_function("() => /running/.test(document.getElementById('run-bar').innerText)", timeout=60_000)
    run_id = re.search(r"Run: (\S+)", state_of(page)).group(1)
    run_dir = Path(os.environ["SFT_SPACE_HOME"]) / "runs" / run_id
    wait_until(
        lambda: points(page, "loss-chart", TRAIN_COLOUR) >= 3 and re.search(r"step \d+/\d+", state_of(page)),
        timeout=30,
        poll=0.3,
        what="the curve and the step count of a timed run",
    )
    live = state_of(page)
    assert "running" in live and "time limit 0:30" in live, live
    predicted = int(re.search(r"step \d+/(\d+)", live).group(1))
    assert predicted < 100 * 576 // 4, live  # the steps the minutes allow, not the hundred epochs
    shot(page, "12-timed-live")
    wait_until(lambda: "completed" in state_of(page), timeout=60, poll=0.5, what="the timed run to complete")
    done = state_of(page)
    assert re.search(r"took 0:\d\d", done), done
    status = json.loads((run_dir / "status.json").read_text())
    assert status["timed_schedule"]["ended_at_step"] == status["step"] and status["elapsed_seconds"] <= 30, status
    rates = [m["learning_rate"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "learning_rate" in m]  # fmt: skip
    assert rates[-1] < 0.15 * max(rates), rates[-5:]
    shot(page, "13-timed-completed")

    # Runs: one run's curve, then both: the comparison is drawn again with a colour for each run
    page.get_by_role("tab", name="Runs").click()
    wait_until(lambda: run_id in page.locator("#runs-table").inner_text(), timeout=20, poll=0.5, what="the run")
    labels = page.locator("#compare-runs label")
    assert labels.count() == 2
    labels.filter(has_text=run_id).click()
    wait_until(lambda: len(chart(page, "runs-chart")["lines"]) == 1, timeout=20, poll=0.5, what="one curve")
    labels.filter(has_not_text=run_id).click()
    wait_until(
        lambda: len(chart(page, "runs-chart")["lines"]) == 2,
        timeout=20,
        poll=0.5,
        what="two runs' curves in the overlay",
    )
    shot(page, "14-runs-compared")
    assert "Traceback" not in page.content()
    assert problems == [], problems
