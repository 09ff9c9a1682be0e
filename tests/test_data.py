"""Behavioural tests of the datasets: scenes, speech and text."""

import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from mmgpt.audio import SAMPLE_RATE
from mmgpt.data import scenes, speech, text
from mmgpt.data.scenes import (
    COLOURS, HELD_OUT_PAIRS, IMAGE_SIZE, SHAPES, VOCABULARY_WORDS, caption_words, cell_of, example_captions,
    parse_caption, scene_dataset,
)
from mmgpt.data.speech import TEST_VOICES, TRAIN_VOICES, add_noise, measure_snr_db, speech_dataset, synthesize
from mmgpt.data.text import load_shakespeare, split_text

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
CORPUS = text.default_corpus_path()
needs_corpus = pytest.mark.skipif(not CORPUS.is_file(), reason=f"Tiny Shakespeare is not at {CORPUS}")


# ---------------------------------------------------------------------------------------------------------
# Scenes


@pytest.fixture(scope="module")
def train_scenes():
    return scene_dataset("train", 300, seed=0)


def test_scenes_are_deterministic_per_seed_and_split():
    first, again = scene_dataset("train", 10, seed=7), scene_dataset("train", 10, seed=7)
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in again]
    assert [s.caption for s in first] == [s.caption for s in again]
    other_seed, other_split = scene_dataset("train", 10, seed=8), scene_dataset("validation", 10, seed=7)
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(first, other_seed))
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(first, other_split))


def test_example_captions_are_the_scene_captions_without_drawing():
    assert example_captions(20, seed=3) == [s.caption for s in scene_dataset("train", 20, seed=3)]


def test_scenes_are_64x64_rgb_with_captions_in_the_vocabulary(train_scenes):
    for scene in train_scenes:
        assert scene.image.size == (IMAGE_SIZE, IMAGE_SIZE) and scene.image.mode == "RGB"
        assert scene.caption and scene.caption == scene.caption.lower() and not scene.caption.endswith(".")
        assert set(caption_words(scene.caption)) <= set(VOCABULARY_WORDS)
        parsed = parse_caption(scene.caption)
        assert parsed.objects == tuple((o.size, o.colour, o.shape) for o in scene.objects)
        assert len(set(parsed.objects)) == len(parsed.objects), "an object appears twice"
    assert {len(s.objects) for s in train_scenes} == {1, 2, 3}


def test_objects_lie_inside_the_image_and_do_not_touch(train_scenes):
    for scene in train_scenes:
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1:]:
                assert math.dist(a.centre, b.centre) > (a.box[2] - a.box[0] + b.box[2] - b.box[0]) / 4


def test_each_object_is_drawn_in_its_colour_at_its_centre(train_scenes):
    for scene in train_scenes:
        pixels = np.asarray(scene.image, dtype=np.float32)
        for obj in scene.objects:
            x, y = (min(int(v), IMAGE_SIZE - 1) for v in obj.centre)
            assert np.abs(pixels[y, x] - COLOURS[obj.colour]).max() < 45, (scene.caption, obj)


def test_captions_say_where_objects_are(train_scenes):
    for scene in train_scenes:
        parsed, objects = parse_caption(scene.caption), scene.objects
        if len(objects) == 1:
            assert parsed.position == cell_of(*objects[0].centre)
        elif len(objects) == 2:
            (ax, ay), (bx, by) = objects[0].centre, objects[1].centre
            if parsed.relation == "left of":
                assert ax < bx and abs(bx - ax) >= 2 * abs(by - ay)
            else:
                assert parsed.relation == "above" and ay < by and abs(by - ay) >= 2 * abs(bx - ax)
        else:
            xs = [o.centre[0] for o in objects]
            assert xs == sorted(xs) and min(np.diff(xs)) >= 8


def test_single_objects_sit_well_inside_their_cell():
    for scene in scene_dataset("validation", 200, seed=1):
        if len(scene.objects) == 1:
            x, y = scene.objects[0].centre
            cell = IMAGE_SIZE / 3
            assert min(x % cell, cell - x % cell, y % cell, cell - y % cell) > 3


def test_held_out_pairs_cover_every_colour_once_and_every_shape():
    assert len(HELD_OUT_PAIRS) == len(COLOURS) == 8
    assert {c for c, _ in HELD_OUT_PAIRS} == set(COLOURS)
    assert {s for _, s in HELD_OUT_PAIRS} == set(SHAPES)


def test_held_out_pairs_appear_only_in_the_compositional_split():
    for split in ("train", "validation", "test"):
        for scene in scene_dataset(split, 200, seed=2):
            assert not any((o.colour, o.shape) in HELD_OUT_PAIRS for o in scene.objects), (split, scene.caption)
    for scene in scene_dataset("compositional", 200, seed=2):
        assert any((o.colour, o.shape) in HELD_OUT_PAIRS for o in scene.objects), scene.caption


def test_every_colour_stands_out_from_every_background():
    for colour, rgb in COLOURS.items():
        for background, tone in scenes.BACKGROUNDS.items():
            assert np.linalg.norm(np.subtract(rgb, tone)) > 100, (colour, background)


def test_parse_caption_rejects_text_outside_the_grammar():
    with pytest.raises(ValueError):
        parse_caption("a big red circle at the top")
    with pytest.raises(ValueError):
        parse_caption("a small red circle near a large blue star")


# ---------------------------------------------------------------------------------------------------------
# Speech


def test_train_and_test_voices_are_disjoint():
    assert len(TRAIN_VOICES) >= 8 and len(TEST_VOICES) >= 2
    assert not set(TRAIN_VOICES) & set(TEST_VOICES)


@needs_espeak
def test_every_voice_works_and_sounds_different(tmp_path):
    clips = {voice: synthesize("hello there", voice, 160, 50, tmp_path) for voice in TRAIN_VOICES + TEST_VOICES}
    assert all(clip.size > 0.3 * SAMPLE_RATE for clip in clips.values())
    assert len({clip.tobytes() for clip in clips.values()}) == len(clips), "some voice variant is ignored"


@needs_espeak
def test_the_longest_caption_at_the_slowest_speed_fits(tmp_path):
    longest = "a large purple triangle a large orange triangle and a large yellow diamond"
    for voice in TRAIN_VOICES + TEST_VOICES:
        clip = synthesize(longest, voice, speech.SPEED_WPM[0], 50, tmp_path)
        assert clip.size + 2 * speech.SILENCE_SECONDS[1] * SAMPLE_RATE <= speech.MAX_UTTERANCE_SECONDS * SAMPLE_RATE


@needs_espeak
def test_speech_dataset_is_valid_and_deterministic(tmp_path):
    first = speech_dataset("train", 12, seed=0, cache_dir=tmp_path)
    again = speech_dataset("train", 12, seed=0, cache_dir=tmp_path)
    assert [u.transcript for u in first] == [u.transcript for u in again]
    assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(first, again))
    other = speech_dataset("train", 12, seed=1, cache_dir=tmp_path)
    assert [u.transcript for u in first] != [u.transcript for u in other]
    for u in first:
        assert u.waveform.dtype == np.float32 and u.waveform.ndim == 1 and np.isfinite(u.waveform).all()
        assert 0 < u.waveform.size <= speech.MAX_UTTERANCE_SECONDS * SAMPLE_RATE
        assert re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", u.transcript), u.transcript
        assert u.voice in TRAIN_VOICES and 130 <= u.speed <= 200 and 30 <= u.pitch <= 70
        assert 10 <= u.snr_db <= 30


@needs_espeak
def test_test_split_uses_only_test_voices_and_has_clean_and_noisy_versions(tmp_path):
    clean = speech_dataset("test", 8, seed=0, cache_dir=tmp_path, snr_db=float("inf"))
    noisy = speech_dataset("test", 8, seed=0, cache_dir=tmp_path, snr_db=10.0)
    assert {u.voice for u in clean} <= set(TEST_VOICES)
    assert [u.transcript for u in clean] == [u.transcript for u in noisy]
    for c, n in zip(clean, noisy):
        assert c.snr_db is None and n.snr_db == 10.0
        assert abs(measure_snr_db(c.waveform, n.waveform) - 10.0) < 0.5


@needs_espeak
def test_cached_speech_is_read_back_without_calling_espeak(tmp_path, monkeypatch):
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    first = synthesize("turn on the light", "en-us+m3", 150, 40, tmp_path)
    assert len(calls) == 1

    def fail(*args, **kwargs):
        raise AssertionError("espeak-ng ran although the clip is cached")

    monkeypatch.setattr(subprocess, "run", fail)
    assert np.array_equal(synthesize("turn on the light", "en-us+m3", 150, 40, tmp_path), first)
    assert not list(tmp_path.rglob("*.tmp")), "a temporary cache file was left behind"


@pytest.mark.parametrize("colour", speech.NOISE_COLOURS)
def test_add_noise_hits_the_requested_snr(colour):
    t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    clean = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = add_noise(clean, snr_db=10, seed=3, colour=colour)
    assert noisy.dtype == np.float32
    assert abs(measure_snr_db(clean, noisy) - 10) < 0.5
    assert np.array_equal(noisy, add_noise(clean, snr_db=10, seed=3, colour=colour))
    assert not np.array_equal(noisy, add_noise(clean, snr_db=10, seed=4, colour=colour))
    assert np.array_equal(add_noise(clean, snr_db=float("inf")), clean)


# ---------------------------------------------------------------------------------------------------------
# Text


@needs_corpus
def test_shakespeare_splits_90_10_by_characters():
    corpus = load_shakespeare()
    assert corpus.startswith("First Citizen")
    train, validation = split_text(corpus)
    assert train + validation == corpus
    assert len(train) == int(0.9 * len(corpus))


def test_data_dir_comes_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "tinyshakespeare.txt").write_text("To be, or not to be")
    monkeypatch.setenv("MMGPT_DATA_DIR", str(tmp_path))
    assert load_shakespeare() == "To be, or not to be"


def test_missing_corpus_says_where_it_should_be(tmp_path):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(FileNotFoundError, match="shared/data/text/tinyshakespeare.txt") as error:
        load_shakespeare(missing)
    assert str(missing) in str(error.value)
