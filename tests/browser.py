"""
A real browser for the tests and benchmarks of the demo page: Debian's
Chromium (``/usr/bin/chromium``, or ``$REMOTEMEDIA_CHROMIUM``) driven by
Playwright's Python package, headless, with a fake camera and a fake
microphone that plays a WAV file.

Playwright's own browser downloads are never used (the network is closed):
only the installed Chromium. Without it (or without Playwright) the browser
tests are skipped, unless ``REMOTEMEDIA_REQUIRE_BROWSER`` is set (CI), where
they fail. Each launch gets a fresh temporary profile from Playwright.

    with launch(microphone=wav_path) as browser:
        page = DemoPage.open(browser, server.http_url + "/?autostart=1")
        page.wait_for_state("running")
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import wave
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["CHROMIUM_ARGS", "DemoPage", "chromium_path", "launch", "require_browser", "write_microphone_wav"]

#: Set (to anything) where the browser tests must run: a missing browser fails them instead of skipping them.
REQUIRE_ENV = "REMOTEMEDIA_REQUIRE_BROWSER"

#: Flags for a quiet, self-contained headless Chromium with fake media devices.
CHROMIUM_ARGS = (
    "--no-sandbox",  # root in containers
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",  # a synthetic camera (and a beep, unless a WAV is given)
    "--use-fake-ui-for-media-stream",  # camera and microphone allowed without asking
    "--autoplay-policy=no-user-gesture-required",  # the talk-back audio plays without a click
    # Host candidates with real addresses: mDNS names would need a resolver on the executor's side.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


def chromium_path() -> str | None:
    """The Chromium executable to drive, or None when there is none."""
    path = os.environ.get("REMOTEMEDIA_CHROMIUM") or "/usr/bin/chromium"
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str | None:
    """Why no browser can be driven here, or None when one can."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright's Python package is not installed (pip install playwright)"
    if chromium_path() is None:
        where = os.environ.get("REMOTEMEDIA_CHROMIUM") or "/usr/bin/chromium"
        return f"no Chromium at {where} nor on PATH (apt-get install chromium, or set REMOTEMEDIA_CHROMIUM)"
    return None


def require_browser() -> None:
    """Skips the calling test (or fails it, with ``REMOTEMEDIA_REQUIRE_BROWSER`` set) when no browser can run."""
    import pytest

    why = _missing()
    if why is None:
        return
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set, but {why}", pytrace=False)
    pytest.skip(why)


def write_microphone_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """``samples`` (float, mono, -1..1) as the 16-bit PCM mono WAV Chromium's fake microphone plays in a loop."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


@contextlib.contextmanager
def launch(microphone: Path | None = None, *, extra_args: tuple[str, ...] = ()) -> Iterator[object]:
    """
    Headless Chromium (a Playwright ``Browser``), closed at the end. The fake
    microphone plays ``microphone`` (a WAV, looped) when given, a beep else.
    """
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, *extra_args]
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


class DemoPage:
    """
    The demo page in a fresh browser context: its ``window.remotemedia`` state,
    and waits that fail with what the page said (its state and console).
    """

    def __init__(self, context, page) -> None:
        self.context = context
        self.page = page
        #: The page's console messages and uncaught errors, for failure reports.
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    @classmethod
    def open(
        cls, browser, url: str, *, width: int = 1280, height: int = 960, init_script: str | None = None
    ) -> DemoPage:
        """Opens ``url`` in a new context (its own permissions and storage); ``init_script`` runs before the page's."""
        context = browser.new_context(viewport={"width": width, "height": height})
        if init_script:
            context.add_init_script(init_script)
        demo = cls(context, context.new_page())
        demo.page.goto(url)
        return demo

    def close(self) -> None:
        """Closes the page's context: its peer connections and websocket go with it."""
        self.context.close()

    def state(self) -> dict:
        """The page's ``window.remotemedia``, without its functions and long lists."""
        return self.page.evaluate(
            """() => {
                const m = window.remotemedia || {};
                const bench = m.bench ? m.bench.summary() : null;
                if (bench) delete bench.latencies;
                return {state: m.state, step: m.step, executor: m.executor, error: m.error, options: m.options,
                        transcripts: m.transcripts, replies: m.replies, stats: m.stats,
                        executorStats: m.executorStats, firstFrameAt: m.firstFrameAt,
                        framesReceived: m.framesReceived, iceUrls: m.iceUrls, bench};
            }"""
        )

    def describe(self) -> str:
        """The state and the last console lines, for an assertion message."""
        try:
            state = json.dumps(self.state(), indent=1)[:3000]
        except Exception as exc:  # the page itself may be gone
            state = f"(no state: {exc})"
        return f"page state: {state}\nconsole (last 20):\n" + "\n".join(self.console[-20:])

    def wait_for(self, expression: str, arg=None, *, timeout: float = 30.0, what: str | None = None):
        """Waits until the JS ``expression`` (a function of ``arg``) is truthy; returns its value."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            handle = self.page.wait_for_function(expression, arg=arg, timeout=timeout * 1000, polling=100)
        except PlaywrightTimeout:
            raise AssertionError(f"{what or expression} not within {timeout:g} s\n{self.describe()}") from None
        return handle.json_value()

    def wait_for_state(self, state: str, *, timeout: float = 30.0) -> dict:
        """Waits for ``window.remotemedia.state`` to be ``state``; returns the page's state."""
        self.wait_for("s => window.remotemedia && window.remotemedia.state === s", state, timeout=timeout,
                      what=f"state {state!r}")
        return self.state()

    def testid(self, name: str):
        """The element with ``data-testid=name`` (a Playwright locator)."""
        return self.page.get_by_test_id(name)
