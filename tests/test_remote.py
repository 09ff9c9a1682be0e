"""Remote presets against a real model server: `transformers serve`, started once for this module on 127.0.0.1.

The server serves checkpoints these tests build offline (a chat Llama, a LLaVA, a Whisper; random weights, and no
end-of-text, so every answer runs to its limit); a remote preset names one by its path. transformers serve has no
API keys: the key tests put `KeyCheckingProxy`, a small reverse proxy of this module, in front of it. A server
that accepts connections and never answers is a bare listening socket (`silent_server`). Two event formats no
server here sends (OpenAI's streamed transcript events, and chat events that are not answers) come from
`event_stub`, a stand-in that is not a real server and is named so.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import stress
from benchmarks.remote import ModelServer, remote_preset, save_chat_model, save_vision_chat_model
from mmgpt.engine import Engine, GenerationParams, GenerationTimeout, ImageRequest, TextRequest
from mmgpt.engine.remote import RemoteBackend, RemoteError, chat_messages, chat_settings, transcription_settings
from mmgpt.i18n import TRANSLATIONS
from mmgpt.presets import PRESETS, RemotePresetsError, load_remote_presets
from mmgpt.requests import AskRequest, AudioRequest, Turn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting", "ignore:The copy keyword is deprecated")
KEY = "sk-test-0123456789abcdef"  # what the proxy accepts
KEY_ENV = "MMGPT_TEST_REMOTE_KEY"
LONG = GenerationParams(max_new_tokens=2048)  # seconds of work for the server: still going when a test stops it
SHORT = GenerationParams(max_new_tokens=12)
CHAT = TextRequest("romeo what light through yonder window breaks", task="chat")
SERVER_STARTUP = {}  # how long transformers serve took to answer /health, printed at the end of the module


# --- the server and its checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    return {
        "chat": save_chat_model(root / "chat"),
        "slow-chat": save_chat_model(root / "slow-chat", hidden_size=128, layers=4),  # for the Stop tests
        "vision": save_vision_chat_model(root / "vision"),
        "speech": save_speech_model(root / "speech"),
    }


def save_speech_model(directory: Path) -> Path:
    """A random tiny Whisper (letters-only vocabulary, 1-second windows) that never ends early."""
    import torch
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer = WhisperTokenizer(vocab={token: i for i, token in enumerate("Ġabcdefghijklmnopqrstuvwxyz")},
                                 merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    ids = [tokenizer.convert_tokens_to_ids(token) for token in specials]
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80, chunk_length=1), tokenizer).save_pretrained(directory)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=50, max_target_positions=64, decoder_start_token_id=ids[1], pad_token_id=ids[0],
        bos_token_id=ids[0], eos_token_id=ids[0]))
    model.generation_config.update(decoder_start_token_id=ids[1], no_timestamps_token_id=ids[4],
                                   suppress_tokens=ids, begin_suppress_tokens=None, max_new_tokens=16)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    server = ModelServer(tmp_path_factory.mktemp("serve-log") / "serve.log")
    yield server
    server.stop()
    print(f"\ntransformers serve answered /health after: {SERVER_STARTUP}")


@pytest.fixture
def server(model_server) -> ModelServer:
    """The module's server, started on first use and again after a test killed it (same port)."""
    if not model_server.running:
        model_server.start()
        SERVER_STARTUP[f"start {len(SERVER_STARTUP) + 1}"] = f"{model_server.startup_s:.1f} s"
    return model_server


@pytest.fixture
def presets(server, checkpoints) -> dict:
    return {
        "llama-remote": remote_preset("llama-remote", server.url, checkpoints["chat"], extra_settings="transformers"),
        "llama-openai": remote_preset("llama-openai", server.url, checkpoints["chat"]),
        "slow-remote": remote_preset("slow-remote", server.url, checkpoints["slow-chat"]),
        "llava-remote": remote_preset("llava-remote", server.url, checkpoints["vision"], ("image",)),
        "whisper-remote": remote_preset("whisper-remote", server.url, checkpoints["speech"], ("audio",)),
        "whisper-streamed": remote_preset("whisper-streamed", server.url, checkpoints["speech"], ("audio",),
                                          stream_transcription=True),
    }


@pytest.fixture
def engine(presets) -> Engine:
    return Engine(device="cpu", timeout_s=60, presets=presets, update_interval_s=0.0)  # an update per event


def noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(16_000 * seconds)) * 0.1).astype(np.float32)


def error_of(updates) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        for _ in updates:
            pass
    return caught.value


# --- configuration ------------------------------------------------------------------------------------------------


def test_remote_presets_come_from_a_toml_file(tmp_path):
    path = tmp_path / "remote.toml"
    path.write_text('''
[[presets]]
name = "qwen-vl (vLLM)"
tasks = ["image", "text"]
base_url = "http://gpu-box:8000/v1"
model = "Qwen/Qwen2.5-VL-7B-Instruct"
api_key_env = "VLLM_API_KEY"
extra_settings = "vllm"
defaults = { max_new_tokens = 256 }

[[presets]]
name = "whisper (providers)"
tasks = ["audio"]
base_url = "https://router.huggingface.co/v1"
model = "openai/whisper-large-v3"
''')
    presets = load_remote_presets(str(path), PRESETS)
    vl, whisper = presets["qwen-vl (vLLM)"], presets["whisper (providers)"]
    assert vl.is_remote and vl.tasks == ("image", "text") and vl.params().max_new_tokens == 256
    assert vl.text_tasks == ("continue", "chat", "summarize", "translate", "answer")
    assert vl.server.api_key_env == "VLLM_API_KEY" and vl.server.extra_settings == "vllm"
    assert whisper.server.host == "https://router.huggingface.co" and whisper.server.api_key_env is None
    assert not whisper.is_local


def test_remote_presets_come_from_json_text_or_a_json_file(tmp_path):
    entry = {"name": "r", "tasks": ["text"], "base_url": "http://127.0.0.1:8000/v1", "model": "m"}
    assert list(load_remote_presets(json.dumps([entry]))) == ["r"]
    (tmp_path / "remote.json").write_text(json.dumps({"presets": [entry]}))
    assert list(load_remote_presets(str(tmp_path / "remote.json"))) == ["r"]
    assert load_remote_presets("") == {} and load_remote_presets(None) == {}
    with pytest.raises(RemotePresetsError, match="MMGPT_REMOTE_PRESETS: cannot read /nowhere/remote.toml"):
        load_remote_presets("/nowhere/remote.toml")
    with pytest.raises(RemotePresetsError, match="is not valid TOML"):
        (tmp_path / "broken.toml").write_text("[[presets]\nname = ")
        load_remote_presets(str(tmp_path / "broken.toml"))


@pytest.mark.parametrize("change, words", [
    ({"colour": "red"}, "unknown field colour"),
    ({"model": None}, "missing model"),
    ({"base_url": "gpu-box:8000"}, "http:// or https://"),
    ({"base_url": "http://me:sk-secret@gpu-box:8000/v1"}, "must not hold credentials"),
    ({"api_key_env": "sk-live-abcdef"}, "not the key itself"),
    ({"tasks": ["video"]}, "subset of"),
    ({"extra_settings": "sglang"}, "extra_settings must be one of"),
    ({"name": "mmgpt-tiny"}, "already taken"),
    ({"defaults": {"temperature": 9}}, "temperature must be between"),
    ({"stream_transcription": "yes"}, "true or false"),
])
def test_a_wrong_remote_preset_is_refused_naming_the_field(change, words):
    entry = {"name": "r", "tasks": ["text"], "base_url": "http://127.0.0.1:8000/v1", "model": "m", **change}
    entry = {key: value for key, value in entry.items() if value is not None}
    with pytest.raises(RemotePresetsError, match=words):
        load_remote_presets(json.dumps([entry]), PRESETS)


def test_configured_remote_presets_join_the_allow_list_and_can_be_a_tabs_default():
    entry = {"name": "vlm-remote", "tasks": ["image", "text"], "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    code = ("import json; from mmgpt.presets import PRESETS, default_preset, presets_for; "
            "print(json.dumps({task: [p.name for p in presets_for(task)] for task in ('image', 'audio', 'text')}"
            " | {'default': default_preset('text'), 'loader': PRESETS['vlm-remote'].loader}))")
    env = {**os.environ, "MMGPT_REMOTE_PRESETS": json.dumps([entry]), "MMGPT_DEFAULT_TEXT": "vlm-remote"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lists = json.loads(done.stdout.strip().splitlines()[-1])
    assert "vlm-remote" in lists["image"] and "vlm-remote" in lists["text"] and "vlm-remote" not in lists["audio"]
    assert "mmgpt-tiny" in lists["image"] and lists["default"] == "vlm-remote" and lists["loader"] == "remote"


def test_the_tabs_list_remote_presets_like_any_other():
    import app

    remote = load_remote_presets(json.dumps([{"name": "vlm-remote", "tasks": ["image", "text"],
                                              "base_url": "http://127.0.0.1:9/v1", "model": "m"}]), PRESETS)
    handlers = app.Handlers(Engine(device="cpu", presets={**PRESETS, **remote}))
    assert [p.name for p in handlers.presets("image")][-1] == "vlm-remote"
    assert "vlm-remote" in [p.name for p in handlers.presets("text")]
    assert "vlm-remote" not in [p.name for p in handlers.presets("audio")]


# --- requests -> API fields ---------------------------------------------------------------------------------------


def test_each_text_task_becomes_the_chat_models_instruction():
    messages = chat_messages(TextRequest("the sun is east", task="translate", target_language="German"))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "German" in messages[1]["content"] and "the sun is east" in messages[1]["content"]
    assert "Continue" in chat_messages(TextRequest("ROMEO:"))[1]["content"]


def test_a_picture_goes_as_an_image_part_and_a_conversation_keeps_its_turns():
    picture = Image.new("RGB", (3000, 1500), "red")
    caption = chat_messages(ImageRequest(picture, prompt="a picture of"))
    parts = caption[1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert '"a picture of"' in parts[1]["text"]
    ask = chat_messages(AskRequest(picture, audio=noise(0.5), history=(Turn("what colour", "red"),)))
    assert [m["role"] for m in ask] == ["system", "user", "assistant", "user"]
    assert [p["type"] for p in ask[1]["content"]] == ["image_url", "text"]  # the picture opens the conversation
    assert ask[3]["content"][0]["type"] == "input_audio" and ask[3]["content"][0]["input_audio"]["format"] == "wav"


@pytest.mark.parametrize("dialect, expected, dropped", [
    ("none", {}, ["top_k", "repetition_penalty"]),
    ("vllm", {"top_k": 5, "repetition_penalty": 1.2}, []),
    ("transformers", {"generation_config": '{"do_sample": true, "top_k": 5, "repetition_penalty": 1.2}'}, []),
])
def test_settings_openai_lacks_go_as_the_server_takes_them_or_are_dropped_with_a_note(dialect, expected, dropped):
    preset = remote_preset("r", "http://127.0.0.1:9/v1", "m", extra_settings=dialect)
    params = GenerationParams(max_new_tokens=20, temperature=0.7, top_p=0.9, top_k=5, repetition_penalty=1.2,
                              seed=3)
    fields, notes = chat_settings(preset, params)
    assert fields == {"max_tokens": 20, "temperature": 0.7, "top_p": 0.9, "seed": 3, **expected}
    assert [note.params["setting"] for note in notes] == dropped
    greedy, notes = chat_settings(preset, GenerationParams(max_new_tokens=20, top_k=5))
    assert "top_p" not in greedy and "seed" not in greedy and not notes  # top_k asks nothing of greedy decoding


def test_transcription_sends_a_sampling_temperature_and_notes_what_it_cannot_send():
    preset = remote_preset("r", "http://127.0.0.1:9/v1", "m", ("audio",))
    assert transcription_settings(preset, preset.params()) == ({}, ())
    fields, notes = transcription_settings(preset, GenerationParams(max_new_tokens=7, temperature=0.5))
    assert fields == {"temperature": 0.5}
    assert [note.params["setting"] for note in notes] == ["max_new_tokens"]


def test_every_remote_message_speaks_both_languages():
    keys = [key for key in TRANSLATIONS["en"] if key.startswith("remote_")]
    assert len(keys) >= 10
    assert all(TRANSLATIONS["zh-CN"][key] != TRANSLATIONS["en"][key] for key in keys)


# --- streaming from the server ------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [
    TextRequest("romeo but soft", task="continue"),
    CHAT,
    TextRequest("romeo but soft what light", task="summarize"),
    TextRequest("the sun is east", task="translate", target_language="German"),
    TextRequest("what breaks", task="answer", context="light through yonder window breaks"),
], ids=lambda request: request.task)
def test_every_text_task_streams_from_the_server(engine, request_):
    updates = list(engine.stream("llama-remote", request_, SHORT))
    assert len(updates) >= 4 and updates[-1].done and not any(u.done for u in updates[:-1])
    texts = [u.text for u in updates]
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))  # it grows
    last = updates[-1]
    assert last.tokens == 12 and len(last.text.split()) == 12  # the server's usage count; one word per token
    assert last.ttft_s > 0 and last.tokens_per_s > 0 and last.token_ids == ()


def test_a_picture_is_captioned_and_a_question_about_it_answered(engine, presets):
    red, noisy = Image.new("RGB", (40, 30), "red"), Image.fromarray(
        np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8))
    captions = [list(engine.stream("llava-remote", ImageRequest(picture), SHORT)) for picture in (red, noisy)]
    assert all(len(updates) >= 4 and updates[-1].tokens == 12 for updates in captions)
    assert captions[0][-1].text != captions[1][-1].text  # the server's model saw the picture
    backend = RemoteBackend(timeout_s=60)
    ask = AskRequest(red, question="what colour is it", history=(Turn("what is it", "a square"),))
    answer = list(backend.stream(presets["llava-remote"], ask, SHORT))
    assert answer[-1].done and len(answer[-1].text.split()) == 12


def test_a_recording_is_transcribed_in_one_update_when_the_server_does_not_stream_it(engine):
    updates = list(engine.stream("whisper-remote", AudioRequest(noise(1.0)), GenerationParams()))
    assert updates[0].text.strip() and {u.text for u in updates} == {updates[0].text}  # whole, at once
    assert updates[-1].done


def test_events_that_are_not_openais_are_reported_as_such(engine):
    # transformers serve streams transcripts as bare text lines ("data: hello"), not OpenAI's JSON events
    error = error_of(engine.stream("whisper-streamed", AudioRequest(noise(1.0)), GenerationParams()))
    assert error.message.key == "remote_malformed_transcript" and "stream_transcription = false" in str(error)
    assert "stream_transcription" in error.message.text("zh-CN")


def test_a_seed_reaches_the_server_and_a_setting_it_lacks_comes_back_as_a_note(engine):
    def text(preset, **settings):
        return list(engine.stream(preset, CHAT, GenerationParams(max_new_tokens=12, temperature=1.0, **settings)))

    first, again, other = (text("llama-remote", seed=7, top_k=20), text("llama-remote", seed=7, top_k=20),
                           text("llama-remote", seed=8, top_k=20))
    assert first[-1].text == again[-1].text != other[-1].text
    assert first[-1].notes == ()  # generation_config carried top_k
    dropped = text("llama-openai", seed=7, top_k=20)[-1].notes
    assert [note.params["setting"] for note in dropped] == ["top_k"] and "top_k" in dropped[0].text("zh-CN")


def test_the_maps_say_a_remote_model_gives_none_and_nothing_is_loaded(engine):
    explanation = engine.explain("llama-remote", CHAT, "romeo")
    assert explanation.tokens is None and "remote server" in str(explanation.note)
    assert "远程服务器" in explanation.note.text("zh-CN")
    assert engine.load("llama-remote") is None and engine.loaded == []


# --- Stop, timeout ------------------------------------------------------------------------------------------------


def started_stream(engine, preset="slow-remote", cancel=None):
    """A long answer's stream after its first few updates (the server is generating), and that last update."""
    updates = engine.stream(preset, CHAT, LONG, cancel)
    for _, update in zip(range(3), updates):
        pass
    return updates, update


def connections_to(port: int) -> set[int]:
    """The local ports of this machine's established TCP connections to 127.0.0.1:`port` (the client ends, seen
    in /proc/net/tcp). Compared as sets: the pooled connections of earlier tests' clients close on the server's
    keep-alive timer at any moment, so a count would drift."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.read().splitlines()[1:]]
    return {int(row[1].split(":")[1], 16) for row in rows if int(row[2].split(":")[1], 16) == port and row[3] == "01"}


def closed_within(port: int, connections: set[int], seconds: float = 2.0) -> set[int]:
    """Those of `connections` to `port` still established after at most `seconds`."""
    deadline = time.perf_counter() + seconds
    while (still_open := connections & connections_to(port)) and time.perf_counter() < deadline:
        time.sleep(0.02)
    return still_open


# What these tests hold the app to is its own side of Stop: the HTTP stream is closed. That the server then stops
# generating is the server's side; transformers serve does (its log says so), but a fast server whose stream is
# blocked writing to a full socket when the client leaves may finish the answer first, which once kept a CI
# machine's server busy after the connection was gone.
@pytest.mark.parametrize("how", ["Stop", "closed tab"])
def test_stop_and_a_closed_tab_close_the_http_stream(engine, server, how):
    before = connections_to(server.port)
    cancel = threading.Event()
    updates, _ = started_stream(engine, cancel=cancel)
    streaming = connections_to(server.port) - before
    assert len(streaming) == 1, "the answer should be streaming over its own connection"
    if how == "Stop":
        cancel.set()
        rest = list(updates)
        assert rest[-1].done and rest[-1].tokens < LONG.max_new_tokens
    else:
        updates.close()
    assert not closed_within(server.port, streaming), f"the connection is still open after {how}"


def test_a_request_past_the_time_limit_is_closed(presets, server):
    engine = Engine(device="cpu", timeout_s=1.5, presets=presets)
    before = connections_to(server.port)
    started, streaming = time.perf_counter(), None
    with pytest.raises(GenerationTimeout, match="1.5 s"):
        for _ in engine.stream("slow-remote", CHAT, LONG):
            if streaming is None:
                streaming = connections_to(server.port) - before
    assert time.perf_counter() - started < 1.5 + 1.0
    assert len(streaming) == 1, "the answer should have streamed over its own connection"
    assert not closed_within(server.port, streaming), "the connection is still open after the time limit"


@contextmanager
def silent_server():
    """A server that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def test_a_server_that_stalls_is_given_up_at_the_time_limit():
    with silent_server() as url:
        preset = remote_preset("silent", url, "m")
        engine = Engine(device="cpu", timeout_s=1.0, presets={"silent": preset})
        started = time.perf_counter()
        with pytest.raises(GenerationTimeout, match="did not finish the answer within 1 s"):
            list(engine.stream("silent", CHAT, SHORT))
        assert time.perf_counter() - started < 2.0


# --- wrong addresses, keys ----------------------------------------------------------------------------------------


def test_a_bad_base_url_says_the_server_cannot_be_reached_or_what_it_answered(server, checkpoints):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"  # bound, not listening: connection refused
    presets = {"nobody": remote_preset("nobody", nobody, checkpoints["chat"]),
               "wrong-path": remote_preset("wrong-path", server.url.replace("/v1", "/api"), checkpoints["chat"])}
    engine = Engine(device="cpu", timeout_s=30, presets=presets)
    unreachable = error_of(engine.stream("nobody", CHAT, SHORT))
    assert unreachable.message.key == "remote_unreachable" and nobody.rsplit("/", 1)[0] in str(unreachable)
    assert "base_url" in unreachable.message.text("zh-CN")
    not_found = error_of(engine.stream("wrong-path", CHAT, SHORT))
    assert not_found.message.key == "remote_not_found" and "/v1" in str(not_found)


@contextmanager
def serving(app):
    """`app` (ASGI) on 127.0.0.1 and a free port, in a thread of this process; yields its http://host:port."""
    import uvicorn

    port = stress.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-asgi-server", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class KeyCheckingProxy:
    """A reverse proxy to `upstream` that wants `Authorization: Bearer KEY`, and answers 401 in OpenAI's shape
    (quoting the key it got, as OpenAI does) otherwise; `seen` holds the headers of every request it got. Under
    /elsewhere/ it redirects to itself under another host name, "localhost": another origin."""

    def __init__(self, upstream: str):
        import httpx
        from starlette.applications import Starlette
        from starlette.background import BackgroundTask
        from starlette.responses import JSONResponse, RedirectResponse, StreamingResponse
        from starlette.routing import Route

        self.seen: list[dict] = []
        self.url = ""  # http://127.0.0.1:PORT/v1 once it runs
        client = httpx.AsyncClient(timeout=None)
        hop_by_hop = {"host", "content-length", "transfer-encoding", "connection"}

        async def forward(request):
            self.seen.append({name.lower(): value for name, value in request.headers.items()})
            path = request.path_params["path"]
            if path.startswith("elsewhere/"):
                elsewhere = self.url.replace("127.0.0.1", "localhost").removesuffix("/v1")
                return RedirectResponse(f"{elsewhere}/{path.removeprefix('elsewhere/')}", 307)
            sent = request.headers.get("authorization", "").removeprefix("Bearer ")
            if sent != KEY:
                return JSONResponse({"error": {"message": f"Incorrect API key provided: {sent}",
                                               "type": "invalid_request_error"}}, status_code=401)
            headers = {name: value for name, value in request.headers.items() if name.lower() not in hop_by_hop}
            upstream_request = client.build_request(request.method, f"{upstream}/{path}", headers=headers,
                                                    content=await request.body())
            response = await client.send(upstream_request, stream=True)
            return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                     headers={name: value for name, value in response.headers.items()
                                              if name.lower() not in hop_by_hop},
                                     background=BackgroundTask(response.aclose))

        self.app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


@pytest.fixture
def proxy(server):
    running = KeyCheckingProxy(server.url.removesuffix("/v1"))
    with serving(running.app) as url:
        running.url = f"{url}/v1"
        yield running


def test_the_right_key_goes_to_the_configured_server_and_the_answer_streams(proxy, checkpoints, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-of-this-machine")
    preset = remote_preset("keyed", proxy.url, checkpoints["chat"], api_key_env=KEY_ENV)
    updates = list(Engine(device="cpu", timeout_s=30, presets={"keyed": preset}).stream("keyed", CHAT, SHORT))
    assert updates[-1].done and updates[-1].tokens == 12
    assert proxy.seen[-1]["authorization"] == f"Bearer {KEY}" and "openai-organization" not in proxy.seen[-1]


def test_a_wrong_key_is_refused_clearly_and_never_shown_or_logged(proxy, checkpoints, monkeypatch, caplog):
    wrong = "sk-wrong-key-987654321"
    monkeypatch.setenv(KEY_ENV, wrong)
    preset = remote_preset("keyed", proxy.url, checkpoints["chat"], api_key_env=KEY_ENV)
    engine = Engine(device="cpu", timeout_s=30, presets={"keyed": preset})
    with caplog.at_level(logging.DEBUG):
        error = error_of(engine.stream("keyed", CHAT, SHORT))
    assert error.message.key == "remote_key_refused" and KEY_ENV in str(error) and "401" in str(error)
    assert "Incorrect API key provided: ***" in str(error)  # the server quoted the key: masked
    assert wrong not in str(error) + error.message.text("zh-CN") + caplog.text
    assert proxy.seen[-1]["authorization"] == f"Bearer {wrong}"


def test_a_missing_key_variable_is_named_before_anything_is_sent(proxy, checkpoints, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    preset = remote_preset("keyed", proxy.url, checkpoints["chat"], api_key_env=KEY_ENV)
    error = error_of(Engine(device="cpu", presets={"keyed": preset}).stream("keyed", CHAT, SHORT))
    assert error.message.key == "remote_key_missing" and KEY_ENV in str(error) and proxy.seen == []


def test_no_key_of_this_machine_reaches_a_server_whose_preset_names_none(proxy, checkpoints, monkeypatch):
    for variable in ("OPENAI_API_KEY", "OPENAI_ADMIN_KEY"):
        monkeypatch.setenv(variable, KEY)
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-of-this-machine")
    preset = remote_preset("open", proxy.url, checkpoints["chat"])
    error = error_of(Engine(device="cpu", presets={"open": preset}).stream("open", CHAT, SHORT))
    assert error.message.key == "remote_key_needed" and "api_key_env" in str(error)
    assert "authorization" not in proxy.seen[-1] and "openai-project" not in proxy.seen[-1]


def test_a_redirect_is_not_followed_and_the_user_is_told_where_it_leads(proxy, checkpoints, monkeypatch):
    """Followed, a redirect can turn the POST into a GET (301, 302: the server then answers 405, which names
    nothing), or carry the request to another host. It is not followed: the message names the address to use, and
    nothing, the key least of all, goes anywhere but the configured server."""
    monkeypatch.setenv(KEY_ENV, KEY)
    preset = remote_preset("keyed", proxy.url.replace("/v1", "/elsewhere/v1"), checkpoints["chat"],
                           api_key_env=KEY_ENV)
    seen_before = len(proxy.seen)
    error = error_of(Engine(device="cpu", presets={"keyed": preset}).stream("keyed", CHAT, SHORT))
    assert error.message.key == "remote_redirected" and "HTTP 307" in str(error)
    assert proxy.url.replace("127.0.0.1", "localhost") + "/chat/completions" in str(error)
    assert "base_url" in error.message.text("zh-CN")
    (only,) = proxy.seen[seen_before:]
    assert only["authorization"] == f"Bearer {KEY}" and only["host"].startswith("127.0.0.1")


# --- event formats no server here sends: a stand-in (not a real server) sends them --------------------------------


def event_stub(events: list[str]):
    """A stand-in server, not a real one: every POST is answered with `events` as server-sent events."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def answer(request):
        async def body():
            for event in events:
                yield f"data: {event}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])


def test_a_transcript_streamed_in_openais_events_streams_word_by_word():
    words = ["a", " small", " red", " circle"]
    events = [json.dumps({"type": "transcript.text.delta", "delta": word}) for word in words]
    events.append(json.dumps({"type": "transcript.text.done", "text": "".join(words)}))
    with serving(event_stub(events)) as url:
        preset = remote_preset("stub", f"{url}/v1", "m", ("audio",), stream_transcription=True)
        updates = list(RemoteBackend(timeout_s=10).stream(preset, AudioRequest(noise(0.5)), preset.params()))
    assert [u.text for u in updates] == ["a", "a small", "a small red", "a small red circle", "a small red circle"]
    assert updates[-1].done and updates[-1].tokens == 4


@pytest.mark.parametrize("event, key, words", [
    ("not json at all", "remote_malformed", "not OpenAI-compatible"),
    (json.dumps({"choices": "none"}), "remote_malformed", "choices[0].delta"),
    (json.dumps({"error": "CUDA out of memory"}), "remote_error_event", "CUDA out of memory"),  # serve's errors
])
def test_a_chat_event_that_is_not_an_answer_is_reported_for_what_it_is(event, key, words):
    with serving(event_stub([event])) as url:
        preset = remote_preset("stub", f"{url}/v1", "m")
        error = error_of(RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT))
    assert error.message.key == key and words in str(error)


def raw_stub(body: str):
    """A stand-in server, not a real one: every POST is answered with `body` as an event stream, written as is."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request):
        return Response(body, media_type="text/event-stream")

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])


def delta(text: str, finish_reason=None) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish_reason}]})


@pytest.mark.parametrize("body, shown", [
    # llama.cpp's server reports a failure in an SSE `error:` field, which OpenAI's client does not read
    ('error: {"code": 400, "message": "the request exceeds the available context size"}\n\ndata: [DONE]\n\n', ""),
    (f'data: {delta("The answer")}\n\nerror: {{"code": 500, "message": "failed to decode"}}\n\ndata: [DONE]\n\n',
     "The answer"),
    (f"data: {delta('Hello')}\n\ndata: {delta(' world')}\n\n", "Hello world"),  # closed with no [DONE]
], ids=["an error before any text", "an error mid-answer", "a stream that stops"])
def test_a_stream_that_ends_before_its_finish_reason_is_reported_cut_short(body, shown):
    with serving(raw_stub(body)) as url:
        preset = remote_preset("stub", f"{url}/v1", "m")
        updates = []
        with pytest.raises(RemoteError) as caught:
            for update in RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT):
                updates.append(update)
    assert caught.value.message.key == "remote_cut_short" and "log says why" in str(caught.value)
    assert not any(update.done for update in updates), "an answer cut short is not shown as finished"
    assert (updates[-1].text if updates else "") == shown


def test_a_stream_that_ends_with_its_finish_reason_is_an_answer():
    body = f"data: {delta('Hello')}\n\ndata: {delta(' world', 'stop')}\n\ndata: [DONE]\n\n"
    with serving(raw_stub(body)) as url:
        preset = remote_preset("stub", f"{url}/v1", "m")
        updates = list(RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT))
    assert updates[-1].done and updates[-1].text == "Hello world"


@contextmanager
def dropping_server():
    """A server that reads a request and closes the connection without a word: one that ran out of memory."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()


def test_a_server_that_takes_the_request_and_drops_it_is_not_called_unreachable():
    with dropping_server() as url:
        preset = remote_preset("drop", url, "m")
        error = error_of(RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT))
    assert error.message.key == "remote_dropped" and "closed the connection without answering" in str(error)
    assert url.removesuffix("/v1") in str(error) and "base_url" in error.message.text("zh-CN")


def test_a_proxys_error_page_is_named_by_its_title_not_shown_as_markup():
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"

    async def answer(request):
        return HTMLResponse(page, status_code=502)

    with serving(Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])) as url:
        preset = remote_preset("stub", f"{url}/v1", "m")
        error = error_of(RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT))
    assert error.message.key == "remote_http_error" and str(error).endswith("HTTP 502: 502 Bad Gateway")


def body_stub(body: str, media_type: str):
    """A stand-in server, not a real one: every POST is answered with one `body`, not streamed."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def answer(request):
        return Response(body, media_type=media_type)

    return Starlette(routes=[Route("/{path:path}", answer, methods=["POST"])])


def test_a_chat_answer_that_was_not_streamed_is_reported_not_shown_as_empty():
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hello"}}]})
    with serving(body_stub(body, "application/json")) as url:
        preset = remote_preset("stub", f"{url}/v1", "m")
        error = error_of(RemoteBackend(timeout_s=10).stream(preset, CHAT, SHORT))
    assert error.message.key == "remote_malformed" and "not streamed" in str(error)


@pytest.mark.parametrize("body, media_type, text", [
    ("a small red circle", "text/plain", "a small red circle"),  # response_format=text, as some servers answer
    (json.dumps({"text": "a small red circle"}), "application/json", "a small red circle"),
    (json.dumps({"text": None}), "application/json", None),
    (json.dumps({"words": ["a"]}), "application/json", None),
])
def test_a_transcript_that_was_not_streamed_is_read_from_its_text_or_reported(body, media_type, text):
    with serving(body_stub(body, media_type)) as url:
        preset = remote_preset("stub", f"{url}/v1", "m", ("audio",))
        stream = RemoteBackend(timeout_s=10).stream(preset, AudioRequest(noise(0.5)), preset.params())
        if text is None:
            error = error_of(stream)
            assert error.message.key == "remote_malformed" and "transcript whose text" in str(error)
        else:
            assert list(stream)[-1].text == text


# --- through the app -------------------------------------------------------------------------------------------------


def test_the_app_streams_a_remote_answer_and_words_its_errors(presets, proxy, checkpoints, monkeypatch):
    from gradio_client.exceptions import AppError

    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    keyed = remote_preset("keyed", proxy.url, checkpoints["chat"], api_key_env=KEY_ENV)
    presets = {**presets, "keyed": keyed}
    engine = Engine(device="cpu", timeout_s=60, presets=presets, update_interval_s=0.0)
    with stress.serve(presets, engine) as served:
        client = served.client()
        # the slower model, so that its answer spans many of the page's update intervals even on a loaded machine
        job = client.submit("romeo what light", "chat", "French", "", "slow-remote", 48, 0.0, 1.0, 0, 1.0, None,
                            True, api_name="/generate")
        job.result(timeout=120)
        texts = [output[0] for output in job.outputs() if output[0]]
        assert len(set(texts)) >= 3 and len(texts[-1].split()) == 48, texts
        with pytest.raises(AppError, match="refused the API key"):
            client.predict("romeo", "chat", "French", "", "keyed", 8, 0.0, 1.0, 0, 1.0, None, False,
                           api_name="/generate")
        with pytest.raises(AppError, match="拒绝了来自 " + KEY_ENV):  # the server's refusal, not "not downloaded"
            client.predict("romeo", "chat", "French", "", "keyed", 8, 0.0, 1.0, 0, 1.0, None, False, "zh-CN",
                           api_name="/generate")


# --- last: the server dies ------------------------------------------------------------------------------------------


def test_a_server_killed_mid_answer_is_reported_and_the_text_so_far_was_shown(engine, server):
    updates, update = started_stream(engine)
    assert update.text
    server.kill()
    error = error_of(updates)
    assert error.message.key == "remote_lost" and "incomplete" in str(error)
    assert error_of(engine.stream("llama-remote", CHAT, SHORT)).message.key == "remote_unreachable"
