"""Questions about a picture (`mmgpt.data.questions`): a model may say what it sees before it answers, and an answer
is judged on what it answers, not on its description; the training questions keep their answers decidable from the
picture, whatever synonym or wording they use."""

import random
import re

import pytest

from mmgpt.data import questions, scenes
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




@pytest.fixture(scope="module")
def test_scenes():
    return scenes.scene_dataset("test", 150, seed=5)


def _asked(test_scenes, kind, per_scene=4):
    rng = random.Random(3)
    for scene in test_scenes:
        for _ in range(per_scene):
            try:
                yield scene, questions.ask_about(scene, rng, kind)
            except ValueError:  # this scene allows no question of this kind
                break


def test_questions_name_objects_in_everyday_synonyms_but_answers_keep_the_caption_words(test_scenes):
    asked = [qa for kind in questions.QUESTION_KINDS for _, qa in _asked(test_scenes, kind)]
    words = {w for qa in asked for w in re.findall(r"[a-z]+", qa.question)}
    assert {"big", "little", "objects", "large", "small", "shapes"} <= words
    assert not {"big", "little"} & {w for qa in asked for w in qa.answer.split()}
    assert {qa.answer for qa in asked if qa.kind == "size"} == {"small", "large"}


def test_questions_say_an_before_a_vowel(test_scenes):
    asked = [qa.question for _, qa in _asked(test_scenes, "exists", per_scene=8)]
    assert any(re.search(r"\ban orange\b", q) for q in asked)
    wrong = [q for q in asked if re.search(r"\ba [aeiou]", q)]
    assert not wrong, wrong


def test_a_count_of_one_size_counts_the_objects_of_that_size(test_scenes):
    size_of = {"small": "small", "little": "small", "large": "large", "big": "large"}
    checked = 0
    for scene, qa in _asked(test_scenes, "count", per_scene=8):
        named = [size_of[w] for w in qa.question.split() if w in size_of]
        if named:
            (size,) = named
            assert qa.answer == questions.COUNT_WORDS[sum(o.size == size for o in scene.objects)], qa
            checked += 1
    assert checked > 50


# What each wording means in English: (axis, whether the first object has the smaller coordinate); y grows downwards.
ENGLISH = {"left of": (0, True), "to the left of": (0, True), "on the left of": (0, True), "right of": (0, False),
           "to the right of": (0, False), "on the right of": (0, False), "above": (1, True), "below": (1, False),
           "beneath": (1, False), "under": (1, False)}


def test_every_wording_of_a_relation_is_answered_by_where_the_objects_are(test_scenes):
    """Two objects of different shapes are named by their shapes, so the question says which is which."""
    wordings = sorted((w for r in questions.RELATIONS.values() for w in r.wordings), key=len, reverse=True)
    assert set(wordings) <= set(ENGLISH), "a wording this test does not know the meaning of"
    seen = set()
    for scene, qa in _asked(test_scenes, "relation", per_scene=6):
        if len(scene.objects) != 2 or scene.objects[0].shape == scene.objects[1].shape:
            continue
        wording = next(w for w in wordings if f" {w} " in qa.question)
        before, after = qa.question.split(f" {wording} ")
        (a,) = [o for o in scene.objects if o.shape in before.split()]
        (b,) = [o for o in scene.objects if o.shape in re.findall(r"[a-z]+", after)]
        axis, first_smaller = ENGLISH[wording]
        assert qa.answer == ("yes" if (a.centre[axis] < b.centre[axis]) == first_smaller else "no"), (qa, scene)
        seen.add(wording)
    assert seen == set(wordings)


def test_the_reasoning_before_a_relation_answer_is_true_of_the_picture_and_decides_the_answer(test_scenes):
    """"the star above the circle, so the star is above the circle, so you asked below": the two in a caption's order,
    then how the question's first object lies to its second, then the relation asked; yes exactly when the last two
    relations written are the same."""
    def lies(scene, name_a: str, relation: str, name_b: str) -> bool:
        where = {questions.reference(obj, scene): obj.centre for obj in scene.objects}
        axis, first_smaller = ENGLISH[relation]
        return (where[name_a][axis] < where[name_b][axis]) == first_smaller

    asked = list(_asked(test_scenes, "relation", per_scene=3))
    assert len(asked) > 100
    for scene, qa in asked:
        order, layout, relation_asked = qa.reasoning.split(", so ")
        first, along, second = re.fullmatch(r"the (.+) (left of|above) the (.+)", order).groups()
        assert lies(scene, first, along, second), (qa, scene)
        name_a, holds, name_b = re.fullmatch(r"the (.+) is (left of|right of|above|below) the (.+)", layout).groups()
        assert lies(scene, name_a, holds, name_b) and {name_a, name_b} == {first, second}, (qa, scene)
        wording = relation_asked.removeprefix("you asked ")
        assert any(f" {said} the " in qa.question for said in questions.RELATIONS[wording].wordings), qa
        assert qa.answer == ("yes" if holds == wording else "no"), qa
    assert {qa.answer for _, qa in asked} == {"yes", "no"}
    assert all(qa.reasoning is None for kind in ("colour", "count", "exists") for _, qa in _asked(test_scenes, kind))


def test_the_only_object_in_a_picture_may_be_asked_about_as_it(test_scenes):
    pointing = {q for qs in questions.ABOUT_THE_ONLY_ONE.values() for q in qs}
    lone = [s for s in test_scenes if len(s.objects) == 1]
    asked = [(s, qa) for kind in questions.ABOUT_THE_ONLY_ONE for s, qa in _asked(lone, kind)]
    pointed = [(s, qa) for s, qa in asked if qa.question in pointing]
    assert 0 < len(pointed) < len(asked)
    for scene, qa in pointed:
        (obj,) = scene.objects
        truth = questions.cell_of(*obj.centre) if qa.kind == "position" else getattr(obj, qa.kind)
        assert qa.answer == truth, qa
    several = [s for s in test_scenes if len(s.objects) > 1]
    assert not any(qa.question in pointing for kind in questions.ABOUT_THE_ONLY_ONE for _, qa in _asked(several, kind))


def test_the_same_question_about_two_objects_differs_only_in_the_object_named_and_in_its_answer(test_scenes):
    rng = random.Random(4)
    for kind in questions.OBJECT_KINDS:
        pairs = [(s, questions.the_same_question_about_two(s, rng, kind)) for s in test_scenes if len(s.objects) > 1]
        pairs = [(s, pair) for s, pair in pairs if pair is not None]
        assert len(pairs) > 20, kind
        for scene, (first, second) in pairs:
            assert first.kind == second.kind == kind and first.answer != second.answer
            wordings = [re.escape(t).replace(re.escape("{ref}"), "(.+)") for t in questions.TEMPLATES[kind]]
            shared = [w for w in wordings if re.fullmatch(w, first.question) and re.fullmatch(w, second.question)]
            assert shared, f"one wording for both: {first.question!r}, {second.question!r}"
            truths = {questions.cell_of(*o.centre) if kind == "position" else getattr(o, kind) for o in scene.objects}
            assert {first.answer, second.answer} <= truths


def test_the_same_question_about_two_needs_two_objects_with_different_answers(test_scenes):
    rng = random.Random(4)
    lone = next(s for s in test_scenes if len(s.objects) == 1)
    assert questions.the_same_question_about_two(lone, rng, "colour") is None
    alike = next((s for s in test_scenes if len(s.objects) > 1 and len({o.size for o in s.objects}) == 1), None)
    assert alike is not None and questions.the_same_question_about_two(alike, rng, "size") is None
    with pytest.raises(ValueError, match="not about one object"):
        questions.the_same_question_about_two(lone, rng, "count")


def test_a_named_answer_follows_the_words_that_name_its_object_in_the_question(test_scenes):
    """The warm-up answer ("big circle red") copies the question's own name for the object, then answers; the only
    object asked about as "it" is named by its shortest name; questions about no one object (counts, relations, "is
    there") keep their plain answers."""
    asked = [(scene, qa) for kind in questions.QUESTION_KINDS for scene, qa in _asked(test_scenes, kind)]
    pointing = {q for qs in questions.ABOUT_THE_ONLY_ONE.values() for q in qs}
    named_in_question = [qa for _, qa in asked if qa.subject and qa.question not in pointing]
    assert {qa.kind for qa in named_in_question} == set(questions.OBJECT_KINDS)
    for qa in named_in_question:
        assert re.search(rf"\b{re.escape(qa.subject)}\b", qa.question), qa
        assert questions.named_answer(qa) == f"{qa.subject} {qa.answer}"
    pointed = [(scene, qa) for scene, qa in asked if qa.question in pointing]
    assert pointed
    for scene, qa in pointed:
        (obj,) = scene.objects
        assert qa.subject == questions.reference(obj, scene, without=questions.ATTRIBUTE_OF_KIND.get(qa.kind)), qa
    for _, qa in asked:
        if qa.kind not in questions.OBJECT_KINDS:
            assert qa.subject is None and questions.named_answer(qa) == qa.answer, qa


def test_a_question_about_an_object_the_picture_does_not_hold_is_answered_that_it_is_not_there(test_scenes):
    """The object named matches no object of the picture in every attribute the name says, and never says the
    attribute asked for; its name is a present object's name with one word changed, so that absent objects are named
    in the form and length present ones are. The answer names it as the question does."""
    rng = random.Random(5)
    values = {"shape": set(scenes.SHAPES), "colour": set(scenes.COLOURS), "size": set(scenes.SIZES)}
    one_word_changed = 0
    for scene in test_scenes:
        for kind in questions.OBJECT_KINDS:
            qa = questions.absent_object_question(scene, rng, kind)
            name = qa.answer.removeprefix("there is no ")
            assert qa.kind == kind and qa.answer == f"there is no {name}"
            said = {attribute: word for word in name.split() for attribute, words in values.items() if word in words}
            assert said and questions.ATTRIBUTE_OF_KIND.get(kind) not in said, qa
            assert not any(all(getattr(o, a) == w for a, w in said.items()) for o in scene.objects), (scene.caption, qa)
            present = [questions.reference(o, scene, without=questions.ATTRIBUTE_OF_KIND.get(kind))
                       for o in scene.objects]
            one_word_changed += any(ref and len(ref.split()) == len(name.split()) and
                                    sum(a != b for a, b in zip(ref.split(), name.split())) == 1 for ref in present)
            assert re.search(rf"\b{re.escape(qa.subject)}\b", qa.question), qa
    assert one_word_changed > 0.95 * 4 * len(test_scenes), one_word_changed
    with pytest.raises(ValueError, match="not about one object"):
        questions.absent_object_question(test_scenes[0], rng, "count")


def test_a_relation_question_about_an_object_the_picture_does_not_hold_is_answered_that_it_is_not_there(test_scenes):
    """One of the two objects named is in the picture, the other matches none of its objects, and the answer names the
    missing one; a scene of one object allows no such question."""
    rng = random.Random(6)
    values = {"shape": set(scenes.SHAPES), "colour": set(scenes.COLOURS), "size": set(scenes.SIZES)}
    asked = 0
    for scene in test_scenes:
        qa = questions.absent_relation_question(scene, rng)
        if len(scene.objects) == 1:
            assert qa is None
        if qa is None:
            continue
        asked += 1
        name = qa.answer.removeprefix("there is no ")
        assert qa.kind == "relation" and qa.answer == f"there is no {name}", qa
        said = {attribute: word for word in name.split() for attribute, words in values.items() if word in words}
        assert said and not any(all(getattr(o, a) == w for a, w in said.items()) for o in scene.objects), qa
        canonical = " ".join({said: word for word, saids in questions.SYNONYMS.items() for said in saids}.get(w, w)
                             for w in qa.question.replace("?", "").split())  # "big" back to "large"
        present = [ref for o in scene.objects if (ref := questions.reference(o, scene))]
        assert any(re.search(rf"\b{re.escape(ref)}\b", canonical) for ref in present), (scene.caption, qa)
    assert asked > 0.4 * len(test_scenes), asked


@pytest.mark.parametrize("predicted, absent", [("there is no star", True), ("There is no red one.", True),
                                               ("a red circle, so there is no star", True), ("red", False),
                                               ("There's no star.", True), ("no", False),
                                               ("there is a star", False), ("there is nothing", False)])
def test_an_answer_says_the_object_is_not_there_whatever_it_names(predicted, absent):
    assert questions.says_absent(predicted) is absent
