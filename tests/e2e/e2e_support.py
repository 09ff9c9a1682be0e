"""How the browser tests find their way around the page: tabs, model menus, uploads, toasts, streamed text."""

from __future__ import annotations

import json
import re
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = f"{CHROMIUM} is missing: install it with `bash scripts/setup.sh --dev` (apt-get install chromium)"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots, git-ignored
TRAINED = ROOT / "assets" / "mmgpt-tiny"
EXAMPLES = ROOT / "assets" / "examples"
RANDOM_PRESET = "mmgpt-random"
ENDLESS_PRESET = "mmgpt-endless"  # the same, 2,000 tokens a time: still answering when a test cuts in
LOCAL_HOSTS = {"127.0.0.1", "localhost"}

STATS = re.compile(r"first token after [0-9.]+ s · [0-9.–]+ tokens/s · \d+ tokens")
GENERATE_THREAD = "mmgpt-generate-"  # the engine's worker threads are named mmgpt-generate-<preset>
POLL_MS = 5  # how often the page records a textbox's value


def trained() -> bool:
    return (TRAINED / "config.json").is_file()


def expected_answers() -> dict[str, str]:
    """File name -> what the trained model should say about it (assets/examples/examples.json)."""
    return json.loads((EXAMPLES / "examples.json").read_text())


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM mono WAV, the format Chromium's fake audio capture reads."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as source:
        assert source.getsampwidth() == 2 and source.getnchannels() == 1, f"{path}: expected 16-bit mono PCM"
        frames = source.readframes(source.getnframes())
        return np.frombuffer(frames, "<i2").astype(np.float32) / 32768, source.getframerate()


# --- finding things on the page -----------------------------------------------------------------------------------


def open_tab(page, name: str):
    """Click a tab; return its panel (only the selected tab's panel has role=tabpanel)."""
    page.get_by_role("tab", name=name, exact=True).click()
    panel = page.get_by_role("tabpanel")
    panel.wait_for()
    return panel


def choose_model(page, panel, label: str, name: str):
    """Pick `name` in the model menu labelled `label`, unless it is already picked."""
    menu = panel.get_by_role("combobox", name=label, exact=True)
    if menu.input_value() != name:
        menu.click()
        options = page.locator(f"[id='{menu.get_attribute('aria-controls')}']")  # this menu's list
        options.get_by_role("option", name=name, exact=True).click()
    assert menu.input_value() == name


def textbox(panel, label: str, index: int = 0):
    """The textarea or input of the `index`th Textbox whose label reads `label` (its accessible name also holds
    "Copy", so get_by_role(name=...) does not find it)."""
    caption = panel.page.get_by_test_id("block-info").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return panel.locator("label", has=caption).locator("textarea, input").nth(index)


def check_stats(answer: str, stats_box) -> str:
    """The answer went to its own box and the stats line to the Speed box beside it (not the other way round)."""
    assert answer and not STATS.search(answer), f"the answer box shows {answer!r}"
    stats = stats_box.input_value()
    assert STATS.search(stats), f"the Speed box shows {stats!r}"
    return answer


def button(panel, label: str):
    return panel.get_by_role("button", name=label, exact=True)


def generation_threads(preset: str) -> list[threading.Thread]:
    """The engine's live worker threads for `preset` (the app runs in this process)."""
    return [thread for thread in threading.enumerate() if thread.name == GENERATE_THREAD + preset]


def wait_until(condition, timeout_s: float, message: str | Callable[[], str], every_s: float = 0.01):
    """Poll `condition()` until it is truthy; return its value, or fail with `message` after `timeout_s` (a callable
    message is written then, so that it can say what the page showed at the end)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message() if callable(message) else message} (waited {timeout_s:.0f} s)")
        time.sleep(every_s)


class Recorder:
    """Records, in the page, what an output textbox shows: every distinct non-empty value (polled every POLL_MS),
    and how often the block's progress indicator (Gradio's status tracker) appeared and went away again."""

    def __init__(self, box):
        self.box = box
        box.evaluate("""(element, every) => {
            const log = {states: [], busy: 0, idle: 0};
            const record = () => {
                const value = element.value;
                if (value && log.states[log.states.length - 1] !== value) log.states.push(value);
            };
            const tracker = element.closest(".block").querySelector("[data-testid=status-tracker]");
            const watch = () => {
                const hidden = tracker.classList.contains("hide");
                if (!hidden && log.busy === log.idle) log.busy++;
                if (hidden && log.busy > log.idle) { record(); log.idle++; }
            };
            clearInterval(element.__recorder);
            if (element.__observer) element.__observer.disconnect();
            element.__log = log;
            element.__recorder = setInterval(record, every);
            element.__observer = new MutationObserver(watch);
            element.__observer.observe(tracker, {attributes: true, attributeFilter: ["class"]});
        }""", POLL_MS)

    def log(self) -> dict:
        return self.box.evaluate("element => structuredClone(element.__log)")

    def states(self) -> list[str]:
        return self.log()["states"]

    def wait_for(self, count: int, timeout_s: float = 60) -> list[str]:
        """Wait until the box has shown `count` distinct texts; return them."""
        wait_until(lambda: len(self.states()) >= count, timeout_s,
                   f"the textbox should show at least {count} distinct texts, showed {self.states()!r}")
        return self.states()

    def wait_for_answer(self, timeout_s: float = 60) -> str:
        """Wait until the event writing the box has run and finished; return the box's final, non-empty text."""
        wait_until(lambda: no_error_toast(self.box.page) and (log := self.log())["idle"] >= 1 and log["states"],
                   timeout_s, lambda: f"no finished answer appeared: {self.log()!r}")
        return self.box.input_value()


def toasts(page) -> list[str]:
    return [text.strip() for text in page.get_by_test_id("toast-body").all_inner_texts()]


def no_error_toast(page) -> bool:
    """True while the page shows no error; raises with its text once it does. An event that fails leaves its block's
    progress indicator up, so a test waiting for its answer would otherwise wait out its whole timeout."""
    errors = page.locator("[data-testid=toast-body].error").all_inner_texts()
    assert not errors, f"the app reported an error instead of answering: {errors}"
    return True


def wait_for_toast(page, timeout_s: float = 30) -> str:
    return "\n".join(wait_until(lambda: toasts(page), timeout_s, "no message (toast) appeared"))


def close_toasts(page):
    for close in page.locator("button.toast-close").all():
        close.click()
    wait_until(lambda: not toasts(page), 5, "the message (toast) did not close")


def input_block(panel, label: str):
    """The block of the input component (Image, Audio) whose corner label reads `label`."""
    caption = panel.page.get_by_test_id("block-label").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    return panel.locator(".block", has=caption).last  # the innermost block that holds the label


RECORDING_MARGIN_S = 1.0  # recorded past the clip's end: a loaded machine delivers the fake microphone late


def record_from_fake_microphone(block, clip: Path, held):
    """Record with the Audio block while Chromium's fake microphone plays `clip` once, then stop; return once the
    take has reached the server.

    The clock starts once the recorder shows its Stop button (recording has begun), not at the click: under load
    the microphone opens late, and a recording timed from the click cut the word short.

    `held` is the button that sends the recording. It must be disabled from the start of the recording until the
    take has been uploaded: the player shows the take before that, and a press in between sent no recording (this
    test, about 1 run in 10)."""
    samples, rate = read_wav(clip)
    block.get_by_role("button", name="Record", exact=True).click()
    stop = block.locator("button.stop-button")
    stop.wait_for()
    wait_until(held.is_disabled, 10, "the button that sends the recording should be disabled while it is recorded")
    block.page.wait_for_timeout(int((len(samples) / rate + RECORDING_MARGIN_S) * 1000))
    stop.click()
    block.get_by_role("button", name="Play", exact=True).wait_for()  # the take is in the player
    wait_until(held.is_enabled, 30, "the button that sends the recording should be enabled once it is uploaded")


def upload(block, path: Path):
    """Put a file into the block's file input (that of its upload source, which must be selected)."""
    block.locator("input[type=file]").set_input_files(str(path))


def clear_input(block):
    """Press the block's Clear (×) button, if it shows one."""
    clear = block.get_by_role("button", name="Clear", exact=True)
    if clear.count():
        clear.click()


class ChatRecorder:
    """Records, in the page, what a gr.Chatbot shows (polled every POLL_MS): every distinct text of each answer (its
    notes left out), the questions, and how often the chat's progress indicator appeared and went away again."""

    def __init__(self, chat_block):
        self.block = chat_block
        chat_block.evaluate("""(block, every) => {
            const log = {answers: [], questions: [], busy: 0, idle: 0};
            const texts = (who) => [...block.querySelectorAll(`[data-testid=${who}]`)]
                .filter((message) => !message.closest(".thought"))  // a note, not an answer
                .map((message) => message.innerText.trim());
            const record = () => {
                texts("bot").forEach((text, index) => {
                    const states = log.answers[index] = log.answers[index] || [];
                    if (text && states[states.length - 1] !== text) states.push(text);
                });
                log.questions = texts("user");
            };
            const tracker = block.querySelector("[data-testid=status-tracker]");
            const watch = () => {
                const hidden = tracker.classList.contains("hide");
                if (!hidden && log.busy === log.idle) log.busy++;
                if (hidden && log.busy > log.idle) { record(); log.idle++; }
            };
            clearInterval(block.__recorder);
            if (block.__observer) block.__observer.disconnect();
            block.__log = log;
            block.__recorder = setInterval(record, every);
            block.__observer = new MutationObserver(watch);
            block.__observer.observe(tracker, {attributes: true, attributeFilter: ["class"]});
        }""", POLL_MS)

    def log(self) -> dict:
        return self.block.evaluate("block => structuredClone(block.__log)")

    def wait_for_answer(self, count: int, timeout_s: float = 60) -> list[str]:
        """Wait until the chat has finished its `count`th answer; return the texts that answer went through."""
        wait_until(lambda: no_error_toast(self.block.page) and (log := self.log())["idle"] >= count
                   and len(log["answers"]) >= count, timeout_s,
                   lambda: f"answer {count} did not finish: {self.log()!r}")
        return self.log()["answers"][count - 1]

    def questions(self) -> list[str]:
        return self.log()["questions"]
