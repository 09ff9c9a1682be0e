"""What the evaluation's figures mean (keyword accuracy, transcript normalization), and how the table and the model
card show them beside their targets. End-to-end runs of `python -m mmgpt evaluate` and `ship` are in test_cli.py."""

import pytest
from PIL import Image

from mmgpt.data.questions import QUESTION_KINDS, answer_is_right
from mmgpt.data.scenes import Scene, SceneObject
from mmgpt.data.speech import OTHER_TEST_VOICES, TEST_VOICES
from mmgpt.evaluate import (
    QA_SETS, TARGETS, Asked, figures, format_table, keyword_hits, normalize_transcript, object_phrases, pair_figures,
    shape_confusions,
)
from mmgpt.evaluate import _keyword_figures as keyword_figures
from mmgpt.ship import NOT_EXPLAINED, _evaluation_section, unexplained_misses


def _scene(caption: str, *objects: tuple[str, str, str]) -> Scene:
    built = tuple(SceneObject(shape, colour, size, (10.0 + 20 * i, 32.0), (0.0, 0.0, 1.0, 1.0))
                  for i, (size, colour, shape) in enumerate(objects))
    return Scene(Image.new("RGB", (64, 64)), caption, built)


TWO = _scene("a small red circle left of a large blue square", ("small", "red", "circle"), ("large", "blue", "square"))


@pytest.mark.parametrize("hypothesis, colour, shape, keyword, objects", [
    ("a small red circle left of a large blue square", 100, 100, 100, 100),
    ("a small red square left of a large blue square", 100, 50, 75, 50),  # one shape word wrong
    ("a large blue square left of a small red circle", 0, 0, 0, 0),  # right objects, wrong order
    ("a large blue square", 0, 0, 0, 0),  # the first object is not the reference's first; the second is missing
    ("circle circle circle", 0, 50, 25, 0),  # degenerate: no colours, and "circle" is right for the first object
    ("red circle and blue", 100, 50, 75, 50),  # outside the grammar, still scored phrase by phrase
    ("", 0, 0, 0, 0),
])
def test_keyword_accuracy_compares_the_ith_object_phrase_with_the_ith_object(hypothesis, colour, shape, keyword,
                                                                              objects):
    figures_ = keyword_figures(keyword_hits(TWO, hypothesis))
    assert figures_["colour_accuracy"] == colour
    assert figures_["shape_accuracy"] == shape
    assert figures_["keyword_accuracy"] == keyword
    assert figures_["object_accuracy"] == objects


def test_shape_confusions_count_each_shape_named_as_another_at_its_place():
    three = _scene("", ("small", "red", "star"), ("large", "blue", "cross"), ("small", "green", "star"))
    hypotheses = [
        "a small red cross, a large blue cross and a small green cross",  # both stars read as crosses
        "a small red star, a large blue star",  # the cross as a star, the third object missing
        "a small red star, a large blue cross and a small green star",  # all right: counts nothing
    ]
    assert shape_confusions([three] * 3, hypotheses) == {"star as cross": 2, "cross as star": 1, "star as nothing": 1}
    assert list(shape_confusions([three], hypotheses[:1])) == ["star as cross"]


def test_object_phrases_read_size_colour_and_shape_leniently():
    assert object_phrases("a small red circle, a large blue square and a small green star") == [
        ("small", "red", "circle"), ("large", "blue", "square"), ("small", "green", "star")]
    assert object_phrases("Red circle!") == [(None, "red", "circle")]
    assert object_phrases("circle circle") == [(None, None, "circle"), (None, None, "circle")]
    assert object_phrases("ROMEO: but soft") == []


@pytest.mark.parametrize("text, normalized", [
    ("Forty-two red circles.", "42 red circles"),
    ("one hundred and five", "105"),
    ("nine hundred ninety nine", "999"),
    ("a red circle and a blue square", "a red circle and a blue square"),
    ("count to ten", "count to 10"),
    ("two blue stars", "2 blue stars"),
    ("zero", "0"),
    ("What's that?", "what's that"),
])
def test_transcripts_are_compared_without_case_punctuation_or_number_spelling(text, normalized):
    assert normalize_transcript(text) == normalized


# --- the table and the card --------------------------------------------------------------------------------------


def _caption(exact: float, keyword: float) -> dict:
    return {"exact_match": exact, "bleu": 90.0, "keyword_accuracy": keyword, "colour_accuracy": keyword,
            "shape_accuracy": keyword, "size_accuracy": keyword, "object_accuracy": keyword, "n": 10}


def _speech(wer: float, voices=TEST_VOICES) -> dict:
    return {"wer": wer, "n": 30, "by_voice": {voice: {"wer": wer, "n": 10} for voice in voices}}


def _questions(accuracy: float, spoken: bool) -> dict:
    result = {"available": True, "accuracy": accuracy, "n": 70,
              "by_kind": {kind: {"accuracy": accuracy, "n": 10} for kind in QUESTION_KINDS}}
    if spoken:
        result["by_voice"] = {voice: {"accuracy": accuracy, "n": 10} for voice in TEST_VOICES}
    return result


def results(**overrides) -> dict:
    """A results dict shaped as `evaluate` writes it, every figure meeting its target unless overridden."""
    base = {
        "model": "m", "seed": 1, "sizes": {"scenes": 10, "per_voice": 10, "questions": 10}, "eval_seconds": 60.0,
        "text_nats_per_char": 1.6, "caption_test": _caption(99.0, 99.5), "caption_heldout": _caption(90.0, 96.0),
        "caption_compositional": _caption(85.0, 97.0), "speech_clean": _speech(2.0), "speech_10db": _speech(4.0),
        "speech_captions": _speech(1.0), "speech_phrases": _speech(3.0), "speech_phrases_heldout": _speech(4.0),
        "qa_typed": _questions(95.0, False), "qa_heldout_typed": _questions(92.0, False),
        "qa_heldout_typed_lowercase": _questions(93.0, False),
        "qa_spoken": _questions(90.0, True), "qa_heldout_spoken": _questions(88.0, True),
        "speech_captions_other_voices": _speech(2.5, OTHER_TEST_VOICES),
        "speech_phrases_other_voices": _speech(4.5, OTHER_TEST_VOICES),
        "speech_phrases_heldout_other_voices": _speech(5.0, OTHER_TEST_VOICES),
        "qa_spoken_other_voices": _questions(86.0, True),
        "checkpoint_mb": 30.0, "decode_tokens_per_s": 500.0,
    }
    base["caption_heldout"]["by_style"] = {"outlined": {"keyword_accuracy": 96.0, "n": 5}}
    return {**base, **overrides}


def test_every_target_has_its_row_in_the_table_with_whether_it_is_met():
    table = format_table(results(text_nats_per_char=1.72))
    by_label = {f.key: f for f in figures(results(text_nats_per_char=1.72))}
    assert set(TARGETS) <= set(by_label)
    for key, (op, value) in TARGETS.items():
        assert by_label[key].target == (op, value)
    assert by_label["text_nats_per_char"].met is False and by_label["checkpoint_mb"].met is True
    assert by_label["text_nats_per_char"].shortfall == pytest.approx(0.03)
    row = next(line for line in table.splitlines() if line.startswith("Text: Tiny Shakespeare"))
    assert "1.720" in row and "≤ 1.69" in row and row.endswith("NO")


def test_parts_take_the_target_of_their_whole():
    rows = {f.key: f for f in figures(results())}
    assert rows["speech_captions.by_voice.en-029+m7.wer"].target == TARGETS["speech_captions.wer"]
    assert rows["qa_spoken.by_kind.count.accuracy"].target == TARGETS["qa_spoken.accuracy"]
    assert rows["caption_heldout.by_style.outlined.keyword_accuracy"].target == TARGETS[
        "caption_heldout.keyword_accuracy"]


def test_a_checkpoint_that_cannot_answer_questions_reports_them_not_available():
    unavailable = {"available": False, "reason": "no <|ask|> token"}
    old = results(**dict.fromkeys(QA_SETS, unavailable))
    table = format_table(old)
    assert "not available: no <|ask|> token" in table
    assert all(f.value is None and f.met is None for f in figures(old) if f.key.startswith("qa_"))
    card = _evaluation_section(old, {})
    assert "not measured (no <|ask|> token)" in card


def test_the_card_puts_in_and_out_of_distribution_side_by_side_and_asks_why_for_each_miss():
    missed = results(caption_heldout={**_caption(40.0, 81.5)}, speech_phrases_heldout=_speech(7.5))
    card = _evaluation_section(missed, {"caption_heldout.keyword_accuracy": "Outlines were rare in training."})
    row = next(line for line in card.splitlines() if line.startswith("| Captions: keyword accuracy"))
    assert "| 99.5 | 81.5 | ≥ 95 (out) | out **no** |" in row
    assert "held-out renderer: keyword accuracy, %**: 81.5 against ≥ 95, missed by 13.5." in card
    assert "**Why:** Outlines were rare in training." in card
    assert "held-out phrases: WER, %**: 7.5 against ≤ 5, missed by 2.5. Also missed: voice en-029+m7 7.5" in card
    assert f"**Why:** {NOT_EXPLAINED}" in card
    assert unexplained_misses(missed, {"caption_heldout.keyword_accuracy": "..."}) == ["speech_phrases_heldout.wer"]


def test_the_card_gives_question_accuracy_by_how_many_objects_the_picture_holds():
    typed = {**_questions(70.0, False), "by_objects": {"1": {"accuracy": 98.0, "n": 20},
                                                       "2": {"accuracy": 51.5, "n": 30}}}
    card = _evaluation_section(results(qa_typed=typed), {})
    table = card.split("### Questions by how many objects the picture holds, accuracy %", 1)[1]
    assert "| 1 | 98.0 |" in table and "| 2 | 51.5 |" in table
    assert "objects 2 51.5" in card  # a part that misses the typed questions' target, named under that miss


def test_the_table_and_card_say_how_often_answers_say_an_object_is_not_there_where_it_is_and_where_it_is_not():
    measured = results(qa_absent={**_questions(55.0, False), "said_absent": 61.0},
                       qa_absent_spoken={**_questions(35.0, False), "said_absent": 40.0},
                       qa_typed={**_questions(95.0, False), "said_absent": 1.5},
                       qa_heldout_typed={**_questions(92.0, False), "said_absent": 4.0})
    rows = {f.key: f for f in figures(measured)}
    assert rows["qa_absent.accuracy"].value == 55.0 and rows["qa_absent.accuracy"].target is None
    assert rows["qa_absent.said_absent"].value == 61.0 and rows["qa_typed.said_absent"].value == 1.5
    card = _evaluation_section(measured, {})
    assert "| Questions about an object not in the picture: says an object is not there, % |  | 61.0 |" in card
    assert "| Questions about an object not in the picture: says the one asked about is not there, % |  | 55.0 |" \
        in card
    assert "| Questions about an object not in the picture, spoken in held-out voices: says the one asked about is " \
           "not there, % |  | 35.0 |" in card
    assert "| Questions about objects in the picture: says one is not there, % | 1.5 | 4.0 |" in card
    older = _evaluation_section(results(), {})  # an evaluation from before these figures
    assert "| Questions about an object not in the picture: says the one asked about is not there, % |  | " \
           "not available |" in older
    assert "| Questions about objects in the picture: says one is not there, % |  |  |" in older


def test_big_shape_figures_show_when_measured_and_older_evaluations_still_make_a_table_and_card():
    older = results()
    assert "caption_heldout_big" not in older  # evaluations before v4.3 have no big-shape set
    assert "one big shape" not in format_table(older)
    assert "| Captions, one shape drawn big: keyword accuracy, % |  |  |  |  |" in _evaluation_section(older, {})
    newer = results(caption_heldout_big=_caption(30.0, 71.5))
    row = next(line for line in format_table(newer).splitlines() if "one big shape: keyword accuracy" in line)
    assert "71.5" in row
    card_row = "| Captions, one shape drawn big: keyword accuracy, % |  | 71.5 |  |  |"
    assert card_row in _evaluation_section(newer, {}), "reported beside the rest, with no target of its own"


def test_the_card_says_which_held_out_styles_the_training_renderer_draws_too(monkeypatch):
    from mmgpt.data import heldout, scenes

    card = _evaluation_section(results(), {})
    assert "measure coverage more than generalization" in card
    assert all(f'"{style}"' in card for style in heldout.EDGED_STYLES) and len(heldout.EDGED_STYLES) == 2
    monkeypatch.setattr(scenes, "EDGED_PROBABILITY", 0.0)
    assert "measure coverage more than generalization" not in _evaluation_section(results(), {})


def test_other_synthesizers_voices_are_reported_not_available_where_they_are_not_installed(monkeypatch):
    from mmgpt.data import speech
    from mmgpt.evaluate.speech import other_voice_scores

    monkeypatch.setattr(speech, "missing_synthesizers", lambda voices: ["text2wave"])
    sets = other_voice_scores(None, None, {"speech_captions_other_voices": ["a red circle"]}, 0, None, 8)
    reason = "text2wave not installed (`bash scripts/setup.sh --dev` installs them)"
    assert sets == {"speech_captions_other_voices": {"available": False, "reason": reason}}
    row = next(line for line in format_table(results(**sets)).splitlines() if "other synthesizers' voices" in line)
    assert "not available" in row and "≤ 5" in row
    assert f"not available: {reason}" in format_table(results(**sets))


def test_the_card_gives_other_synthesizers_voices_beside_espeak_ones_and_older_evaluations_still_make_a_card():
    card = _evaluation_section(results(speech_phrases_heldout_other_voices=_speech(64.5, OTHER_TEST_VOICES)), {})
    assert ("| Speech WER, other synthesizers' held-out voices: free-form phrases, % | 4.5 | 64.5 | ≤ 5 each | "
            "in yes, out **no** |") in card
    table = card.split("### Word error rate per held-out voice of another synthesizer, %", 1)[1].split("###")[0]
    assert all(f"| {voice} | 2.5 | 4.5 | 64.5 |" in table for voice in OTHER_TEST_VOICES)
    older = {k: v for k, v in results().items() if "other_voices" not in k}
    card = _evaluation_section(older, {})
    assert "voice of another synthesizer" not in card
    row = "| Questions, spoken in other synthesizers' held-out voices: accuracy, % | not available |  | ≥ 85 | – |"
    assert row in card
    assert "not measured (not in this evaluation, which predates it); target ≥ 85" in card


def test_a_card_with_every_target_met_says_so():
    assert "Every target is met." in _evaluation_section(results(), {})
    assert unexplained_misses(results(), {}) == []


def test_the_card_says_when_answers_first_say_what_the_model_sees():
    import dataclasses

    from mmgpt.ship import _data_section
    from mmgpt.train import TrainConfig

    asking = dataclasses.asdict(TrainConfig(ask_batch=32, max_turns=3))
    assert "so red" in _data_section({**asking, "describe_first": True})
    assert "so red" not in _data_section(asking)
    asking.pop("describe_first")
    assert "so red" not in _data_section(asking), "runs from before the setting answered straight away"


def test_the_card_says_when_relation_answers_first_say_what_decides_them():
    import dataclasses

    from mmgpt.ship import _data_section
    from mmgpt.train import TrainConfig

    asking = dataclasses.asdict(TrainConfig(ask_batch=32, max_turns=3))
    assert "you asked below, so no" in _data_section({**asking, "relation_reasoning": True})
    assert "you asked" not in _data_section(asking)


def test_the_card_says_which_questions_came_in_pairs_were_written_down_and_which_speech_was_clean_text_or_words():
    import dataclasses

    from mmgpt.ship import _data_section
    from mmgpt.train import TrainConfig

    plain = dataclasses.asdict(TrainConfig(ask_batch=32))
    card = _data_section({**plain, "paired_share": 0.4, "clean_speech_share": 0.3, "other_voice_share": 0.3,
                          "speech_text_share": 0.2,
                          "speech_word_share": 0.25, "speech_word_vocabulary": 3000,
                          "transcribe_spoken_questions": True, "swapped_recording_share": 0.3,
                          "absent_object_share": 0.15, "absent_relation_share": 0.25,
                          "spoken_absent_object_share": 0.2})
    assert "40% of the typed questions come in pairs" in card and "(30% with no noise)" in card
    assert "30% of it said instead by other synthesizers' voices" in card and "flite:rms" in card
    assert "20% of the training utterances are runs of 2 to 8 words of the training text" in card
    assert "25% of the training utterances are runs of 2 to 8 words drawn one by one" in card
    assert "the training text's 3000 most frequent words" in card
    assert "first writes the words it heard" in card
    assert "30% of the spoken questions are heard as another question's recording" in card
    assert "In 15% of the typed conversations about a scene (not the pairs), the last question names an object" in card
    assert "In 20% of the spoken conversations, the last question, spoken, names an object the picture" in card
    assert "25% of them are relation questions" in card
    settings = ("paired_share", "clean_speech_share", "other_voice_share", "speech_text_share", "speech_word_share",
                "transcribe_spoken_questions", "swapped_recording_share", "absent_object_share",
                "absent_relation_share", "spoken_absent_object_share")
    for before in (plain, {k: v for k, v in plain.items() if k not in settings}):
        card = _data_section(before)
        assert not any(said in card for said in ("in pairs", "no noise", "words of the training text", "instead by",
                                                 "drawn one by one", "first writes the words it heard",
                                                 "another question's recording", "does not hold",
                                                 "question, spoken", "relation questions"))


def test_the_card_says_which_shapes_the_captions_showed_more_often_only_for_a_run_that_did():
    import dataclasses

    from mmgpt.ship import _data_section
    from mmgpt.train import TrainConfig

    plain = dataclasses.asdict(TrainConfig())
    assert "50% of the captioned scenes are drawn again until they hold a star or a cross" in _data_section(
        {**plain, "focus_share": 0.5})
    assert "hold a star or a cross," in _data_section({**plain, "focus_share": 0.5, "focus_shapes": "star, cross"})
    assert "drawn again" not in _data_section(plain)
    assert "drawn again" not in _data_section({k: v for k, v in plain.items() if k != "focus_share"}), "older runs"


def test_the_card_counts_the_spoken_questions_only_for_a_run_that_heard_them():
    import dataclasses

    from mmgpt.ship import _data_section
    from mmgpt.train import TrainConfig

    heard = dataclasses.asdict(TrainConfig(speech_pool=3000, spoken_question_pool=1000, spoken_ask_batch=6))
    assert "3000 training utterances and 1000 spoken questions" in _data_section(heard)
    assert "spoken questions" not in _data_section({**heard, "spoken_ask_batch": 0})


def test_the_card_lists_the_sub_batches_of_the_tasks_a_run_trained():
    import dataclasses

    from mmgpt.ship import _training_section
    from mmgpt.train import TrainConfig

    every = dataclasses.asdict(TrainConfig(text_batch=6, ask_batch=96, spoken_ask_batch=16))
    assert "loss is the mean of the losses of 5 sub-batches: 6 text windows" in _training_section(every)
    weighted = _training_section({**every, "task_weights": "ask=4"})
    assert "the weighted mean of the losses of 5 sub-batches" in weighted
    assert "(weights `ask=4`, every other task 1)" in weighted
    for alone in ("ask", " ask"):
        card = _training_section({**every, "tasks": alone, "task_weights": "ask=4"})
        assert "Every step trains one sub-batch: 96 typed conversations about a picture." in card
        assert "text windows" not in card and "weights" not in card
    assert "of 2 sub-batches: 40 captioned pictures and 96 typed" in _training_section(
        {**every, "image_batch": 40, "tasks": "caption, ask"})
    assert "captions alone train it" in _training_section({**every, "questions_train_image": False})
    assert "image encoder" not in _training_section(every)
    every.pop("tasks")
    assert "5 sub-batches" in _training_section(every), "runs from before the setting trained every task"


def test_the_card_says_what_each_resume_changed_and_nothing_for_a_resume_that_changed_nothing():
    import dataclasses

    from mmgpt.ship import _resumes_section
    from mmgpt.train import TrainConfig

    first = dataclasses.asdict(TrainConfig(image_batch=12, task_weights="ask=6", max_minutes=180))
    second = {**first, "image_batch": 20, "task_weights": "ask=6,caption=2", "max_minutes": 110}
    state = {"config": first, "resumes": [{"step": 300, "config": second}, {"step": 900, "config": second}]}
    assert _resumes_section(state) == (" Resumed at step 300 with `max_minutes` 180 -> 110, `image_batch` 12 -> 20, "
                                       "`task_weights` 'ask=6' -> 'ask=6,caption=2'.")
    assert _resumes_section({"config": first, "resumes": [{"step": 5, "config": {**first, "out_dir": "x"}}]}) == ""
    assert _resumes_section({"config": first}) == "", "runs from before resumes were recorded"


# --- the same question about each of two objects ------------------------------------------------------------------


def _pair(kind: str, first: tuple[str, str], second: tuple[str, str]) -> tuple[Asked, Asked]:
    picture = Image.new("RGB", (64, 64))
    return tuple(Asked(picture, kind, f"what {kind} is the {name}?", answer, objects=2)
                 for name, answer in (first, second))


PAIRS = [_pair("colour", ("circle", "red"), ("square", "blue")), _pair("colour", ("star", "green"), ("cross", "pink")),
         _pair("shape", ("red one", "circle"), ("blue one", "star"))]


def test_answers_that_follow_the_object_named_are_both_right_and_differ():
    figures_ = pair_figures(PAIRS, [("Red.", "blue"), ("green", "pink"), ("circle", "star")], answer_is_right)
    assert (figures_["both_right"], figures_["answers_differ"], figures_["n"]) == (100.0, 100.0, 3)
    assert figures_["by_kind"]["shape"] == {"both_right": 100.0, "answers_differ": 100.0, "n": 1}
    assert figures_["mistakes"] == []


def test_answers_that_ignore_the_object_named_never_differ_and_are_never_both_right():
    blind = pair_figures(PAIRS, [("red", "red"), ("pink", "pink"), ("star", "Star.")], answer_is_right)
    assert (blind["both_right"], blind["answers_differ"]) == (0.0, 0.0)
    assert len(blind["mistakes"]) == 3 and blind["mistakes"][0][2:4] == ("red", "what colour is the square?")


def test_answers_that_differ_can_still_be_wrong():
    swapped = pair_figures(PAIRS[:2], [("blue", "red"), ("green", "yellow")], answer_is_right)
    assert (swapped["both_right"], swapped["answers_differ"]) == (0.0, 100.0)


def test_the_card_shows_the_same_question_about_two_objects_when_the_evaluation_has_it():
    paired = pair_figures(PAIRS, [("red", "red"), ("green", "pink"), ("circle", "star")], answer_is_right)
    card = _evaluation_section(results(qa_paired=paired), {})
    section = card.split("### The same question about each of two objects, %", 1)[1]
    assert "Both answers right: 66.7%; the two answers differ: 66.7%." in section
    assert "| colour | 50.0 | 50.0 |" in section and "| shape | 100.0 | 100.0 |" in section
    assert "the same one about each of two objects, kind colour: both answers right" in format_table(
        results(qa_paired=paired))
    assert "### The same question about each of two objects" not in _evaluation_section(results(), {})


def test_no_pairs_are_reported_not_available_rather_than_as_a_figure():
    from mmgpt.evaluate import paired_questions, paired_scores

    lone = [_scene("a large red circle", ("large", "red", "circle"))]
    assert paired_questions(lone, per_kind=5, seed=1) == []
    result = paired_scores(model=None, processor=None, pairs=[], batch=8, is_right=answer_is_right)
    assert result["available"] is False and "two objects" in result["reason"]
    assert "### The same question about each of two objects" not in _evaluation_section(results(qa_paired=result), {})


@pytest.mark.parametrize("writes_down", [False, True])
def test_spoken_questions_are_answered_as_the_app_asks_them_and_words_written_down_are_scored_apart(writes_down,
                                                                                                 tmp_path,
                                                                                                 monkeypatch):
    """A checkpoint that writes a spoken question down is asked for the words first, then answers them with the
    recording before them, as the app does; how well it heard is reported beside how well it answered."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoProcessor

    from mmgpt.evaluate import ANSWER_TOKENS, Asked, answer_scores, greedy_answers, greedy_texts, heard_questions
    from mmgpt.evaluate import questions  # where greedy_answers looks heard_questions up
    from mmgpt.model.testing import save_random_checkpoint

    directory = save_random_checkpoint(tmp_path)
    model, processor = AutoModelForCausalLM.from_pretrained(directory), AutoProcessor.from_pretrained(directory)
    processor.transcribes_spoken_questions = writes_down
    tone = (0.3 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    asked = [Asked(Image.new("RGB", (40, 40), colour), "colour", "what colour is it?", "red", tone, TEST_VOICES[0])
             for colour in ("red", "blue")]
    result = answer_scores(model, processor, asked, batch=2, is_right=lambda predicted, truth: False)
    heard = heard_questions(model, processor, asked, batch=2)
    if not writes_down:
        assert heard is None and "heard_wer" not in result
        return
    answers = greedy_texts(model, processor, [processor(images=[a.image for a in asked], text=heard,
                                                        audio=[tone, tone], sampling_rate=16000, task="ask")],
                           ANSWER_TOKENS)
    assert greedy_answers(model, processor, asked, batch=2) == (answers, heard)
    assert result["heard_wer"] > 0  # a random model's words are not the question's
    assert result["mistakes"][0] == ("colour", "what colour is it?", "red", answers[0], heard[0])
    monkeypatch.setattr(questions, "heard_questions", lambda *args: ["", heard[1]])  # nothing written for the first
    alone = greedy_texts(model, processor, [processor(images=[asked[1].image], text=[heard[1]], audio=[tone],
                                                      sampling_rate=16000, task="ask")], ANSWER_TOKENS)
    assert greedy_answers(model, processor, asked, batch=2) == (["", alone[0]], ["", heard[1]])  # no answer to none
