"""A conversation about a picture, fitted to a model's context: the oldest turns go first.

`fit_conversation(adapter, request, max_new_tokens)` gives the `generate()` inputs of an `AskRequest` whose earlier
turns, with the picture, the question and room for the answer, fit the model's context. Turns are dropped whole,
oldest first, never the picture or the question; a note says how many. The engine calls it before generating and
again before explaining, with the same settings, so both read the same prompt.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from .i18n import Message
from .requests import AskRequest

logger = logging.getLogger(__name__)

MIN_PROMPT_SHARE = 0.5  # a trimmed prompt (text or conversation) may keep this share of the context, even if that
# leaves the answer less room than it asked for


def fit_conversation(adapter, request: AskRequest, max_new_tokens: int) -> tuple[dict, AskRequest, Message | None]:
    """(`generate()` inputs, the request as fitted, a note for the user or None) for `request`.

    The prompt may take the context minus `max_new_tokens`, or `MIN_PROMPT_SHARE` of the context when more new
    tokens than that are asked for. If even the picture and the question alone do not fit, every earlier turn is
    dropped and the room check before `generate()` decides.
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
    fits, low, high = {}, 1, len(request.history)  # dropping `high` turns is tried last, and kept even if too long
    while low < high:
        middle = (low + high) // 2
        trial = replace(request, history=request.history[middle:])
        trial_inputs = adapter.prepare(trial)
        if trial_inputs["input_ids"].shape[-1] <= budget:
            fits[middle], high = (trial, trial_inputs), middle
        else:
            low = middle + 1
    dropped = low
    fitted, inputs = fits.get(dropped) or (replace(request, history=request.history[dropped:]), None)
    inputs = inputs if inputs is not None else adapter.prepare(fitted)
    logger.info("left out the %d oldest of %d turns (context %d, max_new_tokens %d)", dropped, len(request.history),
                context, max_new_tokens)
    return inputs, fitted, Message("conversation_trimmed", dropped=dropped, turns=len(request.history),
                                   context=context)
