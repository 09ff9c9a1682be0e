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
needs_other_synthesizers = pytest.mark.skipif(
    bool(speech.missing_synthesizers(speech.OTHER_TRAIN_VOICES + speech.OTHER_TEST_VOICES + TEST_VOICES)),
    reason="flite, festival or espeak-ng is not installed (bash scripts/setup.sh --dev)")
CORPUS = text.default_corpus_path()
# What a transcript may hold: lowercase words and digits, one space apart, an apostrophe only inside a word ("what's")
TRANSCRIPT = r"[a-z0-9]+('[a-z]+)?( [a-z0-9]+('[a-z]+)?)*"
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


def test_scenes_are_rgb_pictures_of_many_sizes_with_captions_in_the_vocabulary(train_scenes):
    sizes = {scene.image.size for scene in train_scenes}
    assert len(sizes) > 100 and any(w == h for w, h in sizes) and any(w > h for w, h in sizes) \
        and any(w < h for w, h in sizes)
    for scene in train_scenes:
        width, height = scene.image.size
        assert scenes.SHORT_SIDE_PIXELS[0] <= min(width, height) <= scenes.SHORT_SIDE_PIXELS[1]
        assert max(width, height) / min(width, height) <= scenes.MAX_ASPECT + 0.02
        assert scene.image.mode == "RGB"
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


def square_pixels(scene) -> np.ndarray:
    """The picture as the model sees it: resized to the layout's square, float RGB."""
    return np.asarray(scene.image.resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32)


def test_each_object_is_drawn_in_its_colour_inside_its_box(train_scenes):
    for scene in train_scenes:
        pixels = square_pixels(scene)
        for obj in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in obj.box)
            inside = pixels[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3)
            shades = np.array([COLOURS[obj.colour], *scenes.COLOUR_SHADES[obj.colour]], dtype=np.float32)
            distance = np.linalg.norm(inside[:, None] - shades[None], axis=-1).min(axis=1)
            assert (distance < 80).sum() >= 2, (scene.caption, obj)


def test_backgrounds_cover_white_paper_dark_and_saturated_colours(train_scenes):
    corners = np.array([square_pixels(s)[[0, 0, -1, -1], [0, -1, 0, -1]].mean(axis=0) for s in train_scenes])
    white = (corners.min(axis=1) > 225).mean()
    dark = (corners.max(axis=1) < 70).mean()
    saturated = ((corners.max(axis=1) - corners.min(axis=1)) > 100).mean()
    assert white > 0.15 and dark > 0.05 and saturated > 0.05, (white, dark, saturated)


def test_some_shapes_are_outlines_with_the_background_showing_inside():
    hollow = 0
    for scene in scene_dataset("validation", 100, seed=5):
        pixels = square_pixels(scene)
        for obj in scene.objects:
            if obj.size == "large" and obj.shape in ("circle", "square"):
                x, y = (int(v) for v in obj.centre)
                if np.linalg.norm(pixels[y, x] - np.array(COLOURS[obj.colour], np.float32)) > 100:
                    hollow += 1
    assert hollow >= 3


def test_some_filled_shapes_are_edged_in_a_darker_ink_around_a_fill_of_their_colour():
    edged = 0
    for scene in scene_dataset("validation", 200, seed=6):
        pixels = square_pixels(scene)
        if pixels[[0, 0, -1, -1], [0, -1, 0, -1]].min() < 200:
            continue  # on white paper only, where a dark ring can be told from the background
        for obj in scene.objects:
            colour = np.array(COLOURS[obj.colour], np.float32)
            x, y = (int(v) for v in obj.centre)
            x0, y0, x1, y1 = (int(v) for v in obj.box)
            box = pixels[y0:y1 + 1, x0:x1 + 1].reshape(-1, 3)
            filled = np.linalg.norm(pixels[y, x] - colour) < 80
            if obj.size == "large" and obj.shape in ("circle", "square") and filled and colour.sum() > 200:
                edged += (box.sum(axis=1) < 0.6 * colour.sum()).sum() >= 10
    assert edged >= 3


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
            assert min(x % cell, cell - x % cell, y % cell, cell - y % cell) >= scenes.POSITION_MARGIN_PIXELS


def test_a_lone_large_shape_is_sometimes_drawn_as_big_as_people_draw_one_alone():
    lone_extents, crowded_extents = [], []
    for scene in scene_dataset("train", 600, seed=2):
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 and x1 <= IMAGE_SIZE and 0 <= y0 and y1 <= IMAGE_SIZE, "big shapes stay in the picture"
            if obj.size == "large":
                (lone_extents if len(scene.objects) == 1 else crowded_extents).append(max(x1 - x0, y1 - y0))
    usual_top = scenes.SIZE_RANGES["large"][1]
    assert max(crowded_extents) <= usual_top + 1e-6, "scenes of two or three objects keep the usual sizes"
    big = [e for e in lone_extents if e > usual_top]
    assert 0.15 * len(lone_extents) <= len(big) <= 0.5 * len(lone_extents)
    assert max(big) > 0.6 * IMAGE_SIZE


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


def test_clutter_pictures_are_large_busy_and_unlike_scenes():
    import random

    picture = np.asarray(scenes.make_clutter(random.Random(0)), dtype=np.float32)
    assert min(picture.shape[:2]) >= 2 * scenes.SHORT_SIDE_PIXELS[0]
    assert len(np.unique(picture.reshape(-1, 3) // 32, axis=0)) > 30  # many colours, not a few flat shapes


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


def test_other_synthesizers_hold_out_their_own_speakers():
    """Held-out voices of other synthesizers are other speakers: slt, ked and joe are heard in no training voice."""
    speakers = {"flite:rms": "rms", "flite:awb": "awb", "flite:kal16": "kal", "festival:kal_diphone": "kal",
                "flite:slt": "slt", "festival:ked_diphone": "ked", "festival:cmu_us_slt_arctic_hts": "slt",
                "piper:joe": "joe"}
    assert set(speakers) == set(speech.OTHER_TRAIN_VOICES + speech.OTHER_TEST_VOICES), "a voice's speaker is unknown"
    assert not {speakers[v] for v in speech.OTHER_TRAIN_VOICES} & {speakers[v] for v in speech.OTHER_TEST_VOICES}


@needs_other_synthesizers
def test_other_synthesizers_speak_at_the_speed_and_pitch_asked(tmp_path):
    """flite, festival and piper take no espeak pitch: a higher pitch plays the speech faster and higher, and the
    tempo is stretched first, so that the words per minute are as asked whatever the pitch."""
    for voice in speech.OTHER_TRAIN_VOICES + speech.OTHER_TEST_VOICES:
        slow = synthesize("a small red circle at the top left", voice, 130, 50, tmp_path)
        fast = synthesize("a small red circle at the top left", voice, 220, 50, tmp_path)
        high = synthesize("a small red circle at the top left", voice, 130, 90, tmp_path)
        assert slow.dtype == np.float32 and np.abs(slow).max() == pytest.approx(speech.CACHE_PEAK, abs=1e-3)
        assert fast.size < 0.8 * slow.size, voice
        assert abs(high.size - slow.size) < 0.15 * slow.size, voice
        assert _mean_pitch(high) > 1.1 * _mean_pitch(slow), voice


def _mean_pitch(clip: np.ndarray) -> float:
    import librosa

    f0, voiced, _ = librosa.pyin(clip, fmin=60, fmax=500, sr=SAMPLE_RATE)
    return float(np.nanmean(f0[voiced]))


@needs_other_synthesizers
def test_the_neural_voice_says_a_text_the_same_way_every_time(tmp_path):
    """piper's network draws noise unless told not to; a held-out clip must not change between evaluations."""
    first = synthesize("is there a green square?", "piper:joe", 160, 50, tmp_path / "a")
    again = synthesize("is there a green square?", "piper:joe", 160, 50, tmp_path / "b")
    assert np.array_equal(first, again) and first.size > 0.5 * SAMPLE_RATE


@needs_other_synthesizers
def test_a_text_another_synthesizer_says_too_slowly_is_said_just_fast_enough_to_fit(tmp_path):
    long = "could you let me know whether the small purple triangle is to the left of the large orange diamond here"
    clip = synthesize(long, "flite:rms", speech.SPEED_WPM[0], speech.PITCH[0], tmp_path)
    assert 0.8 * speech.MAX_UTTERANCE_SECONDS < clip.size / SAMPLE_RATE <= speech.MAX_UTTERANCE_SECONDS


def test_a_voice_of_an_unknown_synthesizer_or_one_not_installed_is_named(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown synthesizer 'mbrola'"):
        synthesize("hello", "mbrola:us1", 160, 50, tmp_path)
    monkeypatch.setattr(shutil, "which", lambda program: None if program == "text2wave" else "/usr/bin/" + program)
    assert speech.missing_synthesizers(speech.OTHER_TEST_VOICES + TEST_VOICES) == ["text2wave"]
    monkeypatch.setitem(speech.PIPER_VOICE_PACKAGES, "nobody", "nobody-us-piper-voice-not-on-pypi")
    assert speech.missing_synthesizers(("piper:nobody", "flite:rms")) == ["nobody-us-piper-voice-not-on-pypi"]
    with pytest.raises(RuntimeError, match="needs the pip packages piper-tts and nobody-us-piper-voice-not-on-pypi"):
        synthesize("hello", "piper:nobody", 160, 50, tmp_path)
    with pytest.raises(ValueError, match="unknown piper voice 'lessac'"):
        synthesize("hello", "piper:lessac", 160, 50, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no program at all on it
    with pytest.raises(RuntimeError, match="flite is not installed; `bash scripts/setup.sh --dev`"):
        synthesize("hello", "flite:rms", 160, 50, tmp_path)


@needs_other_synthesizers
def test_an_other_voice_share_of_training_speech_moves_only_voices(tmp_path):
    """A share of the training speech is said by other synthesizers' training voices: the same texts, speeds and
    noise, and every utterance left in its espeak voice is the very clip it was. A larger share moves the same ones
    and more."""
    plain = speech_dataset("train", 40, seed=0, cache_dir=tmp_path)
    some = speech_dataset("train", 40, seed=0, cache_dir=tmp_path, other_voice_share=0.3)
    more = speech_dataset("train", 40, seed=0, cache_dir=tmp_path, other_voice_share=0.6)
    moved = [s.voice in speech.OTHER_TRAIN_VOICES for s in some]
    assert 5 <= sum(moved) <= 20 and sum(m.voice in speech.OTHER_TRAIN_VOICES for m in more) > sum(moved)
    for p, s, m, was_moved in zip(plain, some, more, moved):
        assert (p.transcript, p.speed, p.snr_db) == (s.transcript, s.speed, s.snr_db)
        if was_moved:
            assert m.voice == s.voice and not np.array_equal(s.waveform, p.waveform)
        else:
            assert s.voice == p.voice and np.array_equal(s.waveform, p.waveform)
    with pytest.raises(ValueError, match="other voice share 1.5"):
        speech.render_specs([], other_voice_share=1.5)


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
        assert re.fullmatch(TRANSCRIPT, u.transcript), u.transcript
        assert u.voice in TRAIN_VOICES and speech.SPEED_WPM[0] <= u.speed <= speech.SPEED_WPM[1]
        assert speech.PITCH[0] <= u.pitch <= speech.PITCH[1]
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
def test_a_clean_share_of_training_speech_has_no_noise_and_the_rest_is_unchanged(tmp_path):
    """Training speech is noisy unless a clean share is asked for. Then about that share is the clean clip, still
    in its room where it had one, and every other utterance is the very clip it was without the setting."""
    noisy = speech_dataset("train", 40, seed=0, cache_dir=tmp_path)
    mixed = speech_dataset("train", 40, seed=0, cache_dir=tmp_path, clean_share=0.5)
    dry = speech_dataset("train", 40, seed=0, cache_dir=tmp_path, snr_db=float("inf"))  # clean, never in a room
    assert all(u.snr_db is not None for u in noisy)
    assert 10 <= sum(m.snr_db is None for m in mixed) <= 30
    clean_in_rooms = []
    for m, n, d in zip(mixed, noisy, dry):
        assert m.transcript == n.transcript
        if m.snr_db is not None:
            assert np.array_equal(m.waveform, n.waveform)
        else:
            clean_in_rooms.append(not np.array_equal(m.waveform, d.waveform))
    assert any(clean_in_rooms) and not all(clean_in_rooms)  # a room is drawn for 30% of the utterances


def test_a_clean_share_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="clean_share 1.5"):
        speech.render_specs([], clean_share=1.5)


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


def test_utterances_are_captions_phrases_questions_numbers_and_commands():
    import random

    rng = random.Random(0)
    captions = iter(["a small red circle at the top"] * 400)
    specs = [speech._sample_spec(rng, "train", captions) for _ in range(400)]
    assert {s.kind for s in specs} == set(speech.CONTENT_WEIGHTS)
    for spec in specs:
        assert re.fullmatch(TRANSCRIPT, spec.text), spec.text
    phrases = {s.text for s in specs if s.kind == "phrase"}
    assert len(phrases) > 50 and any(len(p.split()) <= 2 for p in phrases)  # short ones too, like "blue circle"
    assert not [p for p in phrases if re.search(r"\ba [aeiou]", p)], "'an orange', not 'a orange'"
    assert any(s.reverb_rt60 for s in specs) and not all(s.reverb_rt60 for s in specs)


@needs_espeak
def test_a_kinds_filter_keeps_only_those_kinds(tmp_path):
    phrases = speech_dataset("test", 6, seed=0, cache_dir=tmp_path, snr_db=float("inf"), kinds=("phrase",))
    assert len(phrases) == 6 and {u.kind for u in phrases} == {"phrase"}
    with pytest.raises(ValueError, match="unknown utterance kinds"):
        speech_dataset("test", 1, seed=0, cache_dir=tmp_path, kinds=("song",))


def test_reverberation_keeps_length_and_peak_and_spreads_energy_in_time():
    click = np.zeros(SAMPLE_RATE, np.float32)
    click[100] = 0.8
    wet = speech.add_reverb(click, rt60_seconds=0.5, wet=0.5, seed=1)
    assert wet.shape == click.shape and wet.dtype == np.float32
    assert abs(np.abs(wet).max() - 0.8) < 1e-5
    assert np.abs(wet[SAMPLE_RATE // 10:SAMPLE_RATE // 5]).max() > 1e-3  # an echo 100-200 ms after the click


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


PLAY = """First Citizen:
Before we proceed any further, hear me speak.

ROMEO:
But, soft! what light through yonder window breaks?
It is the east, and Juliet is the sun.

JULIET:
Ay me!
O Romeo, Romeo! wherefore art thou Romeo?
"""


def test_lines_of_text_to_speak_are_runs_of_two_to_eight_words_of_one_line_written_as_transcripts_are():
    runs = speech.text_lines(PLAY, 200, seed=1)
    lines = [" ".join(re.findall(r"[a-z']+", line.lower())) for line in PLAY.splitlines()]
    assert len(runs) == 200 and runs == speech.text_lines(PLAY, 200, seed=1) != speech.text_lines(PLAY, 200, seed=2)
    for run in runs:
        assert 2 <= len(run.split()) <= 8 and re.fullmatch(r"[a-z']+( [a-z']+)*", run)
        assert any(f" {run} " in f" {line} " for line in lines)  # one line's words, in order
    assert "first citizen" not in runs  # a speaker's name is not a line of the play
    spoken_lines = {line for line in lines for run in runs if f" {run} " in f" {line} "}
    assert spoken_lines == {line for line in lines if len(line.split()) >= 2} - {"first citizen"}


def test_text_with_no_line_to_speak_is_refused():
    with pytest.raises(ValueError, match="no line of 2 or more words"):
        speech.text_lines("ROMEO:\nAy!\n", 3, seed=0)


def test_the_speech_sets_words_are_every_word_it_says_but_digits():
    words = speech.speech_set_words()
    assert {"circle", "crosses", "purple", "above", "turn", "light", "weather", "many", "where"} <= set(words)
    assert not any(word.isdigit() for word in words) and list(words) == sorted(set(words))


def test_the_words_to_speak_are_the_speech_sets_and_the_texts_most_frequent_others():
    own, everyday = speech.word_vocabulary(PLAY, everyday=6)
    assert own == speech.speech_set_words()
    # romeo (3 times), is, me, the (twice), and, any lead: all but romeo are words of the speech set
    assert everyday == ("romeo",)
    assert "citizen" not in speech.word_vocabulary(PLAY, everyday=1000)[1]


def test_runs_of_words_draw_each_word_on_its_own_from_groups_taken_in_equal_shares():
    groups = (("red", "blue"), tuple(f"w{i}" for i in range(100)))
    runs = speech.word_runs(groups, 400, seed=1)
    assert runs == speech.word_runs(groups, 400, seed=1) != speech.word_runs(groups, 400, seed=2)
    assert all(2 <= len(run.split()) <= 8 for run in runs)
    words = [word for run in runs for word in run.split()]
    assert set(words) <= set(groups[0]) | set(groups[1])
    assert 0.4 < sum(word in groups[0] for word in words) / len(words) < 0.6  # the small group is half the words
    with pytest.raises(ValueError, match="at least two words"):
        speech.word_runs((("alone",), ()), 3, seed=0)


@needs_espeak
def test_spoken_runs_of_words_are_training_speech_of_their_own_kind(tmp_path):
    groups = (("red", "circle"), ("light", "door"))
    spoken = speech.spoken_word_runs(groups, 3, seed=0, cache_dir=tmp_path, clean_share=1.0)
    assert [u.transcript for u in spoken] == speech.word_runs(groups, 3, seed=0)
    assert all(u.kind == "words" and u.voice in TRAIN_VOICES and u.snr_db is None for u in spoken)


@needs_espeak
def test_spoken_lines_of_text_are_training_speech_of_their_own_kind(tmp_path):
    spoken = speech.spoken_text_lines(PLAY, 4, seed=0, cache_dir=tmp_path, clean_share=1.0)
    assert [u.transcript for u in spoken] == speech.text_lines(PLAY, 4, seed=0)
    assert all(u.kind == "text" and u.voice in TRAIN_VOICES and u.snr_db is None for u in spoken)
