"""Asking about a picture in the Image tab's chat, in headless Chromium: one typed question, then one spoken through
the fake microphone, each answer streaming into the chat. The browser's microphone asks the spoken example question
(`SPOKEN_QUESTION`) about its example picture; the typed question is the same words. Whether the answers are right
is checked with a shipped mmgpt-tiny that can ask (v4 and later).
"""

from __future__ import annotations

import re
import time

import pytest
from conftest import SPOKEN_QUESTION
from e2e_support import (
    CHROMIUM,
    ENDLESS_PRESET,
    EXAMPLES,
    NO_CHROMIUM,
    RANDOM_PRESET,
    ChatRecorder,
    button,
    choose_model,
    generation_threads,
    input_block,
    open_tab,
    record_from_fake_microphone,
    textbox,
    trained,
    upload,
    wait_for_toast,
    wait_until,
)

from mmgpt.data.questions import answer_is_right
from mmgpt.inputs import SPOKEN_MARK
from mmgpt.ui.common import HEARTBEAT_S

pytestmark = [pytest.mark.skipif(not CHROMIUM.is_file(), reason=NO_CHROMIUM),
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated",
                                         "ignore:Glyph .* missing from font")]

RECORDER = "…or ask by voice: record or upload, then press Ask"
_, SCENE, ANSWER = SPOKEN_QUESTION


def shipped_can_ask() -> bool:
    """Whether the shipped mmgpt-tiny's tokenizer has the question tokens (mmgpt-tiny v4 and later)."""
    return trained() and '"<|ask|>"' in (EXAMPLES.parent / "mmgpt-tiny" / "tokenizer.json").read_text()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


ANSWER_WAIT_S = 120  # a spoken question is transcribed, then answered: on a loaded 2-core machine that can be slow


def ask_about_the_scene(page, model: str, question_wav, question: str, listener: str | None = None
                        ) -> tuple[ChatRecorder, list[str], list[str]]:
    """Upload SCENE, ask `question` typed, then spoken (the fake microphone says it, from `question_wav`) and heard
    by `listener` (None: the default, the app's speech model); return the recorder and the texts each answer went
    through. "Show what the model saw" is off: these tests are about the answers."""
    page.get_by_label("Show what the model saw").uncheck()
    panel = open_tab(page, "Image")
    choose_model(page, panel, "Model for questions", model)
    heard_by = panel.get_by_role("combobox", name="Spoken questions heard by", exact=True)
    assert heard_by.input_value() not in ("", model), "the app's speech model should hear questions by default"
    if listener:
        choose_model(page, panel, "Spoken questions heard by", listener)
    upload(input_block(panel, "Picture"), EXAMPLES / SCENE)
    input_block(panel, "Picture").get_by_test_id("image").locator("img").wait_for()
    chat = ChatRecorder(input_block(panel, "Conversation about the picture"))

    box = textbox(panel, "Your question")
    box.fill(question + "?")
    button(panel, "Ask").click()
    typed = chat.wait_for_answer(1, ANSWER_WAIT_S)
    assert box.input_value() == "", "the question box should be empty once the question is sent"

    recorder = input_block(panel, RECORDER)
    record_from_fake_microphone(recorder, question_wav, held=button(panel, "Ask"))
    button(panel, "Ask").click()
    spoken = chat.wait_for_answer(2, ANSWER_WAIT_S)
    wait_until(lambda: not recorder.get_by_role("button", name="Play", exact=True).count(), 5,
               "the recorder should be empty once the question is sent")
    return chat, typed, spoken


def test_a_typed_and_a_spoken_question_stream_into_the_chat(asking_page, question_wav):
    """On a random mmgpt that never stops talking: each answer grows over several updates."""
    question = question_wav[1]
    chat, typed, spoken = ask_about_the_scene(asking_page, RANDOM_PRESET, *question_wav)
    for states in (typed, spoken):
        assert len(states) >= 3, f"the answer should stream: {states!r}"
        assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:])), states
    questions = chat.questions()
    assert questions[0] == question + "?" and questions[1].startswith(SPOKEN_MARK.strip()), questions

    panel = asking_page.get_by_role("tabpanel")  # another picture: the conversation starts over, and says so
    upload(input_block(panel, "Picture"), EXAMPLES / "scene_0.png")
    wait_until(lambda: not chat.questions(), 10, "the conversation about the old picture should be gone")
    assert "conversation about the previous one was cleared" in wait_for_toast(asking_page)


STOP_WITHIN_S = 2.0  # the server's generation thread has ended this long after the conversation was started over


def test_starting_over_mid_answer_stops_the_answer_and_the_old_conversation_stays_gone(asking_page):
    """"New conversation" pressed, or another picture shown, while an answer streams: the answer stops on the server
    and the chat stays empty. Gradio rebuilds a streamed value from its own copy of what it sent, so an answer left
    running would bring the old conversation back with its next update."""
    asking_page.get_by_label("Show what the model saw").uncheck()
    panel = open_tab(asking_page, "Image")
    choose_model(asking_page, panel, "Model for questions", ENDLESS_PRESET)
    picture = input_block(panel, "Picture")
    upload(picture, EXAMPLES / SCENE)
    picture.get_by_test_id("image").locator("img").wait_for()
    chat_block = input_block(panel, "Conversation about the picture")
    shown = chat_block.locator("[data-testid=user], [data-testid=bot]")
    starts_over = {"New conversation": lambda: button(panel, "New conversation").click(),
                   "another picture": lambda: upload(picture, EXAMPLES / "scene_0.png")}
    for how, start_over in starts_over.items():
        chat = ChatRecorder(chat_block)
        textbox(panel, "Your question").fill("what colour is the circle?")
        button(panel, "Ask").click()
        wait_until(lambda: len((chat.log()["answers"] or [[]])[0]) >= 3, ANSWER_WAIT_S,
                   lambda: f"the answer should be streaming: {chat.log()!r}")
        assert generation_threads(ENDLESS_PRESET), "the answer should still be running"
        start_over()
        wait_until(lambda: not generation_threads(ENDLESS_PRESET), STOP_WITHIN_S,
                   f"the answer was still being written {STOP_WITHIN_S} s after {how}")
        wait_until(lambda: shown.count() == 0, 5, f"the chat should be empty after {how}")
        time.sleep(8 * HEARTBEAT_S)  # a stream still going would have sent its next update by now
        assert shown.count() == 0, f"the old conversation came back after {how}: {chat.log()!r}"


# The shipped checkpoint's known miss on the spoken question through the fake microphone, or None if it has none.
SPOKEN_MISS = ("mmgpt-tiny v4.39 answers the example recording right when it is sent to /ask, and through Chromium's "
               "fake microphone it did in the runs looked at, where v4.37 wrote it down as 'which shape is the "
               "square?' and answered 'square'. Over 36 variants of the recording (scripts/recording_variants.py) "
               "v4.39 answers 22 right (v4.37 19) and writes 17 down as the question (v4.37 19), and 5 more with "
               "'color' for 'colour'; the rest it mishears. See assets/mmgpt-tiny/README.md")


def test_mmgpt_tiny_answers_the_typed_and_the_spoken_question(asking_page, question_wav):
    """The typed answer must be right. mmgpt-tiny, picked to hear the spoken one itself, writes it down and answers it
    with the picture. The known miss (SPOKEN_MISS) is a mis-hearing, and only a mis-hearing is reported as an expected
    failure: a question heard right must be answered right, and without a known miss a mis-heard one fails."""
    if not shipped_can_ask():
        pytest.skip("the shipped mmgpt-tiny cannot answer questions yet (its tokenizer has no <|ask|>); v4 can")
    chat, typed, spoken = ask_about_the_scene(asking_page, "mmgpt-tiny", *question_wav, listener="mmgpt-tiny")
    assert answer_is_right(typed[-1], ANSWER), typed[-1]
    heard = chat.questions()[1]
    assert heard.startswith(SPOKEN_MARK.strip()) and words(heard), f"the question should be written down: {heard!r}"
    assert words(spoken[-1]), f"the spoken question should be answered: {spoken!r}"
    if SPOKEN_MISS and words(heard) != words(question_wav[1]):
        pytest.xfail(f"{SPOKEN_MISS} (this time heard {heard!r}, answered {spoken[-1]!r})")
    assert words(heard) == words(question_wav[1]), heard
    assert answer_is_right(spoken[-1], ANSWER), f"heard {heard!r} right but answered {spoken[-1]!r}"
