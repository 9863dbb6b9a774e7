"""The page in a real headless Chromium: it renders, the four steps are there, a bad value shows a readable error."""

import shutil

import pytest

from helpers import CHROMIUM, CHROMIUM_FLAGS, launched_app

pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)"
)


@pytest.fixture(scope="module")
def page_url():
    with launched_app() as url:
        yield url


@pytest.fixture(scope="module")
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_url)
        page.wait_for_selector("text=SFT Space", timeout=30_000)
        yield page
        browser.close()


def test_steps_in_order_and_data_preview(page, tmp_path):
    tabs = [t.inner_text().strip() for t in page.locator("[role=tab]").all()]
    assert tabs[:4] == ["1 Data", "2 Model", "3 Train", "4 Chat"]
    page.wait_for_selector("#dataset-counts >> text=576", timeout=20_000)
    assert "64 validation rows · 120 test rows" in page.locator("#dataset-counts").inner_text()
    page.screenshot(path=str(tmp_path / "data.png"))


def test_train_tab_shows_groups_preset_and_a_readable_error(page, tmp_path):
    page.get_by_role("tab", name="3 Train").click()
    for group in ("Duration", "Batch", "Learning rate", "Monitoring", "Sequence", "LoRA"):
        assert page.get_by_role("button", name=group).first.is_visible(), group
    assert "Quick demo" in page.locator("#preset input").input_value()
    page.get_by_role("button", name="Learning rate").first.click()  # the group starts closed
    lr = page.locator("#cfg-learning_rate input")
    lr.fill("0")
    lr.press("Tab")
    page.locator("#start").click()
    toast = page.wait_for_selector("text=learning_rate must be above 0", timeout=20_000)
    assert toast.is_visible()
    assert "Traceback" not in page.content()
    page.screenshot(path=str(tmp_path / "train.png"))


def test_model_check_in_the_page(page, tmp_path):
    page.get_by_role("tab", name="2 Model").click()
    page.locator("#check-model").click()
    report = page.wait_for_selector("#model-report >> text=Fits", timeout=30_000)
    text = page.locator("#model-report").inner_text()
    assert report.is_visible() and "135M parameters" in text and "LoRA can target these layers" in text
    page.screenshot(path=str(tmp_path / "model.png"))


def test_publish_tab_without_a_run_says_what_to_do(page, tmp_path):
    page.get_by_role("tab", name="6 Publish").click()
    page.wait_for_selector("#model-card >> text=Train a run", timeout=20_000)
    assert page.locator("#push").is_visible() and not page.locator("#push-retry").is_visible()
    assert "paste a write token" in page.locator("#sign-in-state").inner_text()
