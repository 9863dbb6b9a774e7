"""Take the README screenshot: launch the app, open a tab in headless Chromium, save a PNG.

    .venv/bin/python docs/take_screenshot.py [--tab "3 Train"] [--out docs/screenshot.png]

Shows whatever runs exist under $SFT_SPACE_HOME (train one first for a chart).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tab", default="3 Train")
    parser.add_argument("--out", default=str(Path(__file__).with_name("screenshot.png")))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1050)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from sft_space.ui import build_app, launch_kwargs

    demo = build_app()
    demo.queue()
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.goto(url)
        page.wait_for_selector("text=SFT Space")
        page.get_by_role("tab", name=args.tab).click()
        page.wait_for_timeout(5000)  # let the timer fill the chart
        page.screenshot(path=args.out, full_page=False)
        browser.close()
    demo.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
