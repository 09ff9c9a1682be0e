"""Fixtures for the browser tests: the app in this process, Debian's Chromium through Playwright, and a page that
fails the test on any console error, uncaught page error or request to another host, and leaves a screenshot.

The app serves the real presets plus RANDOM_PRESET, a random mmgpt whose end-of-text token is switched off, so
that streaming, Stop, error and language tests run before `assets/mmgpt-tiny` is trained. Tests of right answers
use the trained model and skip without it.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from e2e_support import (
    ARTIFACTS,
    CHROMIUM,
    EXAMPLES,
    LOCAL_HOSTS,
    NO_CHROMIUM,
    ENDLESS_PRESET,
    RANDOM_PRESET,
    expected_answers,
    read_wav,
    write_wav,
)
from mmgpt.data.examples import example_questions

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
FAKE_MICROPHONE_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
MICROPHONE_EXAMPLE = "speech_2.wav"  # what the fake microphone says (see examples.json), once: "%noloop" below
LEAD_IN_S = 0.3  # silence before the speech, so that none is lost while the recorder starts
# The spoken example question, its picture and its answer, as assets/examples/questions.json gives them (what it
# says is in examples.json)
_SPOKEN = example_questions(EXAMPLES, "recording")[0]
SPOKEN_QUESTION = (_SPOKEN["recording"], _SPOKEN["picture"], _SPOKEN["answer"])


# --- the app ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def app_url(tmp_path_factory) -> str:
    """The app, served from this process (so tests can see its threads) on a free port of 127.0.0.1."""
    from benchmarks import stress
    from mmgpt.engine import Engine
    from mmgpt.presets import PRESETS

    # ~130 tokens/s on a free core, and it never ends by itself: Stop always lands mid-stream
    random_preset = stress.never_ending_mmgpt_preset(
        RANDOM_PRESET, tmp_path_factory.mktemp("random-mmgpt"), {"max_new_tokens": 128, "temperature": 1.0, "seed": 0},
        n_embd=256, n_layer=6)
    endless = dataclasses.replace(random_preset, name=ENDLESS_PRESET, defaults={"max_new_tokens": 2000})
    presets = {**PRESETS, RANDOM_PRESET: random_preset, ENDLESS_PRESET: endless}
    with stress.serve(presets, Engine(max_loaded=3, timeout_s=60, presets=presets)) as served:
        yield served.url


# --- the browser --------------------------------------------------------------------------------------------------


def _lead_in(samples: np.ndarray, rate: int, path: Path) -> Path:
    return write_wav(path, np.concatenate([np.zeros(int(LEAD_IN_S * rate), np.float32), samples]), rate)


@pytest.fixture(scope="session")
def microphone_wav(tmp_path_factory) -> tuple[Path, str]:
    """(16-bit WAV the fake microphone plays, what it says): an espeak-ng example with a short silent lead-in."""
    samples, rate = read_wav(EXAMPLES / MICROPHONE_EXAMPLE)
    path = _lead_in(samples, rate, tmp_path_factory.mktemp("microphone") / "speech.wav")
    return path, expected_answers()[MICROPHONE_EXAMPLE]


@pytest.fixture(scope="session")
def question_wav(tmp_path_factory) -> tuple[Path, str]:
    """(16-bit WAV the asking browser's fake microphone plays, what it says): the spoken example question."""
    samples, rate = read_wav(EXAMPLES / SPOKEN_QUESTION[0])
    path = _lead_in(samples, rate, tmp_path_factory.mktemp("question") / "question.wav")
    return path, expected_answers()[SPOKEN_QUESTION[0]]


@pytest.fixture(scope="session")
def playwright():
    if not CHROMIUM.is_file():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
    with sync_api.sync_playwright() as driver:
        yield driver


@contextmanager
def _chromium(playwright, microphone: Path):
    """Chromium whose fake microphone says what `microphone` holds, once."""
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        args=[*CHROMIUM_ARGS, *FAKE_MICROPHONE_ARGS, f"--use-file-for-fake-audio-capture={microphone}%noloop"])
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="session")
def browser(playwright, microphone_wav):
    with _chromium(playwright, microphone_wav[0]) as chromium:
        yield chromium


@pytest.fixture(scope="session")
def asking_browser(playwright, question_wav):
    """A second Chromium, whose fake microphone asks SPOKEN_QUESTION (one fake microphone file per browser)."""
    with _chromium(playwright, question_wav[0]) as chromium:
        yield chromium


class Guard:
    """Records what must not happen on a page: console errors, uncaught exceptions, requests to other hosts."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught page error: {error}"))
        page.on("request", self.request)
        page.on("websocket", lambda socket: self.check_url(socket.url, "websocket"))

    def console(self, message):
        if message.type == "error":
            self.problems.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def request(self, request):
        self.check_url(request.url, request.method)

    def check_url(self, url: str, what: str):
        parts = urlsplit(url)
        if parts.scheme == "data":
            return
        if parts.scheme == "blob":  # blob:http://127.0.0.1:PORT/uuid, made by the page itself
            parts = urlsplit(url[len("blob:"):])
        if parts.hostname not in LOCAL_HOSTS:
            self.problems.append(f"request to another host: {what} {url[:200]}")


def _test_name(request) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:120]


@pytest.fixture
def page(browser, app_url, request):
    """A fresh English page on the app; fails the test on console errors or other hosts, and screenshots it."""
    yield from _page(browser, app_url, request)


@pytest.fixture
def asking_page(asking_browser, app_url, request):
    """As `page`, in the browser whose microphone asks SPOKEN_QUESTION."""
    yield from _page(asking_browser, app_url, request)


def _page(browser, app_url, request):
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    guard = Guard(tab)
    try:
        tab.goto(app_url)
        tab.get_by_role("tab", name="Image").wait_for()
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            tab.screenshot(path=str(ARTIFACTS / f"{_test_name(request)}.png"), full_page=True)
        finally:
            context.close()
    assert not guard.problems, "the page misbehaved:\n" + "\n".join(guard.problems)
