"""How sure the model was of an answer or a description: the mean probability of the tokens it chose, measured while
it decodes.

A `ConfidenceMeter` rides along in `generate()` (and in the batch's decoding loop, which runs the same processors
and criteria): as the last logits processor it keeps the step's distribution, and as a stopping criterion that never
stops it reads the token chosen from it. Nothing is stored per step and the tokens chosen do not change.
With greedy decoding the distribution is the model's own (softmax of the raw logits, as `explain.TokenInfo.prob`,
except for tokens the model's settings suppress); when sampling, it is the distribution the token was drawn from.
"""

from collections.abc import Collection, Sequence

import torch
from transformers import LogitsProcessor, StoppingCriteria


class ConfidenceMeter:
    """Pass `processor` among `generate()`'s logits processors and `criterion` among its stopping criteria; then
    `mean` is the mean probability of the chosen tokens, those in `skip` (end-of-text, other special tokens) left
    out; None when no token counted.

    A model that says what it sees before it answers ("a large red circle at the top, so red") is nearly always
    sure of its description: the mean would hide a guessed answer. When the chosen tokens end with `restart_after`
    (the ids of ", so"), the count starts over, so `mean` is that of the answer after the description."""

    def __init__(self, skip: Collection[int] = (), restart_after: Sequence[int] = ()):
        self.skip = set(skip)
        self.restart_after = list(restart_after)
        self.recent: list[int] = []  # the last len(restart_after) chosen tokens
        self.total, self.count = 0.0, 0
        self.distribution: torch.Tensor | None = None  # (1, vocab) of the step under way
        self.processor, self.criterion = _Distribution(self), _Chosen(self)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class _Distribution(LogitsProcessor):
    def __init__(self, meter: ConfidenceMeter):
        self.meter = meter

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.meter.distribution = scores.float().softmax(-1)
        return scores


class _Chosen(StoppingCriteria):
    def __init__(self, meter: ConfidenceMeter):
        self.meter = meter

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        meter = self.meter
        if meter.distribution is not None:
            token = int(input_ids[0, -1])
            if token not in meter.skip:
                meter.total += float(meter.distribution[0, token])
                meter.count += 1
            meter.distribution = None
            if meter.restart_after:
                meter.recent = (meter.recent + [token])[-len(meter.restart_after):]
                if meter.recent == meter.restart_after:
                    meter.total, meter.count = 0.0, 0
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
