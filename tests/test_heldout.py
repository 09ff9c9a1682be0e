"""The held-out renderer and wording set (`mmgpt.data.heldout`): captions that follow the grammar and say what the
picture shows, pictures unlike the training renderer's and drawn without its code, and questions whose answers are
right."""

import inspect
import random
import re

import numpy as np
import pytest
from PIL import Image

from mmgpt.data import heldout, questions, scenes, speech
from mmgpt.data.heldout import (
    CELL_MARGIN, MIN_X_GAP, PALETTE, PLURALS, QUESTION_KINDS, draw_heldout_scene, heldout_drawings, heldout_phrases,
    heldout_question, heldout_questions, heldout_scene_dataset, pixel_box,
)
from mmgpt.data.scenes import (
    COLOURS, HELD_OUT_PAIRS, IMAGE_SIZE, POSITIONS, SHAPES, SIZES, Scene, SceneObject, cell_of, parse_caption,
)

N_DRAWINGS = 120


@pytest.fixture(scope="module")
def drawings():
    return heldout_drawings(N_DRAWINGS, seed=3)


def _distance(a, b) -> float:
    return float(heldout._redmean_distance(np.asarray(a, float), np.asarray(b, float)))


# --- captions ----------------------------------------------------------------------------------------------------


def test_captions_parse_and_name_the_objects_in_caption_order(drawings):
    for drawing in drawings:
        scene = drawing.scene
        parsed = parse_caption(scene.caption)
        assert parsed.objects == tuple((o.size, o.colour, o.shape) for o in scene.objects), scene.caption
        assert not {(o.colour, o.shape) for o in scene.objects} & HELD_OUT_PAIRS, "compositional pairs stay out"
        assert len(set(parsed.objects)) == len(parsed.objects), "no two objects share size, colour and shape"


def test_captions_say_where_objects_are_with_room_to_spare(drawings):
    cell = IMAGE_SIZE / 3
    for scene in (d.scene for d in drawings):
        parsed, objects = parse_caption(scene.caption), scene.objects
        if len(objects) == 1:
            x, y = objects[0].centre
            assert parsed.position == cell_of(x, y)
            assert min(min(v % cell, cell - v % cell) for v in (x, y)) >= CELL_MARGIN * IMAGE_SIZE - 1e-6
        elif len(objects) == 2:
            (ax, ay), (bx, by) = objects[0].centre, objects[1].centre
            along, across = (bx - ax, by - ay) if parsed.relation == "left of" else (by - ay, bx - ax)
            assert along > 0 and along >= 2 * abs(across), scene.caption
            # the picture itself, unsqueezed, agrees
            w, h = scene.image.size
            along_px = along * (w if parsed.relation == "left of" else h)
            across_px = abs(across) * (h if parsed.relation == "left of" else w)
            assert along_px >= 2 * across_px, scene.caption
        else:
            xs = [o.centre[0] for o in objects]
            assert all(b - a >= MIN_X_GAP * IMAGE_SIZE - 1e-6 for a, b in zip(xs, xs[1:])), scene.caption


def test_objects_stay_inside_the_picture_and_never_touch(drawings):
    for drawing in drawings:
        scene = drawing.scene
        width, height = scene.image.size
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 <= IMAGE_SIZE and 0 <= y0 < y1 <= IMAGE_SIZE
            assert x0 <= obj.centre[0] <= x1 and y0 <= obj.centre[1] <= y1
            px0, py0, px1, py1 = pixel_box(scene, obj)
            assert 0 <= px0 and px1 <= width and 0 <= py0 and py1 <= height
        masks = drawing.paint_masks
        assert all(m.shape == (height, width) and m.any() for m in masks)
        assert not any((masks[i] & masks[j]).any() for i in range(len(masks)) for j in range(i + 1, len(masks)))


def test_each_object_is_painted_in_its_named_colour_and_stands_out_from_the_page(drawings):
    names = tuple(PALETTE)
    for drawing in drawings:
        image = np.asarray(drawing.scene.image, dtype=np.float64)
        painted = np.logical_or.reduce(drawing.paint_masks)
        for obj, mask in zip(drawing.scene.objects, drawing.paint_masks):
            paint = np.median(image[mask], axis=0)
            nearest = min(names, key=lambda n: min(_distance(paint, hue) for hue in PALETTE[n]))
            assert nearest == obj.colour, (drawing.scene.caption, drawing.background, paint)
            x0, y0, x1, y1 = (int(round(v)) for v in pixel_box(drawing.scene, obj))
            pad = max(3, image.shape[1] // 20)
            around = np.zeros_like(mask)
            around[max(y0 - pad, 0):y1 + pad, max(x0 - pad, 0):x1 + pad] = True
            page = np.median(image[around & ~painted], axis=0)
            assert _distance(paint, page) >= 80, (drawing.scene.caption, drawing.background, paint, page)


def test_small_and_large_never_meet_for_any_shape(drawings):
    extents = {}  # (shape, size) -> longest side of the box as a share of sqrt(picture area)
    for scene in (d.scene for d in drawings):
        width, height = scene.image.size
        for obj in scene.objects:
            x0, y0, x1, y1 = pixel_box(scene, obj)
            extents.setdefault((obj.shape, obj.size), []).append(max(x1 - x0, y1 - y0) / np.sqrt(width * height))
    both = [shape for shape in SHAPES if (shape, "small") in extents and (shape, "large") in extents]
    assert len(both) >= len(SHAPES) // 2, f"too few shapes drawn in both sizes to compare: {sorted(extents)}"
    for shape in both:
        assert max(extents[shape, "small"]) < min(extents[shape, "large"]), shape


def test_big_drawings_hold_one_large_shape_bigger_than_any_held_out_scene_and_say_where_it_is():
    sides = []  # the box's longer side over sqrt(W * H), the measure SIZE_FRACTIONS are in
    for drawing in heldout_drawings(40, seed=3, big=True):
        scene = drawing.scene
        (obj,) = scene.objects
        parsed = parse_caption(scene.caption)
        assert parsed.objects == (("large", obj.colour, obj.shape),) and parsed.position == cell_of(*obj.centre)
        width, height = scene.image.size
        x0, y0, x1, y1 = pixel_box(scene, obj)
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height
        sides.append(max(x1 - x0, y1 - y0) / (width * height) ** 0.5)
        assert drawing.paint_masks[0].any()
    assert min(sides) > 0.8 * heldout.BIG_SIZE_FRACTION[0]
    assert np.median(sides) > heldout.SIZE_FRACTIONS["large"][1], "typically bigger than any held-out scene's shape"


def test_same_seed_same_scenes_other_seed_other_scenes():
    first, again, other = (heldout_scene_dataset(4, seed) for seed in (5, 5, 6))
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in again]
    assert [s.caption for s in first] == [s.caption for s in again]
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(first, other))


def test_pictures_vary_like_peoples_drawings(drawings):
    sizes = {d.scene.image.size for d in drawings}
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    assert min(widths) < 160 and max(widths) > 400 and min(heights) >= 80 and max(heights) <= 512
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    corners = [np.asarray(d.scene.image, np.float64)[:3, :3].mean() for d in drawings]
    assert sum(c > 235 for c in corners) >= 10, "white and off-white pages"
    assert sum(c < 60 for c in corners) >= 5, "dark pages"
    assert {d.background.split(",")[0] for d in drawings} == set(heldout.BACKGROUNDS)
    assert {s for d in drawings for s in d.styles} == set(heldout.STYLES)


def test_renderer_draws_without_the_training_renderers_code(monkeypatch):
    allowed = {"Scene", "SceneObject", "cell_of", "split_seed"}  # the grammar's types and definitions
    borrowed = {name for name, value in vars(heldout).items()
                if callable(value) and getattr(value, "__module__", None) == scenes.__name__}
    assert borrowed <= allowed, f"held-out renderer uses {sorted(borrowed - allowed)} from the training renderer"
    assert "scenes._" not in inspect.getsource(heldout)
    with monkeypatch.context() as patch:  # and it draws with every function of the training module broken
        for name, value in vars(scenes).items():
            if inspect.isfunction(value) and name not in allowed:
                patch.setattr(scenes, name, _broken(name))
        scene = draw_heldout_scene(random.Random(11)).scene
    assert parse_caption(scene.caption).objects


def _broken(name):
    def broken(*args, **kwargs):
        raise AssertionError(f"the held-out renderer called the training renderer's {name}")

    return broken


# --- questions ---------------------------------------------------------------------------------------------------


def _scene(*objects: tuple[str, str, str, float, float]) -> Scene:
    """A scene from (size, colour, shape, x, y) in frame pixels; the picture is blank: answers come from objects."""
    built = tuple(SceneObject(shape, colour, size, (x, y), (x - 4, y - 4, x + 4, y + 4))
                  for size, colour, shape, x, y in objects)
    return Scene(Image.new("RGB", (64, 64), "white"), "", built)


def _asked(scene: Scene, kind: str, times: int = 40):
    rng = random.Random(0)
    return [q for q in (heldout_question(scene, rng, kind) for _ in range(times)) if q is not None]


def test_a_red_circle_at_the_top_left_is_red_a_circle_large_one_and_at_the_top_left():
    scene = _scene(("large", "red", "circle", 10, 10))
    assert {q.answer for q in _asked(scene, "colour")} == {"red"}
    assert {q.answer for q in _asked(scene, "shape")} == {"circle"}
    assert {q.answer for q in _asked(scene, "size")} == {"large"}
    assert {q.answer for q in _asked(scene, "position")} == {"top left"}
    for q in _asked(scene, "colour"):
        assert "red" not in q.question.lower(), "a colour question never gives its answer away"


def test_counts_follow_what_the_question_counts():
    scene = _scene(("large", "red", "circle", 10, 30), ("small", "blue", "square", 32, 30),
                   ("small", "red", "star", 54, 30))
    seen = set()
    for q in _asked(scene, "count", times=80):
        words = re.findall(r"[a-z]+", q.question.lower())
        if colours := [w for w in words if w in COLOURS]:
            expected = sum(o.colour == colours[0] for o in scene.objects)
        elif shapes := [s for s in SHAPES if PLURALS[s] in words]:
            expected = sum(o.shape == shapes[0] for o in scene.objects)
        elif sizes := [w for w in words if w in SIZES]:
            expected = sum(o.size == sizes[0] for o in scene.objects)
        else:
            expected = 3
        assert q.answer == ("none", "one", "two", "three")[expected], q
        seen.add(q.answer)
    assert {"none", "one", "two", "three"} <= seen


def test_relations_are_answered_from_the_positions():
    scene = _scene(("large", "red", "circle", 10, 32), ("small", "blue", "square", 54, 32))  # side by side
    answers = set()
    for q in _asked(scene, "relation", times=60):
        text = q.question.lower()
        red_first = min(text.find(w) for w in ("red", "circle") if w in text) < \
            min(text.find(w) for w in ("blue", "square") if w in text)
        assert not re.search(r"higher|lower|over|underneath", text), "one row: only left and right are clear"
        asks_left = "left" in text
        assert q.answer == ("yes" if red_first == asks_left else "no"), q
        answers.add(q.answer)
    assert answers == {"yes", "no"}


def test_existence_checks_colour_and_shape_together():
    scene = _scene(("large", "red", "circle", 10, 32), ("small", "blue", "square", 54, 32))
    present = {("red", "circle"), ("blue", "square")}
    answers = set()
    for q in _asked(scene, "exists", times=60):
        words = re.findall(r"[a-z]+", q.question.lower())
        colour = next(w for w in words if w in COLOURS)
        shape = next(s for s in SHAPES if s in words or PLURALS[s] in words)
        assert q.answer == ("yes" if (colour, shape) in present else "no"), q
        answers.add(q.answer)
    assert answers == {"yes", "no"}


def test_no_question_when_the_answer_would_be_unclear():
    twins = _scene(("small", "red", "circle", 10, 32), ("small", "red", "square", 54, 32))
    assert _asked(twins, "shape") == [], "neither can be named without saying its shape"
    on_a_line = _scene(("small", "red", "circle", IMAGE_SIZE / 3 + 1, 10), ("large", "blue", "star", 50, 50))
    asked = _asked(on_a_line, "position")
    assert asked and all("red" not in q.question and "circle" not in q.question for q in asked), asked
    diagonal = _scene(("small", "red", "circle", 20, 20), ("large", "blue", "star", 30, 30))
    assert _asked(diagonal, "relation") == []


def test_every_kind_is_asked_with_answers_in_the_answer_vocabulary(drawings):
    pairs = heldout_questions([d.scene for d in drawings], per_kind=15, seed=0)
    vocabulary = {"colour": set(COLOURS), "shape": set(SHAPES), "size": set(SIZES),
                  "count": {"none", "one", "two", "three"}, "position": set(POSITIONS), "relation": {"yes", "no"},
                  "exists": {"yes", "no"}}
    assert [q.kind for _, q in pairs] == [k for k in QUESTION_KINDS for _ in range(15)]
    for _, q in pairs:
        assert q.answer in vocabulary[q.kind], q
        assert q.question[0].isupper() and q.question[-1] in "?.", q
    assert len({scene.caption for scene, _ in pairs}) > 40, "questions spread over many scenes"


NUMBER_WORDS = {"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}


def _frame(text: str) -> str:
    """A question or phrase with its object words and numbers replaced by their kind and articles dropped: its
    wording. "Is there a red circle?" -> "is there C S"."""
    placeholders = {**{c: "C" for c in COLOURS}, **{s: "S" for s in SHAPES}, **{z: "Z" for z in SIZES},
                    **{PLURALS[s]: "P" for s in SHAPES}, **{s + "s": "P" for s in SHAPES},
                    **{n: "N" for n in NUMBER_WORDS}}
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join("N" if w.isdigit() else placeholders.get(w, w) for w in words if w not in ("a", "an", "the", "one"))


def test_held_out_wording_is_not_the_training_wording(drawings):
    test_scenes = scenes.scene_dataset("test", 60, seed=1)
    rng = random.Random(0)
    training = set()
    for scene in test_scenes:
        for kind in QUESTION_KINDS:
            try:
                training.add(_frame(questions.ask_about(scene, rng, kind).question))
            except ValueError:  # this scene allows no question of this kind
                pass
    held_out = {_frame(q.question) for _, q in heldout_questions([d.scene for d in drawings], 30, seed=0)}
    assert not training & held_out, f"held-out questions worded as in training: {sorted(training & held_out)}"
    training_phrases = {_frame(speech.free_phrase(rng)) for _ in range(3000)}
    held_out_phrases = {_frame(p) for p in heldout_phrases(500, seed=0)}
    assert not training_phrases & held_out_phrases, sorted(training_phrases & held_out_phrases)


TRAINING_TEMPLATES = [*(t for ts in questions.TEMPLATES.values() for t in ts),
                      *(t for ts in questions.ABOUT_THE_ONLY_ONE.values() for t in ts), *questions.FOLLOW_UPS]
# Every held-out question template but the counts, whose {value} is a colour, a shape or a size by kind
HELD_OUT_TEMPLATES_BUT_COUNTS = [*heldout.COLOUR_QUESTIONS, *heldout.SHAPE_QUESTIONS, *heldout.SIZE_QUESTIONS,
                                 *heldout.POSITION_QUESTIONS, *heldout.EXISTS_QUESTIONS,
                                 *(q for qs in heldout.RELATION_QUESTIONS.values() for q in qs)]
HELD_OUT_COUNT_TEMPLATES = [q for qs in heldout.COUNT_QUESTIONS.values() for q in qs]


def _every_training_question() -> set[str]:
    """Each training phrasing once per relation wording and per way to name the things counted, synonyms included."""
    fills = dict(ref="red circle", a="red circle", b="blue star", colour="red", shape="circle", shapes="circles")
    things = ("shapes", "objects", "figures", "small shapes", "small objects", "big objects", "red figures", "circles")
    relations = [w for r in questions.RELATIONS.values() for w in r.wordings]
    return {t.format(**fills, relation=relation, things=counted) for t in TRAINING_TEMPLATES
            for relation in (relations if "{relation}" in t else [""])
            for counted in (things if "{things}" in t else [""])}


def _every_held_out_question() -> set[str]:
    fills = dict(ref="the red circle", Ref="The red circle", a="the red circle", b="the blue star", colour="red",
                 shape="circle", plural="circles", article="a")
    asked = {t.format(**fills) for t in HELD_OUT_TEMPLATES_BUT_COUNTS}
    values = {"all": "", "colour": "red", "shape": "circle", "size": "small"}
    return asked | {t.format(value=values[kind], plural="circles") for kind, qs in heldout.COUNT_QUESTIONS.items()
                    for t in qs}


def _holds(words: tuple[str, ...], run: tuple[str, ...]) -> bool:
    return any(words[i:i + len(run)] == run for i in range(len(words) - len(run) + 1))


def test_no_held_out_question_is_worded_as_a_training_question_or_holds_one():
    """Every phrasing, not a sample: "Count the small objects." was a training question once "objects" became a
    synonym of "shapes", and "In which colour is the star drawn?" held "which colour is the star" whole."""
    training = {tuple(_frame(q).split()) for q in _every_training_question()}
    held_out = {tuple(_frame(q).split()) for q in _every_held_out_question()}
    assert len(training) > 300 and len(held_out) > 30
    assert not training & held_out, sorted(training & held_out)
    held_whole = [(h, t) for h in held_out for t in training if len(t) >= 4 and _holds(h, t)]
    assert not held_whole, held_whole[:3]


# Everyday words that any wording of these questions needs; the held-out wording shares no other word with training.
SHARED_QUESTION_WORDS = {
    "any", "are", "big", "can", "color", "colour", "count", "do", "does", "have", "here", "how", "image", "in", "is",
    "large", "left", "many", "me", "number", "objects", "of", "on", "or", "part", "picture", "right", "say", "see",
    "shape", "shapes", "size", "small", "tell", "the", "there", "this", "to", "what", "where", "which", "would", "you",
}


def _words(templates) -> set[str]:
    """The words of `templates`, placeholders dropped with their possessive ("{ref}'s"), "what's" as one word."""
    return {w for t in templates for w in re.findall(r"[a-z]+(?:'[a-z]+)?", re.sub(r"\{\w+\}('s)?", " ", t.lower()))}


def test_training_questions_borrow_no_word_of_the_held_out_wording_but_everyday_ones():
    """The held-out questions measure wording never seen in training: not their frames (above), and not their words
    ("whereabouts", "underneath", "further left than") either, beyond the everyday words in SHARED_QUESTION_WORDS."""
    held_out = _words([*HELD_OUT_TEMPLATES_BUT_COUNTS, *HELD_OUT_COUNT_TEMPLATES])
    training = _words([*TRAINING_TEMPLATES, *(w for r in questions.RELATIONS.values() for w in r.wordings),
                       *(w for ws in questions.SYNONYMS.values() for w in ws)])
    assert {"underneath", "whereabouts", "further"} <= held_out - training
    assert held_out & training <= SHARED_QUESTION_WORDS, sorted(held_out & training - SHARED_QUESTION_WORDS)


def test_phrases_follow_the_transcript_convention():
    phrases = heldout_phrases(200, seed=0)
    assert all(re.fullmatch(r"[a-z0-9]+( [a-z0-9]+)*", p) for p in phrases)
    assert heldout_phrases(200, seed=0) == phrases and heldout_phrases(200, seed=1) != phrases
    assert sum(p.isdigit() for p in phrases) >= 5 and len(set(phrases)) > 150


def test_a_held_out_question_about_an_absent_object_names_none_of_the_picture_and_is_answered_so(drawings):
    """In this set's wording, the object named is not in the picture (no object has every attribute the name says,
    and the name never says what is asked); most names with two or more words fit a present object in one."""
    pairs = heldout.heldout_absent_questions([d.scene for d in drawings], per_kind=15, seed=0)
    assert [q.kind for _, q in pairs] == [k for k in questions.OBJECT_KINDS for _ in range(15)]
    values = {"colour": set(COLOURS), "shape": set(SHAPES), "size": set(SIZES)}
    near = 0
    for scene, q in pairs:
        name = q.answer.removeprefix("there is no ")
        assert q.answer == questions.absent_answer(name) and f"the {name}" in q.question.lower(), q
        said = {a: w for w in name.split() for a, ws in values.items() if w in ws}
        assert said and q.kind not in said, q
        assert not any(all(getattr(o, a) == w for a, w in said.items()) for o in scene.objects), (scene.caption, q)
        near += len(said) > 1 and any(getattr(o, a) == w for o in scene.objects for a, w in said.items())
        worded = {t.format(ref=f"the {name}", Ref=f"The {name}") for t in heldout.ONE_OBJECT_QUESTIONS[q.kind]}
        assert q.question in worded | {w[0].upper() + w[1:] for w in worded}, q
    assert near > 15, near
