"""Headless Chromium for tests: load a local page, collect errors, check images, screenshot.

Drives Debian's ``chromium`` over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
the browser reads commands on fd 3 and writes replies on fd 4, each a JSON message ended by a
NUL byte), so no port, no network and no extra package are needed.

    python tests/browser.py RUN_DIR/report.html shot.png   # prints the page check as JSON
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]

# Every <img>: does it load, and how big is it.
IMAGES_JS = """JSON.stringify(Array.from(document.images).map(function (i) {
  return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
          src: i.src.slice(0, 30)};
}))"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process and one page, driven over the DevTools pipe."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900):
        self.profile = tempfile.mkdtemp(prefix="ganforge-chromium-")
        to_child_r, self._w = os.pipe()  # we write commands, the browser reads fd 3
        self._r, from_child_w = os.pipe()  # the browser writes replies on fd 4

        def fds() -> None:  # in the child, before exec: place the pipe ends at fds 3 and 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            for target, fd in zip((3, 4), high, strict=True):
                os.dup2(fd, target, inheritable=True)  # copies above 10 never clash with 3, 4

        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            preexec_fn=fds,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        self.session = self._attach(width, height)

    # -- protocol
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe (did it crash?)")
            self._buf += chunk
        msg, _, self._buf = self._buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Send a command to the page (or the browser before attaching); return its result."""
        want = self._send(method, params, getattr(self, "session", None))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == want:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        """Wait for a protocol event (one already received counts)."""
        for ev in self.events:
            if ev["method"] == method:
                return ev
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def _attach(self, width: int, height: int) -> str:
        self.session = None
        page = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = self.call("Target.attachToTarget", {"targetId": page, "flatten": True})
        self.session = sid["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        return self.session

    # -- page helpers
    def open(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event (all images decoded or failed)."""
        self.events = [ev for ev in self.events if ev["method"] != "Page.loadEventFired"]
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev["method"] == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                text = d.get("exception", {}).get("description") or d.get("text", "")
                out.append(f"exception: {text}")
            elif ev["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                args = [str(a.get("value", a.get("description", ""))) for a in p.get("args", [])]
                out.append("console: " + " ".join(args))
            elif ev["method"] == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text', '')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """PNG of the page (the whole length when ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
            params["clip"]["scale"] = 1
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, timeout=60)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        """End the browser process and remove its profile."""
        try:
            self._send("Browser.close")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._w)
            os.close(self._r)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_page(html_file: Path, shot: Path, executable: str | None = None) -> dict[str, Any]:
    """Load a local HTML file in headless Chromium; return errors, images and the screenshot."""
    exe = executable or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable on PATH")
    with Browser(exe) as b:
        b.open(Path(html_file).resolve().as_uri())
        images = json.loads(b.evaluate(IMAGES_JS))
        b.screenshot(shot)
        return {"errors": b.errors(), "images": images, "screenshot": str(shot)}


if __name__ == "__main__":
    result = check_page(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps({**result, "images": len(result["images"])}, indent=1))
