"""The shipped checkpoint, `assets/mmgpt-tiny/`: complete, small, loadable offline through the Auto classes, and
right on fresh test scenes and held-out voices.

Set MMGPT_SHIPPED_MODEL=/path/to/checkpoint to run these checks on a candidate before copying it into assets/.
"""

import json
import os
import shutil
from pathlib import Path

import jiwer
import pytest
import torch
import yaml

import mmgpt  # noqa: F401  (registers mmgpt with the Auto classes: no trust_remote_code needed)
from mmgpt.audio import SAMPLE_RATE
from mmgpt.data import TEST_VOICES, TRAIN_VOICES, scene_dataset, speech_dataset
from mmgpt.presets import REPO_ROOT

SHIPPED_DIR = Path(os.environ.get("MMGPT_SHIPPED_MODEL") or REPO_ROOT / "assets" / "mmgpt-tiny")
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "README.md")
MAX_TOTAL_MB = 40
FRESH_SEED = 20261125  # used nowhere in training or evaluation: these scenes and utterances are new to the model
# 100, not 20: over 20 scenes one standard error is 7 points, and v4.27, 89.3% exact over 300 fresh scenes, got
# 15 of the first 20 (87 of the first 100).
TEST_SCENES = 100
MIN_CAPTION_EXACT_MATCH = 0.85
TEST_UTTERANCES = 10
MAX_CLEAN_WER = 0.15
MAX_NEW_TOKENS = 40

pytestmark = pytest.mark.skipif(not SHIPPED_DIR.is_dir(), reason="assets/mmgpt-tiny not shipped yet")


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

    offline = dict(local_files_only=True, trust_remote_code=False)
    config = AutoConfig.from_pretrained(SHIPPED_DIR, **offline)
    processor = AutoProcessor.from_pretrained(SHIPPED_DIR, **offline)
    model = AutoModelForCausalLM.from_pretrained(SHIPPED_DIR, **offline).eval()
    return config, model, processor


def greedy(model, processor, **inputs) -> list[str]:
    batch = processor(**inputs, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_tokens = generated[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def test_shipped_directory_is_complete_and_small():
    for name in REQUIRED_FILES:
        assert (SHIPPED_DIR / name).is_file(), f"{name} is missing from {SHIPPED_DIR}"
    total_mb = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file()) / 2**20
    assert total_mb <= MAX_TOTAL_MB, f"{SHIPPED_DIR} holds {total_mb:.1f} MB; at most {MAX_TOTAL_MB} MB may ship"
    config = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert config["model_type"] == "mmgpt"
    assert "auto_map" not in config, "the checkpoint must load without trust_remote_code"
    assert not (SHIPPED_DIR / "trainer_state.pt").exists(), "optimizer state does not ship"


def test_the_card_reports_an_evaluation_of_the_weights_that_ship_and_they_load_as_fp32(shipped):
    from mmgpt.ship import weights_sha256

    evaluation = json.loads((SHIPPED_DIR / "eval.json").read_text())
    assert evaluation.get("weights_sha256") == weights_sha256(SHIPPED_DIR), "eval.json measured other weights"
    _, model, _ = shipped
    assert model.dtype == torch.float32  # stored in fp16, widened as they load


def test_model_card_has_hub_metadata():
    card = (SHIPPED_DIR / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n"), "the model card starts with YAML front matter"
    front_matter, separator, body = card[4:].partition("\n---")
    assert separator, "the YAML front matter is not closed by ---"
    metadata = yaml.safe_load(front_matter)
    assert isinstance(metadata, dict) and "license" in metadata, metadata
    assert body.strip(), "the model card has no text after its metadata"


def test_loads_offline_through_the_auto_classes(shipped):
    config, model, processor = shipped
    from mmgpt.model import MMGPTConfig, MMGPTForCausalLM, MMGPTProcessor

    assert isinstance(config, MMGPTConfig)
    assert isinstance(model, MMGPTForCausalLM)
    assert isinstance(processor, MMGPTProcessor)
    assert processor.image_size == config.image_size and processor.max_audio_frames == config.max_audio_frames


def test_captions_fresh_test_scenes(shipped):
    _, model, processor = shipped
    scenes = scene_dataset("test", TEST_SCENES, seed=FRESH_SEED)
    captions = greedy(model, processor, images=[s.image for s in scenes])
    wrong = [(s.caption, c) for s, c in zip(scenes, captions) if c != s.caption]
    exact_match = 1 - len(wrong) / len(scenes)
    assert exact_match >= MIN_CAPTION_EXACT_MATCH, f"exact match {exact_match:.0%}; (expected, got): {wrong[:5]}"


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_transcribes_held_out_voices(shipped, tmp_path):
    _, model, processor = shipped
    utterances = speech_dataset("test", TEST_UTTERANCES, seed=FRESH_SEED, cache_dir=tmp_path, snr_db=float("inf"))
    assert all(u.voice in TEST_VOICES and u.voice not in TRAIN_VOICES for u in utterances)
    transcripts = greedy(model, processor, audio=[u.waveform for u in utterances], sampling_rate=SAMPLE_RATE)
    references = [u.transcript for u in utterances]
    wer = jiwer.wer(references, [t or "<empty>" for t in transcripts])
    assert wer <= MAX_CLEAN_WER, f"WER {wer:.1%}; (expected, got): {list(zip(references, transcripts))[:5]}"


# --- v4: shapes however they are drawn, questions, pictures that are no scene ----------------------------------

WHITE_PAPER_SIZES = ((256, 256), (400, 300), (300, 420))
MIN_WHITE_PAPER_KEYWORDS = 0.9
MIN_TYPED_ANSWERS = 0.8
# At 30 questions one standard error (about 5 points at 90%) was near the margin over the 80% floor, and a hard draw
# failed a model that answers 92.5% of the evaluation's typed questions (this seed's first 30: 23 right; 100: 87).
TEST_QUESTIONS = 100
MAX_REPEATS = 2  # a word may come at most twice in a row
needs_questions = pytest.mark.skipif(
    SHIPPED_DIR.is_dir() and "<|ask|>" not in (SHIPPED_DIR / "tokenizer.json").read_text(encoding="utf-8"),
    reason="the shipped checkpoint predates questions (mmgpt-tiny v4 adds them)")


def paint(shape: str, colour: tuple[int, int, int], size: tuple[int, int]):
    """One filled shape in the middle of white paper, drawn with plain PIL calls (none of the generators' code)."""
    import math

    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    cx, cy, r = size[0] / 2, size[1] / 2, 0.3 * min(size)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.87 * r, cy + 0.5 * r), (cx - 0.87 * r, cy + 0.5 * r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.65 * r, cy), (cx, cy + r), (cx - 0.65 * r, cy)], fill=colour)
    elif shape == "star":
        points = [(cx + (r if i % 2 == 0 else 0.42 * r) * math.cos(-math.pi / 2 + i * math.pi / 5),
                   cy + (r if i % 2 == 0 else 0.42 * r) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
        draw.polygon(points, fill=colour)
    else:  # cross
        t = 0.3 * r
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
    return image


def test_names_colour_and_shape_of_shapes_painted_on_white_paper(shipped):
    """The v3 failure: on white, every shape came back as 'circle circle circle'."""
    from mmgpt.data.scenes import COLOURS, SHAPES

    _, model, processor = shipped
    # Pure RGB primaries and web colours, not the generators' palette: what a paint program offers.
    paints = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 215, 0),
              "purple": (128, 0, 128), "orange": (255, 128, 0), "pink": (255, 105, 180)}
    cases = [(c, s, WHITE_PAPER_SIZES[i % len(WHITE_PAPER_SIZES)])
             for i, (c, s) in enumerate((c, s) for c in paints for s in SHAPES)]
    captions = greedy(model, processor, images=[paint(s, paints[c], size) for c, s, size in cases])
    right = [c in caption.split() and s in caption.split() for (c, s, _), caption in zip(cases, captions)]
    assert set(paints) <= set(COLOURS)
    wrong = [(f"{c} {s}", caption) for (c, s, _), caption, ok in zip(cases, captions, right) if not ok]
    assert sum(right) / len(cases) >= MIN_WHITE_PAPER_KEYWORDS, f"{sum(right)}/{len(cases)} right; wrong: {wrong[:6]}"


def longest_run(words: list[str]) -> int:
    run = best = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best if words else 0


def test_a_photo_gets_a_finished_answer_not_a_loop_of_words(shipped):
    from PIL import Image

    from mmgpt.data.text import DEFAULT_DATA_DIR

    photos = sorted((Path(os.environ.get("MMGPT_DATA_DIR") or DEFAULT_DATA_DIR) / "real" / "images").glob("*.jpg"))
    if not photos:
        pytest.skip("the COCO photos are not in ../shared/data/real/images")
    _, model, processor = shipped
    batch = processor(images=[Image.open(p) for p in photos], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    for row in generated[:, batch["input_ids"].shape[1]:]:
        words = processor.decode(row, skip_special_tokens=True).replace(",", " ").split()
        assert int(processor.token_ids["<|endoftext|>"]) in row.tolist(), f"never ended: {' '.join(words)}"
        assert longest_run(words) <= MAX_REPEATS, " ".join(words)


@needs_questions
def test_answers_typed_questions_about_fresh_test_scenes(shipped):
    import random

    from mmgpt.data.questions import answer_is_right, ask_about

    _, model, processor = shipped
    rng = random.Random(FRESH_SEED)
    scenes = scene_dataset("test", TEST_QUESTIONS, seed=FRESH_SEED)
    asked = [ask_about(scene, rng) for scene in scenes]
    answers = greedy(model, processor, images=[s.image for s in scenes], text=[qa.question for qa in asked],
                     task="ask")
    wrong = [(qa.question, qa.answer, a) for qa, a in zip(asked, answers) if not answer_is_right(a, qa.answer)]
    assert 1 - len(wrong) / len(asked) >= MIN_TYPED_ANSWERS, wrong[:6]


@needs_questions
@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (apt-get install -y espeak-ng)")
def test_a_spoken_question_is_written_down_in_held_out_voices_and_stops_where_the_answer_begins(shipped, tmp_path):
    """From v4.14 the model writes a spoken question's words before it answers them (the app shows them)."""
    import random

    from mmgpt.data.questions import ask_about
    from mmgpt.evaluate import speak

    _, model, processor = shipped
    if not processor.transcribes_spoken_questions:
        pytest.skip("this checkpoint answers spoken questions straight from the audio (before v4.14)")
    rng = random.Random(FRESH_SEED)
    scenes = scene_dataset("test", TEST_UTTERANCES, seed=FRESH_SEED)
    questions = [ask_about(scene, rng).question for scene in scenes]
    clips = speak(questions, [TEST_VOICES[i % len(TEST_VOICES)] for i in range(len(questions))], FRESH_SEED, tmp_path)
    batch = processor(images=[s.image for s in scenes], audio=[c.waveform for c in clips], sampling_rate=SAMPLE_RATE,
                      task="ask", return_tensors="pt")
    answer_starts = processor.token_ids["<|answer|>"]
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                   eos_token_id=[model.generation_config.eos_token_id, answer_starts])
    rows = generated[:, batch["input_ids"].shape[1]:].tolist()
    assert all(answer_starts in row for row in rows), "each question's words should end where its answer begins"
    written = [processor.decode(row, skip_special_tokens=True).strip() for row in rows]
    wer = jiwer.wer([q.rstrip("?") for q in questions], [w.rstrip("?") or "<empty>" for w in written])
    assert wer <= MAX_CLEAN_WER, f"WER {wer:.1%}; (said, written): {list(zip(questions, written))[:5]}"


@needs_questions
def test_a_follow_up_question_is_answered_from_the_earlier_turn(shipped):
    from mmgpt.data.questions import answer_is_right
    from mmgpt.data.scenes import COLOURS

    _, model, processor = shipped
    right = 0
    pairs = [("red", "blue"), ("green", "yellow"), ("purple", "orange"), ("blue", "pink")]
    for first, second in pairs:
        from PIL import Image

        image = Image.new("RGB", (300, 200), "white")
        left, right_half = paint("circle", COLOURS[first], (150, 200)), paint("square", COLOURS[second], (150, 200))
        image.paste(left, (0, 0))
        image.paste(right_half, (150, 0))
        (answer,) = greedy(model, processor, images=[image], text=["and the square?"], task="ask",
                           history=[[("what colour is the circle?", first)]])
        right += answer_is_right(answer, second)
    assert right >= len(pairs) - 1, f"{right}/{len(pairs)} follow-ups answered with the square's colour"


MIN_WHITE_PAPER_COLOURS = 0.9  # v4 names the colour of painted shapes far more often than the shape (see the card)


def test_names_the_colour_of_shapes_painted_on_white_paper(shipped):
    """What v4 does reliably where v3 did nothing at all: on white paper, the colour word is right."""
    from mmgpt.data.scenes import SHAPES

    _, model, processor = shipped
    paints = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 215, 0),
              "purple": (128, 0, 128), "orange": (255, 128, 0), "pink": (255, 105, 180)}
    cases = [(c, s, WHITE_PAPER_SIZES[i % len(WHITE_PAPER_SIZES)])
             for i, (c, s) in enumerate((c, s) for c in paints for s in SHAPES)]
    captions = greedy(model, processor, images=[paint(s, paints[c], size) for c, s, size in cases])
    right = [c in caption.split() for (c, _, _), caption in zip(cases, captions)]
    wrong = [(c, caption) for (c, _, _), caption, ok in zip(cases, captions, right) if not ok]
    assert sum(right) / len(cases) >= MIN_WHITE_PAPER_COLOURS, f"{sum(right)}/{len(cases)}; wrong: {wrong[:6]}"
