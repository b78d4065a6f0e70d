"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol: open a page, take screenshots
(the viewer's browser test and its benchmark).

WebGL runs on SwiftShader (software), so pages that draw with three.js (viser) render without a GPU. The browser is
started in its own process group and stopped by that group's id: exactly what was started, its helpers included.
Its temporary files go to a folder of its own (``TMPDIR``), removed on stop: stopped by a signal, Chromium leaves its
singleton-socket folders behind. That folder is a short one under /tmp, not under the profile: a unix socket's path
must fit in 108 bytes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HeadlessChromium:
    def __init__(self, profile: Path, width: int = 960, height: int = 720) -> None:
        self.profile, self.width, self.height = Path(profile), width, height
        self.process: subprocess.Popen | None = None
        self._socket = None
        self._next_id = 0
        self.temp_dir: Path | None = None

    def start(self, timeout_s: float = 30.0) -> HeadlessChromium:
        port = free_port()
        command = [
            find_chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu-sandbox",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--ignore-gpu-blocklist",
            "--no-first-run",
            "--disable-extensions",
            f"--window-size={self.width},{self.height}",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self.temp_dir = Path(tempfile.mkdtemp(prefix="gslrm-chromium-"))
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "TMPDIR": str(self.temp_dir)},
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [p for p in json.load(response) if p.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("headless chromium did not start")
            time.sleep(0.2)
        from websockets.sync.client import connect

        self._socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout_s)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def call(self, method: str, timeout_s: float = 60.0, **params) -> dict:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str, timeout_s: float = 60.0) -> None:
        """Navigate and wait for the document to load (screenshots fail until the new page is attached)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if (
                    self.evaluate("document.readyState") == "complete"
                    and self.evaluate("location.href") != "about:blank"
                ):
                    return
            except RuntimeError:  # the old page is detached, the new one not yet attached
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout_s} s")
            time.sleep(0.1)

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, timeout_s: float = 60.0) -> np.ndarray:
        """The page as an [h, w, 3] uint8 array (a busy page answers when it has drawn its next frame)."""
        from PIL import Image

        data = self.call("Page.captureScreenshot", timeout_s=timeout_s, format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def settled_screenshot(self, changed_from: np.ndarray | None = None, timeout_s: float = 60.0) -> np.ndarray:
        """The page once two screenshots 0.7 s apart are equal (and, with ``changed_from``, it differs from that
        one somewhere by more than 24 levels): [h, w, 3] int16."""
        deadline, previous = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            time.sleep(0.7)
            shot = self.screenshot().astype(np.int16)
            moved = changed_from is None or np.abs(shot - changed_from).max() > 24
            if previous is not None and moved and np.array_equal(shot, previous):
                return shot
            previous = shot
        raise TimeoutError(f"the page did not settle in {timeout_s} s")

    def dismiss_notifications(self) -> None:
        """Close the page's pop-up notifications (viser warns that WebGL runs in software here)."""
        self.evaluate("document.querySelectorAll('.mantine-Notification-closeButton').forEach(b => b.click())")

    def memory_mb(self) -> float:
        """Resident memory of the browser and every process it started (its process group), in MiB."""
        total = 0
        for status in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = status.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.process.pid:  # the process group id
                    total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # rss pages
            except (OSError, IndexError, ValueError):
                continue
        return total / 2**20

    def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
