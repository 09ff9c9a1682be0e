"""Streaming: generated tokens -> text released as it grows, whole characters only, and `StreamUpdate`s.

Each hand-off of text wakes the caller's thread, which on a 2-core machine takes the CPU from generation, so tokens
that come faster than one per `min_interval_s` go out together. A token that ends inside a multi-byte UTF-8
character waits for the rest. `UpdatePacing` stretches the interval when many streams run at once, so that all of
them together hand out about as many updates a second as a couple of streams do.
"""

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from transformers import TextIteratorStreamer

from ..i18n import Message
from ..requests import StreamUpdate

HOLD_BACK_TOKENS = 4  # UTF-8 characters span at most 4 bytes: text still incomplete after that many tokens is invalid
# Each hand-off wakes the caller's thread, which on a 2-core machine takes the CPU from generate() (one update per
# token cost mmgpt-tiny a third of its speed). 50 updates a second is smoother than a screen can show text grow.
UPDATE_INTERVAL_S = 0.02
# Up to this many streams at once each get UPDATE_INTERVAL_S; beyond, every stream's interval grows in proportion,
# keeping the total near STREAMS_AT_BASE_INTERVAL / UPDATE_INTERVAL_S = 100 updates a second: each update costs a web
# server about as much CPU as a decoding step, and 16 streams at 50 a second took the CPU from decoding them.
STREAMS_AT_BASE_INTERVAL = 2


class UpdatePacing:
    """The interval between one stream's updates, from `base_s` and how many streams are open (thread-safe)."""

    def __init__(self, base_s: float):
        self.base_s = base_s
        self.streams = 0
        self._lock = threading.Lock()

    def interval_s(self) -> float:
        return self.base_s * max(1.0, self.streams / STREAMS_AT_BASE_INTERVAL)

    def opened(self):
        with self._lock:
            self.streams += 1

    def closed(self):
        with self._lock:
            self.streams -= 1


class Chunk(NamedTuple):
    text: str  # everything generated so far, across windows
    tokens: int  # generated so far, across windows
    window: int
    first_token_at: float | None  # perf_counter() of the first generated token
    last_token_at: float | None
    token_ids: tuple[int, ...] = ()  # the window's generated ids, on its final chunk


class Note(NamedTuple):
    text: Message  # a remark for the user, e.g. that the prompt was trimmed


class Confidence(NamedTuple):
    mean_probability: float | None  # of an answer to a question or a description (see confidence.py)


END = object()  # the worker's last queue item, after the final chunk or an error


class TokenStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that releases text after every token, not at word boundaries.

    Tokens that come within `min_interval_s` (seconds, or a function giving them, such as
    `UpdatePacing.interval_s`) of the last release wait and go out together with the next one (or at the end of
    the window); 0 releases every token on its own.

    Each new token is decoded together with the few tokens before it (so that tokenizers which drop a word's
    leading space at the start of a sequence still get it right), and text ending in an incomplete UTF-8 sequence
    ("\ufffd") waits for the next token, up to `HOLD_BACK_TOKENS` tokens (a model can also write invalid bytes,
    which no later token completes). At the end of each window the whole window is decoded once more, and that
    text is final, so the last update equals decoding `generate()`'s output. Queue items are `Chunk`s holding all
    the text so far, the token count, the window and token times.
    """

    def __init__(self, tokenizer, timeout: float, min_interval_s: float | Callable[[], float] = 0.0):
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
        interval = self.min_interval_s() if callable(self.min_interval_s) else self.min_interval_s
        if self.last_token_at - self._released_at >= interval:
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
            self._send(join_text(self.text, "".join(self._pieces)))

    def end(self):
        window_text = self.tokenizer.decode(self._ids, **self.decode_kwargs)
        self.text = join_text(self.text, window_text)
        window_ids = tuple(self._ids)
        self._ids, self._pieces, self._prefix, self._read = [], [], 0, 0
        self.next_tokens_are_prompt = True
        self._send(self.text, window_ids)

    def _send(self, text: str, token_ids: tuple[int, ...] = ()):
        # the worker, not the streamer, marks the end: it also has to report errors and cover several windows
        self.text_queue.put(Chunk(text, self.tokens, self.window, self.first_token_at, self.last_token_at,
                                  token_ids), timeout=self.timeout)


def join_text(text: str, window_text: str) -> str:
    """Earlier windows' text, then this window's, with a space between them if neither side has one."""
    if text and window_text and not text[-1].isspace() and not window_text[0].isspace():
        return text + " " + window_text
    return text + window_text


def stream_update(chunk: Chunk, started: float, done: bool, windows: int, notes: tuple[Message, ...]) -> StreamUpdate:
    """What the caller sees of `chunk`: times are measured from `started` (perf_counter() at the request)."""
    ttft = None if chunk.first_token_at is None else chunk.first_token_at - started
    rate = None
    if chunk.tokens > 1 and chunk.last_token_at > chunk.first_token_at:
        rate = (chunk.tokens - 1) / (chunk.last_token_at - chunk.first_token_at)
    return StreamUpdate(chunk.text, chunk.tokens, ttft, rate, done, window=chunk.window, windows=windows,
                        notes=notes, token_ids=chunk.token_ids if done and windows == 1 else ())
