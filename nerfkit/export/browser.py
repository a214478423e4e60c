"""A minimal headless-Chromium driver for checking and timing the web viewer.

Speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (JSON messages separated by
NUL bytes on file descriptors 3 and 4 of the browser process), so it needs no WebSocket library
and opens no debugging port. Used by the viewer's tests and ``benchmarks/web_viewer.py``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

#: Flags that make headless Chromium run here: WebGL2 falls back to SwiftShader (software) when
#: there is no GPU; nothing goes out to the network.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--force-device-scale-factor=1",
                  "--force-color-profile=srgb", "--window-size=1280,1024",
                  "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome executable (``$CHROMIUM``, then the usual names), or None."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; ``call`` sends a CDP command to the page."""

    def __init__(self, executable: Optional[str] = None, timeout: float = 120.0):
        exe = executable or find_chromium()
        if exe is None:
            raise BrowserError("no chromium executable found")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="nerfkit-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends move above fd 9, so that moving them to 3 and 4 cannot clobber one.
        lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = lifted

        # A fresh interpreter moves the pipe ends to fds 3 and 4 and execs the browser (no code
        # runs in a fork of this multithreaded process; sh cannot name fds above 9).
        launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
                    "os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launcher, str(to_browser_r), str(from_browser_w), exe,
             *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.session: Optional[str] = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                          "flatten": True},
                                 session=False)["sessionId"]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_browser], [], [], 1.0)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser exited")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: Optional[dict] = None, session: bool = True,
             timeout: Optional[float] = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str, timeout: Optional[float] = None) -> Any:
        """Evaluates JavaScript in the page (awaiting a returned promise); returns its value."""
        res = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:60]}...: {res['exceptionDetails']}")
        return res["result"].get("value")

    def goto(self, url: str, ready: str, timeout: Optional[float] = None) -> None:
        """Navigates and waits until the JavaScript expression ``ready`` is true (an
        ``error`` string it returns instead raises)."""
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            v = self.evaluate(ready)
            if isinstance(v, str):
                raise BrowserError(f"{url}: {v}")
            if v:
                return
            time.sleep(0.1)
        raise BrowserError(f"{url}: not ready after {timeout or self.timeout} s")

    def screenshot(self, x: float, y: float, width: float, height: float) -> bytes:
        """PNG bytes of a page region in CSS pixels (device scale factor 1)."""
        res = self.call("Page.captureScreenshot", {
            "format": "png", "clip": {"x": x, "y": y, "width": width, "height": height,
                                      "scale": 1}})
        return base64.b64decode(res["data"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", session=False, timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder: os.PathLike) -> Iterator[str]:
    """Serves ``folder`` on 127.0.0.1 (a free port) from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(Path(folder)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


#: Evaluates to true once the viewer is ready, or to its error message.
VIEWER_READY = ("window.nerfkitViewerError || (document.body && "
                "document.body.dataset.ready === '1')")


def render_in_browser(browser: Chromium, url: str, camera: dict) -> bytes:
    """Opens the viewer at ``url``, renders ``camera`` (``c2w`` 3x4 rows, ``fx, fy, cx, cy``,
    ``width``, ``height``) and returns a PNG screenshot of exactly the canvas."""
    browser.goto(url, VIEWER_READY)
    browser.evaluate(f"nerfkitViewer.renderCamera({json.dumps(camera)})", timeout=600)
    r = browser.evaluate("(() => { const r = document.getElementById('view')"
                         ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")
    return browser.screenshot(*r)
