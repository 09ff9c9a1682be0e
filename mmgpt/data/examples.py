"""Write the app's example inputs to `assets/examples/`: scenes and utterances the project made itself.

    python -m mmgpt.data.examples assets/examples

Scenes come from the "test" split and speech from held-out "test" voices, so the examples are inputs the shipped
model never trained on. Each file's name says what it holds; `examples.json` lists the expected answers.
"""

import json
import sys
from pathlib import Path

import soundfile

from ..audio import SAMPLE_RATE
from .scenes import scene_dataset
from .speech import speech_dataset

EXAMPLE_SEED = 2024  # not a seed training or evaluation uses
N_SCENES = 4
N_UTTERANCES = 3


def write_examples(directory: str | Path) -> dict[str, str]:
    """Write example PNGs and WAVs; return {file name: expected caption or transcript}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected = {}
    # One, two and three objects, so the examples show every part of the caption grammar.
    scenes = scene_dataset("test", 50, EXAMPLE_SEED)
    by_count = [next(s for s in scenes if len(s.objects) == n) for n in (1, 2, 3)]
    for i, scene in enumerate(by_count + [s for s in scenes if s not in by_count][: N_SCENES - 3]):
        name = f"scene_{i}.png"
        scene.image.save(directory / name)
        expected[name] = scene.caption
    utterances = speech_dataset("test", 40, EXAMPLE_SEED, snr_db=float("inf"))
    # One of each kind reads best in a demo: a caption, a number and a command.
    chosen = {u.kind: u for u in utterances if u.kind}
    for i, utterance in enumerate(chosen[kind] for kind in ("caption", "number", "command")):
        name = f"speech_{i}.wav"
        soundfile.write(directory / name, utterance.waveform, SAMPLE_RATE, subtype="PCM_16")
        expected[name] = utterance.transcript
    (directory / "examples.json").write_text(json.dumps(expected, indent=1) + "\n")
    return expected


if __name__ == "__main__":
    print(json.dumps(write_examples(sys.argv[1] if len(sys.argv) > 1 else "assets/examples"), indent=1))
