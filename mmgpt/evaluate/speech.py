"""Speech figures: word error rate of greedy transcripts, overall and per group, and texts spoken in the held-out
voices for it.

Word error rate compares transcripts after `normalize_transcript` (lowercase, no punctuation, number words as
digits), so "forty two" and "42" are the same words.
"""

import inspect
import math
import random
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jiwer
import numpy as np

from ..audio import SAMPLE_RATE
from .common import MISTAKES_KEPT, TRANSCRIPT_TOKENS, _chunks, _unavailable, greedy_texts

_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}


def _read_number(words: list[str], i: int) -> tuple[int, int]:
    """(value, words used) of the number words starting at `words[i]`, up to 999; (0, 0) if none start there."""
    value, used = 0, 0
    if i + 1 < len(words) and words[i] in _UNITS and 0 < _UNITS[words[i]] < 10 and words[i + 1] == "hundred":
        value, used = 100 * _UNITS[words[i]], 2
        if i + used + 1 < len(words) and words[i + used] == "and" and (
                words[i + used + 1] in _UNITS or words[i + used + 1] in _TENS):
            used += 1
    j = i + used
    if j < len(words) and words[j] in _TENS:
        value, used = value + _TENS[words[j]], used + 1
        if j + 1 < len(words) and words[j + 1] in _UNITS and 0 < _UNITS[words[j + 1]] < 10:
            value, used = value + _UNITS[words[j + 1]], used + 1
    elif j < len(words) and words[j] in _UNITS and (used == 0 or _UNITS[words[j]] > 0):
        value, used = value + _UNITS[words[j]], used + 1
    return value, used


def normalize_transcript(text: str) -> str:
    """Lowercase, punctuation dropped (hyphens split words), number words written as digits."""
    words = re.sub(r"[^\w\s']", " ", text.lower()).split()
    out, i = [], 0
    while i < len(words):
        value, used = _read_number(words, i)
        out.append(str(value) if used else words[i])
        i += used or 1
    return " ".join(out)


def _wer(references: list[str], hypotheses: list[str]) -> float:
    references = [normalize_transcript(r) for r in references]
    hypotheses = [normalize_transcript(h) or "<empty>" for h in hypotheses]
    return 100.0 * jiwer.wer(references, hypotheses)


def transcription_scores(model, processor, utterances, batch: int = 50, groups: dict | None = None) -> dict:
    """Word error rate (%) of greedy transcripts of `utterances` against the spoken text.

    groups: {name: one label per utterance}, e.g. {"voice": [...]}, adds `by_NAME: {label: {"wer", "n"}}`.
    """
    batches = (processor(audio=[u.waveform for u in chunk], sampling_rate=SAMPLE_RATE)
               for chunk in _chunks(utterances, batch))
    hypotheses = greedy_texts(model, processor, batches, max_new_tokens=TRANSCRIPT_TOKENS)
    references = [u.transcript for u in utterances]
    result = {
        "wer": _wer(references, hypotheses), "n": len(utterances),
        "examples": list(zip(references[:3], hypotheses[:3])),
        "mistakes": [(r, h) for r, h in zip(references, hypotheses)
                     if normalize_transcript(r) != normalize_transcript(h)][:MISTAKES_KEPT],
    }
    for name, labels in (groups or {}).items():
        grouped = defaultdict(lambda: ([], []))
        for label, reference, hypothesis in zip(labels, references, hypotheses):
            grouped[label][0].append(reference)
            grouped[label][1].append(hypothesis)
        result[f"by_{name}"] = {label: {"wer": _wer(refs, hyps), "n": len(refs)}
                                for label, (refs, hyps) in sorted(grouped.items())}
    return result


@dataclass(frozen=True, eq=False)
class Spoken:
    """A text spoken in a held-out voice, as the speech set levels and pads its clips (no noise)."""

    waveform: np.ndarray  # float32 (n_samples,) at 16 kHz
    transcript: str
    voice: str


def speak(texts: list[str], voices: list[str], seed: int, cache_dir=None, workers: int = 2) -> list[Spoken]:
    """`texts[i]` spoken in `voices[i]`, at a random speed, pitch, level and silence padding from the speech set's
    ranges (the same for the same seed)."""
    from ..data.speech import PEAK_LEVEL, PITCH, SILENCE_SECONDS, SPEED_WPM, synthesize

    rng = random.Random(seed)
    settings = [(text, voice, rng.randint(*SPEED_WPM), rng.randint(*PITCH)) for text, voice in zip(texts, voices)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        clips = list(pool.map(lambda s: synthesize(*s, cache_dir=cache_dir), settings))
    spoken = []
    for (text, voice, _, _), clip in zip(settings, clips):
        lead, trail = (np.zeros(int(rng.uniform(*SILENCE_SECONDS) * SAMPLE_RATE), np.float32) for _ in range(2))
        level = rng.uniform(*PEAK_LEVEL) / max(float(np.abs(clip).max()), 1e-9)
        spoken.append(Spoken(np.concatenate([lead, clip * level, trail]).astype(np.float32), text, voice))
    return spoken


def per_voice_scores(model, processor, texts: list[str], seed: int, cache_dir, batch: int,
                     held_out_voices: tuple[str, ...] | None = None) -> dict:
    """WER of `texts` spoken in every held-out voice (None: `TEST_VOICES`), overall and per voice."""
    from ..data.speech import TEST_VOICES

    held_out_voices = held_out_voices or TEST_VOICES
    voices = [voice for voice in held_out_voices for _ in texts]
    spoken = speak(texts * len(held_out_voices), voices, seed, cache_dir)
    return transcription_scores(model, processor, spoken, batch, groups={"voice": voices})


def other_voices_unavailable() -> dict | None:
    """Why the other synthesizers' held-out voices (`OTHER_TEST_VOICES`) cannot speak here, or None when they can."""
    from ..data.speech import OTHER_TEST_VOICES, missing_synthesizers

    if missing := missing_synthesizers(OTHER_TEST_VOICES):
        return _unavailable(f"{' and '.join(missing)} not installed (`bash scripts/setup.sh --dev` installs them)")
    return None


def other_voice_scores(model, processor, texts: dict[str, list[str]], seed: int, cache_dir, batch: int) -> dict:
    """{set name: `per_voice_scores` of its texts in the other synthesizers' held-out voices (`OTHER_TEST_VOICES`)},
    or each set unavailable, with the reason, where flite or festival is not installed."""
    from ..data.speech import OTHER_TEST_VOICES

    if unavailable := other_voices_unavailable():
        return dict.fromkeys(texts, unavailable)
    return {name: per_voice_scores(model, processor, said, seed, cache_dir, batch, OTHER_TEST_VOICES)
            for name, said in texts.items()}


def speech_set_phrases(model, processor, n: int, seed: int, cache_dir, batch: int) -> dict:
    """WER per held-out voice on the speech set's own free-form phrases, if this version of it has them."""
    from ..data.speech import speech_dataset

    if "kinds" not in inspect.signature(speech_dataset).parameters:
        return _unavailable("mmgpt.data.speech.speech_dataset has no `kinds` argument (no free-form phrases yet)")
    utterances = speech_dataset("test", n, seed, cache_dir, snr_db=math.inf, kinds=("phrase",))
    if not utterances or any(getattr(u, "kind", "") != "phrase" for u in utterances):
        return _unavailable("mmgpt.data.speech.speech_dataset(kinds=('phrase',)) returned utterances of other kinds")
    return transcription_scores(model, processor, utterances, batch, groups={"voice": [u.voice for u in utterances]})
