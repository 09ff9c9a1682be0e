"""`EngineProcess`: the engine in a worker process keeps `Engine`'s contract, and the app runs it by default.

One worker for the module (spawning one imports torch and loads a model: seconds); the tests that kill or time out
a worker make their own.
"""

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import stress
from benchmarks.remote import remote_preset
from mmgpt.engine import (
    AudioRequest,
    Engine,
    EngineProcess,
    GenerationParams,
    GenerationTimeout,
    ImageRequest,
    LoadedModel,
    PresetUnavailableError,
    RemoteError,
    TextRequest,
    UnknownPresetError,
    WorkerDiedError,
)
from mmgpt.inputs import load_audio
from mmgpt.presets import PRESETS

pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
TRAINED = "mmgpt-tiny"
ENDLESS = "mmgpt-endless"  # a random mmgpt that never says end-of-text: Stop and closing always land mid-answer
GREEDY = GenerationParams(max_new_tokens=24)
LONG = GenerationParams(max_new_tokens=1500)
MISSING = "missing-model"  # a checkpoint directory that does not exist
KEYLESS = "keyless-remote"  # a remote preset whose API key variable is not set
KEY_ENV = "MMGPT_TEST_UNSET_KEY"
IDLE_CORES = 0.05


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    endless = stress.never_ending_mmgpt_preset(ENDLESS, tmp_path_factory.mktemp("endless"),
                                               {"max_new_tokens": 64}, n_embd=256, n_layer=6)
    missing = dataclasses.replace(PRESETS[TRAINED], name=MISSING, source=str(tmp_path_factory.mktemp("empty") /
                                                                              "missing-model"))
    keyless = remote_preset(KEYLESS, "http://127.0.0.1:9/v1", "any-model", api_key_env=KEY_ENV)
    return {**PRESETS, ENDLESS: endless, MISSING: missing, KEYLESS: keyless}


@pytest.fixture(scope="module")
def worker(presets):
    engine = EngineProcess(presets=presets, timeout_s=60, threads=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def in_process(presets):
    return Engine(presets=presets, timeout_s=60)


def requests():
    return {
        "text": TextRequest("ROMEO:"),
        "caption": ImageRequest(Image.open(EXAMPLES / "scene_1.png").convert("RGB")),
        "transcription": AudioRequest(load_audio(EXAMPLES / "speech_2.wav").waveform),
    }


def worker_cores(engine: EngineProcess, seconds: float) -> float:
    with open(f"/proc/{engine._worker.process.pid}/stat") as stat:
        before = sum(int(field) for field in stat.read().rsplit(")", 1)[1].split()[11:13])
    time.sleep(seconds)
    with open(f"/proc/{engine._worker.process.pid}/stat") as stat:
        after = sum(int(field) for field in stat.read().rsplit(")", 1)[1].split()[11:13])
    return (after - before) / os.sysconf("SC_CLK_TCK") / seconds


@pytest.mark.parametrize("kind", ["text", "caption", "transcription"])
def test_greedy_answers_and_their_maps_are_the_same_as_in_process(worker, in_process, kind):
    request = requests()[kind]
    there = list(worker.stream(TRAINED, request, GREEDY))
    here = list(in_process.stream(TRAINED, request, GREEDY))
    assert there[-1].done and len(there) >= 2, "the answer should stream in several updates"
    assert (there[-1].text, there[-1].token_ids) == (here[-1].text, here[-1].token_ids)
    maps_there = worker.explain(TRAINED, request, there[-1].token_ids, GREEDY)
    maps_here = in_process.explain(TRAINED, request, here[-1].token_ids, GREEDY)
    assert [token.text for token in maps_there.tokens] == [token.text for token in maps_here.tokens]
    for side in ("image_maps", "audio_curves"):
        assert (getattr(maps_there, side) is None) == (getattr(maps_here, side) is None)


def test_load_gives_what_the_app_reads_of_a_model(worker, in_process):
    loaded = worker.load(TRAINED)
    assert isinstance(loaded, LoadedModel)
    assert loaded.max_audio_seconds == in_process.load(TRAINED).max_audio_seconds > 0
    assert loaded.writes_heard_questions == in_process.load(TRAINED).writes_heard_questions


def test_a_wrong_request_is_refused_here_before_the_worker_hears_of_it(presets):
    engine = EngineProcess(presets=presets, start_now=False)
    with pytest.raises(UnknownPresetError, match="nope"):
        engine.stream("nope", TextRequest("x"))
    with pytest.raises(ValueError, match="does not take audio"):
        engine.stream("gpt2", AudioRequest(np.zeros(16_000, np.float32), 16_000))
    assert engine._worker is None, "nothing should have started a worker"


def test_errors_cross_to_the_server_with_their_type_and_message(worker):
    with pytest.raises(PresetUnavailableError, match="missing-model") as missing:
        list(worker.stream(MISSING, TextRequest("ROMEO:"), GREEDY))
    assert missing.value.preset == MISSING, "it names the model that could not load, for the page to say"
    with pytest.raises(RemoteError) as caught:  # rebuilt from its key, so that the page can translate it
        list(worker.stream(KEYLESS, TextRequest("ROMEO:"), GREEDY))
    assert caught.value.message.key == "remote_key_missing" and KEY_ENV in str(caught.value)
    assert list(worker.stream(TRAINED, TextRequest("ROMEO:"), GREEDY))[-1].done, "the worker keeps serving"


@pytest.mark.parametrize("how", ["Stop", "closed tab"])
def test_stop_and_a_closed_tab_end_the_answer_in_the_worker(worker, how):
    cancel = threading.Event()
    updates = worker.stream(ENDLESS, TextRequest("ROMEO:"), LONG, cancel)
    for _, update in zip(range(3), updates):
        pass
    updated_at = time.perf_counter()
    if how == "Stop":
        cancel.set()
        rest = list(updates)
        assert rest[-1].done and rest[-1].tokens < LONG.max_new_tokens
    else:
        updates.close()
    time.sleep(0.3)
    idle = worker_cores(worker, 1.0)
    # Not vacuous: at its pace the answer had more work left than all this took, so a worker that went on
    # generating would still be busy.
    work_left_s = (LONG.max_new_tokens - update.tokens) / update.tokens_per_s
    assert work_left_s > time.perf_counter() - updated_at, "the model is too fast for this test: make it bigger"
    assert idle < IDLE_CORES, f"the worker used {idle:.2f} cores after {how}: it should have stopped generating"


def test_concurrent_streams_each_get_their_own_answer(worker, in_process):
    texts = [f"{name}:" for name in ("ROMEO", "JULIET", "KING HENRY", "FIRST CITIZEN")]
    answers = {}

    def ask(text):
        answers[text] = list(worker.stream(TRAINED, TextRequest(text), GREEDY))[-1].text

    threads = [threading.Thread(target=ask, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert answers == {text: list(in_process.stream(TRAINED, TextRequest(text), GREEDY))[-1].text for text in texts}


def test_the_time_limit_holds_in_the_worker(presets):
    engine = EngineProcess(presets=presets, timeout_s=1.0, threads=1)
    try:
        with pytest.raises(GenerationTimeout, match="1 s"):
            list(engine.stream(ENDLESS, TextRequest("ROMEO:"), LONG))
    finally:
        engine.close()


def test_a_worker_that_dies_fails_its_requests_and_the_next_one_starts_a_new_worker(presets):
    engine = EngineProcess(presets=presets, timeout_s=60, threads=1)
    try:
        updates = engine.stream(ENDLESS, TextRequest("ROMEO:"), LONG)
        next(updates)
        first = engine._worker.process.pid
        engine._worker.process.kill()
        with pytest.raises(WorkerDiedError, match="try again"):
            list(updates)
        assert list(engine.stream(TRAINED, TextRequest("ROMEO:"), GREEDY))[-1].done
        assert engine._worker.process.pid != first
    finally:
        engine.close()


def test_closing_the_engine_ends_the_answers_in_flight_as_stop_does(presets):
    engine = EngineProcess(presets=presets, timeout_s=60, threads=1)
    updates = engine.stream(ENDLESS, TextRequest("ROMEO:"), LONG)
    next(updates)
    process = engine._worker.process
    engine.close()
    last = list(updates)[-1]
    assert last.done and last.tokens < LONG.max_new_tokens
    assert not process.is_alive() and process.exitcode == 0, "told to stop, it should stop on its own"
    with pytest.raises(WorkerDiedError, match="shut down"):
        engine.stream(TRAINED, TextRequest("ROMEO:"), GREEDY).__next__()


@pytest.mark.parametrize("setting, kind", [("", "EngineProcess"), ("0", "Engine")])
def test_the_app_runs_its_models_in_a_worker_process_unless_told_not_to(setting, kind):
    env = {**os.environ, "MMGPT_ENGINE_PROCESS": setting}
    env.pop("SPACES_ZERO_GPU", None)
    made = subprocess.run([sys.executable, "-c", "import app; print(type(app.make_engine()).__name__)"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert made.stdout.strip().splitlines()[-1] == kind, made.stderr[-2000:]


def test_on_zerogpu_the_models_stay_in_the_servers_process():
    env = {**os.environ, "MMGPT_ENGINE_PROCESS": "1", "SPACES_ZERO_GPU": "1"}
    made = subprocess.run([sys.executable, "-c", "import app; print(app.ENGINE_PROCESS)"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.stdout.strip().splitlines()[-1] == "False", made.stderr[-2000:]


def test_the_app_serves_every_kind_of_request_from_the_worker(worker, presets):
    from gradio_client import handle_file

    scene, question = handle_file(str(EXAMPLES / "scene_1.png")), handle_file(str(EXAMPLES / "question_0.wav"))
    with stress.serve(presets, worker) as served:
        client = served.client()
        job = client.submit(scene, "", TRAINED, api_name="/caption")
        caption, _, heatmap, _ = job.result(timeout=120)
        assert caption and heatmap, "the caption and the map of the word shown"
        assert len({output[0] for output in job.outputs() if output[0]}) >= 2, "the caption should stream"
        # a spoken question to a model that hears it: the app asks the worker how long a question it can hear
        conversation = client.predict(scene, "", question, None, TRAINED, False, "en", api_name="/ask")[0]
        assert [turn["role"] for turn in conversation] == ["user", "assistant"] and conversation[1]["content"]
        transcript = client.predict(handle_file(str(EXAMPLES / "speech_2.wav")), TRAINED, api_name="/transcribe")[0]
        assert transcript
