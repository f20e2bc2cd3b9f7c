"""Drive the web app without a screen: ``mrisynthesis serve`` in a child process on a free loopback port, and
headless Chromium through Playwright (DevTools protocol). Used by the browser tests and by
``Resources/Screenshots/make_web_screenshot.py``; needs the test extras and Debian's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# Without the background-networking flags Chromium keeps trying hosts this sandboxed machine cannot reach.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``mrisynthesis serve --port <free> --downloads <folder> [extra]``; waits until the page answers.

    Args:
        folder: gets ``downloads/``, ``home/`` (an empty ``MRISYNTHESIS_HOME``: bundled models only) and the log.
    """

    def __init__(self, folder: Path, *extra: str, timeout: float = 120.0):
        folder = Path(folder)
        self.port = free_port()
        self.downloads = folder / "downloads"
        self.log_path = folder / "serve.log"
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "MRISYNTHESIS_HOME": str(folder / "home"), "OMP_NUM_THREADS": "1"}
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "MRISynthesisLib.cli", "serve", "--port", str(self.port), "--downloads",
                 str(self.downloads), *extra], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited: " + self.log_path.read_text()[-3000:])
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the server did not answer within {timeout:.0f} s")

    def workers(self) -> list:
        """Worker processes (synthesis runs) below the server."""
        import psutil

        return [child for child in psutil.Process(self.process.pid).children(recursive=True)
                if "MRISynthesisLib.worker" in " ".join(child.cmdline())]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def open_page(browser, url: str, width: int = 1400, height: int = 900):
    """A new page on ``url``, returned once the trame client has its state."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url)
    page.wait_for_function("window.trame && window.trame.state && window.trame.state.get('status')", timeout=60_000)
    return page
