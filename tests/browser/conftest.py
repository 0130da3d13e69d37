"""Debian's chromium driven by Playwright (sync API), with nothing downloaded.

``browser_factory(**options)`` launches a headless Chromium for one test: loopback ICE allowed, crash
reports in a temp dir, and optionally a fake microphone fed from a WAV (16-bit PCM; 24-bit plays silence).
Screenshots go to ``test-artifacts/browser/`` (``CALLBRIDGE_ARTIFACTS`` overrides), which CI keeps.
See ../shared/notes/browser-tests.md for what was measured here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.conftest import RunningServer

CHROMIUM = Path("/usr/lib/chromium/chromium")  # the real binary; /usr/bin/chromium is Debian's wrapper
ARTIFACTS = Path(os.environ.get("CALLBRIDGE_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
BASE_ARGS = [
    "--allow-loopback-in-peer-connection",  # else ICE ignores 127.0.0.1 and gathering never ends
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
# Playwright waits and page code must give up well before a test's own timeout.
ACTION_TIMEOUT_MS = 15_000


def fake_microphone_args(wav: Path, *, loop: bool = False) -> list[str]:
    # "%noloop": play once, then repeat the last 20 ms: pad the file's end with silence.
    path = str(wav) if loop else f"{wav}%noloop"
    return ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={path}"]


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator:
    # Module scope, not session: the sync API keeps an event loop running while it is open, and the
    # asyncio tests that follow (pytest-asyncio) cannot start theirs inside it.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh --test installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser_factory(playwright_driver, tmp_path, monkeypatch):
    """Launch Chromium: ``browser_factory(microphone=wav_path)``; all are closed after the test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # crash reports stay in the test's dir
    launched = []

    def launch(*, microphone: Path | None = None, extra_args: list[str] | None = None):
        args = BASE_ARGS + (fake_microphone_args(microphone) if microphone is not None else []) + (extra_args or [])
        browser = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        launched.append(browser)
        return browser

    yield launch
    for browser in launched:
        browser.close()


@pytest.fixture
def artifacts(request) -> Path:
    """Where this test's screenshots go (kept after the run)."""
    directory = ARTIFACTS / "browser" / request.node.name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def console_url(server: RunningServer, path: str = "/") -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"
