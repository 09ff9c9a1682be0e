"""One request's generation: a worker thread calls `generate()` for each segment and reports through the streamer.

When the model can batch, `generate()` hands its decoding loop to the model's `DecodingBatch` (batching.py), where
the request shares decoding steps with the others. Otherwise it decodes on its own, in this thread.

Randomness on its own: sampling draws from torch's global RNG, which every thread shares. So that a seed always
gives the same text, sampled requests (temperature > 0, seeded or not) take `SAMPLING_LOCK` and run one at a time;
the seed is applied with `transformers.set_seed` inside the lock. Greedy requests use no randomness and run
concurrently. In a batch, each sampled row has a generator of its own and takes no lock.
"""

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, set_seed

from ..loaders import ModelAdapter
from ..requests import AskRequest, GenerationParams, ImageRequest, TextRequest
from .confidence import ConfidenceMeter
from .segments import fit_conversation, fit_to_context
from .streaming import END, Confidence, Note, TokenStreamer

if TYPE_CHECKING:
    from .batching import DecodingBatch

SAMPLING_LOCK = threading.Lock()  # held by every sampled generate(); see the module docstring
LOCK_POLL_S = 0.05  # how often a worker waiting for SAMPLING_LOCK checks whether it was cancelled


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


@dataclass
class Worker:
    """Runs generate() for each window of one request and reports through the streamer's queue."""

    adapter: ModelAdapter
    segments: list
    params: GenerationParams
    streamer: TokenStreamer
    stop: EventStop  # set by the engine on any exit from the stream, or by the caller's cancel event
    batch: "DecodingBatch | None" = None  # decode in this batch (see batching.py); None: generate() on its own
    error: BaseException | None = None

    def __call__(self):
        try:
            with _rng_for(self.params, self.stop, shared=self.batch is None) as acquired:
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
                        self.streamer.text_queue.put(Note(note))
                    extra = self.adapter.extra_generate_kwargs(segment)  # e.g. mmgpt: see its adapter
                    if self.batch is not None:
                        extra["custom_generate"] = self.batch.decoding(self.streamer, self.stop, self.params.seed)
                    criteria = [self.stop]
                    meter = None
                    if isinstance(segment, (AskRequest, ImageRequest)):  # it says how sure the model was of it
                        restart_after = getattr(self.adapter, "answer_after_ids", ()) \
                            if isinstance(segment, AskRequest) else ()
                        meter = ConfidenceMeter(getattr(self.adapter.tokenizer, "all_special_ids", []), restart_after)
                        extra["logits_processor"] = LogitsProcessorList([meter.processor])
                        criteria.append(meter.criterion)
                    self.adapter.model.generate(
                        **inputs,
                        **generation_kwargs(self.params, self.adapter.room_for_new_tokens(inputs)),
                        **extra,
                        streamer=self.streamer,
                        stopping_criteria=StoppingCriteriaList(criteria),
                    )
                    if meter is not None:
                        self.streamer.text_queue.put(Confidence(meter.mean))
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            self.error = exc
        finally:
            self.streamer.text_queue.put(END)


@contextmanager
def _rng_for(params: GenerationParams, stop: EventStop, shared: bool):
    """Yield True once this request may draw random numbers (False if cancelled while waiting). Only a request
    that draws from torch's `shared` global RNG has to wait: a batched row has a generator of its own."""
    if not params.do_sample or not shared:
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
