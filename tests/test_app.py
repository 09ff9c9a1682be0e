"""The app, launched in this process and driven through gradio_client, as an API user would.

Until `assets/mmgpt-tiny` is trained, the streaming, error and cancel tests run on a small random mmgpt checkpoint
written to a temporary directory (its end-of-text token is switched off and it samples, so every answer streams
for `max_new_tokens` tokens). The tests of right answers need the trained model and skip without it.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from benchmarks import stress
from media import scene_png, speech_wav
from mmgpt.engine import Engine, GenerationParams
from mmgpt.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "assets" / "mmgpt-tiny"
EXAMPLES = ROOT / "assets" / "examples"
needs_trained = pytest.mark.skipif(not (TRAINED / "config.json").is_file(), reason="assets/mmgpt-tiny not trained yet")
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
WORKER_PREFIXES = ("mmgpt-generate-", "mmgpt-stream-")  # the engine's worker threads and the app's pumps
RANDOM_PRESET = "mmgpt-random"
RANDOM_DEFAULTS = {"max_new_tokens": 128, "temperature": 1.0, "seed": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(client, engine) for an app whose presets are the real ones plus RANDOM_PRESET on a random checkpoint."""
    # big enough that 2,000 tokens take about 15 s, so that a stream is still going when a test stops it
    random_preset = stress.never_ending_mmgpt_preset(RANDOM_PRESET, tmp_path_factory.mktemp("checkpoint"),
                                                     RANDOM_DEFAULTS, n_embd=256, n_layer=6)
    presets = {**PRESETS, RANDOM_PRESET: random_preset}
    with stress.serve(presets, Engine(max_loaded=3, timeout_s=60, presets=presets)) as app_served:
        yield app_served.client(), app_served.engine


def worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(WORKER_PREFIXES)]


def streamed_texts(job) -> list[str]:
    """The distinct non-empty texts a job streamed, in order (its first output slot)."""
    job.result(timeout=120)
    texts = []
    for output in job.outputs():
        text = output[0]
        if text and (not texts or texts[-1] != text):
            texts.append(text)
    return texts


def text_args(prompt="ROMEO:", task="continue", preset=RANDOM_PRESET, max_new_tokens=128, temperature=1.0,
              seed=0, **overrides):
    args = dict(prompt=prompt, task=task, target_language="French", context="", preset=preset,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=1.0, top_k=0, repetition_penalty=1.0,
                seed=seed)
    return {**args, **overrides}


# --- every tab streams ------------------------------------------------------------------------------------------


def test_every_endpoint_is_named(served):
    client, _ = served
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/caption", "/transcribe", "/reply", "/generate"} <= names


STREAMING_PRESETS = [RANDOM_PRESET, pytest.param("mmgpt-tiny", marks=needs_trained)]


def fewest_states(preset: str) -> int:
    """How many distinct texts a whole answer streams at least. The random model's 128 tokens take about a second,
    many update intervals (`mmgpt.engine.streaming.UPDATE_INTERVAL_S`); mmgpt-tiny writes a caption in about one, so it
    shows its first token at once and then the rest."""
    return 3 if preset == RANDOM_PRESET else 2


@pytest.mark.parametrize("preset", STREAMING_PRESETS)
def test_image_tab_streams(served, tmp_path, preset):
    client, _ = served
    job = client.submit(handle_file(str(scene_png(tmp_path / "scene.png"))), "", preset, api_name="/caption")
    texts = streamed_texts(job)
    assert len(texts) >= fewest_states(preset), texts
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
    assert re.search(r"first token after [0-9.]+ s · [0-9.–]+ tokens/s · \d+ tokens", job.outputs()[-1][1])


@pytest.mark.parametrize("preset", STREAMING_PRESETS)
def test_microphone_tab_streams_and_shows_the_spectrogram(served, tmp_path, preset):
    client, _ = served
    job = client.submit(handle_file(str(speech_wav(tmp_path / "speech.wav"))), preset, api_name="/transcribe")
    texts = streamed_texts(job)
    assert len(texts) >= fewest_states(preset), texts
    spectrogram = job.outputs()[-1][2]  # the last output carries the picture, so predict() returns it too
    assert Image.open(spectrogram["path"]).size[0] >= 400


@pytest.mark.parametrize("preset", STREAMING_PRESETS)
def test_reply_streams(served, preset):
    client, _ = served
    job = client.submit("what is a small red circle", preset, api_name="/reply")
    assert len(streamed_texts(job)) >= fewest_states(preset)


@pytest.mark.parametrize("preset", STREAMING_PRESETS)
def test_text_tab_streams_and_a_seed_repeats(served, preset):
    client, _ = served
    first = client.submit(**text_args(preset=preset, seed=1234), api_name="/generate")
    texts = streamed_texts(first)
    assert len(texts) >= fewest_states(preset), texts
    assert "seed 1234" in first.outputs()[-1][1]
    again = client.predict(**text_args(preset=preset, seed=1234), api_name="/generate")
    assert again[0] == texts[-1]


# --- what the model saw (issue 6): computed after the answer, in the same call --------------------------------


class Selected:
    """What Gradio hands a select handler: the index of the chosen span."""

    def __init__(self, index):
        self.index = index


def test_the_image_endpoint_returns_the_heatmap_with_the_caption(served, tmp_path):
    client, _ = served
    picture = handle_file(str(scene_png(tmp_path / "scene.png")))
    caption, _, heatmap, words = client.predict(picture, "", RANDOM_PRESET, api_name="/caption")
    assert caption
    assert Image.open(heatmap["path"]).size == (256, 256)  # the 64x64 scene, drawn 4x with the map over it
    assert words["choices"] and words["value"] in [index for _, index in words["choices"]]  # the word shown
    caption_off, _, heatmap_off, _ = client.predict(picture, "", RANDOM_PRESET, False, api_name="/caption")
    assert caption_off and heatmap_off is None


@needs_trained
def test_each_description_word_gets_a_normalized_map_over_the_patch_grid(served, tmp_path):
    _, engine = served
    handlers = app.Handlers(engine)
    path = str(scene_png(tmp_path / "scene.png"))
    *_, last = handlers.caption({"path": path}, "", "mmgpt-tiny", True)
    text, _, _, _, kept = last
    config = engine.load("mmgpt-tiny").model.config
    grid = config.image_size // config.patch_size
    maps = kept.maps
    assert len(maps) == len(text.split()) and kept.curves is None
    for word, patches in maps:
        assert patches.shape == (grid, grid) and np.isclose(patches.sum(), 1.0, atol=1e-4), word
    (first, _), (second, _) = (next(handlers.image_word({"path": path}, index, kept)) for index in (0, 1))
    assert first.size == second.size == (256, 256)
    assert np.asarray(first).tolist() != np.asarray(second).tolist() or np.allclose(maps[0][1], maps[1][1])


@needs_trained
def test_the_transcript_words_get_attention_curves_drawn_under_the_spectrogram(served, tmp_path):
    _, engine = served
    handlers = app.Handlers(engine)
    path = str(speech_wav(tmp_path / "speech.wav"))
    *_, last = handlers.transcribe({"path": path}, "mmgpt-tiny", True)
    text, _, picture, _, curves = last
    assert len(curves) == len(text.split())
    for word, weights, seconds_per_step in curves:
        assert np.isclose(weights.sum(), 1.0, atol=1e-4) and seconds_per_step == pytest.approx(0.04), word
    *_, plain = handlers.transcribe({"path": path}, "mmgpt-tiny", False)
    assert plain[4] is None and picture.size[1] >= plain[2].size[1]


def test_text_output_comes_with_token_confidences_and_their_top_5(served):
    client, engine = served
    output, _, spans = client.predict(**text_args(max_new_tokens=12), api_name="/generate")
    assert "".join(span["token"] for span in spans) == output
    assert {span["class_or_confidence"] for span in spans} <= {"sure", "unsure", "guess"}
    *_, last = app.Handlers(engine).generate(*text_args(max_new_tokens=12).values(), True)
    alternatives = [app.Handlers.token_alternatives(last[3], Selected(i)) for i in range(len(last[3]))]
    for top in alternatives:
        probabilities = list(top.values())
        assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
        assert all(0.0 <= p <= 1.0 for p in probabilities) and sum(probabilities) <= 1.0 + 1e-6
    assert app.Handlers.token_alternatives(last[3], Selected(len(last[3]))) is None  # past the end: nothing
    no_maps = client.predict(**text_args(max_new_tokens=12), show_maps=False, api_name="/generate")
    assert no_maps[0] == output and no_maps[2] is None


def first_update(handler) -> tuple:
    """A handler's first update; the rest of its run is stopped, as the Stop button would."""
    try:
        return next(handler)
    finally:
        handler.close()


def test_each_run_empties_the_last_runs_maps_and_confidences_at_once(served, tmp_path):
    """What "show what the model saw" drew belongs to the last description, transcript or output, whose words are
    about to be replaced: a word picked from them would draw the wrong map, so the first update empties them."""
    _, engine = served
    handlers = app.Handlers(engine)
    emptied = (None, gr.update(choices=[], value=None), None)
    picture, recording = scene_png(tmp_path / "scene.png"), speech_wav(tmp_path / "speech.wav")
    assert first_update(handlers.caption({"path": str(picture)}, "", RANDOM_PRESET, True))[2:] == emptied
    assert first_update(handlers.transcribe({"path": str(recording)}, RANDOM_PRESET, True))[2:] == emptied
    assert first_update(handlers.generate(*text_args().values(), True))[2:] == (None, None)


def test_every_description_not_only_the_first_starts_by_emptying_the_word_picker(served, tmp_path):
    """What the browser gets: Gradio takes `value` out of an update it sends, so an update shared between runs
    would empty the picker's choices but leave its old word picked from the second run on."""
    client, _ = served
    picture = handle_file(str(scene_png(tmp_path / "scene.png")))
    for run in range(2):
        job = client.submit(picture, "", RANDOM_PRESET, True, api_name="/caption")
        job.result(timeout=60)
        words = job.outputs()[0][3]
        assert words["choices"] == [] and "value" in words and words["value"] is None, (run, words)


def test_the_answer_length_setting_follows_the_models_own(served):
    """The Text tab's slider starts at each model's max_new_tokens, which the other tabs use."""
    handlers = app.Handlers(served[1])
    for name in ("mmgpt-tiny", "qwen2.5-0.5b-instruct", "gpt2"):
        assert handlers.answer_length(name) == PRESETS[name].params().max_new_tokens
    assert handlers.answer_length("mmgpt-tiny") != handlers.answer_length("qwen2.5-0.5b-instruct")
    assert handlers.answer_length("no-such-model") == GenerationParams().max_new_tokens


# --- clear messages ---------------------------------------------------------------------------------------------


def error_of(client, *args, api_name, **kwargs) -> str:
    with pytest.raises(AppError) as caught:
        client.predict(*args, api_name=api_name, **kwargs)
    message = str(caught.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


def test_offline_hub_preset_says_so_and_the_app_keeps_working(served):
    client, _ = served
    message = error_of(client, **text_args(preset="gpt2", temperature=0.0, seed=None), api_name="/generate")
    assert "gpt2" in message and "could not be downloaded" in message and "mmgpt-tiny" in message
    chinese = error_of(client, **text_args(preset="gpt2", temperature=0.0, seed=None), lang="zh-CN",
                       api_name="/generate")
    assert "mmgpt-tiny" in chinese and "无法加载模型" in chinese
    assert client.predict(**text_args(), api_name="/generate")[0]


def test_no_image_gives_a_clear_error_and_the_next_request_works(served, tmp_path):
    client, _ = served
    assert "No image was given" in error_of(client, None, "", RANDOM_PRESET, api_name="/caption")
    assert "没有收到图片" in error_of(client, None, "", RANDOM_PRESET, lang="zh-CN", api_name="/caption")
    assert client.predict(handle_file(str(scene_png(tmp_path / "ok.png"))), "", RANDOM_PRESET,
                          api_name="/caption")[0]


def test_bad_files_get_the_inputs_messages(served, tmp_path):
    client, _ = served
    fake = tmp_path / "photo.png"
    fake.write_text("not a picture at all")
    assert "not a picture" in error_of(client, handle_file(str(fake)), "", RANDOM_PRESET, api_name="/caption")
    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    assert "No speech was heard" in error_of(client, handle_file(str(silent)), RANDOM_PRESET, api_name="/transcribe")


@pytest.mark.parametrize("value, words", [("0", "must be at least 1, got 0"), ("-3", "must be at least 1, got -3"),
                                          ("four", "must be a whole number, got 'four'")])
def test_a_server_setting_out_of_range_stops_the_app_naming_it(monkeypatch, value, words):
    """0 requests at once would queue every request for ever, and 0 torch threads would fail each one: the app
    refuses to start instead, naming the variable."""
    monkeypatch.setenv("MMGPT_CONCURRENCY", value)
    with pytest.raises(SystemExit, match=f"MMGPT_CONCURRENCY {words}"):
        app._env_int("MMGPT_CONCURRENCY", 16, minimum=1)
    monkeypatch.setenv("MMGPT_BATCHING", "0")  # a switch: 0 is a setting, not a mistake
    assert app._env_int("MMGPT_BATCHING", 1) == 0


def test_a_misspelt_default_model_is_logged_and_the_tab_starts_with_another(monkeypatch, caplog):
    monkeypatch.setenv("MMGPT_DEFAULT_TEXT", "gtp2-misspelt")
    handlers = app.Handlers(Engine(presets=PRESETS))
    with caplog.at_level(logging.WARNING, logger="mmgpt.app"):
        assert handlers.default("text") in [preset.name for preset in handlers.presets("text")]
    assert "gtp2-misspelt" in caplog.text and "the text tab starts with" in caplog.text


def test_the_app_does_not_start_with_room_for_no_request():
    started = subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "MMGPT_CONCURRENCY": "0"}, timeout=300)
    assert started.returncode != 0 and "MMGPT_CONCURRENCY must be at least 1, got 0" in started.stderr


@pytest.mark.parametrize("overrides, words", [
    (dict(top_k=-5), "top_k"),
    (dict(top_k=-5, lang=5), "top_k"),  # a language that is no locale: the message is still said, in English
    (dict(temperature=99), "temperature"),
    (dict(max_new_tokens="lots"), "max_new_tokens"),
    (dict(seed=1.5), "seed"),
    (dict(prompt="   \x00 "), "prompt is empty"),
    (dict(preset="../../etc/passwd"), "no model named"),
    (dict(task="hack"), "no task named"),
    (dict(task="summarize"), "instruction-tuned"),
])
def test_crafted_settings_are_refused_clearly(served, overrides, words):
    client, _ = served
    assert words in error_of(client, **text_args(**overrides), api_name="/generate")


def test_reply_without_a_transcript(served):
    client, _ = served
    assert "Transcribe a recording first" in error_of(client, "", RANDOM_PRESET, api_name="/reply")


# --- cancel -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled text streams", "greedy text never flushes"])
def test_cancel_ends_the_worker_thread(served, temperature):
    client, _ = served
    before = len(worker_threads())
    job = client.submit(**text_args(max_new_tokens=2000, temperature=temperature), api_name="/generate")  # ~15 s
    deadline = time.monotonic() + 30
    while len(job.outputs()) < 3 and time.monotonic() < deadline:  # running (updates or heartbeats arrive)
        time.sleep(0.02)
    assert len(worker_threads()) > before, "the generation should still be running"
    job.cancel()  # returns once the server has closed the handler
    cancelled_at = time.monotonic()
    while len(worker_threads()) > before and time.monotonic() - cancelled_at < 2.0:
        time.sleep(0.02)
    assert len(worker_threads()) == before, f"worker still alive {time.monotonic() - cancelled_at:.1f} s after cancel"
    assert client.predict(**text_args(max_new_tokens=8), api_name="/generate")[0]  # and the app keeps serving


# --- right answers (need the trained model) ---------------------------------------------------------------------


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def examples(suffix: str, generate) -> list[tuple[Path, str]]:
    """(file, expected answer) from assets/examples/examples.json, else freshly made by `generate()`."""
    listing = EXAMPLES / "examples.json"
    if listing.is_file():
        expected = json.loads(listing.read_text())
        found = [(EXAMPLES / name, text) for name, text in sorted(expected.items()) if name.endswith(suffix)]
        if found:
            return found
    return generate()


@needs_trained
def test_image_tab_captions_example_scenes(served, tmp_path):
    def generate():
        from mmgpt.data.scenes import scene_dataset

        made = []
        for index, scene in enumerate(scene_dataset("test", 3, seed=4321)):
            scene.image.save(tmp_path / f"scene{index}.png")
            made.append((tmp_path / f"scene{index}.png", scene.caption))
        return made

    client, _ = served
    cases = examples(".png", generate)
    captions = [client.predict(handle_file(str(path)), "", "mmgpt-tiny", api_name="/caption")[0] for path, _ in cases]
    right = sum(words(caption) == words(expected) for caption, (_, expected) in zip(captions, cases))
    assert right >= max(1, len(cases) - 1), list(zip(captions, [expected for _, expected in cases]))


@needs_trained
def test_microphone_tab_transcribes_espeak(served, tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")

    def generate():
        from mmgpt.data.scenes import example_captions
        from mmgpt.data.speech import TEST_VOICES

        sentences = example_captions(3, seed=99, split="test")
        return [(speech_wav(tmp_path / f"utterance{index}.wav", sentence, TEST_VOICES[index % len(TEST_VOICES)]),
                 sentence) for index, sentence in enumerate(sentences)]

    client, _ = served
    cases = examples(".wav", generate)
    transcripts = [client.predict(handle_file(str(path)), "mmgpt-tiny", api_name="/transcribe")[0]
                   for path, _ in cases]
    right = sum(words(transcript) == words(expected) for transcript, (_, expected) in zip(transcripts, cases))
    assert right >= max(1, len(cases) - 1), list(zip(transcripts, [expected for _, expected in cases]))
