"""Answers to questions about a picture (`mmgpt.data.questions`): a model may say what it sees before it answers,
and an answer is judged on what it answers, not on its description."""

import pytest

from mmgpt.data.questions import answer_is_right, described_answer, short_answer


def test_a_described_answer_says_what_is_seen_then_the_answer():
    assert described_answer("a large red circle at the top", "red") == "a large red circle at the top, so red"


@pytest.mark.parametrize("text, answer", [
    ("a small red circle, a large blue square and a small green star, so red", "red"),
    ("a large white square at the center, so at the center", "at the center"),
    ("i do not recognise this picture, so i do not know", "i do not know"),
    ("yes", "yes"),  # a model that answers straight away
    ("top left", "top left"),
])
def test_the_short_answer_is_what_follows_the_description(text, answer):
    assert short_answer(text).strip() == answer


@pytest.mark.parametrize("predicted, truth, right", [
    ("a small red circle left of a large blue square, so red", "red", True),
    ("A small red circle left of a large blue square, so Red.", "red", True),
    ("a large blue circle at the top left, so at the top left", "top left", True),
    ("a small green square, a large red star and a small blue circle, so 3", "three", True),
    # the right word in the description does not make a wrong answer right
    ("a small red circle left of a large blue square, so blue", "red", False),
    ("a large red circle at the top, so no", "yes", False),
    ("red", "red", True),
    ("red circle", "red", False),
])
def test_an_answer_is_judged_on_its_short_answer(predicted, truth, right):
    assert answer_is_right(predicted, truth) is right
