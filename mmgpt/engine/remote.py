"""Answers from a model server that speaks the OpenAI-compatible API: the engine's backend for remote presets.

vLLM, SGLang, `transformers serve`, llama.cpp, Ollama and Hugging Face Inference Providers all take streamed
`/chat/completions` (with image and audio content parts on multimodal models) and `/audio/transcriptions`. The
talking is done by the `openai` package; this module turns the app's requests into those calls and their streamed
events into the engine's `StreamUpdate`s, under the same contract as a model in process:

- updates come as the server's events arrive, each with the text so far, the token count, TTFT and tokens/s
  (tokens are counted one per content event until the server's `usage` says exactly, at the end);
- Stop (`cancel`), closing the generator or the time limit cancel the request, which closes its HTTP connection:
  the server sees its client go and stops generating (transformers serve does, as the tests check; vLLM and
  SGLang abort a request whose client has gone, by their documentation);
- failures raise `RemoteError`, whose `message` says what went wrong in the page's language (server unreachable,
  a request taken and dropped, key refused, a redirect, which is not followed, HTTP 4xx/5xx with the server's
  reason, a connection lost mid-answer, a stream that ends before its finish_reason, events that are not
  OpenAI-compatible); running past the time limit, stalled or not, raises the engine's `GenerationTimeout`;
- the API key is read from the environment variable the preset names, sent only to the preset's server (the
  client is built with it and nothing else: no OPENAI_* credential from the environment), and never logged or
  shown: a server reason that quotes it has it masked.

Requests run on one asyncio event loop in a daemon thread, one `AsyncOpenAI` client per preset: an async request
can be cancelled from the caller's thread at any moment, a blocking read in the sync client cannot.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from PIL import Image

from ..audio import SAMPLE_RATE
from ..i18n import Message
from ..loaders import CHAT_SYSTEM_PROMPT, PresetUnavailableError, chat_instruction
from ..presets import Preset
from ..requests import AskRequest, AudioRequest, GenerationParams, ImageRequest, StreamUpdate, TextRequest

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # an address that does not answer by then is reported as unreachable
CLOSE_WAIT_S = 5.0  # how long a finished stream waits for its cancelled request to close the connection
POLL_S = 0.05  # how often a stream waiting for the server checks Stop
MAX_REASON_CHARS = 300  # of a server's error message, shown to users
MAX_IMAGE_SIDE = 1024  # pixels: larger pictures are scaled down before they are sent (vision models resize anyway)
JPEG_QUALITY = 90
CONTINUE_INSTRUCTION = "Continue the following text. Reply with the continuation only.\n\n{prompt}"
CAPTION_INSTRUCTION = "Describe this picture in one sentence."
CAPTION_START_INSTRUCTION = 'Describe this picture in one sentence, beginning with "{start}".'
NEUTRAL = GenerationParams()  # settings at these values ask for nothing, so dropping them needs no note
# The server took the connection, then closed it before it answered (out of memory, a crash): not a wrong address.
# By name: the openai package talks through httpx or, from 3.x, its fork httpx2, whose errors have the same names.
DROPPED_AFTER_CONNECTING = {"RemoteProtocolError", "ReadError", "WriteError"}


class RemoteError(PresetUnavailableError):
    """A remote preset's server could not give an answer. `str(e)` is English; `e.message.text(lang)` translates."""

    def __init__(self, key: str, **params):
        self.message = Message(key, **params)
        super().__init__(str(self.message))

    def __reduce__(self):  # rebuilt from its key and parameters, not its English text (the engine's worker process)
        return _remote_error, (self.message.key, self.message.params)


def _remote_error(key: str, params: dict) -> RemoteError:
    return RemoteError(key, **params)


# --- requests -> API calls --------------------------------------------------------------------------------------


def chat_messages(request: TextRequest | ImageRequest | AskRequest) -> list[dict]:
    """The `messages` of a chat completion for `request`: a system prompt, then the user's turn(s).

    Text tasks reuse the in-process chat models' instructions (`loaders.chat_instruction`); "continue" asks for a
    continuation. A picture goes as a JPEG data URL in an `image_url` part of the first user message; a spoken
    question as a WAV `input_audio` part.
    """
    system = {"role": "system", "content": CHAT_SYSTEM_PROMPT}
    if isinstance(request, TextRequest):
        text = (CONTINUE_INSTRUCTION.format(prompt=request.prompt.strip()) if request.task == "continue"
                else chat_instruction(request))
        return [system, {"role": "user", "content": text}]
    if isinstance(request, ImageRequest):
        start = request.prompt.strip()
        instruction = CAPTION_START_INSTRUCTION.format(start=start) if start else CAPTION_INSTRUCTION
        return [system, {"role": "user", "content": [image_part(request.image), text_part(instruction)]}]
    if isinstance(request, AskRequest):
        messages = [system]
        for turn in request.history:
            messages += [{"role": "user", "content": [text_part(turn.question)]},
                         {"role": "assistant", "content": turn.answer}]
        question = audio_part(request.audio) if request.audio is not None else text_part(request.question.strip())
        messages.append({"role": "user", "content": [question]})
        messages[1]["content"].insert(0, image_part(request.image))  # the picture opens the conversation
        return messages
    raise TypeError(f"a remote chat model takes a text, image or ask request, got {type(request).__name__}")


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def image_part(image: Image.Image) -> dict:
    """An `image_url` content part: the picture as a JPEG data URL, at most MAX_IMAGE_SIDE pixels a side."""
    picture = image.convert("RGB")
    if max(picture.size) > MAX_IMAGE_SIDE:
        picture.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def audio_part(waveform: np.ndarray) -> dict:
    """An `input_audio` content part: the 16 kHz waveform as base64 WAV."""
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes(waveform)).decode("ascii"),
                                                   "format": "wav"}}


def wav_bytes(waveform: np.ndarray) -> bytes:
    """float32 `(n_samples,)` at SAMPLE_RATE -> a 16-bit PCM WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(waveform, -1.0, 1.0), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def chat_settings(preset: Preset, params: GenerationParams) -> tuple[dict, tuple[Message, ...]]:
    """Request fields for `params`, and a note for each setting the server does not take.

    OpenAI's API has max_tokens, temperature, top_p and seed (the last two only matter when sampling, and are
    only sent then, as in process). top_k and repetition_penalty go as the preset's `extra_settings` says.
    """
    fields = {"max_tokens": params.max_new_tokens, "temperature": params.temperature}
    if params.do_sample:
        fields["top_p"] = params.top_p
        if params.seed is not None:
            fields["seed"] = params.seed
    extra = _extra_settings(params)
    dialect = preset.server.extra_settings
    if dialect == "vllm":
        return {**fields, **extra}, ()
    if dialect == "transformers":
        # transformers serve keeps the checkpoint's do_sample unless told: a temperature alone may not sample
        return {**fields, "generation_config": json.dumps({"do_sample": params.do_sample, **extra})}, ()
    return fields, _dropped(preset, extra)


def transcription_settings(preset: Preset, params: GenerationParams) -> tuple[dict, tuple[Message, ...]]:
    """Form fields of a transcription for `params`: only a sampling temperature has one in OpenAI's API.

    max_new_tokens counts as asked for when it differs from the preset's own default (the Microphone tab always
    sends the default, which the server's own limit replaces)."""
    fields = {"temperature": params.temperature} if params.do_sample else {}
    asked = _extra_settings(params)
    if params.do_sample:
        asked.update({name: getattr(params, name) for name in ("top_p", "seed")
                      if getattr(params, name) != getattr(NEUTRAL, name)})
    if params.max_new_tokens != preset.params().max_new_tokens:
        asked["max_new_tokens"] = params.max_new_tokens
    return fields, _dropped(preset, asked)


def _extra_settings(params: GenerationParams) -> dict:
    """The settings OpenAI's API lacks, where they ask for something (top_k only matters when sampling)."""
    extra = {}
    if params.do_sample and params.top_k != NEUTRAL.top_k:
        extra["top_k"] = params.top_k
    if params.repetition_penalty != NEUTRAL.repetition_penalty:
        extra["repetition_penalty"] = params.repetition_penalty
    return extra


def _dropped(preset: Preset, settings: dict) -> tuple[Message, ...]:
    return tuple(Message("remote_setting_dropped", preset=preset.name, setting=name) for name in settings)


# --- the stream -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Delta:
    text: str  # new text
    at: float  # perf_counter() when it arrived


@dataclass(frozen=True)
class _Usage:
    completion_tokens: int  # the server's own count of the answer's tokens


_END = object()  # the request's last queue item after a normal end


class RemoteBackend:
    """Streams remote presets' answers; one event loop thread and one client per preset, made on first use."""

    def __init__(self, timeout_s: float, update_interval_s: float = 0.0):
        self.timeout_s = timeout_s
        self.update_interval_s = update_interval_s
        self._clients: dict[str, object] = {}  # preset name -> AsyncOpenAI, used on the loop thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def stream(self, preset: Preset, request, params: GenerationParams,
               cancel: threading.Event | None = None) -> Iterator[StreamUpdate]:
        """Stream the answer of `preset`'s server to `request`; the last update has done=True.

        A set `cancel` closes the connection and ends the stream with the text so far, as in process; so does
        leaving the generator early. Past `timeout_s` the connection is closed and GenerationTimeout raised.
        """
        if isinstance(request, AudioRequest):
            fields, notes = transcription_settings(preset, params)
            produce = self._transcribe(preset, request, fields)
        else:
            fields, notes = chat_settings(preset, params)
            produce = self._chat(preset, chat_messages(request), fields)
        return self._updates(preset, produce, notes, cancel)

    def _updates(self, preset: Preset, produce, notes: tuple[Message, ...],
                 cancel: threading.Event | None) -> Iterator[StreamUpdate]:
        items: queue.Queue = queue.Queue()
        started_run, closed = threading.Event(), threading.Event()  # the request ran; its connection is closed
        started = time.perf_counter()
        deadline = started + self.timeout_s
        task = asyncio.run_coroutine_threadsafe(self._run(produce, items, started_run, closed), self._event_loop())
        text, tokens, usage = "", 0, None
        first_at = last_at = None  # perf_counter() of the first and the latest content event
        shown_at = started  # of the latest content event shown in an update

        def update(done: bool) -> StreamUpdate:
            count = usage if done and usage is not None else tokens
            ttft = None if first_at is None else first_at - started
            rate = (count - 1) / (last_at - first_at) if count > 1 and last_at > first_at else None
            return StreamUpdate(text, count, ttft, rate, done, notes=notes)

        try:
            while True:
                now = time.perf_counter()
                if now >= deadline:  # stalled, or still answering: either way the time is up
                    raise self._timeout(preset)
                held_back = last_at is not None and last_at > shown_at  # text waiting for update_interval_s
                wait = min(POLL_S, deadline - now)
                if held_back:
                    wait = min(wait, max(shown_at + self.update_interval_s - now, 0.0))
                try:
                    item = items.get(timeout=wait)
                except queue.Empty:
                    if cancel is not None and cancel.is_set():
                        break
                    if held_back and time.perf_counter() >= shown_at + self.update_interval_s:
                        shown_at = last_at
                        yield update(done=False)
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Usage):
                    usage = item.completion_tokens
                    continue
                text, tokens, last_at = text + item.text, tokens + 1, item.at
                first_at = first_at or item.at
                if last_at - shown_at >= self.update_interval_s:
                    shown_at = last_at
                    yield update(done=False)
                if cancel is not None and cancel.is_set():
                    break
            yield update(done=True)
        finally:
            task.cancel()  # closes the HTTP connection if the request is still running
            # a request cancelled before it ran opened nothing
            if started_run.is_set() and not closed.wait(CLOSE_WAIT_S):
                logger.error("remote %s: the request did not close within %.0f s", preset.name, CLOSE_WAIT_S)

    def _timeout(self, preset: Preset) -> Exception:
        from .engine import GenerationTimeout  # here: engine.py imports this module

        logger.warning("remote %s: no complete answer within the %.0f s limit; closing the request", preset.name,
                       self.timeout_s)
        return GenerationTimeout(f"The server of model {preset.name} did not finish the answer within "
                                 f"{self.timeout_s:g} s, the time limit, so the request was closed. Ask for fewer "
                                 "new tokens, or check the server's load.")

    # --- on the event loop ------------------------------------------------------------------------------------

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="mmgpt-remote", daemon=True).start()
                self._loop = loop
            return self._loop

    async def _run(self, produce, items: queue.Queue, started: threading.Event, closed: threading.Event):
        started.set()
        try:
            async for item in produce:
                items.put(item)
            items.put(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # re-raised in the caller's thread
            items.put(exc)
        finally:
            await produce.aclose()
            closed.set()

    async def _chat(self, preset: Preset, messages: list[dict], fields: dict):
        client, headers = self._client(preset)
        answering = False  # the server has begun its answer: a connection lost now is lost mid-answer
        try:
            stream = await client.chat.completions.create(
                model=preset.server.model, messages=messages, stream=True, stream_options={"include_usage": True},
                extra_headers=headers, **self._split(fields))
            answering = True
            chunks, finished = 0, False
            async with stream:  # leaving this block, for any reason, closes the connection
                async for chunk in stream:
                    chunks += 1
                    delta, usage, finish = _read_chunk(chunk)
                    finished = finished or finish
                    if delta:
                        yield _Delta(delta, time.perf_counter())
                    if usage is not None:
                        yield _Usage(usage)
            # An answer ends with a finish_reason. A stream that stops short of one was cut: llama.cpp, for one,
            # reports a failure as an SSE `error:` field, which no OpenAI client reads, then ends the stream.
            if not chunks and "text/event-stream" not in stream.response.headers.get("content-type", ""):
                raise _Malformed("no event at all: an answer that was not streamed")  # one body, `stream` ignored
            if not finished:
                raise _CutShort()
        except Exception as exc:
            raise self._error(preset, exc, answering) from None

    async def _transcribe(self, preset: Preset, request: AudioRequest, fields: dict):
        client, headers = self._client(preset)
        endpoint = client.audio.translations if request.task == "translate" else client.audio.transcriptions
        arguments = dict(model=preset.server.model, file=("speech.wav", wav_bytes(request.waveform), "audio/wav"),
                         extra_headers=headers, **fields)
        if request.language and request.task == "transcribe":
            arguments["language"] = request.language
        answering = False
        try:
            if not (preset.server.stream_transcription and request.task == "transcribe"):
                result = await endpoint.create(**arguments)
                yield _Delta(_transcript_text(result), time.perf_counter())
                if (tokens := getattr(getattr(result, "usage", None), "output_tokens", None)) is not None:
                    yield _Usage(tokens)  # OpenAI's own transcription models count them
                return
            stream = await endpoint.create(stream=True, **arguments)
            answering = True
            async with stream:
                async for event in stream:
                    kind = getattr(event, "type", None)
                    if kind == "transcript.text.delta":
                        if not isinstance(event.delta, str):
                            raise _Malformed(f"a delta of type {type(event.delta).__name__}")
                        yield _Delta(event.delta, time.perf_counter())
                    elif kind != "transcript.text.done":
                        raise _Malformed(f"an event of type {kind!r}")
        except _Malformed as exc:  # streamed: the hint is to stop streaming; else the generic message
            key = "remote_malformed_transcript" if answering else "remote_malformed"
            raise RemoteError(key, preset=preset.name, reason=str(exc)) from None
        except json.JSONDecodeError as exc:
            raise RemoteError("remote_malformed_transcript", preset=preset.name, reason=_short(exc)) from None
        except Exception as exc:
            raise self._error(preset, exc, answering) from None

    @staticmethod
    def _split(fields: dict) -> dict:
        """OpenAI's own fields as keyword arguments, the others (top_k, generation_config...) as `extra_body`."""
        standard = {"max_tokens", "temperature", "top_p", "seed"}
        extra = {name: value for name, value in fields.items() if name not in standard}
        return {**{name: fields[name] for name in fields.keys() & standard}, "extra_body": extra or None}

    def _client(self, preset: Preset):
        """The preset's client and the headers every request adds; raises RemoteError when its key is not set."""
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient, Omit, Timeout

        server = preset.server
        key = os.environ.get(server.api_key_env, "").strip() if server.api_key_env else ""
        if server.api_key_env and not key:
            raise RemoteError("remote_key_missing", preset=preset.name, variable=server.api_key_env)
        if preset.name not in self._clients:
            if logging.getLogger("openai").level == logging.NOTSET:
                logging.getLogger("openai").setLevel(logging.INFO)  # its DEBUG lines hold request bodies: user content
            # Everything explicit, so that no OPENAI_* variable of this machine (another key, an organization,
            # custom headers) reaches a third-party server.
            authorization = f"Bearer {key}" if key else Omit()
            self._clients[preset.name] = AsyncOpenAI(
                base_url=server.base_url, api_key=key, admin_api_key="", max_retries=0,
                timeout=Timeout(self.timeout_s, connect=CONNECT_TIMEOUT_S),
                default_headers={"Authorization": authorization, "OpenAI-Organization": Omit(),
                                 "OpenAI-Project": Omit()},
                http_client=DefaultAsyncHttpxClient(follow_redirects=False),
            )
        # the client refuses to send a request without a key unless each one says it means to
        return self._clients[preset.name], (None if key else {"Authorization": Omit()})

    def _error(self, preset: Preset, exc: Exception, answering: bool) -> Exception:
        """`exc` from the client as a RemoteError for users; logged by type and status, never by content."""
        import openai

        server, name = preset.server, preset.name
        status = getattr(exc, "status_code", None)
        logger.warning("remote %s: %s%s%s", name, type(exc).__name__, f" (HTTP {status})" if status else "",
                       " mid-answer" if answering else "")
        if isinstance(exc, openai.APITimeoutError):
            return self._timeout(preset)
        if isinstance(exc, openai.APIConnectionError):
            reason = _short(exc.__cause__ or exc, self._key(preset))
            if answering:
                return RemoteError("remote_lost", preset=name, reason=reason)
            if type(exc.__cause__).__name__ in DROPPED_AFTER_CONNECTING:
                return RemoteError("remote_dropped", preset=name, host=server.host, reason=reason)
            return RemoteError("remote_unreachable", preset=name, host=server.host, reason=reason)
        if isinstance(exc, _CutShort):
            return RemoteError("remote_cut_short", preset=name)
        if isinstance(exc, openai.APIStatusError):
            if 300 <= status < 400:  # not followed: a redirected POST can arrive as a GET, or carry the key away
                location = _short(exc.response.headers.get("location", "?"), self._key(preset))
                return RemoteError("remote_redirected", preset=name, status=status, location=location)
            reason = _server_reason(exc, self._key(preset))
            if status in (401, 403):
                if server.api_key_env:
                    return RemoteError("remote_key_refused", preset=name, variable=server.api_key_env,
                                       status=status, reason=reason)
                return RemoteError("remote_key_needed", preset=name, status=status, reason=reason)
            if status == 404:
                return RemoteError("remote_not_found", preset=name, reason=reason)
            return RemoteError("remote_http_error", preset=name, status=status, reason=reason)
        if isinstance(exc, openai.APIError):  # an error event in the stream
            return RemoteError("remote_error_event", preset=name, reason=_server_reason(exc, self._key(preset)))
        if isinstance(exc, (json.JSONDecodeError, _Malformed)):
            return RemoteError("remote_malformed", preset=name, reason=_short(exc))
        return exc

    @staticmethod
    def _key(preset: Preset) -> str:
        env = preset.server.api_key_env
        return os.environ.get(env, "").strip() if env else ""


class _Malformed(ValueError):
    """An event that parsed as JSON but is not what OpenAI's API sends."""


class _CutShort(Exception):
    """The server ended its event stream before the answer's finish_reason."""


def _read_chunk(chunk) -> tuple[str, int | None, bool]:
    """(new text, the server's completion token count or None, whether the answer ends here) of one chat completion
    chunk."""
    try:
        choices = chunk.choices
        usage = chunk.usage.completion_tokens if getattr(chunk, "usage", None) is not None else None
        if not choices:
            return "", usage, False
        content = choices[0].delta.content
        finished = getattr(choices[0], "finish_reason", None) is not None
    except (AttributeError, IndexError, TypeError) as exc:
        raise _Malformed(f"a chunk without choices[0].delta ({type(exc).__name__})") from None
    if content is not None and not isinstance(content, str):
        raise _Malformed(f"delta content of type {type(content).__name__}")
    return content or "", usage, finished


def _transcript_text(result) -> str:
    """The text of a transcription that was not streamed: a JSON body's `text`, or a plain-text body itself."""
    text = result if isinstance(result, str) else getattr(result, "text", None)
    if not isinstance(text, str):
        raise _Malformed(f"a transcript whose text is of type {type(text).__name__}")
    return text


def _server_reason(exc, key: str) -> str:
    """The server's own words for an error: `message` or FastAPI's `detail` from its JSON, else the text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        reason = inner.get("message") or inner.get("detail") if isinstance(inner, dict) else inner
        reason = reason or body.get("detail")
    else:
        reason = body
    response = getattr(exc, "response", None)
    if isinstance(reason, str) and "html" in getattr(response, "headers", {}).get("content-type", ""):
        title = re.search(r"<title>(.*?)</title>", reason, re.IGNORECASE | re.DOTALL)  # a proxy's error page
        reason = html.unescape(title.group(1)) if title else ""
    if not reason:
        reason = getattr(response, "reason_phrase", "") or getattr(exc, "message", "") or type(exc).__name__
    return _short(reason if isinstance(reason, str) else json.dumps(reason), key)


def _short(reason, key: str = "") -> str:
    """A reason for users: one line, at most MAX_REASON_CHARS, the API key masked wherever it appears."""
    text = " ".join(str(reason).split()) or type(reason).__name__
    if key:
        text = text.replace(key, "***")
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
