"""Continuous batching: requests to one model that run at the same moment share its decoding steps.

Each request still goes through `model.generate()` in its own worker thread, so transformers prepares everything as
it always does: the inputs, the cache, the logits processors (repetition penalty, suppressed tokens, temperature,
top-k, top-p, min_new_tokens) and the stopping criteria (max_new_tokens, end-of-text, the engine's Stop). Only the
decoding loop is replaced, through `generate(custom_generate=...)`:

1. **Prefill, alone, in the request's thread**: the prompt (with its picture or recording, which the model's
   encoders read here) goes through the model exactly as `generate()`'s first step sends it, and the first token
   is chosen and streamed. Nothing else waits for it, and an error here belongs to this request only.
2. **Decoding, together, in the model's batch thread**: the request's cache joins the running batch at the next
   step boundary, right-aligned with left padding (the attention mask hides the padding, position ids count each
   row's own tokens), and one forward pass per step decodes every row. Each row then applies its own logits
   processors, picks its token (greedy, or sampled with its own `torch.Generator`), checks its own stopping
   criteria and feeds its own streamer. A finished, stopped or failed row leaves before the next step; the padding
   that nobody needs any more is cut off.

So a request alone in the batch runs exactly the computation `generate()` runs. With other rows beside it, its
numbers go through the same maths in bigger matrices, which can change the last bit of a logit; greedy text and a
seed's sampled text are the same unless two candidate tokens tie to within that bit (tests and benchmarks compare
batched streams with the same requests run alone).

Randomness: each sampled row draws from its own generator, seeded with the request's seed (the same draws
`transformers.set_seed` + `generate()` make) or from the OS, so no request takes a lock or disturbs another's draws.

Errors: an exception in one row's own work (prefill, logits processors, stopping, streaming) ends that row only.
An exception in a step shared by several rows cannot be pinned on one of them, so every row in that step gets it;
the batch thread then ends, and the next request starts a fresh one. No exception leaves a request waiting.

Only decoder-only models whose cache is transformers' plain `DynamicCache` and which decode greedily or sample
can share steps this way (`can_batch`); the engine runs the others (encoder-decoder captioners, Whisper,
sliding-window caches, beam search) one request per thread, as before.
"""

import copy
import inspect
import logging
import threading
import weakref
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer
from transformers.generation import GenerationMode

from .worker import EventStop

logger = logging.getLogger(__name__)

ALIVE_POLL_S = 1.0  # how often a request waiting for its row checks that the batch thread is still there


def can_batch(model) -> bool:
    """True for a decoder-only model that takes a cache, an attention mask and position ids, whose cache is plain
    `DynamicLayer`s (rows can then be joined, selected and padded along the batch axis), and whose generation
    config decodes greedily or samples, one sequence per prompt (not beam search, say, which the loop here lacks)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    generation = copy.deepcopy(getattr(model, "generation_config", None) or GenerationConfig())
    if (generation.num_return_sequences or 1) != 1:
        return False
    for do_sample, mode in ((False, GenerationMode.GREEDY_SEARCH), (True, GenerationMode.SAMPLE)):
        generation.do_sample = do_sample
        if generation.get_generation_mode() is not mode:
            return False
    accepted = set(inspect.signature(model.forward).parameters)
    if not {"input_ids", "attention_mask", "position_ids", "cache"} <= accepted:
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # a config transformers cannot build a cache from: leave it to generate()
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass(eq=False)
class Row:
    """One request's sequence while it decodes in the batch."""

    input_ids: torch.LongTensor  # (1, L): prompt and every token chosen so far, the last one not yet fed
    cache: DynamicCache | None  # its own prefill cache, until it joins the batch's
    logits_processor: object  # transformers LogitsProcessorList, built by generate() for this request
    stopping_criteria: object  # transformers StoppingCriteriaList, idem
    streamer: object
    do_sample: bool
    generator: torch.Generator | None
    stop: EventStop
    done: bool = False  # its last token ended it (or its own work failed): it leaves after this step
    finished: threading.Event = field(default_factory=threading.Event)  # out of the batch; set by the batch thread
    error: BaseException | None = None

    def __post_init__(self):
        # LogitsProcessorList inspects every processor's signature on every call, which costs more than most
        # processors do; when none takes extra arguments, call them in turn directly (what the list then does).
        if all(len(inspect.signature(p.__call__).parameters) == 2 for p in self.logits_processor):
            self.logits_processor = _Processors(self.logits_processor)

    def choose(self, logits: torch.Tensor) -> bool:
        """Pick the next token from this row's `(1, vocab)` float32 logits, as generate()'s loop does; stream it.
        True when the row is done."""
        scores = self.logits_processor(self.input_ids, logits)
        if self.do_sample:
            probs = torch.nn.functional.softmax(scores, dim=-1)
            token = torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)
        else:
            token = torch.argmax(scores, dim=-1)
        self.input_ids = torch.cat([self.input_ids, token[:, None]], dim=-1)
        done = bool(self.stopping_criteria(self.input_ids, None).all())
        self.streamer.put(token.cpu())
        return done


class _Processors(tuple):
    """Logits processors that each take `(input_ids, scores)` and nothing else, applied in turn."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class DecodingBatch:
    """The rows that share one model's decoding steps, and the thread that runs them (started on demand, ended
    when no row is left)."""

    def __init__(self, model, name: str):
        self._model = weakref.ref(model)  # the engine's model cache owns the model; eviction frees it
        self.name = name
        self._lock = threading.Lock()  # guards _joining and _thread
        self._joining: list[Row] = []  # prefilled rows waiting for the next step boundary
        self._thread: threading.Thread | None = None

    def decoding(self, streamer, stop: EventStop, seed: int | None) -> "BatchedDecoding":
        """The decoding loop for one `generate()` call: pass it as `custom_generate`."""
        return BatchedDecoding(self, streamer, stop, seed)

    def join(self, row: Row):
        """Add `row` at the next step and wait until it is finished; raise its error if it failed."""
        with self._lock:
            self._joining.append(row)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"mmgpt-generate-batch-{self.name}",
                                                daemon=True)
                self._thread.start()
            thread = self._thread
        while not row.finished.wait(ALIVE_POLL_S):
            if not thread.is_alive() and not row.finished.is_set():  # never happens unless the thread was killed
                raise RuntimeError("the decoding thread ended without finishing this request")
        with self._lock:
            retired = self._thread is not thread
        if retired:  # this was the last row: the thread is returning; when generate() returns, it is gone
            thread.join()
        if row.error is not None:
            raise row.error

    # --- the batch thread ---------------------------------------------------------------------------------------

    def _run(self):
        rows: list[Row] = []  # decoding in the batch
        waiting: list[Row] = []  # taken from _joining, not yet in the batch
        finishing: list[Row] = []  # out of the batch; set finished once the thread knows whether it goes on
        state = _BatchState()
        try:
            with torch.no_grad():
                while True:
                    with self._lock:
                        waiting, self._joining = self._joining, []
                    stopped = [row for row in rows if row.stop.is_set()]
                    rows = self._leave(rows, state, stopped)
                    finishing += stopped + [row for row in waiting if row.stop.is_set()]
                    waiting = [row for row in waiting if not row.stop.is_set()]
                    if waiting:
                        state.join(waiting, keep=bool(rows))
                        rows, waiting = rows + waiting, []
                    if rows:
                        self._step(rows, state)
                        done = [row for row in rows if row.done]
                        rows = self._leave(rows, state, done)
                        finishing += done
                    with self._lock:
                        idle = not rows and not self._joining
                        if idle:
                            self._thread = None
                    for row in finishing:
                        row.finished.set()
                    finishing = []
                    if idle:
                        return
        except BaseException as exc:  # a step shared by every row failed: each of them gets the error
            logger.error("a decoding step shared by %d requests to %s failed", len(rows), self.name, exc_info=exc)
            with self._lock:
                stranded = rows + waiting + self._joining
                self._joining, self._thread = [], None
            for row in stranded:
                row.error = exc
            for row in stranded + finishing:
                row.finished.set()

    def _step(self, rows: list[Row], state: "_BatchState"):
        """One forward pass for every row, then each row's own token choice; sets `done` on the rows that end."""
        fed = torch.cat([row.input_ids[:, -1:] for row in rows])  # (B, 1): each row's newest token
        positions = torch.tensor([[row.input_ids.shape[1] - 1] for row in rows], device=fed.device)  # (B, 1)
        mask = state.grow_mask()  # (B, S + 1) or None when no row has padding
        outputs = self._model()(input_ids=fed, attention_mask=mask, position_ids=positions, cache=state.cache,
                             use_cache=True, return_dict=True)
        state.cache = outputs.cache
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)  # (B, vocab)
        del outputs
        for index, row in enumerate(rows):
            try:
                row.done = row.choose(logits[index : index + 1])
            except BaseException as exc:  # this row's own processors, criteria or streamer: this row only
                logger.error("decoding one request to %s failed", self.name, exc_info=exc)
                row.error, row.done = exc, True

    @staticmethod
    def _leave(rows: list[Row], state: "_BatchState", leaving: list[Row]) -> list[Row]:
        """`rows` without `leaving`: their cache rows and the padding nobody needs any more are cut off."""
        if not leaving:
            return rows
        gone = set(map(id, leaving))
        kept = [i for i, row in enumerate(rows) if id(row) not in gone]
        state.select(kept)
        return [rows[i] for i in kept]


class _BatchState:
    """The batch's cache, `(B, heads, S, head_dim)` per layer, and its `(B, S)` attention mask (1 = a real token,
    0 = left padding). Rows are right-aligned: every row's newest token is at position S - 1."""

    def __init__(self):
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None

    def join(self, rows: list[Row], keep: bool):
        """Add `rows`, each with its own one-row prefill cache, below the batch's rows (if `keep`)."""
        caches = ([self.cache] if keep else []) + [row.cache for row in rows]
        masks = ([self.mask] if keep else []) + [
            torch.ones((1, row.cache.get_seq_length()), dtype=torch.long, device=row.input_ids.device) for row in rows
        ]
        width = max(mask.shape[1] for mask in masks)
        merged = caches[0]  # reused as the container: its layers are the plain DynamicLayers can_batch checked
        for index, layer in enumerate(merged.layers):
            layer.keys = _stack_right_aligned([cache.layers[index].keys for cache in caches], width, axis=2)
            layer.values = _stack_right_aligned([cache.layers[index].values for cache in caches], width, axis=2)
        self.cache, self.mask = merged, _stack_right_aligned(masks, width, axis=1)
        for row in rows:
            row.cache = None

    def grow_mask(self) -> torch.Tensor | None:
        """The mask for the next step (one more real token per row); None when no row has padding."""
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return None if bool(self.mask.all()) else self.mask

    def select(self, kept: list[int]):
        """Keep only the rows at `kept`; drop the leading columns that are padding in every kept row."""
        if not kept:
            self.cache = self.mask = None
            return
        index = torch.tensor(kept, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        padding = int((self.mask.cumsum(dim=1) == 0).all(dim=0).sum())  # leading all-zero columns
        self.mask = self.mask[:, padding:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, padding:]
            layer.values = layer.values.index_select(0, index)[:, :, padding:]


def _stack_right_aligned(tensors: list[torch.Tensor], width: int, axis: int) -> torch.Tensor:
    """Concatenate `tensors` along the batch axis (0), each left-padded with zeros along `axis` to `width`."""
    padded = []
    for tensor in tensors:
        if (missing := width - tensor.shape[axis]) > 0:
            shape = list(tensor.shape)
            shape[axis] = missing
            tensor = torch.cat([tensor.new_zeros(shape), tensor], dim=axis)
        padded.append(tensor)
    return torch.cat(padded, dim=0)


class BatchedDecoding:
    """`generate(custom_generate=...)`'s decoding loop for one request: prefill here, then decode in the batch."""

    def __init__(self, batch: DecodingBatch, streamer, stop: EventStop, seed: int | None):
        self.batch = batch
        self.streamer = streamer
        self.stop = stop
        self.seed = seed

    def __call__(self, model, input_ids, logits_processor, stopping_criteria, generation_config, **model_kwargs):
        """Called by `generate()` with everything it prepared; returns the sequence `(1, L)` as it would."""
        if input_ids.shape[0] != 1:
            raise ValueError(f"batched decoding takes one sequence per generate() call, got {input_ids.shape[0]}")
        if generation_config.get_generation_mode() not in (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE):
            raise ValueError(f"batched decoding greedy-decodes or samples, not {generation_config.get_generation_mode()}")
        generator = None
        if generation_config.do_sample:
            generator = torch.Generator(device=input_ids.device)
            if self.seed is None:
                generator.seed()
            else:
                generator.manual_seed(self.seed)
        inputs = model.prepare_inputs_for_generation(input_ids, is_first_iteration=True, **model_kwargs)
        outputs = model(**inputs, return_dict=True)
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        row = Row(input_ids, outputs.cache, logits_processor, stopping_criteria, self.streamer,
                  generation_config.do_sample, generator, self.stop)
        del outputs, inputs
        if not row.choose(logits) and not self.stop.is_set():
            self.batch.join(row)
        self.streamer.end()
        return row.input_ids
