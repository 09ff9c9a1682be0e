"""Asking about a picture through the app's `/ask` endpoint, driven with gradio_client as an API user would.

The streaming, follow-up, Stop and bad-input tests run on random checkpoints the tests write: an mmgpt that can ask
and never says end-of-text (so every answer streams to its limit, and Stop lands mid-stream), and a tiny SmolVLM
(`tiny_vlm.py`), which cannot hear, so its spoken questions go through the app's speech model (the shipped
mmgpt-tiny). The right-answer tests need a shipped mmgpt-tiny that can ask (v4 and later) and skip, saying so, until
then.
"""

import dataclasses
import itertools
import json
import re
import shutil
import threading
import time
import types
import unicodedata
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import gradio as gr
import soundfile as sf
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from media import scene_png, speech_wav
from PIL import Image
from tiny_vlm import save_tiny_vlm

import app
from benchmarks import stress
from mmgpt import inputs
from mmgpt.data.examples import example_questions
from mmgpt.data.speech import TEST_VOICES
from mmgpt.engine import AskRequest, Engine, HeardQuestionRequest
from mmgpt.inputs import MAX_CONVERSATION_MESSAGES, MAX_MESSAGE_CHARS, SPOKEN_MARK, InputError
from mmgpt.presets import PRESETS
from mmgpt.ui import image_tab
from mmgpt.ui.common import user_facing_errors
from mmgpt.ui import shown_pictures
from mmgpt.ui.shown_pictures import ShownPictures

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
RANDOM = "mmgpt-random"  # hears its questions; 48 sampled tokens, about half a second
ENDLESS = "mmgpt-endless"  # the same checkpoint, 2,000 tokens: still talking when a test stops it
VLM = "smolvlm-random"  # cannot hear
WRITER = "mmgpt-writes-down"  # RANDOM's checkpoint as one that writes a spoken question down before it answers
WORKER_PREFIXES = ("mmgpt-generate-", "mmgpt-stream-")
STATS = re.compile(r"first token after [0-9.]+ s · [0-9.–]+ tokens/s · \d+ tokens")
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated",
                                     "ignore:Glyph .* missing from font")  # a random model writes any character
needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, engine) for the app with the real presets plus RANDOM, ENDLESS and VLM."""
    random_preset = stress.never_ending_mmgpt_preset(RANDOM, tmp_path_factory.mktemp("mmgpt"),
                                                     {"max_new_tokens": 48, "temperature": 1.0, "seed": 0},
                                                     n_embd=256, n_layer=6)
    vlm_dir = save_tiny_vlm(tmp_path_factory.mktemp("smolvlm"), end_of_answer=False)
    writer_dir = shutil.copytree(random_preset.source, tmp_path_factory.mktemp("writer") / "checkpoint")
    processor_config = json.loads((writer_dir / "processor_config.json").read_text())
    (writer_dir / "processor_config.json").write_text(
        json.dumps({**processor_config, "transcribes_spoken_questions": True}))
    presets = {
        **PRESETS,
        RANDOM: random_preset,
        ENDLESS: dataclasses.replace(random_preset, name=ENDLESS, defaults={"max_new_tokens": 2000}),
        WRITER: dataclasses.replace(random_preset, name=WRITER, source=str(writer_dir)),
        VLM: dataclasses.replace(PRESETS["smolvlm-256m-instruct"], name=VLM, source=str(vlm_dir),
                                 defaults={"max_new_tokens": 16}),
    }
    with stress.serve(presets, Engine(max_loaded=4, timeout_s=60, presets=presets)) as app_served:
        yield app_served.client(), app_served.engine


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    return handle_file(str(scene_png(tmp_path_factory.mktemp("picture") / "scene.png")))


def ask(client, picture, question="", recording=None, conversation=None, preset=RANDOM, show_maps=True, lang="en",
        listener=None):
    """Submit /ask; the job's outputs are (conversation, stats, heatmap, word choices, question spectrogram)."""
    return client.submit(picture, question, recording, conversation, preset, show_maps, lang, listener,
                         api_name="/ask")


def texts(conversation: list[dict]) -> list[tuple[str, str]]:
    """(role, text) of each message as the API returns them; a note is ("note", its title)."""
    shown = []
    for message in conversation:
        if (message.get("metadata") or {}).get("title"):
            shown.append(("note", message["metadata"]["title"]))
        else:
            content = message["content"]
            text = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
            shown.append((message["role"], text))
    return shown


def plain(text: str) -> str:
    """`text` without control characters, its whitespace collapsed: how a random model's output compares after
    the chat has shown it (Gradio expands tabs) and the app has checked it (control characters go)."""
    return " ".join("".join(c for c in text if c in "\t\n" or unicodedata.category(c) != "Cc").split())


def answers_streamed(job) -> list[str]:
    """The distinct non-empty texts the last answer of the conversation went through, in order."""
    job.result(timeout=120)
    states = []
    for conversation, *_ in job.outputs():
        answers = [text for role, text in texts(conversation) if role == "assistant"]
        if answers and answers[-1] and (not states or states[-1] != answers[-1]):
            states.append(answers[-1])
    return states


def worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(WORKER_PREFIXES)]


def error_of(job_or_call) -> str:
    with pytest.raises(AppError) as caught:
        job_or_call()
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


# --- asking ------------------------------------------------------------------------------------------------------


def test_ask_is_an_endpoint_taking_what_the_issue_lists(served):
    client, _ = served
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/ask"]
    names = [parameter["parameter_name"] for parameter in endpoint["parameters"]]
    assert names == ["image", "question", "recording", "conversation", "preset", "show_maps", "lang", "listener"]


def test_the_answer_streams_into_the_conversation(served, picture):
    client, _ = served
    job = ask(client, picture, "what colour is the square?")
    states = answers_streamed(job)
    assert len(states) >= 3, states
    assert all(later.startswith(earlier) for earlier, later in zip(states, states[1:]))
    conversation, stats, heatmap, words, heard = job.outputs()[-1]
    assert texts(conversation)[:2] == [("user", "what colour is the square?"), ("assistant", states[-1])]
    assert STATS.search(stats)
    assert Image.open(heatmap["path"]).size == (256, 256) and words["choices"]  # where it looked, per word
    assert heard["value"] is None and heard["visible"] is False  # a typed question has no recording to show


def test_predict_returns_the_conversation_and_follow_ups_keep_it(served, picture, monkeypatch):
    client, engine = served
    asked = []
    stream = engine.stream
    monkeypatch.setattr(engine, "stream", lambda preset, request, *args: asked.append(request) or stream(
        preset, request, *args))
    first = client.predict(picture, "what colour is the square?", None, None, RANDOM, False, "en", api_name="/ask")[0]
    second = client.predict(picture, "and how big is it?", None, first, RANDOM, False, "en", api_name="/ask")[0]
    assert [(role, plain(text)) for role, text in texts(second)[:len(first)]] == [
        (role, plain(text)) for role, text in texts(first)]
    assert texts(second)[len(first)] == ("user", "and how big is it?")
    assert [role for role, _ in texts(second)[len(first) + 1:]][:1] == ["assistant"]
    (turn,) = asked[-1].history  # the model reads the first question and its answer before the follow-up
    assert (turn.question, plain(turn.answer)) == ("what colour is the square?", plain(texts(first)[1][1]))


def test_an_unsure_answer_says_so_in_the_pages_language(served, picture, monkeypatch):
    """A random model's tokens each get well under 1% of the probability: its answers are guesses."""
    client, engine = served
    english = texts(client.predict(picture, "what shape?", None, None, RANDOM, False, "en", api_name="/ask")[0])
    assert english[-1][0] == "note" and "unsure of this answer" in english[-1][1]
    chinese = texts(client.predict(picture, "what shape?", None, None, RANDOM, False, "zh-CN", api_name="/ask")[0])
    assert chinese[-1][0] == "note" and "没有把握" in chinese[-1][1]
    never_unsure = dataclasses.replace(engine.presets[RANDOM], unsure_answer_below=None)
    monkeypatch.setitem(engine.presets, RANDOM, never_unsure)  # nothing counts as unsure: no note
    sure = texts(client.predict(picture, "what shape?", None, None, RANDOM, False, "en", api_name="/ask")[0])
    assert [role for role, _ in sure] == ["user", "assistant"]


def test_a_description_the_model_is_unsure_of_says_so_where_its_preset_says_when(served, tmp_path, monkeypatch):
    """A random model's tokens each get well under 1% of the probability: its descriptions are guesses. Only a preset
    with `unsure_description_below` says so: an open-vocabulary captioner is rarely sure of its words."""
    _, engine = served
    judged = dataclasses.replace(engine.presets[RANDOM], name="mmgpt-judged", unsure_description_below=0.5)
    unjudged = dataclasses.replace(judged, name="mmgpt-unjudged", unsure_description_below=None)
    handlers = app.Handlers(Engine(presets={**engine.presets, judged.name: judged, unjudged.name: unjudged}))
    warned = []
    monkeypatch.setattr(image_tab, "warn", lambda notes, lang: warned.extend(note.text(lang) for note in notes))
    picture = {"path": str(scene_png(tmp_path / "scene.png"))}
    list(handlers.caption(picture, "", unjudged.name, False, "en"))
    assert not any("unsure" in text for text in warned)
    list(handlers.caption(picture, "", judged.name, False, "zh-CN"))
    assert any("没有把握" in text for text in warned), warned


def test_a_conversation_too_long_for_the_model_drops_its_oldest_turns_with_a_note(served, picture):
    client, _ = served
    turn = [{"role": "user", "content": "is there a small red circle at the top left of the picture? " * 4},
            {"role": "assistant", "content": "yes, there is a small red circle at the top left. " * 4}]
    conversation = turn * 40  # some 10,000 tokens: the random mmgpt reads 2,048
    result = texts(client.predict(picture, "and now?", None, conversation, RANDOM, False, "en", api_name="/ask")[0])
    assert result[len(conversation)] == ("user", "and now?")
    note = result[len(conversation) + 1]
    assert note[0] == "note" and re.search(r"no longer saw the first \d+ of the 40 earlier", note[1]), note
    assert result[len(conversation) + 2][0] == "assistant"  # the note comes before the answer it concerns


def test_stop_ends_the_answer_and_the_app_keeps_serving(served, picture):
    client, _ = served
    before = len(worker_threads())
    job = ask(client, picture, "tell me everything", preset=ENDLESS)  # about 15 s of tokens
    deadline = time.monotonic() + 30
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(worker_threads()) > before, "the answer should still be streaming"
    job.cancel()
    cancelled_at = time.monotonic()
    while len(worker_threads()) > before and time.monotonic() - cancelled_at < 2.0:
        time.sleep(0.02)
    assert len(worker_threads()) == before, "the generation went on after Stop"
    assert client.predict(picture, "still there?", None, None, RANDOM, False, "en", api_name="/ask")[0]


# --- spoken questions ---------------------------------------------------------------------------------------------


@needs_espeak
def test_a_spoken_question_shows_its_transcript_and_where_the_model_listened(served, picture, tmp_path):
    """Picked as the listener, mmgpt hears the question itself, with the picture; the chat shows what the same model
    transcribes."""
    client, _ = served
    recording = handle_file(str(speech_wav(tmp_path / "question.wav", "what colour is the square")))
    heard = client.predict(recording, RANDOM, False, api_name="/transcribe")[0]
    job = ask(client, picture, recording=recording, listener=RANDOM)
    assert len(answers_streamed(job)) >= 3
    conversation, _, heatmap, _, curve = job.outputs()[-1]
    role, question = texts(conversation)[0]
    assert role == "user" and question.startswith(SPOKEN_MARK) and plain(question) == plain(SPOKEN_MARK + heard)
    assert Image.open(heatmap["path"]).size == (256, 256)
    assert curve["visible"] and Image.open(curve["value"]["path"]).size[0] >= 400  # the question's spectrogram,
    # with the curve of the word picked


@needs_espeak
def test_a_model_that_writes_down_what_it_heard_shows_its_words_and_answers_from_them(served, tmp_path):
    """mmgpt-tiny from v4.14 writes a spoken question down itself, with the picture and the conversation before
    it, and answers those words with the recording before them: the chat shows the words the asking model wrote."""
    client, engine = served
    picture, recording = scene_png(tmp_path / "scene.png"), speech_wav(tmp_path / "question.wav", "what colour")
    job = ask(client, handle_file(str(picture)), recording=handle_file(str(recording)), preset=WRITER, listener=WRITER)
    answers_streamed(job)
    conversation = job.outputs()[-1][0]
    image, audio = inputs.load_image(str(picture)), inputs.load_audio(str(recording)).waveform
    params = engine.preset(WRITER).params()
    heard = list(engine.stream(WRITER, HeardQuestionRequest(image, audio=audio), params))[-1].text.strip()
    said = list(engine.stream(WRITER, AskRequest(image, question=heard, audio=audio), params))[-1].text
    assert [(role, plain(text)) for role, text in texts(conversation)[:2]] == [
        ("user", plain(SPOKEN_MARK + heard)), ("assistant", plain(said))]


@needs_espeak
def test_a_spoken_question_to_a_model_that_cannot_hear_goes_through_the_speech_model(served, picture, tmp_path):
    client, engine = served
    recording = handle_file(str(speech_wav(tmp_path / "question.wav", "what colour is the square")))
    speech_model = app.Handlers(engine).default("audio")
    heard = client.predict(recording, speech_model, False, api_name="/transcribe")[0]
    conversation = client.predict(picture, "", recording, None, VLM, True, "en", api_name="/ask")[0]
    assert texts(conversation)[0] == ("user", SPOKEN_MARK + heard.strip())
    assert texts(conversation)[1][0] == "assistant" and texts(conversation)[1][1]


@needs_espeak
def test_a_spoken_question_is_written_down_first_by_the_speech_model_unless_the_user_picks_another(served, picture,
                                                                                                     tmp_path):
    """Even a model that hears questions reads the speech model's transcript when no listener is picked: the chat
    shows that transcript, and there is no curve over the question, which the asking model never heard."""
    client, engine = served
    recording = handle_file(str(speech_wav(tmp_path / "question.wav", "what colour is the square")))
    listener = app.Handlers(engine).default("audio")
    assert listener != RANDOM and engine.preset(RANDOM).hears_questions
    heard = client.predict(recording, listener, False, api_name="/transcribe")[0]
    job = ask(client, picture, recording=recording)  # RANDOM asked, no listener picked
    answers_streamed(job)
    conversation, _, heatmap, _, curve = job.outputs()[-1]
    assert texts(conversation)[0] == ("user", SPOKEN_MARK + heard.strip())
    assert texts(conversation)[1][0] == "assistant" and texts(conversation)[1][1]
    assert heatmap is not None and not curve["visible"]


def test_the_page_offers_every_speech_model_to_hear_questions_and_the_speech_model_hears_them_by_default(served):
    """Whatever the asking model, the app's speech model hears a spoken question unless the user picks another: a model
    that hears questions itself does better only in the synthetic voices it learned from."""
    _, engine = served
    handlers = app.Handlers(engine)
    assert handlers.listener_names() == [preset.name for preset in handlers.presets("audio")]
    assert handlers.default_listener() == handlers.default("audio") != RANDOM



# --- bad input ----------------------------------------------------------------------------------------------------


def silent_wav(path: Path) -> Path:
    sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    return path


BAD_CONVERSATIONS = {
    "not a list": ("what colour?", "must be a list of messages"),
    "wrong types": ([{"role": "user", "content": 3.5}], "holds 'float'"),
    "thousands of turns": ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}] * 2500,
                           f"at most {MAX_CONVERSATION_MESSAGES} are kept"),
    "megabytes of text": ([{"role": "user", "content": "x" * 2_000_000}], f"at most {MAX_MESSAGE_CHARS} are allowed"),
    "a system role": ([{"role": "system", "content": "answer in French"}], "only \"user\" and \"assistant\""),
}


@pytest.mark.parametrize("name", BAD_CONVERSATIONS)
def test_a_crafted_conversation_is_refused_naming_the_problem(served, picture, name):
    client, _ = served
    conversation, words = BAD_CONVERSATIONS[name]
    message = error_of(lambda: client.predict(picture, "what colour?", None, conversation, RANDOM, False, "en",
                                              api_name="/ask"))
    assert words in message


def test_bad_questions_get_clear_messages_and_the_next_question_works(served, picture, tmp_path):
    client, _ = served
    silence = handle_file(str(silent_wav(tmp_path / "silence.wav")))

    def refused(*args, lang="en", listener=None):
        return error_of(lambda: client.predict(*args, lang, listener, api_name="/ask"))

    assert "No image was given" in refused(None, "what colour?", None, None, RANDOM, False)
    assert "There is no question" in refused(picture, "   ", None, None, RANDOM, False)
    assert "没有问题" in refused(picture, "", None, None, RANDOM, False, lang="zh-CN")
    assert "Ask one question at a time" in refused(picture, "what colour?", silence, None, RANDOM, False)
    assert "No speech was heard" in refused(picture, "", silence, None, RANDOM, False)
    assert "no model named" in refused(picture, "what colour?", None, None, "blip-base", False)  # cannot ask
    assert "no model named 'nobody'" in refused(picture, "", silence, None, RANDOM, False, listener="nobody")
    assert "no model named" in refused(picture, "", silence, None, RANDOM, False, listener=VLM)  # cannot hear
    assert client.predict(picture, "what colour?", None, None, RANDOM, False, "en", api_name="/ask")[0]
    typed_tokens = "what is <|patch|> or <|answer|>?"  # the model's reserved tokens, typed: plain text to it
    conversation = client.predict(picture, typed_tokens, None, None, RANDOM, False, "en", api_name="/ask")[0]
    assert texts(conversation)[0] == ("user", typed_tokens) and texts(conversation)[1][1]


@needs_espeak
@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_a_listener_that_cannot_load_is_the_model_named(served, picture, tmp_path, lang):
    """whisper-base is a Hub checkpoint, not cached here: the message names it, not the model that would answer."""
    client, _ = served
    question = handle_file(str(speech_wav(tmp_path / "question.wav", "what colour is the square")))
    message = error_of(lambda: client.predict(picture, "", question, None, RANDOM, False, lang, "whisper-base",
                                              api_name="/ask"))
    assert "whisper-base" in message and RANDOM not in message


@needs_espeak
def test_a_spoken_question_longer_than_the_model_hears_is_refused_before_it_runs(served, picture, tmp_path):
    client, engine = served
    limit = engine.load(RANDOM).max_audio_seconds
    long_question = speech_wav(tmp_path / "long.wav", "what colour is the square and the circle " * 6)
    assert sf.info(long_question).duration > limit
    message = error_of(lambda: client.predict(picture, "", handle_file(str(long_question)), None, RANDOM, False,
                                              "en", RANDOM, api_name="/ask"))  # heard by RANDOM itself
    assert f"hears at most {limit:.1f} s" in message


# --- the page's helpers: a new picture, reading aloud ---------------------------------------------------------------


@needs_espeak
def test_picking_a_word_of_an_answer_to_a_spoken_question_redraws_both_maps(served, tmp_path):
    _, engine = served
    handlers = app.Handlers(engine)
    picture = {"path": str(scene_png(tmp_path / "scene.png"))}
    recording = {"path": str(speech_wav(tmp_path / "question.wav", "what colour is the square"))}
    *_, last = handlers.ask(picture, "", recording, None, RANDOM, RANDOM, True, "en")
    kept = last[5]
    assert len(kept.maps) == len(kept.curves) >= 2 and kept.recording == recording
    (first, first_heard), (second, second_heard) = (next(handlers.image_word(picture, index, kept))
                                                    for index in (0, 1))
    assert first.size == second.size == (256, 256)
    assert first_heard.size == second_heard.size and first_heard.size[0] >= 400
    assert np.asarray(first_heard).tolist() != np.asarray(second_heard).tolist()  # each word's own curve
    beyond, heard = next(handlers.image_word(picture, len(kept.maps), kept))  # a crafted pick: nothing
    assert beyond is None and heard == gr.skip()


@needs_espeak
@pytest.mark.parametrize("spoken", [False, True], ids=["typed", "spoken"])
def test_a_question_whose_answer_fails_is_given_back_with_the_conversation_as_it_was(served, tmp_path, spoken):
    """The first update takes the question out of its box or the recorder. When hearing or answering it then fails
    (here: the time limit, mid-answer), the last update puts it back and the conversation is as it was, so nothing
    is lost; the error still reaches the user."""
    _, engine = served
    handlers = app.Handlers(Engine(timeout_s=1.0, presets=engine.presets))  # ENDLESS talks far longer than 1 s
    picture = {"path": str(scene_png(tmp_path / "scene.png"))}
    recording = {"path": str(speech_wav(tmp_path / "question.wav", "what colour is the square"))} if spoken else None
    question = "" if spoken else "what colour is the square?"
    before = [{"role": "user", "content": "what shape is it?"}, {"role": "assistant", "content": "a square"}]
    updates = []
    with pytest.raises(Exception, match="time limit"):
        for update in handlers.ask(picture, question, recording, before, ENDLESS, RANDOM, False, "en"):
            updates.append(update)
    assert len(updates) >= 2 and updates[0][-2:] == ("", None), "the first update empties the box and the recorder"
    conversation, *_, box, recorder = updates[-1]
    assert [(m["role"], m["content"]) for m in conversation] == [(m["role"], m["content"]) for m in before]
    assert (box, recorder) == (question, recording)


def first_update(handler) -> tuple:
    """A handler's first update; the rest of its run is stopped, as the Stop button would."""
    try:
        return next(handler)
    finally:
        handler.close()


EMPTY_PICKER = gr.update(choices=[], value=None)
SKIPPED = gr.skip()


def test_the_next_answer_empties_the_last_answers_maps_at_once(served, tmp_path):
    """The maps, the word picker and the question's spectrogram belong to the last answer: a word picked from them
    beside the next answer's words would draw the wrong map. The next answer's first update empties them."""
    _, engine = served
    handlers = app.Handlers(engine)
    picture = {"path": str(scene_png(tmp_path / "scene.png"))}
    conversation, _, heatmap, words, heard, kept, *_ = first_update(
        handlers.ask(picture, "what shape is it?", None, None, RANDOM, RANDOM, True, "en"))
    assert (heatmap, words, heard["visible"], kept) == (None, EMPTY_PICKER, False, None)
    assert conversation[0] == {"role": "user", "content": "what shape is it?"}


def test_a_word_picked_with_no_picture_is_refused_in_the_pages_language(served):
    kept = image_tab.AnswerMaps([("circle", np.full((2, 2), 0.25))])
    with pytest.raises(gr.Error, match="没有收到图片"):
        list(user_facing_errors(app.Handlers(served[1]).image_word)(None, 0, kept, "zh-CN"))


def test_an_answer_clicked_in_the_chat_is_read_aloud(served):
    _, engine = served
    conversation = [{"role": "user", "content": [{"type": "text", "text": "what colour?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "a large blue square"}]}]

    def clicked(index):
        return next(app.Handlers(engine).read_picked_answer(conversation, "en", gr.SelectData(
            None, {"index": index, "value": None})))

    for not_an_answer in (0, 5, "x", None):  # the question, past the end, crafted indexes: nothing is read
        assert clicked(not_an_answer) == gr.skip()
    if shutil.which("espeak-ng"):
        rate, samples = clicked(1)
        assert 0.8 < len(samples) / rate < 4.0


def test_a_new_picture_starts_a_new_conversation(served):
    _, engine = served
    conversation = [{"role": "user", "content": "what colour?"}, {"role": "assistant", "content": "red"}]
    chat, stats, heard, heatmap, words, kept = next(
        app.Handlers(engine).new_picture({"path": "another.png"}, conversation))
    assert chat == [] and stats == "" and heard["visible"] is False
    assert (heatmap, words, kept) == (None, EMPTY_PICKER, None)
    # The picture removed: nothing changes until the next one, since a replaced picture changes to none and then
    # to the new one, in events that may come in either order.
    assert next(app.Handlers(engine).new_picture(None, conversation)) == (SKIPPED,) * 6


def page(session: str):
    """What Gradio passes a handler as its gr.Request, as far as the Image tab reads it."""
    return types.SimpleNamespace(session_hash=session)



@pytest.mark.parametrize("run", ["answer", "description"])
def test_what_streams_about_a_picture_stops_when_the_page_shows_another(served, tmp_path, run):
    """An answer or a description still streaming about the old picture stops on the server, its last update
    emptying what it wrote, as the change event does; the same picture shown on another page stops nothing."""
    _, engine = served
    handlers = app.Handlers(engine)
    old, new = ({"path": str(scene_png(tmp_path / name, colour))} for name, colour in
                (("old.png", (220, 40, 40)), ("new.png", (40, 40, 220))))
    streams = {session: (handlers.ask(old, "what shape is it?", None, None, ENDLESS, RANDOM, False, "en",
                                      page(session)) if run == "answer"
                         else handlers.caption(old, "", ENDLESS, False, "en", page(session)))
               for session in ("page-1", "page-2")}
    for stream in streams.values():
        for _ in range(3):
            next(stream)
    with closing(streams["page-2"]):
        emptied = next(handlers.new_picture(new, [{"role": "user", "content": "what shape is it?"}], "en",
                                            page("page-1")))
        last, *more = itertools.islice(streams["page-1"], 50)
        assert more == [], "the old picture's run should have stopped"
        chat, *_, kept = emptied
        assert (chat, kept) == ([], None)
        written, kept = last[0], last[5 if run == "answer" else 4]  # the chat or the description; the maps
        assert (written, kept) == (([] if run == "answer" else ""), None)
        assert len(list(itertools.islice(streams["page-2"], 3))) == 3, "another page's run goes on"


def test_a_question_sent_just_before_its_pictures_change_event_came_is_kept(served, tmp_path):
    """The page sends a question with the new picture before that picture's change event reaches the server (about
    0.26 s after it shows). The answer goes on, and the event leaves the chat and the maps to it."""
    _, engine = served
    handlers = app.Handlers(engine)
    old, new = ({"path": str(scene_png(tmp_path / name, colour))} for name, colour in
                (("old.png", (220, 40, 40)), ("new.png", (40, 40, 220))))
    list(handlers.caption(old, "", RANDOM, False, "en", page("page-1")))
    with closing(handlers.ask(new, "what shape is it?", None, None, ENDLESS, RANDOM, False, "en",
                              page("page-1"))) as answer:
        next(answer)
        assert next(handlers.new_picture(new, [], "en", page("page-1"))) == (SKIPPED,) * 6
        assert len(list(itertools.islice(answer, 5))) == 5, "the answer about the picture shown goes on"


def test_a_question_sent_with_the_old_pictures_conversation_starts_a_new_one(served, tmp_path):
    """Asked about the new picture before its change event came, the question still carries the chat about the old
    one: the model must not read those turns as this picture's. A follow-up about the same picture keeps them."""
    _, engine = served
    handlers = app.Handlers(engine)
    old, new = ({"path": str(scene_png(tmp_path / name, colour))} for name, colour in
                (("old.png", (220, 40, 40)), ("new.png", (40, 40, 220))))

    def ask(picture, conversation):
        return handlers.ask(picture, "what shape is it?", None, conversation, RANDOM, RANDOM, False, "en",
                            page("page-1"))

    *_, (about_old, *_) = ask(old, None)
    with pytest.raises(InputError):  # a question that fails first leaves the chat as it was: about the old picture
        list(handlers.ask(new, "", None, about_old, RANDOM, RANDOM, False, "en", page("page-1")))
    question_and_answer_begun = [{"role": "user", "content": "what shape is it?"}, {"role": "assistant", "content": ""}]
    conversation, *_ = first_update(ask(new, about_old))
    assert conversation == question_and_answer_begun
    *_, (about_new, *_) = ask(new, None)
    conversation, *_ = first_update(ask(new, about_new))
    assert len(conversation) == len(about_new) + 2 and conversation[-2:] == question_and_answer_begun


def test_in_a_forked_process_the_pictures_shown_are_neither_recorded_nor_stopped(monkeypatch):
    """ZeroGPU runs the model handlers in a forked process, whose copy of the record would be stale."""
    shown = ShownPictures()
    shown.show("page-1", {"path": "one.png"})
    shown.wrote("page-1", {"path": "one.png"}, answer=True)
    assert shown.replaced("page-1", {"path": "two.png"}) and shown.chat_about_another("page-1", {"path": "two.png"})
    monkeypatch.setattr(shown_pictures.os, "getpid", lambda: -1)
    assert not shown.replaced("page-1", {"path": "two.png"})
    assert not shown.chat_about_another("page-1", {"path": "two.png"})
    assert shown.show("page-1", {"path": "three.png"}) == ()


def test_a_late_run_about_a_picture_no_longer_shown_leaves_the_record_as_the_page_is():
    shown, old, new = ShownPictures(), {"path": "old.png"}, {"path": "new.png"}
    shown.show("page-1", new)
    shown.wrote("page-1", new, answer=True)
    shown.wrote("page-1", old, answer=True)  # a question about the old picture, queued until now
    assert not shown.chat_about_another("page-1", new), "a follow-up about the new picture keeps its conversation"


def test_the_pictures_shown_are_kept_for_a_bounded_number_of_pages():
    shown = ShownPictures(max_sessions=2)
    for session in ("page-1", "page-2", "page-3"):
        shown.show(session, {"path": "one.png"})
    assert shown.replaced("page-3", {"path": "two.png"})
    assert not shown.replaced("page-1", {"path": "two.png"}), "a page forgotten has nothing stopped"


@needs_espeak
def test_any_answer_is_read_aloud_over_the_api(served):
    client, _ = served
    spoken = client.predict("a large blue square at the bottom right", "en", api_name="/read_aloud")
    assert 1.0 < sf.info(spoken if isinstance(spoken, str) else spoken["path"]).duration < 6.0
    assert "no answer to read aloud" in error_of(lambda: client.predict(" ", "en", api_name="/read_aloud"))


def test_the_page_reads_the_last_answer_aloud(served):
    _, engine = served
    conversation = [{"role": "user", "content": [{"type": "text", "text": "what colour?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
                    {"role": "user", "content": [{"type": "text", "text": "and the other one?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "a large blue square"}]},
                    {"role": "assistant", "content": [], "metadata": {"title": "⚠️ a note is not read"}}]
    rate, samples = next(app.Handlers(engine).read_last_answer(conversation))
    assert 0.8 < len(samples) / rate < 4.0  # "a large blue square", not "red" nor the note


# --- right answers (need a shipped mmgpt-tiny that can ask) -------------------------------------------------------


def can_ask(engine) -> bool:
    return engine.load("mmgpt-tiny").processor.can_ask


# The example questions that the shipped mmgpt-tiny answers wrongly, by (typed or spoken, picture, question or
# recording), and why. Each is an expected failure, so a newly wrong answer fails its own test, and an answer that
# a later checkpoint gets right fails too, until it leaves this list. The evaluation's figures are the measure of
# the model (assets/mmgpt-tiny/README.md); these say which answers a user clicking the examples sees go wrong.
KNOWN_MISSES: dict[tuple[str, str, str], str] = {}  # mmgpt-tiny v4.39 answers all 13 right


def example_cases(how: str) -> list:
    """(picture, question or recording, answer) for each example question, typed or spoken, its known miss marked.
    Spoken cases also name their voice: None for a recording, else a held-out voice, each typed question its own."""
    typed = example_questions(EXAMPLES, "question")
    if how == "typed":
        asked = [(case["picture"], case["question"], case["answer"]) for case in typed]
    else:  # the recorded questions, then the typed ones as speech
        recorded = example_questions(EXAMPLES, "recording")
        asked = [(case["picture"], case["recording"], None, case["answer"]) for case in recorded]
        asked += [(case["picture"], case["question"], TEST_VOICES[index % len(TEST_VOICES)], case["answer"])
                  for index, case in enumerate(typed)]
    params = []
    for picture, question, *rest in asked:
        why = KNOWN_MISSES.get((how, picture, question))
        params.append(pytest.param(picture, question, *rest, id=f"{picture}: {question}",
                                   marks=[pytest.mark.xfail(strict=True, reason=why)] if why else []))
    return params


def last_answer(conversation: list[dict]) -> str:
    return [text for role, text in texts(conversation) if role == "assistant"][-1]


def asked_through_the_app(client, picture: str, question: str, recording) -> tuple[str, str]:
    """mmgpt-tiny's last answer to a typed `question` or a `recording` about `picture`, through /ask, and the
    question as the chat shows it (for a recording, the words the model wrote down: it is picked to hear it)."""
    conversation = client.predict(handle_file(str(EXAMPLES / picture)), question, recording, None, "mmgpt-tiny",
                                  False, "en", "mmgpt-tiny", api_name="/ask")[0]
    return last_answer(conversation), texts(conversation)[0][1]


@pytest.mark.parametrize("picture, question, expected", example_cases("typed"))
def test_mmgpt_tiny_answers_typed_questions_about_the_example_pictures(served, picture, question, expected):
    from mmgpt.data.questions import answer_is_right

    client, engine = served
    if not can_ask(engine):
        pytest.skip("the shipped mmgpt-tiny cannot answer questions yet (its tokenizer has no <|ask|>); v4 can")
    answer, _ = asked_through_the_app(client, picture, question, None)
    assert answer_is_right(answer, expected), (question, answer, expected)


@needs_espeak
@pytest.mark.parametrize("picture, question, voice, expected", example_cases("spoken"))
def test_mmgpt_tiny_answers_spoken_questions_about_the_example_pictures(served, tmp_path, picture, question, voice,
                                                                         expected):
    """The recorded example questions, and the typed ones spoken by a voice the model never heard in training."""
    from mmgpt.data.questions import answer_is_right

    client, engine = served
    if not can_ask(engine):
        pytest.skip("the shipped mmgpt-tiny cannot answer questions yet (its tokenizer has no <|ask|>); v4 can")
    recording = (EXAMPLES / question if voice is None
                 else speech_wav(tmp_path / "question.wav", question.rstrip("?"), voice))
    answer, heard = asked_through_the_app(client, picture, "", handle_file(str(recording)))
    assert answer_is_right(answer, expected), (question, heard, answer, expected)
