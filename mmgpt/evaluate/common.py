"""What every scorer shares: how many tokens an answer or a transcript may take, how many mistakes the JSON
quotes, the evaluation's sizes, greedy decoding, and the small helpers for batches, percentages and figures
that could not be measured."""

from dataclasses import dataclass

import torch

ANSWER_TOKENS = 48  # a word or two, after the description of the picture when the model gives one first
TRANSCRIPT_TOKENS = 40
MISTAKES_KEPT = 5  # wrong answers quoted per figure in the JSON


@dataclass(frozen=True)
class EvalSizes:
    text_windows: int = 200  # validation windows of `text_block` tokens
    text_block: int = 256
    scenes: int = 400  # per caption split: test, held-out renderer, compositional
    utterances: int = 200  # mixed test utterances (captions, numbers, commands) per SNR condition
    per_voice: int = 60  # spoken captions, and phrases of each phrase set, per held-out voice
    questions: int = 40  # per question kind, for each wording (in-distribution, held-out), typed and spoken
    batch: int = 50


def greedy_texts(model, processor, batches, max_new_tokens: int, ends: list[int] | None = None) -> list[str]:
    """Greedy answers for an iterable of processor batches; each ends at end-of-text, or, when `ends` is given, at
    any of those tokens instead (`MMGPTProcessor.heard_question_ends` holds end-of-text too)."""
    outputs = []
    model.eval()
    stops = {"eos_token_id": ends} if ends else {}
    with torch.no_grad():
        for inputs in batches:
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **stops)
            new_tokens = generated[:, inputs["input_ids"].shape[1]:]
            outputs += [t.strip() for t in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    return outputs


def _chunks(items: list, size: int):
    return (items[i:i + size] for i in range(0, len(items), size))


def _percent(hits) -> float:
    hits = list(hits)
    return 100.0 * sum(hits) / len(hits) if hits else float("nan")


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}
