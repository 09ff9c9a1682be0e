"""Who should hear a spoken question about a picture: the asking model itself, or Whisper tiny.en first?

The evaluation's spoken questions (its seed and sets: the question set's wording about test scenes, and the held-out
wording about the held-out renderer's pictures) are spoken by the held-out espeak-ng voices, by flite's and festival's
held-out voices and by piper's (`speech.OTHER_TEST_VOICES`), and answered twice: as the model hears them itself, in
one sequence of picture, speech and text, and from the transcript that Whisper tiny.en (int8, as the app runs it on a
CPU) writes first. The app's default listener (`ImageTab.default_listener`) follows this.

    python scripts/spoken_listeners.py assets/mmgpt-tiny

As run for v4.39 (fp16 as shipped), 280 questions a set:

| voices | wording | the model hears it | Whisper first | Whisper's WER on the questions |
|---|---|---|---|---|
| espeak-ng's held-out | the question set's | 88.9% | 43.2% | 58.3% |
| espeak-ng's held-out | held-out | 65.0% | 43.9% | 57.0% |
| flite's and festival's held-out | the question set's | 71.4% | 92.9% | 7.4% |
| flite's and festival's held-out | held-out | 49.3% | 81.8% | 10.7% |
| piper's joe (neural, no training voice is piper's) | the question set's | 81.4% | 94.6% | 5.6% |
| piper's joe | held-out | 51.1% | 86.1% | 5.5% |

Whisper mishears espeak-ng's robotic voices ("Say what colour the star has." -> "It was called a staff house."), and
hears flite's and festival's, built from recordings of real speakers, and piper's, a network trained on one, far better
than mmgpt-tiny does, which learned from espeak-ng's voices most of all. For v4.37, in the six rows: 87.1% and
42.9%, 62.1% and 43.9%, 68.2% and 92.9%, 45.7% and 81.8%, 78.2% and 94.3%, 52.5% and 85.7%. For v4.36: 89.6% and 42.1%,
63.6% and 44.6%, 67.5% and 92.1%, 50.0% and 81.8%, 75.4% and 93.6%, 55.0% and 83.6%. For v4.35, in the first four rows:
87.5% and 40.7%, 59.6% and 41.4%, 63.9% and 90.7%, 47.1% and 80.0%. For v4.29, which had heard only espeak-ng, on
another machine: 87.1% and 43.2% (Whisper's WER 52.1%) in the first row, 66.1% and 42.1% (59.7%) in the second. The
same recordings gave Whisper's int8 a different WER there, so torch's int8 kernels, which differ between CPUs, probably
decide some words.
"""

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoProcessor  # noqa: E402

import mmgpt  # noqa: E402, F401  (registers mmgpt with the Auto classes)
from mmgpt import whisper_ct2  # noqa: E402
from mmgpt.audio import SAMPLE_RATE  # noqa: E402
from mmgpt.data import scene_dataset  # noqa: E402
from mmgpt.data.heldout import heldout_drawings  # noqa: E402
from mmgpt.data.questions import answer_is_right  # noqa: E402
from mmgpt.data.speech import OTHER_TEST_VOICES, TEST_VOICES  # noqa: E402
from mmgpt.evaluate import (  # noqa: E402
    EvalSizes, answer_scores, heldout_wording_questions, in_distribution_questions, spoken_versions)
from mmgpt.evaluate.common import _chunks  # noqa: E402
from mmgpt.evaluate.speech import _wer  # noqa: E402

SEED = 1234  # the evaluation's


def whisper_transcripts(model, processor, asked, batch: int = 25) -> list[str]:
    heard = []
    for chunk in _chunks(asked, batch):
        features = processor.feature_extractor([a.waveform for a in chunk], sampling_rate=SAMPLE_RATE,
                                               return_tensors="pt").input_features
        with torch.no_grad():
            ids = model.generate(features, max_new_tokens=64)
        heard += [text.strip() for text in processor.batch_decode(ids, skip_special_tokens=True)]
    return heard


def accuracy(model, processor, asked, batch: int) -> float:
    return answer_scores(model, processor, asked, batch, answer_is_right)["accuracy"]


def main(path: str) -> None:
    sizes = EvalSizes()
    model, processor = AutoModelForCausalLM.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)
    whisper, whisper_processor = whisper_ct2.load_whisper()
    whisper = whisper_ct2.quantized_for_cpu(whisper)
    test = scene_dataset("test", sizes.scenes, SEED)
    heldout = [d.scene for d in heldout_drawings(sizes.scenes, SEED)]
    neural = tuple(voice for voice in OTHER_TEST_VOICES if voice.startswith("piper:"))
    recorded = tuple(voice for voice in OTHER_TEST_VOICES if voice not in neural)
    for voices, said_by in ((TEST_VOICES, "espeak-ng's held-out voices"),
                            (recorded, "flite's and festival's held-out voices"),
                            (neural, "piper's held-out neural voice")):
        for wording, asked in (("the question set's", in_distribution_questions(test, sizes.questions, SEED)),
                               ("held-out", heldout_wording_questions(heldout, sizes.questions, SEED))):
            spoken = spoken_versions(asked, SEED, None, voices)
            heard = whisper_transcripts(whisper, whisper_processor, spoken)
            # A question Whisper writes down as nothing gets no answer, as in the app.
            typed = [replace(a, question=h) for a, h in zip(asked, heard) if h]
            whisper_first = accuracy(model, processor, typed, sizes.batch) * len(typed) / len(asked) if typed else 0.0
            itself = accuracy(model, processor, spoken, sizes.batch)
            wer = _wer([a.question for a in asked], heard)
            print(f"{said_by}, {wording} wording, {len(asked)} questions: the model hears them {itself:.1f}%, "
                  f"Whisper first {whisper_first:.1f}% (Whisper's WER {wer:.1f}%)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "assets/mmgpt-tiny")
