"""The cached, streaming, cancellable model wrapper behind the app and the CLI.

`Engine.load` loads each preset once and keeps the `max_loaded` most recently used ones. `Engine.stream` runs
`generate()` in a worker thread and yields a `StreamUpdate` for every generated token that adds text (a token that
ends inside a multi-byte character waits for the rest); tokens that come faster than one per `update_interval_s`
go out together, one update per interval. A text prompt too long for the model's context is trimmed from the left,
keeping its end, and the update says so in `notes`. Leaving the generator early, for any reason,
stops the worker within one decoding step:

    for update in engine.stream("gpt2", TextRequest("ROMEO:"), GenerationParams(max_new_tokens=32), cancel):
        print(update.text)

Randomness: sampling draws from torch's global RNG, which every thread shares. So that a seed always gives the
same text, sampled requests (temperature > 0, seeded or not) take `SAMPLING_LOCK` and run one at a time; the seed
is applied with `transformers.set_seed` inside the lock. Greedy requests use no randomness and run concurrently.
"""

import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, set_seed

from .audio import SAMPLE_RATE
from .conversation import MIN_PROMPT_SHARE, fit_conversation
from .explain import mean_token_probability
from .i18n import Message
from .loaders import ModelAdapter, PresetUnavailableError, dtype_for, load_adapter, pick_device
from .presets import PRESETS, Preset, UnknownPresetError, get_preset
from .requests import AskRequest, AudioRequest, GenerationParams, ImageRequest, StreamUpdate, TextRequest

__all__ = [
    "AskRequest",
    "AudioRequest",
    "Engine",
    "EventStop",
    "GenerationParams",
    "GenerationTimeout",
    "ImageRequest",
    "PresetUnavailableError",
    "StreamUpdate",
    "TextRequest",
    "UnknownPresetError",
    "fit_to_context",
    "generation_kwargs",
]

logger = logging.getLogger(__name__)

SAMPLING_LOCK = threading.Lock()  # held by every sampled generate(); see the module docstring
LOCK_POLL_S = 0.05  # how often a worker waiting for SAMPLING_LOCK checks whether it was cancelled
MIN_WINDOW_SECONDS = 0.25  # a shorter tail after the last full audio window is dropped rather than transcribed
TASK_OF_REQUEST = {ImageRequest: "image", AudioRequest: "audio", TextRequest: "text", AskRequest: "image"}
TRIM_ATTEMPTS = 4  # re-tokenizing trimmed text can shift a token or two; trim again at most this many times
HOLD_BACK_TOKENS = 4  # UTF-8 characters span at most 4 bytes: text still incomplete after that many tokens is invalid
# Each hand-off wakes the caller's thread, which on a 2-core machine takes the CPU from generate() (one update per
# token cost mmgpt-tiny a third of its speed). 50 updates a second is smoother than a screen can show text grow.
UPDATE_INTERVAL_S = 0.02


class GenerationTimeout(TimeoutError):
    """Generation ran past the engine's time limit and was stopped. The message is for users."""


class EventStop(StoppingCriteria):
    """Ends generation at the next decoding step once any of `events` is set."""

    def __init__(self, *events: threading.Event | None):
        self.events = [event for event in events if event is not None]

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.is_set(), dtype=torch.bool, device=input_ids.device)


def generation_kwargs(params: GenerationParams, room: int | None = None) -> dict:
    """The decoding settings passed to every `generate()` call: the one place they are built.

    `room` is how many tokens the model's context has left after the prompt; max_new_tokens is capped to it.
    """
    max_new_tokens = params.max_new_tokens
    if room is not None:
        if room < 1:
            raise ValueError("The input fills the model's whole context, leaving no room for an answer; shorten it.")
        max_new_tokens = min(max_new_tokens, room)
    kwargs = {"max_new_tokens": max_new_tokens, "repetition_penalty": params.repetition_penalty}
    if params.do_sample:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    else:
        kwargs.update(do_sample=False)
    return kwargs


class _Chunk(NamedTuple):
    text: str  # everything generated so far, across windows
    tokens: int  # generated so far, across windows
    window: int
    first_token_at: float | None  # perf_counter() of the first generated token
    last_token_at: float | None
    token_ids: tuple[int, ...] = ()  # the window's generated ids, on its final chunk


class _Note(NamedTuple):
    text: Message  # a remark for the user, e.g. that the prompt was trimmed


class _Confidence(NamedTuple):
    mean_probability: float | None  # of an answer to a question, from generate()'s raw logits


_END = object()  # the worker's last queue item, after the final chunk or an error


class _TokenStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that releases text after every token, not at word boundaries.

    Tokens that come within `min_interval_s` of the last release wait and go out together with the next one
    (or at the end of the window); 0 releases every token on its own.

    Each new token is decoded together with the few tokens before it (so that tokenizers which drop a word's
    leading space at the start of a sequence still get it right), and text ending in an incomplete UTF-8 sequence
    ("\ufffd") waits for the next token, up to `HOLD_BACK_TOKENS` tokens (a model can also write invalid bytes,
    which no later token completes). At the end of each window the whole window is decoded once more, and that
    text is final, so the last update equals decoding `generate()`'s output. Queue items are `_Chunk`s holding all
    the text so far, the token count, the window and token times.
    """

    def __init__(self, tokenizer, timeout: float, min_interval_s: float = 0.0):
        super().__init__(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        self.min_interval_s = min_interval_s
        self._released_at = -float("inf")
        self.tokens = 0
        self.window = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.text = ""  # every finished window's text, joined
        self._ids: list[int] = []  # this window's generated tokens
        self._pieces: list[str] = []  # this window's released text
        self._prefix = self._read = 0  # self._ids[_prefix:_read] is the context the next token is decoded with

    def put(self, value):
        if value.ndim > 1:
            if value.shape[0] > 1:
                raise ValueError("the engine streams one sequence at a time")
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        ids = value.tolist()
        self.tokens += len(ids)
        self.last_token_at = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = self.last_token_at
        self._ids.extend(ids)
        if self.last_token_at - self._released_at >= self.min_interval_s:
            self._release()

    def _release(self):
        """Send the text of the tokens since the last release, except a character still cut across tokens."""
        decode = lambda ids: self.tokenizer.decode(ids, **self.decode_kwargs)  # noqa: E731
        end = len(self._ids)
        after = decode(self._ids[self._prefix : end])
        if after.endswith("\ufffd"):
            if end - self._read < HOLD_BACK_TOKENS:
                return  # wait for the rest of the character
            # Tokens that waited for the interval may end in a cut character: release up to where it starts. If
            # nothing is clean within HOLD_BACK_TOKENS, the model wrote invalid bytes, which go out as they are.
            for cut in range(end - 1, max(self._read, end - HOLD_BACK_TOKENS), -1):
                if not (text := decode(self._ids[self._prefix : cut])).endswith("\ufffd"):
                    end, after = cut, text
                    break
        before = decode(self._ids[self._prefix : self._read])
        if len(after) > len(before):
            self._prefix, self._read = self._read, end
            self._pieces.append(after[len(before) :])
            self._released_at = self.last_token_at
            self._send(_join_text(self.text, "".join(self._pieces)))

    def end(self):
        window_text = self.tokenizer.decode(self._ids, **self.decode_kwargs)
        self.text = _join_text(self.text, window_text)
        window_ids = tuple(self._ids)
        self._ids, self._pieces, self._prefix, self._read = [], [], 0, 0
        self.next_tokens_are_prompt = True
        self._send(self.text, window_ids)

    def _send(self, text: str, token_ids: tuple[int, ...] = ()):
        # the worker, not the streamer, marks the end: it also has to report errors and cover several windows
        self.text_queue.put(_Chunk(text, self.tokens, self.window, self.first_token_at, self.last_token_at,
                                   token_ids), timeout=self.timeout)


@dataclass
class _Worker:
    """Runs generate() for each window of one request and reports through the streamer's queue."""

    adapter: ModelAdapter
    segments: list
    params: GenerationParams
    streamer: _TokenStreamer
    stop: EventStop  # set by the engine on any exit from the stream, or by the caller's cancel event
    error: BaseException | None = None

    def __call__(self):
        try:
            with _rng_for(self.params, self.stop) as acquired:
                if not acquired:
                    return
                for window, segment in enumerate(self.segments):
                    if self.stop.is_set():
                        break
                    self.streamer.window = window
                    note = None
                    if isinstance(segment, TextRequest):
                        inputs, note = fit_to_context(self.adapter, segment, self.params.max_new_tokens)
                    elif isinstance(segment, AskRequest):
                        inputs, _, note = fit_conversation(self.adapter, segment, self.params.max_new_tokens)
                    else:
                        inputs = self.adapter.prepare(segment)
                    if note:
                        self.streamer.text_queue.put(_Note(note))
                    extra = self.adapter.extra_generate_kwargs(segment)  # e.g. mmgpt: see its adapter
                    # An answer to a question reports its mean token probability, read off the raw logits that
                    # generate() keeps on request (a few MB at most); the tokens chosen do not change.
                    scored = isinstance(segment, AskRequest)
                    output = self.adapter.model.generate(
                        **inputs,
                        **generation_kwargs(self.params, self.adapter.room_for_new_tokens(inputs)),
                        **extra,
                        **({"output_logits": True, "return_dict_in_generate": True} if scored else {}),
                        streamer=self.streamer,
                        stopping_criteria=StoppingCriteriaList([self.stop]),
                    )
                    if scored:
                        special = set(getattr(self.adapter.tokenizer, "all_special_ids", []))
                        self.streamer.text_queue.put(_Confidence(mean_token_probability(output, special)))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            self.error = exc
        finally:
            self.streamer.text_queue.put(_END)


@contextmanager
def _rng_for(params: GenerationParams, stop: EventStop):
    """Yield True once this request may draw random numbers (False if cancelled while waiting)."""
    if not params.do_sample:
        yield True
        return
    while not SAMPLING_LOCK.acquire(timeout=LOCK_POLL_S):
        if stop.is_set():
            yield False
            return
    try:
        if params.seed is not None:
            set_seed(params.seed)
        yield True
    finally:
        SAMPLING_LOCK.release()


def audio_windows(request: AudioRequest, max_audio_seconds: float | None) -> list[AudioRequest]:
    """Cut a recording into consecutive windows the model can take (no overlap); a tiny tail is dropped."""
    if not max_audio_seconds:
        return [request]
    size = int(round(max_audio_seconds * SAMPLE_RATE))
    waveform = request.waveform
    starts = range(0, len(waveform), size)
    pieces = [waveform[start : start + size] for start in starts]
    if len(pieces) > 1 and len(pieces[-1]) < MIN_WINDOW_SECONDS * SAMPLE_RATE:
        pieces.pop()
    return [replace(request, waveform=piece) for piece in pieces]


def _join_text(text: str, window_text: str) -> str:
    """Earlier windows' text, then this window's, with a space between them if neither side has one."""
    if text and window_text and not text[-1].isspace() and not window_text[0].isspace():
        return text + " " + window_text
    return text + window_text


def fit_to_context(adapter: ModelAdapter, request: TextRequest, max_new_tokens: int) -> tuple[dict, Message | None]:
    """`generate()` inputs for `request`, its text trimmed from the left if the model's context is too short.

    The prompt (with its chat template, if any) may take the context minus `max_new_tokens`, or
    `MIN_PROMPT_SHARE` of the context when more new tokens than that are asked for. Beyond that the text loses its
    beginning: the passage of an "answer" request first, then the prompt. Returns the inputs and a note for the
    user (None if nothing was trimmed).
    """
    inputs = adapter.prepare(request)
    length = inputs["input_ids"].shape[-1]
    room = adapter.room_for_new_tokens(inputs)
    if room is None:
        return inputs, None
    context = length + room
    budget = max(context - max_new_tokens, min(length, int(context * MIN_PROMPT_SHARE)))
    if length <= budget:
        return inputs, None
    original, tokenizer = request, adapter.tokenizer
    for _ in range(TRIM_ATTEMPTS):
        excess = length - budget
        if excess <= 0:
            break
        if request.task == "answer" and request.context:
            trimmed = replace(request, context=_keep_end(tokenizer, request.context, excess, keep_one=False))
        else:
            prompt = _keep_end(tokenizer, request.prompt, excess, keep_one=True) or request.prompt.strip()[-1]
            trimmed = replace(request, prompt=prompt)
        if trimmed == request:
            break  # nothing left to trim (the template alone is too long); the room check in generate decides
        request, inputs = trimmed, adapter.prepare(trimmed)
        length = inputs["input_ids"].shape[-1]
    if request == original:
        return inputs, None
    total, kept = _read_tokens(tokenizer, original), _read_tokens(tokenizer, request)
    logger.info("trimmed a %d-token text to its last %d tokens (context %d, max_new_tokens %d)", total, kept,
                context, max_new_tokens)
    return inputs, Message("context_trimmed", context=context, kept=kept, total=total)


def _read_tokens(tokenizer, request: TextRequest) -> int:
    """Tokens of the user's text in `request`: the prompt, and the passage of an "answer" request."""
    passage = request.context if request.task == "answer" else ""
    return len(_text_ids(tokenizer, request.prompt)) + len(_text_ids(tokenizer, passage))


def _text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _keep_end(tokenizer, text: str, drop: int, keep_one: bool) -> str:
    """`text` without the text of its first `drop` tokens (all but the last one at most if `keep_one`).

    A character cut in half at the new start is dropped too.
    """
    ids = _text_ids(tokenizer, text)
    drop = min(drop, len(ids) - 1) if keep_one else drop
    return tokenizer.decode(ids[drop:], skip_special_tokens=False).lstrip("\ufffd").lstrip()


class Engine:
    """Loads presets once (thread-safe, LRU-evicted past `max_loaded`) and streams generations from them.

    One engine serves one device and dtype (picked by `loaders.pick_device` / `dtype_for` unless given), so
    the cache key of a model is its preset name. `load_count[name]` counts the loads of each preset.
    """

    def __init__(
        self,
        max_loaded: int = 3,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        timeout_s: float = 120.0,
        presets: Mapping[str, Preset] | None = None,
        update_interval_s: float = UPDATE_INTERVAL_S,
    ):
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, got {max_loaded}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be above 0, got {timeout_s}")
        if update_interval_s < 0:
            raise ValueError(f"update_interval_s must be 0 or more, got {update_interval_s}")
        self.update_interval_s = update_interval_s
        self.max_loaded = max_loaded
        self.device = device or pick_device()
        self.dtype = dtype or dtype_for(self.device)
        self.timeout_s = timeout_s
        self.presets = dict(PRESETS if presets is None else presets)
        self.load_count: Counter[str] = Counter()
        self._loaded: OrderedDict[str, ModelAdapter] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # guards _loaded, _load_locks and load_count; never held while loading
        self._load_locks: dict[str, threading.Lock] = {}  # one per preset: held while that preset loads

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded presets, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def preset(self, name: str) -> Preset:
        return get_preset(name, self.presets)

    def load(self, preset_name: str) -> ModelAdapter:
        """The adapter of `preset_name`, loading it on first use; raises PresetUnavailableError if it can't."""
        preset = self.preset(preset_name)
        with self._lock:
            if (adapter := self._touch(preset_name)) is not None:
                return adapter
            load_lock = self._load_locks.setdefault(preset_name, threading.Lock())
        with load_lock:  # threads asking for the same preset wait here; other presets load in parallel
            with self._lock:
                if (adapter := self._touch(preset_name)) is not None:
                    return adapter
            adapter = load_adapter(preset, self.device, self.dtype)
            with self._lock:
                self.load_count[preset_name] += 1
                self._loaded[preset_name] = adapter
                while len(self._loaded) > self.max_loaded:
                    evicted, _ = self._loaded.popitem(last=False)
                    logger.info("evicted %s (more than %d models loaded)", evicted, self.max_loaded)
        return adapter

    def explain(self, preset_name: str, request, generated: str | tuple[int, ...],
                params: GenerationParams | None = None):
        """Token confidences and, where the model gives them, attention maps for `generated`, the answer
        `preset_name` streamed to `request` with `params` (default: the preset's): its last update's `token_ids`,
        or else its text (an `explain.Explanation`). One extra forward pass after generation, so streaming never
        waits for it; a model that cannot give maps gets None fields and a note, not an error."""
        from .explain import explain

        preset = self.check(preset_name, request)
        adapter = self.load(preset_name)
        if isinstance(request, AskRequest):  # the prompt the answer was written to: the same turns left out
            max_new_tokens = (params or preset.params()).max_new_tokens
            _, request, _ = fit_conversation(adapter, request, max_new_tokens)
        if not isinstance(generated, str):  # the words the user saw: end-of-text and other special tokens are not
            special = set(getattr(adapter.tokenizer, "all_special_ids", []))
            generated = [token for token in generated if token not in special]
        return explain(adapter, request, generated)

    def _touch(self, name: str) -> ModelAdapter | None:
        adapter = self._loaded.get(name)
        if adapter is not None:
            self._loaded.move_to_end(name)
        return adapter

    def stream(
        self,
        preset_name: str,
        request: ImageRequest | AudioRequest | TextRequest,
        params: GenerationParams | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamUpdate]:
        """Stream the answer to `request`; the last update has done=True.

        Raises at once (before loading anything) for an unknown preset or a request the preset cannot serve;
        the first `next()` loads the model and may raise PresetUnavailableError.
        Setting `cancel`, closing the generator or running past `timeout_s` stops the worker within one
        decoding step; a timeout then raises GenerationTimeout. An error in the worker is re-raised here.
        """
        preset = self.check(preset_name, request)
        params = preset.params() if params is None else params
        return self._stream(preset_name, request, params, cancel)

    def check(self, preset_name: str, request) -> Preset:
        """The preset, if it can serve `request`; else ValueError naming what it takes."""
        preset = self.preset(preset_name)
        task = TASK_OF_REQUEST.get(type(request))
        if task not in preset.tasks:
            raise ValueError(f'"{preset_name}" does not take {task or type(request).__name__} input; '
                             f'it takes: {", ".join(preset.tasks)}')
        if isinstance(request, TextRequest) and request.task not in preset.text_tasks:
            raise ValueError(f'"{preset_name}" cannot {request.task}; it can: {", ".join(preset.text_tasks)}')
        if isinstance(request, AskRequest) and not preset.answers_questions:
            raise ValueError(f'"{preset_name}" does not answer questions about a picture; it only describes them')
        if isinstance(request, AskRequest) and request.audio is not None and not preset.hears_questions:
            raise ValueError(f'"{preset_name}" cannot hear a spoken question; transcribe it first')
        return preset

    def _stream(self, preset_name, request, params, cancel) -> Iterator[StreamUpdate]:
        adapter = self.load(preset_name)
        if isinstance(request, AudioRequest):
            segments = audio_windows(request, adapter.max_audio_seconds)
        else:
            segments = [request]
        stop = threading.Event()  # set on any exit from this generator; `cancel` stays the caller's to set
        streamer = _TokenStreamer(adapter.tokenizer, timeout=self.timeout_s, min_interval_s=self.update_interval_s)
        worker = _Worker(adapter, segments, params, streamer, EventStop(stop, cancel))
        thread = threading.Thread(target=worker, name=f"mmgpt-generate-{preset_name}", daemon=False)
        started = time.perf_counter()
        deadline = started + self.timeout_s
        last, notes, confidence = _Chunk("", 0, 0, None, None), (), None
        thread.start()
        try:
            while True:
                try:
                    item = streamer.text_queue.get(timeout=max(deadline - time.perf_counter(), 0.0))
                except queue.Empty:
                    logger.warning("generation with %s passed the %.0f s limit; stopping it", preset_name,
                                   self.timeout_s)
                    raise GenerationTimeout(
                        f"Generation stopped after {self.timeout_s:g} s, the time limit. "
                        "Ask for fewer new tokens or choose a smaller model."
                    ) from None
                if item is _END:
                    break
                if isinstance(item, _Note):
                    notes += (item.text,)
                    continue
                if isinstance(item, _Confidence):
                    confidence = item.mean_probability
                    continue
                changed, last = item.text != last.text, item
                if changed:
                    yield self._update(last, started, done=False, windows=len(segments), notes=notes)
            if worker.error is not None:
                logger.error("generation with %s failed", preset_name, exc_info=worker.error)
                raise worker.error
            yield replace(self._update(last, started, done=True, windows=len(segments), notes=notes),
                          confidence=confidence)
        finally:
            stop.set()
            thread.join(timeout=self.timeout_s)
            if thread.is_alive():
                logger.error("generation thread for %s did not stop within %.0f s", preset_name, self.timeout_s)

    @staticmethod
    def _update(chunk: _Chunk, started: float, done: bool, windows: int, notes: tuple[Message, ...]) -> StreamUpdate:
        ttft = None if chunk.first_token_at is None else chunk.first_token_at - started
        rate = None
        if chunk.tokens > 1 and chunk.last_token_at > chunk.first_token_at:
            rate = (chunk.tokens - 1) / (chunk.last_token_at - chunk.first_token_at)
        return StreamUpdate(chunk.text, chunk.tokens, ttft, rate, done, window=chunk.window, windows=windows,
                            notes=notes, token_ids=chunk.token_ids if done and windows == 1 else ())
