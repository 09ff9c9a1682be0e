"""Every tab of the app, driven in headless Chromium like a person would: type, upload, record, press buttons.

Each test fails on a console error, an uncaught page error or a request to a host other than 127.0.0.1, and leaves
a screenshot of the tab it drove in test-artifacts/ (see conftest.py). Tests of right answers (captions, transcripts)
need the trained `assets/mmgpt-tiny` and skip that check without it; the rest run on a random mmgpt that never stops
talking, which is also what makes a Stop press land mid-stream.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from e2e_support import (
    CHROMIUM,
    EXAMPLES,
    NO_CHROMIUM,
    RANDOM_PRESET,
    Recorder,
    button,
    check_stats,
    choose_model,
    clear_input,
    close_toasts,
    expected_answers,
    generation_threads,
    input_block,
    open_tab,
    record_from_fake_microphone,
    textbox,
    toasts,
    trained,
    upload,
    wait_for_toast,
    wait_until,
    write_wav,
)

from mmgpt.ui.common import HEARTBEAT_S
from mmgpt.data.scenes import COLOURS, SHAPES
from mmgpt.i18n import translate
from mmgpt.presets import PRESETS

pytestmark = [pytest.mark.skipif(not CHROMIUM.is_file(), reason=NO_CHROMIUM),
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")]

MODEL = "mmgpt-tiny" if trained() else RANDOM_PRESET  # the trained model when there is one
# The Microphone tab's default where its pip package is installed (CI installs it): real weights, so what it hears
# is checked whatever mmgpt-tiny's state. mmgpt-tiny heard the fake microphone's "wait" as "red" in 2 of 4 full
# fresh-clone runs (one with v4.2, one with v4.3) and right when run alone; its transcription is tested in test_app
# and test_shipped_model, on files, where nothing but the model varies.
TRANSCRIBER = "whisper-tiny.en" if "whisper-tiny.en" in PRESETS else MODEL
NOT_TRAINED = "assets/mmgpt-tiny is not trained yet: the answer streamed, but whether it is right was not checked"
STOP_WITHIN_S = 1.0  # the server's generation thread has ended this long after Stop is pressed


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def named(text: str, vocabulary) -> list[str]:
    """The words of `vocabulary` that `text` names, sorted, each as often as it is named (plurals count)."""
    singulars = ([word, word[:-1], word[:-2]] for word in words(text))  # circles -> circle, crosses -> cross
    return sorted(next(form for form in forms if form in vocabulary) for forms in singulars
                  if any(form in vocabulary for form in forms))


# --- Text ---------------------------------------------------------------------------------------------------------


def test_text_tab_streams_and_stop_ends_the_generation(page):
    panel = open_tab(page, "Text")
    choose_model(page, panel, "Model", RANDOM_PRESET)  # never says end-of-text: Stop lands mid-stream
    textbox(panel, "Prompt").fill("ROMEO:")
    panel.get_by_text("Generation settings").click()
    panel.get_by_label("number input for Max new tokens").fill("512")
    panel.get_by_label("number input for Temperature (0 = greedy)").fill("1")
    panel.get_by_role("spinbutton", name=re.compile("^Seed")).fill("1234")
    output, stats = textbox(panel, "Output"), textbox(panel, "Speed")
    recorder = Recorder(output)

    button(panel, "Generate").click()
    states = recorder.wait_for(3)
    assert generation_threads(RANDOM_PRESET), f"the generation should still be running; it showed {states!r}"
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:])), states
    check_stats(states[-1], stats)
    assert "seed 1234" in stats.input_value(), stats.input_value()

    button(panel, "Stop").click()
    stopped_at = time.monotonic()
    wait_until(lambda: not generation_threads(RANDOM_PRESET), STOP_WITHIN_S,
               "the server's generation thread was still running after Stop")
    stop_s = time.monotonic() - stopped_at
    shown = len(recorder.states())
    time.sleep(4 * HEARTBEAT_S)  # a live stream would have shown more by now
    assert len(recorder.states()) == shown, "the text kept growing after Stop"
    assert len(recorder.states()) >= 3, recorder.states()
    print(f"Stop ended the generation thread {stop_s:.2f} s after the click")


# --- Image ---------------------------------------------------------------------------------------------------------


def describe(panel, picture: Path) -> str:
    """Upload `picture`, press Describe, and return the finished description. A description of the picture before
    is emptied first, once the page has the new picture, as a user would see."""
    block = input_block(panel, "Picture")
    before = textbox(panel, "Description").input_value()
    clear_input(block)
    upload(block, picture)
    block.get_by_test_id("image").locator("img").wait_for()
    if before:
        wait_until(lambda: not textbox(panel, "Description").input_value(), 10,
                   "the description of the picture before should be emptied")
    recorder = Recorder(textbox(panel, "Description"))
    button(panel, "Describe").click()
    return check_stats(recorder.wait_for_answer(), textbox(panel, "Speed"))


def test_image_tab_describes_an_uploaded_scene(page):
    panel = open_tab(page, "Image")
    choose_model(page, panel, "Model", MODEL)
    assert describe(panel, EXAMPLES / "scene_1.png")


@pytest.mark.skipif(not trained(), reason="assets/mmgpt-tiny is not trained yet")
def test_image_tab_names_the_shapes_and_colours_of_example_scenes(page):
    panel = open_tab(page, "Image")
    choose_model(page, panel, "Model", "mmgpt-tiny")
    expected = {name: text for name, text in expected_answers().items() if name.endswith(".png")}
    answers = {name: describe(panel, EXAMPLES / name) for name in sorted(expected)}
    wrong = {name: (answers[name], expected[name]) for name in answers
             if named(answers[name], COLOURS) != named(expected[name], COLOURS)
             or named(answers[name], SHAPES) != named(expected[name], SHAPES)}
    assert len(wrong) <= 1, f"descriptions that name other shapes or colours (got, expected): {wrong}"


# --- Microphone ---------------------------------------------------------------------------------------------------


def transcribe(panel) -> str:
    """Press Transcribe on what the Recording block holds; return the finished transcript."""
    player = input_block(panel, "Recording").get_by_role("button", name="Play", exact=True)
    player.wait_for()  # the recording is in the player
    recorder = Recorder(textbox(panel, "Transcript"))
    button(panel, "Transcribe").click()
    return check_stats(recorder.wait_for_answer(), textbox(panel, "Speed"))


def test_microphone_tab_records_transcribes_and_replies(page, microphone_wav):
    wav, said = microphone_wav
    panel = open_tab(page, "Microphone")
    choose_model(page, panel, "Model", TRANSCRIBER)
    choose_model(page, panel, "Reply model (text)", MODEL)
    record_from_fake_microphone(input_block(panel, "Recording"), wav, held=button(panel, "Transcribe"))
    heard = transcribe(panel)
    input_block(panel, "Log-mel spectrogram the model heard").locator("img").wait_for()

    reply = Recorder(textbox(panel, "Reply"))
    button(panel, "Reply").click()
    answer = check_stats(reply.wait_for_answer(), textbox(panel, "Speed", index=1))
    assert answer == reply.states()[-1] and len(reply.states()) >= 2, f"the reply should stream: {reply.states()}"
    if TRANSCRIBER == RANDOM_PRESET:
        pytest.skip(NOT_TRAINED)
    assert words(heard) == words(said), f"{TRANSCRIBER} heard {heard!r} for {said!r}"


# --- errors -------------------------------------------------------------------------------------------------------


def test_bad_files_show_messages_and_the_next_request_works(page, tmp_path):
    corrupt = tmp_path / "photo.png"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    silent = write_wav(tmp_path / "silence.wav", np.zeros(16_000, np.float32), 16_000)

    panel = open_tab(page, "Image")
    choose_model(page, panel, "Model", MODEL)
    upload(input_block(panel, "Picture"), corrupt)
    button(panel, "Describe").click()
    message = wait_for_toast(page)
    assert translate("image_not_image") in message or translate("image_corrupt") in message, message
    close_toasts(page)
    assert describe(panel, EXAMPLES / "scene_0.png")
    assert not toasts(page)

    panel = open_tab(page, "Microphone")
    choose_model(page, panel, "Model", MODEL)
    block = input_block(panel, "Recording")
    block.get_by_role("button", name="Upload file", exact=True).click()
    upload(block, silent)
    block.get_by_role("button", name="Play", exact=True).wait_for()
    button(panel, "Transcribe").click()
    message = wait_for_toast(page)
    assert "No speech was heard" in message, message
    close_toasts(page)
    clear_input(block)
    upload(block, EXAMPLES / "speech_1.wav")
    assert transcribe(panel)
    assert not toasts(page)


# --- language -----------------------------------------------------------------------------------------------------


def switch_language(page, name: str):
    """Settings (page footer) -> Language -> `name`, then close Settings."""
    page.locator("footer").get_by_role("button", name="Settings").click()
    page.get_by_role("combobox", name="Language").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_role("dialog").locator(".banner-wrap").first.get_by_role("button").click()  # the × in its banner
    page.get_by_role("dialog").wait_for(state="detached")


def zh(key: str) -> str:
    return translate(key, "zh-CN")


def test_switching_to_chinese_translates_the_page_and_its_messages(page):
    textbox(page.get_by_role("tabpanel"), "Description").wait_for()
    switch_language(page, "简体中文")

    panel = page.get_by_role("tabpanel")
    wait_until(lambda: page.get_by_role("tab", selected=True).inner_text() == zh("tab_image"), 10,
               "the selected tab's label did not switch to Chinese")
    for key in ("describe", "ask", "new_conversation"):
        button(panel, zh(key)).wait_for()
    assert panel.get_by_role("button", name=zh("stop"), exact=True).count() == 2  # describing, and answering
    for key in ("description", "stats", "question", "ask_stats"):
        textbox(panel, zh(key)).wait_for()
    input_block(panel, zh("chat")).wait_for()
    input_block(panel, zh("image_input")).wait_for()
    button(panel, zh("describe")).click()  # with no picture: the message comes back in Chinese too
    assert zh("image_missing") in wait_for_toast(page)
    close_toasts(page)

    for index, buttons, boxes in ((1, ("transcribe", "reply"), ("transcript", "reply_output")),
                                  (2, ("generate", "stop"), ("prompt", "output"))):
        page.get_by_role("tab").nth(index).click()  # by place: see the xfail below
        panel = page.get_by_role("tabpanel")
        for key in buttons:
            button(panel, zh(key)).wait_for()
        for key in boxes:
            textbox(panel, zh(key)).wait_for()
    assert page.get_by_role("tab").all_inner_texts() == [zh("tab_image"), zh("tab_microphone"), zh("tab_text")]


@pytest.mark.xfail(strict=True, reason="Gradio 6.31 re-translates a tab's label only once the tab has been shown "
                                       "(cf. gradio-app/gradio#12892); remove this mark when it passes")
def test_switching_to_chinese_translates_the_labels_of_tabs_not_yet_shown(page):
    switch_language(page, "简体中文")
    tabs = [zh("tab_image"), zh("tab_microphone"), zh("tab_text")]
    wait_until(lambda: page.get_by_role("tab").all_inner_texts() == tabs, 2,
               f"the tabs should read {tabs}, they read {page.get_by_role('tab').all_inner_texts()}")
