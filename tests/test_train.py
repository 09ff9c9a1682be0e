"""Training: a tiny config overfits one batch of each task, two gloo processes train data-parallel with identical
weights, and a run resumes from its last checkpoint.

The batches are built with the trainer's own collation (`pad_right`, `prompt_ids`, `image_to_pixels`,
`audio_to_features`); the data-parallel and resume tests run `mmgpt.train.train` itself on a tiny `TrainConfig`.
"""

import dataclasses
import json
import os
import shutil
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import mmgpt.train as training
from mmgpt.audio import SAMPLE_RATE
from mmgpt.data import load_shakespeare, scene_dataset, speech_dataset
from mmgpt.data.text import default_corpus_path
from mmgpt.model import MMGPTForCausalLM, MMGPTProcessor
from mmgpt.model.configuration_mmgpt import MMGPTConfig
from mmgpt.model.processing_mmgpt import pad_features
from mmgpt.model.testing import tiny_model_and_processor
from mmgpt.train import TrainConfig, colour_token_ids, pad_right, swap_colour_words, train, warp_frequencies

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install -y espeak-ng)")

OVERFIT_STEPS = 40
OVERFIT_LR = 3e-3
OVERFIT_BATCH = 4
TEXT_WINDOW = 48  # tokens per overfit text row
# Used only when Tiny Shakespeare is not next to the repository: the text task is tested either way.
FALLBACK_TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\nAll:\nWe know't, we know't.\n\n"
    "First Citizen:\nLet us kill him, and we'll have corn at our own price. Is't a verdict?\n\n"
    "All:\nNo more talking on't; let it be done: away, away!\n\nSecond Citizen:\nOne word, good citizens.\n"
)


def corpus_text(chars: int) -> str:
    """The first `chars` characters of Tiny Shakespeare, or the fallback passage repeated to that length."""
    path = default_corpus_path()
    text = load_shakespeare(path) if path.is_file() else FALLBACK_TEXT * (chars // len(FALLBACK_TEXT) + 1)
    return text[:chars]


# --- frequency warping of training clips ----------------------------------------------------------------------


def log_mel_of_a_tone(hz: float) -> np.ndarray:
    from mmgpt.audio import log_mel_spectrogram

    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    return log_mel_spectrogram((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))


def peak_bin(features: np.ndarray) -> int:
    return int(np.argmax(features.mean(axis=1)))


def test_a_warp_of_one_leaves_the_features_unchanged():
    features = log_mel_of_a_tone(1000.0)
    np.testing.assert_allclose(warp_frequencies(features, 1.0), features, atol=1e-6)


@pytest.mark.parametrize("factor", [0.88, 1.12])
def test_warping_moves_a_tone_to_the_bin_of_its_scaled_frequency(factor):
    warped = warp_frequencies(log_mel_of_a_tone(1000.0), factor)
    assert warped.shape == log_mel_of_a_tone(1000.0).shape
    assert abs(peak_bin(warped) - peak_bin(log_mel_of_a_tone(1000.0 * factor))) <= 1
    assert peak_bin(warped) != peak_bin(log_mel_of_a_tone(1000.0))


# --- colour words swapped in caption inputs --------------------------------------------------------------------


def test_colour_noise_swaps_colour_words_in_the_input_and_never_in_the_labels():
    from mmgpt.data import COLOURS, example_captions
    from mmgpt.model.processing_mmgpt import train_tokenizer

    captions = example_captions(200, seed=0)
    tokenizer = train_tokenizer(captions, vocab_size=400)  # learned from captions, as the trainer's tokenizer is
    colour_ids = colour_token_ids(tokenizer)
    assert len(colour_ids) == len(COLOURS)  # every colour is one token, so a swap keeps the caption's length
    rows = [tokenizer.encode(c, add_special_tokens=False) for c in captions[:16]]
    batch = pad_right(rows, [0] * len(rows), pad_id=0)
    clean, labels = batch["input_ids"].clone(), batch["labels"].clone()
    is_colour = torch.from_numpy(np.isin(clean.numpy(), colour_ids))
    assert is_colour.any()

    swapped = swap_colour_words(clean, colour_ids, 1.0, np.random.default_rng(0))
    assert torch.equal(swapped[~is_colour], clean[~is_colour])  # other words untouched
    assert (swapped[is_colour] != clean[is_colour]).all()  # each colour word became another colour
    assert np.isin(swapped[is_colour].numpy(), colour_ids).all()
    assert torch.equal(swap_colour_words(clean, colour_ids, 0.0, np.random.default_rng(0)), clean)
    assert torch.equal(batch["input_ids"], clean) and torch.equal(batch["labels"], labels)  # a copy is swapped


def test_without_single_token_colours_there_is_nothing_to_swap():
    from mmgpt.model.processing_mmgpt import train_tokenizer

    tokenizer = train_tokenizer(["plain words only"], vocab_size=300)  # bytes: colours take several tokens
    assert len(colour_token_ids(tokenizer)) == 0
    ids = torch.arange(12).reshape(2, 6)
    assert torch.equal(swap_colour_words(ids, colour_token_ids(tokenizer), 1.0, np.random.default_rng(0)), ids)


# --- a tiny config overfits one batch of each task -------------------------------------------------------------


def caption_batch(processor, eos: int) -> dict:
    scenes = scene_dataset("train", OVERFIT_BATCH, seed=3)
    prompt = processor.prompt_ids("caption")
    rows = [prompt + encode(processor, s.caption, eos) for s in scenes]
    batch = pad_right(rows, [len(prompt)] * len(rows), eos)
    batch["pixel_values"] = torch.from_numpy(np.stack([processor.image_to_pixels(s.image) for s in scenes]))
    return batch


def transcribe_batch(processor, eos: int, cache_dir) -> dict:
    utterances = speech_dataset("train", OVERFIT_BATCH, seed=3, cache_dir=cache_dir)
    features = [processor.audio_to_features(u.waveform, SAMPLE_RATE) for u in utterances]
    prompts = [processor.prompt_ids("transcribe", audio_frames=f.shape[1]) for f in features]
    rows = [p + encode(processor, u.transcript, eos) for p, u in zip(prompts, utterances)]
    batch = pad_right(rows, [len(p) for p in prompts], eos)
    batch["input_features"] = torch.from_numpy(pad_features(features))
    return batch


def text_batch(processor, eos: int) -> dict:
    ids = processor.tokenizer.encode(corpus_text(20_000), add_special_tokens=False)
    starts = np.linspace(0, len(ids) - TEXT_WINDOW, OVERFIT_BATCH).astype(int)
    marker = processor.token_ids["<|text|>"]
    rows = [[marker] + ids[s:s + TEXT_WINDOW] for s in starts]
    return pad_right(rows, [1] * len(rows), eos)


def ask_batch(processor, eos: int) -> dict:
    """Typed conversations about scenes, built by the trainer's own `TaskBatches.conversation_rows`."""
    import random

    from mmgpt.data.questions import conversation

    batches = object.__new__(training.TaskBatches)  # only the collation, none of the data pools
    batches.processor, batches.eos = processor, eos
    batches.cfg = TrainConfig(describe_first=True)  # the longer answers: what the model sees, then the answer
    scenes = scene_dataset("train", OVERFIT_BATCH, seed=3)
    rng = random.Random(0)
    batch = training.pad_segments([batches.conversation_rows(conversation(s, rng, 2), s) for s in scenes], eos)
    batch["pixel_values"] = torch.from_numpy(np.stack([processor.image_to_pixels(s.image) for s in scenes]))
    return batch


@pytest.mark.parametrize("lone_share", [0.0, 0.25, 1.0])
def test_questions_are_asked_about_lone_objects_as_often_as_asked(lone_share):
    """Without the setting, a third of the pictures hold one object; with it, that share, and the others 2 or 3."""
    import random

    from mmgpt.data import iter_scenes

    batches = object.__new__(training.TaskBatches)  # only the picture choice, none of the data pools
    batches.cfg = TrainConfig(ask_lone_share=lone_share, clutter_share=0.0)
    batches.py_rng, batches.ask_scenes = random.Random(0), iter_scenes("train", 5)
    counts = [len(batches.ask_picture()[1].objects) for _ in range(400)]
    assert abs(counts.count(1) / len(counts) - lone_share) < 0.06, counts.count(1)
    assert set(counts) <= {1, 2, 3}


@pytest.mark.parametrize("focus_share", [0.0, 0.5, 1.0])
def test_captions_show_the_focus_shapes_at_least_as_often_as_asked(focus_share):
    """Redrawn scenes hold a star or a cross; the others come as drawn, and about half of those do."""
    import random

    from mmgpt.data import iter_scenes

    batches = object.__new__(training.TaskBatches)  # only the picture choice, none of the data pools
    batches.cfg = TrainConfig(focus_share=focus_share, clutter_share=0.0)
    batches.py_rng, batches.scenes = random.Random(0), iter_scenes("train", 5)
    batches.focus_shapes = training.focus_shapes(batches.cfg)
    held = [bool({"star", "cross"} & {o.shape for o in batches.caption_picture()[1].objects}) for _ in range(400)]
    as_drawn = 0.5  # the share of training scenes that hold a star or a cross (0.507 over 2000 of them)
    expected = focus_share + (1 - focus_share) * as_drawn
    assert abs(sum(held) / len(held) - expected) < 0.07, sum(held)


def test_a_focus_shape_that_is_no_shape_is_named_before_training(tmp_path):
    with pytest.raises(ValueError, match=": hexagon;"):
        train(TrainConfig(out_dir=str(tmp_path), focus_shapes="star,hexagon"))


def paired_batches(ask_batch: int, paired_share: float, **settings) -> training.TaskBatches:
    import random

    from mmgpt.data import iter_scenes

    _, processor = tiny_model_and_processor(seed=0)
    batches = object.__new__(training.TaskBatches)  # only the question choice and collation, none of the pools
    batches.processor, batches.eos = processor, processor.token_ids["<|endoftext|>"]
    batches.cfg = TrainConfig(ask_batch=ask_batch, paired_share=paired_share, clutter_share=0.0, **settings)
    batches.py_rng, batches.ask_scenes = random.Random(0), iter_scenes("train", 5)
    return batches


def test_a_question_pair_is_one_question_in_one_wording_about_two_objects_with_different_answers():
    batches = paired_batches(ask_batch=8, paired_share=0.5)
    kinds = set()
    for _ in range(40):
        scene, (first, second) = batches.question_pair()
        assert len(scene.objects) > 1
        assert first.kind == second.kind and first.answer != second.answer
        assert first.subject != second.subject
        assert first.question.replace(first.subject, second.subject) == second.question
        kinds.add(first.kind)
    assert kinds == {"colour", "shape", "size", "position"}


def test_paired_questions_share_a_picture_and_fill_that_share_of_the_batch():
    """With `paired_share`, that share of a batch's typed questions comes as pairs, each about its own picture
    with two different answers; the rest are conversations as before."""
    batches = paired_batches(ask_batch=10, paired_share=0.4)
    batch = batches.ask()

    assert batch["input_ids"].shape[0] == 10
    pixels, labels = batch["pixel_values"], batch["labels"]
    decode = batches.processor.tokenizer.decode
    for first in (0, 2):  # round(10 * 0.4) // 2 = 2 pairs
        assert torch.equal(pixels[first], pixels[first + 1])
        answers = [decode(labels[row][labels[row] >= 0].tolist()) for row in (first, first + 1)]
        assert answers[0] != answers[1]
    assert not torch.equal(pixels[0], pixels[2])  # each pair has its own picture
    assert not torch.equal(pixels[4], pixels[5])  # then conversations, one picture each


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_that_share_of_conversations_ends_with_a_question_about_an_object_the_picture_does_not_hold(share):
    batches = paired_batches(ask_batch=12, paired_share=0.0, absent_object_share=share)
    batch = batches.ask()

    labels, decode = batch["labels"], batches.processor.tokenizer.decode
    last_answers = []
    for row in labels.tolist():
        end = max(i for i, label in enumerate(row) if label >= 0) + 1
        start = end
        while row[start - 1] >= 0:  # the last run of learned tokens is the last answer
            start -= 1
        last_answers.append(decode(row[start:end]))
    absent = [answer.startswith("there is no ") for answer in last_answers]
    assert all(absent) if share else not any(absent), last_answers


def test_a_share_of_the_absent_object_questions_are_relation_questions():
    """At 0 none is a relation question; at 1 each is where the scene allows one (two objects, told apart)."""
    import random

    from mmgpt.data.scenes import make_scene

    scenes = [make_scene(random.Random(seed), "train") for seed in range(60)]
    kinds = {}
    for share in (0.0, 1.0):
        batches = paired_batches(ask_batch=12, paired_share=0.0, absent_object_share=1.0, absent_relation_share=share)
        asked = [batches.absent_question(scene) for scene in scenes]
        assert all(qa.answer.startswith("there is no ") for qa in asked), asked
        kinds[share] = [(len(scene.objects), qa.kind) for scene, qa in zip(scenes, asked)]
    assert not any(kind == "relation" for _, kind in kinds[0.0])
    assert not any(kind == "relation" for objects, kind in kinds[1.0] if objects == 1)
    several = [kind for objects, kind in kinds[1.0] if objects > 1]
    assert several.count("relation") > 0.6 * len(several), several


def _spoken_pool(monkeypatch, share: float) -> list:
    """The spoken question pool of 60 triples, each clip replaced by the text it would say (no synthesis)."""
    import mmgpt.data.speech

    monkeypatch.setattr(mmgpt.data.speech, "render_specs", lambda specs, *a, **k: [spec.text for spec in specs])
    return training.spoken_question_pool(TrainConfig(spoken_question_pool=60, spoken_absent_object_share=share), 7)


def test_that_share_of_spoken_questions_is_about_an_object_the_picture_does_not_hold_and_the_rest_stay(monkeypatch):
    from mmgpt.data.speech import spoken_form

    without, every, some = (_spoken_pool(monkeypatch, share) for share in (0.0, 1.0, 0.5))
    assert not any(talk[-1].answer.startswith("there is no ") for _, talk, _ in without)
    assert all(talk[-1].answer.startswith("there is no ") for _, talk, _ in every)
    absent = [talk[-1].answer.startswith("there is no ") for _, talk, _ in some]
    assert 15 < sum(absent) < 45
    for (seed, talk, said), (seed_before, talk_before, said_before), replaced in zip(some, without, absent):
        assert seed == seed_before and talk[:-1] == talk_before[:-1]  # the same scenes and earlier turns
        assert said == spoken_form(talk[-1].question)  # the recording says the question that is answered
        assert (talk[-1] != talk_before[-1]) == replaced and (said != said_before) == replaced


@pytest.mark.parametrize("setting", ["paired_share", "clean_speech_share", "other_voice_share", "speech_text_share",
                                     "speech_word_share", "swapped_recording_share", "focus_share",
                                     "absent_object_share", "absent_relation_share", "spoken_absent_object_share"])
def test_a_share_outside_zero_to_one_is_refused_before_training(setting, tmp_path):
    with pytest.raises(ValueError, match=f"{setting} 1.5"):
        train(TrainConfig(out_dir=str(tmp_path), **{setting: 1.5}))


def test_swapped_recordings_are_refused_where_spoken_questions_are_not_written_down(tmp_path):
    with pytest.raises(ValueError, match="swapped_recording_share needs transcribe_spoken_questions"):
        train(TrainConfig(out_dir=str(tmp_path), swapped_recording_share=0.3))


def test_lines_of_text_and_runs_of_words_together_fit_in_the_speech_pool(tmp_path):
    with pytest.raises(ValueError, match="together at most the whole speech pool"):
        train(TrainConfig(out_dir=str(tmp_path), speech_text_share=0.6, speech_word_share=0.5))


@needs_espeak
def test_the_speech_pool_holds_the_shares_of_lines_of_text_and_runs_of_words_asked_for(tmp_path):
    from mmgpt.data import speech

    cfg = tiny_train_config(tmp_path, tasks="transcribe", speech_pool=6, speech_text_share=1 / 6,
                            speech_word_share=0.5, speech_word_vocabulary=40)
    _, processor = tiny_model_and_processor(seed=0)
    text = open(cfg.text_path, encoding="utf-8").read()
    batches = training.TaskBatches(cfg, processor, text, seed=0, pool_seed=7, log=lambda *args: None)
    heard = [processor.tokenizer.decode(ids[:-1]) for _, ids in batches.speech]  # each transcript, then eos
    runs, lines = speech.word_runs(speech.word_vocabulary(text, 40), 3, 7), speech.text_lines(text, 1, 7)
    assert len(heard) == 6 and set(runs) <= set(heard) and set(lines) <= set(heard)


def encode(processor, text: str, eos: int) -> list[int]:
    return processor.tokenizer.encode(text, add_special_tokens=False) + [eos]


@pytest.mark.parametrize("task", ["caption", pytest.param("transcribe", marks=needs_espeak), "text", "ask"])
def test_tiny_config_overfits_one_batch(task, tmp_path):
    torch.manual_seed(0)
    # Room for the longest synthetic utterance (8 s: 801 frames, 201 prefix tokens) and its transcript.
    model, processor = tiny_model_and_processor(seed=0, n_positions=512, max_audio_frames=1000)
    eos = processor.token_ids["<|endoftext|>"]
    if task == "caption":
        batch = caption_batch(processor, eos)
    elif task == "transcribe":
        batch = transcribe_batch(processor, eos, cache_dir=tmp_path / "speech")
    elif task == "ask":
        batch = ask_batch(processor, eos)
    else:
        batch = text_batch(processor, eos)

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=OVERFIT_LR)
    losses = []
    for _ in range(OVERFIT_STEPS):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())

    assert all(np.isfinite(losses))
    assert losses[-1] <= 0.5 * losses[0], f"{task}: {losses[0]:.3f} -> {losses[-1]:.3f} in {OVERFIT_STEPS} steps"


# --- conversations about a picture --------------------------------------------------------------------------


def collating_batches(processor, cfg: TrainConfig) -> training.TaskBatches:
    """TaskBatches with only `cfg` and the collation: none of the data pools."""
    batches = object.__new__(training.TaskBatches)
    batches.processor, batches.eos, batches.cfg = processor, processor.token_ids["<|endoftext|>"], cfg
    return batches


@pytest.mark.parametrize("describe_first, relation_reasoning", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("spoken_frames", [0, 300])
def test_training_conversations_are_the_prompts_the_app_builds_with_every_answer_learned(spoken_frames,
                                                                                         describe_first,
                                                                                         relation_reasoning):
    import random

    from mmgpt.data.questions import conversation, short_answer

    _, processor = tiny_model_and_processor(seed=0)
    eos = processor.token_ids["<|endoftext|>"]
    batches = collating_batches(processor, TrainConfig(describe_first=describe_first,
                                                       relation_reasoning=relation_reasoning))
    rng, relations = random.Random(1), 0
    for scene in scene_dataset("train", 20, seed=4):
        talk = conversation(scene, rng, 3)
        rows = batches.conversation_rows(talk, scene, spoken_frames)
        learned = [processor.decode(ids)[:-len("<|endoftext|>")] for ids, is_learned in rows if is_learned]
        # The history the app sends back holds the model's own answers, description and all.
        history = [(qa.question, answer) for qa, answer in zip(talk[:-1], learned)]
        question = "" if spoken_frames else talk[-1].question
        prompt = [token for ids, _ in rows[:-1] for token in ids]
        assert prompt == processor.ask_ids(question, spoken_frames, history)
        assert [short_answer(a).strip() for a in learned] == [qa.answer for qa in talk]
        expected = [f"{qa.reasoning}, so {qa.answer}" if relation_reasoning and qa.kind == "relation" else qa.answer
                    for qa in talk]
        expected = [f"{scene.caption}, so {answer}" if describe_first else answer for answer in expected]
        assert learned == expected
        labels = training.pad_segments([rows], eos)["labels"][0]
        assert processor.decode(labels[labels != -100]) == "<|endoftext|>".join(learned) + "<|endoftext|>"
        relations += sum(qa.kind == "relation" for qa in talk)
    assert relations > 0


def test_a_checkpoint_that_transcribes_spoken_questions_learns_to_write_the_words_then_answer_them():
    """The words come where the app stops the prompt for them, and with them the prompt is the one the app sends
    for the answer: picture, audio, the words, `<|answer|>`."""
    import random

    from mmgpt.data.questions import conversation

    _, processor = tiny_model_and_processor(seed=0)
    processor.transcribes_spoken_questions = True
    batches = collating_batches(processor, TrainConfig(transcribe_spoken_questions=True))
    rng = random.Random(3)
    for scene in scene_dataset("train", 10, seed=5):
        talk = conversation(scene, rng, 3)
        rows = batches.conversation_rows(talk, scene, spoken_frames=300)
        *earlier, (prompt, _), (words, words_learned), (answer, answer_learned) = rows
        history = [(qa.question, qa.answer) for qa in talk[:-1]]
        before = [token for ids, _ in earlier for token in ids]
        assert before + prompt == processor.ask_ids("", 300, history)
        assert words_learned and processor.decode(words) == talk[-1].question + "<|answer|>"
        assert before + prompt + words == processor.ask_ids(talk[-1].question, 300, history)
        assert answer_learned and processor.decode(answer) == talk[-1].answer + "<|endoftext|>"
    typed = batches.conversation_rows(talk, scene)  # typed questions are as before: only answers learned
    assert [learned for _, learned in typed][-2:] == [False, True]


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_swapped_recording_gives_the_words_heard_without_teaching_them_and_still_teaches_the_answer(share):
    """With `swapped_recording_share`, a spoken question is heard as another question's recording: its words are
    then given, not learned, so that the answer after them is learned from the words and not from the sound."""
    import random

    from mmgpt.data.questions import conversation
    from mmgpt.data.scenes import make_scene

    _, processor = tiny_model_and_processor(seed=0)
    processor.transcribes_spoken_questions = True
    batches = collating_batches(processor, TrainConfig(transcribe_spoken_questions=True, spoken_ask_batch=6,
                                                       swapped_recording_share=share, mel_warp=0.0))
    batches.rng, batches.pad_features = np.random.default_rng(0), pad_features
    rng = random.Random(2)
    seeds = [rng.getrandbits(64) for _ in range(4)]
    batches.spoken_questions = [(seed, conversation(make_scene(random.Random(seed), "train"), rng, 1), None)
                                for seed in seeds]
    batches.spoken_features = [np.full((80, 40 + 40 * i), float(i), np.float32) for i in range(len(seeds))]

    batch = batches.spoken_ask()

    frame = processor.token_ids["<|frame|>"]
    pictures = [torch.from_numpy(processor.image_to_pixels(make_scene(random.Random(seed), "train").image))
                for seed in seeds]
    for row, labels, pixels in zip(batch["input_ids"], batch["labels"], batch["pixel_values"]):
        entry = next(e for e, picture in enumerate(pictures) if torch.equal(picture, pixels))
        _, talk, _ = batches.spoken_questions[entry]
        learned = processor.decode(labels[labels != -100])
        own_frames = MMGPTConfig.audio_tokens_for_frames(batches.spoken_features[entry].shape[1])
        assert learned.endswith(talk[-1].answer + "<|endoftext|>")  # the answer is always learned
        assert (talk[-1].question in learned) == (share == 0.0)  # the words heard only with their own recording
        assert ((row == frame).sum().item() == own_frames) == (share == 0.0)


@pytest.mark.parametrize("describe_first", [False, True])
def test_the_warm_up_teaches_answers_written_after_the_objects_name(describe_first):
    import random

    from mmgpt.data.questions import conversation, named_answer

    _, processor = tiny_model_and_processor(seed=0)
    batches = collating_batches(processor, TrainConfig(named_answers=True, describe_first=describe_first))
    rng, named = random.Random(2), 0
    for scene in scene_dataset("train", 20, seed=4):
        talk = conversation(scene, rng, 3)
        rows = batches.conversation_rows(talk, scene)
        learned = [processor.decode(ids)[:-len("<|endoftext|>")] for ids, is_learned in rows if is_learned]
        expected = [named_answer(qa) for qa in talk]
        if describe_first:
            expected = [f"{scene.caption}, so {answer}" for answer in expected]
        assert learned == expected
        named += sum(qa.subject is not None for qa in talk)
    assert named > 10


def test_the_tasks_of_a_step_are_named_and_a_name_that_is_no_task_is_refused():
    assert training.task_names(TrainConfig()) == training.TASKS
    assert training.task_names(TrainConfig(tasks="ask, caption")) == ("caption", "ask")
    for wrong in ("ask,captions", "", " , "):
        with pytest.raises(ValueError, match="expected names from"):
            training.task_names(TrainConfig(tasks=wrong))


def test_task_weights_weigh_each_tasks_loss_and_a_wrong_weight_is_named():
    assert training.task_weights(TrainConfig()) == dict.fromkeys(training.TASKS, 1.0)
    assert training.task_weights(TrainConfig(task_weights="ask=4")) == {
        "text": 1.0, "caption": 1.0, "transcribe": 1.0, "ask": 4.0, "spoken_ask": 1.0}
    assert training.task_weights(TrainConfig(tasks="caption,ask", task_weights=" caption = 0.5, ask=1.5")) == {
        "caption": 0.5, "ask": 1.5}
    for wrong, named in (("asks=2", "'asks' is not a trained task"), ("ask=2,ask=3", "'ask' .* given twice"),
                         ("ask=two", "'ask=two' is not name=number"), ("ask=0", "above 0"), ("ask=-1", "above 0"),
                         ("ask=inf", "above 0"), ("ask=nan", "above 0")):
        with pytest.raises(ValueError, match=named):
            training.task_weights(TrainConfig(task_weights=wrong))
    with pytest.raises(ValueError, match="not a trained task"):
        training.task_weights(TrainConfig(tasks="ask", task_weights="caption=2"))


class FixedBatches:
    """One fixed batch per task, under the task's name, as `TaskBatches` gives them."""

    def __init__(self, **batches):
        for task, batch in batches.items():
            setattr(self, task, lambda batch=batch: batch)


def step_gradients(model, batches, weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """Each parameter's gradient after one step's backward passes; zero where a task does not reach it."""
    model.zero_grad(set_to_none=True)
    losses, _ = training.backward_task_losses(model, batches, weights, TrainConfig(precision="fp32"))
    assert set(losses) == set(weights)
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in model.named_parameters()}


def test_a_steps_gradient_is_the_weighted_mean_of_the_task_gradients():
    model, processor = tiny_model_and_processor(seed=0)
    model.eval()  # no dropout: one batch gives one gradient every time
    eos = processor.token_ids["<|endoftext|>"]
    batches = FixedBatches(text=text_batch(processor, eos), caption=caption_batch(processor, eos))
    text = step_gradients(model, batches, {"text": 1.0})
    caption = step_gradients(model, batches, {"caption": 1.0})
    for weights in ({"text": 1.0, "caption": 1.0}, {"text": 1.0, "caption": 3.0}):
        step = step_gradients(model, batches, weights)
        for name, gradient in step.items():
            expected = (weights["text"] * text[name] + weights["caption"] * caption[name]) / sum(weights.values())
            torch.testing.assert_close(gradient, expected, msg=f"{name} under {weights}")
    # The two tasks pull the embeddings apart, so the check above tells a weight of 3 from an unweighted mean.
    assert not torch.allclose(text["transformer.wte.weight"], caption["transformer.wte.weight"])


def test_without_questions_training_the_image_encoder_their_loss_reaches_only_the_rest():
    model, processor = tiny_model_and_processor(seed=0)
    batch = ask_batch(processor, processor.token_ids["<|endoftext|>"])
    encoder = model.transformer.image_encoder
    with training.image_encoder_trained(model, False):
        model(**batch).loss.backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(p.requires_grad for p in encoder.parameters())  # restored for the captions
    decoder = model.transformer.h[0].attn.c_attn.weight
    assert decoder.grad is not None and decoder.grad.abs().sum() > 0
    with training.image_encoder_trained(model, True):
        model(**batch).loss.backward()
    assert all(p.grad is not None for p in encoder.parameters())


@needs_espeak  # the evaluation still measures transcription, to show what a phase without it forgets
def test_a_phase_trains_only_its_tasks_and_builds_no_speech_pool_it_does_not_use(tmp_path, monkeypatch):
    import mmgpt.data

    drawn, speech_dataset = [], mmgpt.data.speech_dataset

    def recorded(split, *args, **kwargs):
        drawn.append(split)
        return speech_dataset(split, *args, **kwargs)

    monkeypatch.setattr(mmgpt.data, "speech_dataset", recorded)
    monkeypatch.setattr(training.batches, "spoken_question_pool", lambda *a: pytest.fail("spoken questions were built"))
    checkpoint = train(tiny_train_config(tmp_path, steps=2, eval_every=2, tasks=" ask, caption", named_answers=True))

    assert torch.load(checkpoint / "trainer_state.pt", weights_only=False)["config"]["tasks"] == "caption,ask"
    history = read_history(tmp_path / "run")
    assert [set(h) for h in history["history"]] == [{"step", "caption", "ask"}] * 2
    assert drawn == ["validation"]
    assert 0 <= history["evals"][-1]["question_accuracy"] <= 100


def test_a_picture_that_is_no_scene_is_described_as_unrecognised_before_the_answer():
    import random

    from mmgpt.data.questions import unrecognised_questions

    _, processor = tiny_model_and_processor(seed=0)
    batches = collating_batches(processor, TrainConfig(describe_first=True))
    rows = batches.conversation_rows(unrecognised_questions(random.Random(0), 1), None)
    assert processor.decode(rows[-1][0]) == "i do not recognise this picture, so i do not know<|endoftext|>"


# --- train() itself, on a tiny config ---------------------------------------------------------------------------


def tiny_train_config(tmp_path, **overrides) -> TrainConfig:
    """A TrainConfig whose every size is tiny: a few seconds per run, checkpoints included."""
    text_path = tmp_path / "corpus.txt"
    if not text_path.exists():
        text_path.write_text(corpus_text(40_000), encoding="utf-8")
    sizes = dict(
        out_dir=str(tmp_path / "run"), text_path=str(text_path), speech_cache_dir=str(tmp_path / "speech"), seed=0,
        steps=4, vocab_size=384, n_embd=32, n_layer=2, n_head=4, dropout=0.0, image_layers=1, audio_layers=1,
        n_positions=320, image_size=32, patch_size=8, max_audio_frames=1000,
        text_batch=4, text_block=32, image_batch=4, audio_batch=2, speech_pool=6,
        ask_batch=2, spoken_ask_batch=2, spoken_question_pool=4,
        lr=3e-3, min_lr=3e-4, warmup_steps=1, eval_every=2,
        eval_scenes=2, eval_utterances=2, eval_questions=2, eval_text_windows=2, eval_text_block=64,
    )
    return TrainConfig(**{**sizes, **overrides})


def read_history(out_dir) -> dict:
    return json.loads((out_dir / "history.json").read_text())


@needs_espeak
def test_train_checkpoints_and_resumes_from_the_last_checkpoint(tmp_path, capsys):
    cfg = tiny_train_config(tmp_path, steps=4, eval_every=2)
    out = tmp_path / "run"
    checkpoint = train(cfg)

    assert checkpoint == out / "checkpoint"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "trainer_state.pt"):
        assert (checkpoint / name).is_file(), name
    assert (out / "loss.png").stat().st_size > 0
    history = read_history(out)
    assert [h["step"] for h in history["history"]] == [1, 2, 3, 4]
    assert [e["step"] for e in history["evals"]] == [2, 4]
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    assert state["step"] == 4
    assert state["config"]["precision"] in ("bf16", "fp32")  # what ran, for the model card; never "auto"
    assert json.loads((checkpoint / "processor_config.json").read_text()).get("answer_after") is None
    capsys.readouterr()

    # A resume may change the answers' format and the weight decay; the model is the checkpoint's, whatever the
    # command line says of its shape.
    train(dataclasses.replace(cfg, steps=6, describe_first=True, weight_decay=0.05, n_layer=cfg.n_layer + 1))

    printed = capsys.readouterr().out
    assert "resuming from step 4" in printed and f"n_layer stays {cfg.n_layer}" in printed
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    assert state["step"] == 6
    assert state["resumes"][-1]["config"]["n_layer"] == cfg.n_layer  # the card must not say it changed
    assert [group["weight_decay"] for group in state["optimizer"]["param_groups"]] == [0.05, 0.0]
    with pytest.raises(training.ConfigError, match="is at step 6 and steps is 6: raise --steps"):
        train(dataclasses.replace(cfg, steps=6))
    history = read_history(out)
    assert [h["step"] for h in history["history"]] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in history["evals"]] == [2, 4, 6]
    for scores in history["evals"]:
        assert set(scores) >= {"text_nats_per_char", "caption_exact_match", "wer", "question_accuracy"}
    assert set(history["history"][-1]) >= set(training.TASKS)

    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    assert (model.config.image_size, model.config.n_positions, model.config.n_embd) == (32, 320, 32)
    assert processor.image_size == 32
    assert processor.answer_after == ", so "  # the app measures how sure the answer is after its description


def test_a_save_cut_off_between_its_renames_leaves_the_last_checkpoint_to_resume_from(tmp_path):
    """A save writes checkpoint.tmp, renames checkpoint to checkpoint.old, then checkpoint.tmp to checkpoint. Killed
    between the two renames, a run finds no checkpoint: it must not start over and delete the one it kept."""
    model, processor = tiny_model_and_processor()
    optimizer = training.make_optimizer(model, TrainConfig())
    checkpoint = tmp_path / "checkpoint"
    training.save_checkpoint(checkpoint, model, processor, optimizer, {"step": 40, "train_seconds": 1.0})
    checkpoint.rename(tmp_path / "checkpoint.old")  # the first rename happened, the second did not
    (tmp_path / "checkpoint.tmp").mkdir()  # the new one, half written

    training.recover_checkpoint(checkpoint)

    assert torch.load(checkpoint / "trainer_state.pt", weights_only=False)["step"] == 40
    assert not (tmp_path / "checkpoint.old").exists()
    training.recover_checkpoint(checkpoint)  # with a checkpoint in place: nothing to do
    assert (checkpoint / "model.safetensors").is_file()


@pytest.mark.parametrize("asked, grown_to", [(0, 1), (1, 1), (2, 2)])
def test_a_warm_start_keeps_a_checkpoints_stem_blocks_and_grows_them_to_what_is_asked(tmp_path, asked, grown_to):
    from mmgpt.model.testing import save_random_checkpoint

    save_random_checkpoint(tmp_path, seed=2, image_stem_layers=2, image_stem_blocks=1)
    saved = MMGPTForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():  # trained blocks, not the zeros they start from
        for conv in saved.transformer.image_encoder.stem_blocks.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(std=0.05)
    saved.save_pretrained(tmp_path)

    model, processor = training.warm_start(str(tmp_path), asked)

    assert [len(blocks) for blocks in model.transformer.image_encoder.stem_blocks] == [grown_to, grown_to]
    pixels = torch.from_numpy(processor.image_to_pixels(scene_dataset("train", 1, seed=3)[0].image))[None]
    with torch.no_grad():
        torch.testing.assert_close(model.eval().transformer.image_encoder(pixels),
                                   saved.transformer.image_encoder(pixels))


@pytest.mark.parametrize("asked, seen", [(0, 32), (32, 32), (48, 48)])
def test_a_warm_start_grows_the_pictures_it_sees_to_what_is_asked_and_never_shrinks_them(tmp_path, asked, seen):
    from mmgpt.model.testing import save_random_checkpoint

    save_random_checkpoint(tmp_path, seed=4, image_size=32, patch_size=8)
    saved = MMGPTForCausalLM.from_pretrained(tmp_path).eval()
    saved_processor = MMGPTProcessor.from_pretrained(tmp_path)
    saved_processor.transcribes_spoken_questions, saved_processor.answer_after = True, ", so "
    saved_processor.save_pretrained(tmp_path)

    model, processor = training.warm_start(str(tmp_path), image_size=asked)

    assert model.config.image_size == processor.image_size == seen
    assert processor.transcribes_spoken_questions and processor.answer_after == ", so "  # kept from the checkpoint
    image = scene_dataset("train", 1, seed=3)[0].image
    inputs = processor(images=[image])
    assert int((inputs["input_ids"] == model.config.image_placeholder_id).sum()) == (seen // 8) ** 2
    old, new = saved.transformer.image_encoder, model.transformer.image_encoder
    for name, weight in saved.state_dict().items():  # only the position tables may differ, and they only grow
        if "row_embed" not in name and "col_embed" not in name:
            torch.testing.assert_close(model.state_dict()[name], weight)
    for table in ("row_embed", "col_embed"):  # the first and last rows and columns keep their places
        grown, kept = getattr(new, table).weight, getattr(old, table).weight
        assert grown.shape == (seen // 8, kept.shape[1])
        torch.testing.assert_close(grown[[0, -1]], kept[[0, -1]])
    with torch.no_grad():  # the encoder reads the new grid of patches into the new number of placeholders
        logits = model.eval()(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and bool(logits.isfinite().all())


# (warm_start's argument, where the blocks are): the two encoders and the decoder grow alike
STACKS = {"audio_layers": "audio_encoder.blocks", "image_layers": "image_encoder.blocks", "n_layer": "h"}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("asked, grown_to", [(0, 1), (1, 1), (3, 3)])
def test_a_warm_start_grows_a_stack_of_blocks_to_the_depth_asked_and_the_models_answers_stay_as_they_were(
        tmp_path, stack, asked, grown_to):
    from mmgpt.model.testing import save_random_checkpoint

    save_random_checkpoint(tmp_path, seed=5, **{stack: 1})
    saved = MMGPTForCausalLM.from_pretrained(tmp_path).eval()

    model, processor = training.warm_start(str(tmp_path), **{stack: asked})

    blocks = model.transformer.get_submodule(STACKS[stack])
    assert len(blocks) == getattr(model.config, stack) == grown_to
    for name, weight in saved.state_dict().items():  # every trained weight is kept
        torch.testing.assert_close(model.state_dict()[name], weight)
    audio = processor(audio=[(0.3 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)],
                      sampling_rate=SAMPLE_RATE)
    image = processor(images=[scene_dataset("train", 1, seed=3)[0].image])
    with torch.no_grad():  # the new blocks add nothing yet, so the model reads its input as before
        for inputs in (audio, image):
            torch.testing.assert_close(model.eval()(**inputs).logits, saved(**inputs).logits)
        text = processor(text="ROMEO:")  # and writes as before, each new block's key-value cache in its place
        assert torch.equal(model.generate(**text, max_new_tokens=8, min_new_tokens=8, do_sample=False),
                           saved.generate(**text, max_new_tokens=8, min_new_tokens=8, do_sample=False))
    for block in blocks[1:]:  # the new ones: output projections at zero, the rest random, to learn from
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
        assert block.attn.c_attn.weight.any() and block.mlp.c_fc.weight.any()


def test_a_warm_start_adds_a_stem_layer_that_sees_twice_the_pixels_and_reads_them_as_the_old_stem_read_half(tmp_path):
    from mmgpt.model.testing import save_random_checkpoint

    save_random_checkpoint(tmp_path, seed=6, n_embd=64, image_size=32, patch_size=8, image_stem_layers=2,
                           image_stem_blocks=1)
    saved = MMGPTForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():  # trained stem blocks, not the zeros they start from
        for conv in saved.transformer.image_encoder.stem_blocks.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(std=0.05)
    saved.save_pretrained(tmp_path)

    model, processor = training.warm_start(str(tmp_path), image_stem_layers=3)

    config = model.config
    assert (config.image_stem_layers, config.image_size, config.patch_size) == (3, 64, 16)
    assert (processor.image_size, processor.patch_size) == (64, 16)
    assert processor.num_patches == saved.config.num_patches  # the decoder's grid of patches is unchanged
    old, new = saved.transformer.image_encoder, model.transformer.image_encoder
    torch.testing.assert_close(new.stem[4].weight, old.stem[2].weight)  # trained layers move one place down
    torch.testing.assert_close(new.stem_blocks[2][0].conv1.weight, old.stem_blocks[1][0].conv1.weight)
    torch.testing.assert_close(new.patch_embed.weight, old.patch_embed.weight)
    pixels = torch.from_numpy(processor.image_to_pixels(scene_dataset("train", 1, seed=3)[0].image))[None]
    with torch.no_grad():  # the new layer hands on a 2x2 average, read as the old stem read a picture that size
        torch.testing.assert_close(new(pixels), old(torch.nn.functional.avg_pool2d(pixels, 2)))
    with torch.no_grad():  # and the whole model reads the grown picture into the same number of placeholders
        logits = model.eval()(**processor(images=[scene_dataset("train", 1, seed=3)[0].image])).logits
    assert bool(logits.isfinite().all())


def test_a_stem_layer_too_narrow_to_carry_the_picture_is_refused_with_the_width_that_is_too_small(tmp_path):
    from mmgpt.model.testing import save_random_checkpoint

    save_random_checkpoint(tmp_path, seed=6, n_embd=32, image_size=32, patch_size=8, image_stem_layers=2)

    with pytest.raises(ValueError, match=r"n_embd \(32\) is too small"):
        training.warm_start(str(tmp_path), image_stem_layers=3)


def test_auto_precision_resolves_to_what_the_machine_computes_natively_and_a_typo_is_named(monkeypatch):
    assert training.resolved_precision("fp32") == "fp32" and training.resolved_precision("bf16") == "bf16"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert training.resolved_precision("auto") == expected
    with pytest.raises(ValueError, match=r"'bf61'.*auto.*bf16.*fp32"):
        training.resolved_precision("bf61")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_parallel_rank(rank: int, world: int, port: int, cfg: TrainConfig, result_dir: str) -> None:
    """One torchrun-style process: the environment torchrun would set, then the real `train()`.

    A spy around `average_gradients` keeps the model (to save its final weights) and the rank's own gradient of
    the first step (to show that the ranks really saw different data before averaging).
    """
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    seen = {}
    average_gradients = training.loop.average_gradients

    def spy(model, world_size):
        if "local_gradient" not in seen:
            seen["local_gradient"] = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        average_gradients(model, world_size)
        seen["model"] = model

    training.loop.average_gradients = spy  # where the loop looks it up
    training.train(cfg)
    torch.save({"weights": seen["model"].state_dict(), "local_gradient": seen["local_gradient"].clone()},
               os.path.join(result_dir, f"rank{rank}.pt"))


@needs_espeak
def test_two_gloo_processes_train_data_parallel_to_identical_weights(tmp_path):
    world = 2
    cfg = tiny_train_config(tmp_path, steps=5, eval_every=5)
    context = mp.start_processes(data_parallel_rank, args=(world, free_port(), cfg, str(tmp_path)), nprocs=world,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 600
    while not context.join(timeout=5):  # raises if a rank failed, with its traceback
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("data-parallel training did not finish within 600 s")

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    assert not torch.equal(ranks[0]["local_gradient"], ranks[1]["local_gradient"]), "ranks drew the same data"
    weights = [r["weights"] for r in ranks]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"{name} differs between ranks"

    history = read_history(tmp_path / "run")["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    first, last = history[0], history[-1]
    total = lambda h: h["text"] + h["caption"] + h["transcribe"]  # noqa: E731
    assert total(last) < total(first), f"loss did not fall: {first} -> {last}"

    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoint").state_dict()
    for name, tensor in saved.items():
        assert torch.equal(tensor, weights[0][name]), f"checkpoint's {name} is not the trained weight"
