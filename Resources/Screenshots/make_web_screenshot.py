"""Render ``MRISynthesis-web.png``: the web app (``mrisynthesis serve``) after ``myelin-psr`` on the demo case.

Needs the demo case (``./scripts/demo.sh`` writes ``demo/case/sub-2026``), the web and test extras and
Debian's ``chromium``. Loads the case through the page's server-folder list (``--data``), runs the balanced
preset with the bundled models, clicks the largest lesion in the table and saves the page.
Prints what it measures on the way: seconds until the page answers, the run's status line (its duration) and
the server's memory after the run. Run: ``python Resources/Screenshots/make_web_screenshot.py [CASE_DIR]``.
"""

import sys
import tempfile
import time
from pathlib import Path

import psutil
from playwright.sync_api import sync_playwright
from PIL import Image

from MRISynthesisLib.web.headless import CHROMIUM_ARGS, ServerProcess, chromium_path, open_page

if __name__ == "__main__":
    case = Path(sys.argv[1] if len(sys.argv) > 1 else "demo/case/sub-2026").resolve()
    if not (case / "flair.nii.gz").exists():
        sys.exit(f"{case} has no flair.nii.gz: run ./scripts/demo.sh first")
    target = Path(__file__).with_name("MRISynthesis-web.png")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        started = time.monotonic()
        server = ServerProcess(Path(folder), "--data", str(case))
        print(f"page answers after {time.monotonic() - started:.1f} s")
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, server.url, 1600, 1000)
            page.evaluate("window.trame.state.set('data_choice', ['mprage.nii.gz', 'flair.nii.gz'])")
            page.locator(".mrs-load-data").click()
            page.wait_for_function("window.trame.state.get('volumes').length === 2", timeout=120_000)
            page.locator(".mrs-run").click()
            page.wait_for_function("window.trame.state.get('run_state') === 'running'", timeout=30_000)
            page.wait_for_function("window.trame.state.get('run_state') !== 'running'", timeout=900_000)
            print(page.evaluate("window.trame.state.get('status')"))
            print(f"server memory after the run: {psutil.Process(server.process.pid).memory_info().rss / 2**30:.2f} GB")
            page.locator(".mrs-lesion-table tbody tr").first.click()
            page.wait_for_timeout(2500)
            page.screenshot(path=str(target))
            Image.open(target).convert("RGB").quantize(256).save(target, optimize=True)  # ~4x smaller PNG
            print(f"wrote {target}")
        finally:
            browser.close()
            server.stop()
