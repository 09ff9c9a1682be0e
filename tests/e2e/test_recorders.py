"""The browser tests' recorders count an answer as finished when the block's progress indicator appears and goes
away again. On a loaded machine the page can do both within one task; the recorders must still count it."""

from __future__ import annotations

import pytest
from e2e_support import CHROMIUM, NO_CHROMIUM, ChatRecorder, Recorder

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason=NO_CHROMIUM)

TRACKER = '<div data-testid="status-tracker" class="wrap hide"></div>'
SHOW_AND_HIDE_IN_ONE_TASK = """() => {
    const tracker = document.querySelector("[data-testid=status-tracker]");
    tracker.classList.remove("hide");
    tracker.classList.add("hide");
}"""


@pytest.fixture
def blank_page(browser):
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def test_a_chat_answer_shown_and_finished_within_one_task_is_counted(blank_page):
    blank_page.set_content(f'<div class="block" id="chat">{TRACKER}<div data-testid="bot">red</div></div>')
    chat = ChatRecorder(blank_page.locator("#chat"))
    blank_page.evaluate(SHOW_AND_HIDE_IN_ONE_TASK)
    assert chat.wait_for_answer(1, timeout_s=5) == ["red"]


def test_a_textbox_answer_shown_and_finished_within_one_task_is_counted(blank_page):
    blank_page.set_content(f'<div class="block">{TRACKER}<textarea>a red circle</textarea></div>')
    box = Recorder(blank_page.locator("textarea"))
    blank_page.evaluate(SHOW_AND_HIDE_IN_ONE_TASK)
    assert box.wait_for_answer(timeout_s=5) == "a red circle"
