"""What one `generate()` call takes of a request: text trimmed to the model's context, a conversation's oldest turns
left out when it outgrows the context, audio cut into windows."""

import logging
from dataclasses import replace

from ..audio import SAMPLE_RATE
from ..i18n import Message
from ..loaders import ModelAdapter
from ..requests import AskRequest, AudioRequest, TextRequest

logger = logging.getLogger(__name__)

MIN_WINDOW_SECONDS = 0.25  # a shorter tail after the last full audio window is dropped rather than transcribed
MIN_PROMPT_SHARE = 0.5  # a trimmed prompt keeps at least this share of the context, even if that leaves less room
TRIM_ATTEMPTS = 4  # re-tokenizing trimmed text can shift a token or two; trim again at most this many times


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
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] if text else []


def _keep_end(tokenizer, text: str, drop: int, keep_one: bool) -> str:
    """`text` without the text of its first `drop` tokens (all but the last one at most if `keep_one`).

    A character cut in half at the new start is dropped too.
    """
    ids = _text_ids(tokenizer, text)
    drop = min(drop, len(ids) - 1) if keep_one else drop
    return tokenizer.decode(ids[drop:], skip_special_tokens=False).lstrip("\ufffd").lstrip()


def fit_conversation(adapter: ModelAdapter, request: AskRequest,
                     max_new_tokens: int) -> tuple[dict, AskRequest, Message | None]:
    """(`generate()` inputs, the request as fitted, a note for the user or None) for a question about a picture.

    The prompt may take as much of the context as `fit_to_context` allows a text. Beyond that the earlier turns go,
    whole and oldest first, never the picture or the question; if even those two alone do not fit, every earlier
    turn goes and the room check before `generate()` decides. The engine fits a conversation again, with the same
    settings, before explaining its answer, so both read the same prompt.
    """
    inputs = adapter.prepare(request)
    room = adapter.room_for_new_tokens(inputs)
    if room is None or not request.history:
        return inputs, request, None
    length = inputs["input_ids"].shape[-1]
    context = length + room
    budget = max(context - max_new_tokens, int(context * MIN_PROMPT_SHARE))
    if length <= budget:
        return inputs, request, None
    # The fewest turns to drop, by bisection: the prompt shrinks as more of the oldest turns go.
    fitting, low, high = {}, 1, len(request.history)  # dropping `high` turns is tried last, and kept even if too long
    while low < high:
        middle = (low + high) // 2
        trial = replace(request, history=request.history[middle:])
        trial_inputs = adapter.prepare(trial)
        if trial_inputs["input_ids"].shape[-1] <= budget:
            fitting[middle], high = (trial, trial_inputs), middle
        else:
            low = middle + 1
    fitted, inputs = fitting.get(low) or (replace(request, history=request.history[low:]), None)
    inputs = inputs if inputs is not None else adapter.prepare(fitted)
    logger.info("left out the %d oldest of %d turns (context %d, max_new_tokens %d)", low, len(request.history),
                context, max_new_tokens)
    return inputs, fitted, Message("conversation_trimmed", dropped=low, turns=len(request.history), context=context)
