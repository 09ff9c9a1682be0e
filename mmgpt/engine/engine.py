"""`Engine`: the one object the app and the CLI talk to; see the package docstring."""

import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import replace

import torch

from ..i18n import Message
from ..loaders import ModelAdapter, dtype_for, pick_device
from ..presets import PRESETS, Preset, get_preset
from ..requests import AskRequest, AudioRequest, GenerationParams, ImageRequest, StreamUpdate, TextRequest
from .batching import DecodingBatch, can_batch
from .cache import ModelCache
from .remote import RemoteBackend
from .segments import audio_windows, fit_conversation
from .streaming import END, UPDATE_INTERVAL_S, Chunk, Confidence, Note, TokenStreamer, UpdatePacing, stream_update
from .worker import EventStop, Worker

logger = logging.getLogger(__name__)


def check_request(preset: Preset, preset_name: str, request) -> Preset:
    """`preset` if it can serve `request`; else ValueError naming what it takes."""
    task = getattr(request, "preset_task", None)
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


class GenerationTimeout(TimeoutError):
    """Generation ran past the engine's time limit and was stopped. The message is for users."""


class Engine:
    """Loads presets once (thread-safe, LRU-evicted past `max_loaded`) and streams generations from them.

    One engine serves one device and dtype (picked by `loaders.pick_device` / `dtype_for` unless given), so
    the cache key of a model is its preset name. `load_count[name]` counts the loads of each preset.
    `batching=False` makes every request decode on its own (the path before batching). `threads`, if given, sets
    torch's intra-op threads for the whole process.
    """

    def __init__(
        self,
        max_loaded: int = 3,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        timeout_s: float = 120.0,
        presets: Mapping[str, Preset] | None = None,
        update_interval_s: float = UPDATE_INTERVAL_S,
        batching: bool = True,
        threads: int | None = None,
    ):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be above 0, got {timeout_s}")
        if update_interval_s < 0:
            raise ValueError(f"update_interval_s must be 0 or more, got {update_interval_s}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, got {threads}")
            # Process-wide. Every thread that runs torch (the batch thread, each request's prefill) gets a team of
            # this many; two teams of 2 busy-waiting threads on 2 cores collapsed throughput, 1 each never does.
            torch.set_num_threads(threads)
        self.update_interval_s = update_interval_s
        self.pacing = UpdatePacing(update_interval_s)  # stretched while many streams are open
        self.device = device or pick_device()
        self.dtype = dtype or dtype_for(self.device)
        self.timeout_s = timeout_s
        self.presets = dict(PRESETS if presets is None else presets)
        self.models = ModelCache(max_loaded, self.device, self.dtype)
        self.remote = RemoteBackend(timeout_s, update_interval_s)  # remote presets' answers: nothing loads here
        self.batching = batching  # False: every request decodes on its own (the path before batching, to compare)
        # model -> its batch (None: it cannot batch); weak, so that an evicted model is freed with its batch
        self._batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._batches_lock = threading.Lock()

    @property
    def max_loaded(self) -> int:
        return self.models.max_loaded

    @property
    def load_count(self):
        return self.models.load_count

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded presets, least recently used first."""
        return self.models.loaded

    def preset(self, name: str) -> Preset:
        return get_preset(name, self.presets)

    def load(self, preset_name: str) -> ModelAdapter | None:
        """The adapter of `preset_name`, loading it on first use; raises PresetUnavailableError if it can't.
        None for a remote preset, whose model runs on its server."""
        preset = self.preset(preset_name)
        return None if preset.is_remote else self.models.load(preset)

    def explain(self, preset_name: str, request, generated: str | tuple[int, ...],
                params: GenerationParams | None = None):
        """Token confidences and, where the model gives them, attention maps for `generated`, the answer
        `preset_name` streamed to `request` with `params` (default: the preset's): its last update's `token_ids`,
        or else its text (an `explain.Explanation`). One extra forward pass after generation, so streaming never
        waits for it; a model that cannot give maps gets None fields and a note, not an error."""
        from ..explain import Explanation, explain

        preset = self.check(preset_name, request)
        if preset.is_remote:
            return Explanation(note=Message("remote_no_maps", preset=preset_name))
        adapter = self.load(preset_name)
        if isinstance(request, AskRequest):  # the prompt the answer was written to: the same turns left out
            _, request, _ = fit_conversation(adapter, request, (params or preset.params()).max_new_tokens)
        if not isinstance(generated, str):  # the words the user saw: end-of-text and other special tokens are not
            special = set(getattr(adapter.tokenizer, "all_special_ids", []))
            generated = [token for token in generated if token not in special]
        return explain(adapter, request, generated)

    def decoding_batch(self, preset_name: str, adapter: ModelAdapter) -> DecodingBatch | None:
        """The batch in which requests to `adapter`'s model share decoding steps; None if it cannot batch (or
        batching is off)."""
        if not self.batching:
            return None
        model = adapter.model
        with self._batches_lock:
            if model not in self._batches:
                self._batches[model] = DecodingBatch(model, preset_name) if can_batch(model) else None
            return self._batches[model]

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
        if preset.is_remote:
            return self.remote.stream(preset, request, params, cancel)
        return self._stream(preset_name, request, params, cancel)

    def check(self, preset_name: str, request) -> Preset:
        """The preset, if it can serve `request`; else ValueError naming what it takes."""
        return check_request(self.preset(preset_name), preset_name, request)

    def _stream(self, preset_name, request, params, cancel) -> Iterator[StreamUpdate]:
        adapter = self.load(preset_name)
        if isinstance(request, AudioRequest):
            segments = audio_windows(request, adapter.max_audio_seconds)
        else:
            segments = [request]
        stop = threading.Event()  # set on any exit from this generator; `cancel` stays the caller's to set
        streamer = TokenStreamer(adapter.tokenizer, timeout=self.timeout_s, min_interval_s=self.pacing.interval_s)
        worker = Worker(adapter, segments, params, streamer, EventStop(stop, cancel),
                        self.decoding_batch(preset_name, adapter))
        thread = threading.Thread(target=worker, name=f"mmgpt-generate-{preset_name}", daemon=False)
        started = time.perf_counter()
        deadline = started + self.timeout_s
        last, notes, confidence = Chunk("", 0, 0, None, None), (), None
        self.pacing.opened()
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
                if item is END:
                    break
                if isinstance(item, Note):
                    notes += (item.text,)
                    continue
                if isinstance(item, Confidence):
                    confidence = item.mean_probability
                    continue
                changed, last = item.text != last.text, item
                if changed:
                    yield stream_update(last, started, done=False, windows=len(segments), notes=notes)
            if worker.error is not None:
                logger.error("generation with %s failed", preset_name, exc_info=worker.error)
                raise worker.error
            yield replace(stream_update(last, started, done=True, windows=len(segments), notes=notes),
                          confidence=confidence)
        finally:
            self.pacing.closed()
            stop.set()
            thread.join(timeout=self.timeout_s)
            if thread.is_alive():
                logger.error("generation thread for %s did not stop within %.0f s", preset_name, self.timeout_s)

