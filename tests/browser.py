"""A real headless browser for the HTML pages we produce: Debian's chromium, offline.

`render(page)` loads a local HTML file in headless chromium and returns its screenshot, the DOM
after the page's scripts (if any) ran, and every network request the page attempted.

How "no network request" is proven: chromium is given a proxy that is a listening socket of this
process on 127.0.0.1, and the loopback bypass is removed (`<-loopback>`), so *every* http(s) or
ws fetch the page starts - an `<img src=http://...>`, a stylesheet, a font, a script's `fetch()` -
arrives at that socket and is recorded (request line or CONNECT target), then refused. `file:`
and `data:` URLs never touch the network and are not requests. Chromium's own background traffic
(updates, sync, safe browsing) is switched off by flags so that what is recorded is the page's.

Chromium is installed by `.ci/run` when missing; elsewhere the tests that need it skip, saying
why, except in CI (`CI=true` or LEARNER_EXPORT_REQUIRE_POSTGRES=1), where `require_browser()`
fails instead: there a page that was never rendered must not pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")

# The one connection chromium 150 opens by itself with no flag to stop it (an empty page makes it
# too; tests/test_browser.py proves it). A page's own https fetch of www.google.com would hide
# behind it - an accepted blind spot, as nothing we render names that host.
# The same holds for the push-messaging (GCM) check-in, seen about once in six renders of a
# long page (issue 12): a page of ours never names that host either.
# Chromium 156 adds its component updater's check (Omaha's update2 protocol, a POST with a
# fresh key in its query, CONNECT or plain), made despite --disable-component-update; again a
# host no page of ours names.
_BROWSER_OWN = frozenset(
    {"CONNECT www.google.com:443 HTTP/1.1", "CONNECT android.clients.google.com:443 HTTP/1.1",
     "CONNECT update.googleapis.com:443 HTTP/1.1"}
)  # fmt: skip
_BROWSER_OWN_PREFIXES = ("POST http://update.googleapis.com/service/update2/json?",)


def _browser_own(request: str) -> bool:
    """Whether a recorded request line is chromium's own call home, not the page's."""
    return request in _BROWSER_OWN or request.startswith(_BROWSER_OWN_PREFIXES)


def chromium_path() -> str | None:
    """The headless-capable chromium on PATH, or None."""
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    """The browser's path; skip the test where none is installed (fail in CI, which installs it)."""
    found = chromium_path()
    if found is None:
        message = "chromium is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI") == "true" or os.environ.get("LEARNER_EXPORT_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass(frozen=True)
class Rendering:
    """What a page did in the browser."""

    png: bytes
    """The screenshot (PNG) of the first `height` pixels."""
    dom: str
    """The serialized DOM after load (scripts, had any run, would show their changes here)."""
    requests: tuple[str, ...]
    """Every network request the page attempted (proxy request lines); empty for an offline page."""
    console: str
    """chromium's stderr, for diagnosing a failure."""


class _RecordingProxy:
    """A loopback socket posing as chromium's proxy: records each request's first line, refuses it."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    head = conn.recv(4096)
                except OSError:
                    head = b""
                line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
                self.requests.append(line or "<connection without a request line>")
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


def _browser_command(browser: str, profile: Path, proxy_port: int) -> list[str]:
    return [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--proxy-bypass-list=<-loopback>",  # loopback too goes through the recording proxy
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--metrics-recording-only",
        "--safebrowsing-disable-auto-update",
        # chromium's own calls home, which would otherwise be recorded as if the page made them
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,OptimizationHintsFetching,"
        "OptimizationGuideModelDownloading,Translate,MediaRouter,AutofillServerCommunication",
        "--gaia-url=http://127.0.0.1:1",
        "--lso-url=http://127.0.0.1:1",
        "--google-base-url=http://127.0.0.1:1",
        "--run-all-compositor-stages-before-draw",
        "--virtual-time-budget=3000",  # let timers and late loads happen before the capture
    ]


def render(page: Path, *, width: int = 1280, height: int = 2400, timeout: float = 90) -> Rendering:
    """Load `page` (a local HTML file) in headless chromium, offline; see the module docstring."""
    browser = require_browser()
    proxy = _RecordingProxy()
    try:
        with tempfile.TemporaryDirectory(prefix="browser-") as scratch:
            work = Path(scratch)
            url = page.resolve().as_uri()
            base = _browser_command(browser, work / "profile", proxy.port)
            shot = work / "shot.png"
            capture = subprocess.run(
                [*base, f"--screenshot={shot}", f"--window-size={width},{height}", url],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if not shot.exists():
                raise AssertionError(f"chromium made no screenshot:\n{capture.stderr[-2000:]}")
            dump = subprocess.run(
                [*base, "--dump-dom", url],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            return Rendering(
                png=shot.read_bytes(),
                dom=dump.stdout,
                requests=tuple(r for r in proxy.requests if not _browser_own(r)),
                console=capture.stderr + dump.stderr,
            )
    finally:
        proxy.close()


def distinct_colours(png: bytes, *, limit: int = 64, max_rows: int = 800) -> int:
    """How many distinct pixel values the top `max_rows` rows of the PNG hold, up to `limit`.

    A blank page is one colour; any text or plot gives many. Decoded with the standard library
    (zlib + the five PNG filters) so the check needs no imaging package; 8-bit, non-interlaced
    PNGs only (what chromium writes). Rows are unfiltered in Python, hence the row cap.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, bytearray(), b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {colour}, interlace)")
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    previous = bytearray(stride)
    seen: set[bytes] = set()
    offset = 0
    for _ in range(min(height, max_rows)):
        row_filter, line = raw[offset], bytearray(raw[offset + 1 : offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upleft = previous[i - channels] if i >= channels else 0
            if row_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif row_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif row_filter == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif row_filter == 4:
                guess = left + up - upleft
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - upleft)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else upleft
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        for x in range(0, stride, channels * 7):  # a sample of each row is plenty
            seen.add(bytes(line[x : x + channels]))
        if len(seen) >= limit:
            return len(seen)
    return len(seen)
