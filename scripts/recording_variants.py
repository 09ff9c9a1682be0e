"""The recorded example question under the small changes a microphone path makes: does the answer survive them?

`assets/examples/question_0.wav` (a recording of "which colour is the square?" about `scene_1.png`, answer white) is
heard in 36 variants: 0, 0.3, 0.6 or 1 s of silence before it, gain 0.5, 1 or 1.5, and each as it is, after a 48 kHz
round trip, or with white noise 30 dB below the clip (its RMS, pauses included). The browser test plays the
recording through Chromium's fake microphone once; one pass through one path says little about a checkpoint, and
these say how often it hears the words right and how often it answers them right.

    python scripts/recording_variants.py assets/mmgpt-tiny runs/mmgpt-tiny-v419/checkpoint
"""

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import librosa  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForCausalLM, AutoProcessor  # noqa: E402

import mmgpt  # noqa: E402, F401  (registers mmgpt with the Auto classes)
from mmgpt.audio import SAMPLE_RATE  # noqa: E402
from mmgpt.data.examples import example_questions  # noqa: E402
from mmgpt.data.questions import answer_is_right  # noqa: E402
from mmgpt.evaluate import Asked, greedy_answers, normalize_transcript  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
RECORDING, SAID = "question_0.wav", "which colour is the square"
# Its picture and right answer, as the app's examples give them
EXAMPLE = next(case for case in example_questions(EXAMPLES, "recording") if case["recording"] == RECORDING)
PICTURE, ANSWER = EXAMPLE["picture"], EXAMPLE["answer"]


def variants(waveform: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The 36 variants of `waveform` (float32 at SAMPLE_RATE), by a name that says what was done to it."""
    rng = np.random.default_rng(seed)
    out = {}
    for lead_s in (0.0, 0.3, 0.6, 1.0):
        for gain in (0.5, 1.0, 1.5):
            x = np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE), np.float32), waveform * gain])
            name = f"lead {lead_s} s, gain {gain}"
            out[name] = x
            up = librosa.resample(x, orig_sr=SAMPLE_RATE, target_sr=48_000)
            out[name + ", 48 kHz"] = librosa.resample(up, orig_sr=48_000, target_sr=SAMPLE_RATE).astype(np.float32)
            noise = rng.normal(0, np.std(waveform) * gain / 10 ** (30 / 20), x.shape)
            out[name + ", noise 30 dB"] = (x + noise).astype(np.float32)
    return out


def main(checkpoints: list[str]) -> None:
    waveform, _ = librosa.load(EXAMPLES / RECORDING, sr=SAMPLE_RATE)
    picture = Image.open(EXAMPLES / PICTURE).convert("RGB")
    asked = [Asked(picture, "recording", name, ANSWER, x) for name, x in variants(waveform).items()]
    for checkpoint in checkpoints:
        model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        processor = AutoProcessor.from_pretrained(checkpoint)
        answers, heard = greedy_answers(model, processor, asked, 16)
        heard = heard or ["(not written down)"] * len(answers)  # checkpoints before v4.14 answer straight away
        right = sum(answer_is_right(a, ANSWER) for a in answers)
        heard_right = sum(normalize_transcript(h) == SAID for h in heard)
        print(f"{checkpoint}: {right} of {len(asked)} answered right, {heard_right} heard right")
        for (words, answer), n in Counter(zip(heard, answers)).most_common(5):
            print(f"  {n:2d} x heard {words!r}, answered {answer!r}")


if __name__ == "__main__":
    main(sys.argv[1:] or [str(Path(__file__).resolve().parents[1] / "assets" / "mmgpt-tiny")])
