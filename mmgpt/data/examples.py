"""Write the app's example inputs to `assets/examples/`: scenes, drawings and utterances the project made itself.

    python -m mmgpt.data.examples assets/examples

Scenes come from the "test" split and speech from held-out "test" voices, so the examples are inputs the shipped
model never trained on. `drawing_*.png` are drawn here with plain PIL calls, as a person would draw a shape in a paint
program, by none of the generators' code. Each file's name says what it holds:
- `examples.json`: {file: expected caption or transcript};
- `questions.json`: [{picture, question or recording, answer}]: typed and spoken questions about the pictures.

The generators have moved on since the files in `assets/examples/` were written (scene_0's pixels, every question's
wording, and the WAVs differ), so a run today writes a different set, consistent in itself; the shipped set is kept
as it is, and the app's tests check the shipped model against it.
"""

import json
import random
import sys
from pathlib import Path

import soundfile
from PIL import Image, ImageDraw

from ..audio import SAMPLE_RATE
from .questions import ask_about
from .scenes import COLOURS, scene_dataset
from .speech import TEST_VOICES, render_specs, speech_dataset, spoken_form, spoken_spec

EXAMPLE_SEED = 2024  # not a seed training or evaluation uses
N_SCENES = 4
N_UTTERANCES = 3
# A drawing on white paper, and the caption the scene grammar gives it.
DRAWINGS = {"drawing_0.png": ("a large red circle at the center", (400, 300))}


def draw_red_circle(size: tuple[int, int]) -> Image.Image:
    """A filled red circle in the middle of a white picture, as a paint program draws it."""
    image = Image.new("RGB", size, "white")
    width, height = size
    r = 0.3 * min(size)
    ImageDraw.Draw(image).ellipse((width / 2 - r, height / 2 - r, width / 2 + r, height / 2 + r),
                                  fill=COLOURS["red"])
    return image


def write_examples(directory: str | Path) -> dict[str, str]:
    """Write example PNGs and WAVs; return {file name: expected caption or transcript}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    expected, questions = {}, []
    # One, two and three objects, so the examples show every part of the caption grammar.
    scenes = scene_dataset("test", 50, EXAMPLE_SEED)
    by_count = [next(s for s in scenes if len(s.objects) == n) for n in (1, 2, 3)]
    chosen_scenes = by_count + [s for s in scenes if s not in by_count][: N_SCENES - 3]
    for i, scene in enumerate(chosen_scenes):
        name = f"scene_{i}.png"
        scene.image.save(directory / name)
        expected[name] = scene.caption
    for name, (caption, size) in DRAWINGS.items():
        draw_red_circle(size).save(directory / name)
        expected[name] = caption
    utterances = speech_dataset("test", 40, EXAMPLE_SEED, snr_db=float("inf"))
    # One of each kind reads best in a demo: a caption, a number and a command.
    chosen = {u.kind: u for u in utterances if u.kind}
    for i, utterance in enumerate(chosen[kind] for kind in ("caption", "number", "command")):
        name = f"speech_{i}.wav"
        soundfile.write(directory / name, utterance.waveform, SAMPLE_RATE, subtype="PCM_16")
        expected[name] = utterance.transcript

    rng = random.Random(EXAMPLE_SEED)
    for i, (scene, kind) in enumerate(zip(chosen_scenes, ("colour", "count", "shape", "exists"))):
        qa = ask_about(scene, rng, kind)
        questions.append({"picture": f"scene_{i}.png", "question": qa.question, "answer": qa.answer})
    # A spoken question in a held-out voice, about the two-object scene.
    qa = ask_about(chosen_scenes[1], rng, "colour")
    spec = spoken_spec(rng, spoken_form(qa.question), "question", TEST_VOICES)
    (spoken,) = render_specs([spec], snr_db=float("inf"))
    soundfile.write(directory / "question_0.wav", spoken.waveform, SAMPLE_RATE, subtype="PCM_16")
    expected["question_0.wav"] = spoken.transcript
    questions.append({"picture": "scene_1.png", "recording": "question_0.wav", "answer": qa.answer})
    questions.append({"picture": "drawing_0.png", "question": "what colour is the circle?", "answer": "red"})
    qa = ask_about(chosen_scenes[1], rng, "relation")  # where the two objects lie, one to the other
    questions.append({"picture": "scene_1.png", "question": qa.question, "answer": qa.answer})
    (directory / "examples.json").write_text(json.dumps(expected, indent=1) + "\n")
    (directory / "questions.json").write_text(json.dumps(questions, indent=1) + "\n")
    return expected


def example_questions(directory, kind: str) -> list[dict]:
    """The cases of `directory`'s `questions.json` asked by `kind`: "question" (typed) or "recording" (spoken)."""
    return [case for case in json.loads((Path(directory) / "questions.json").read_text()) if kind in case]


if __name__ == "__main__":
    print(json.dumps(write_examples(sys.argv[1] if len(sys.argv) > 1 else "assets/examples"), indent=1))
