"""Questions about a scene, with short answers decidable from the picture alone; and follow-up conversations.

Kinds and their answers:
    colour    "what colour is the circle?"             -> "red"
    shape     "what shape is the red one?"             -> "circle"
    size      "is the red circle small or large?"      -> "large"
    count     "how many shapes are there?"              -> "none", "one", "two" or "three"
    position  "where is the red circle?"               -> "top left" (the 3x3 cell of its centre)
    relation  "is the red circle left of the star?"    -> "yes" or "no"
    exists    "is there a green square?"               -> "yes" or "no"
A colour, shape, size or position question may name an object that the picture does not hold: "what colour is
the star?" with no star -> "there is no star" (`absent_object_question`).
An object is named by the fewest of shape, colour and size that pick it out alone ("the circle", "the red one",
"the small red circle"). A follow-up ("and the star?") repeats the previous question's kind about another object,
so it can only be answered by reading the earlier turn.

A model may say what it sees before it answers, "a small red circle left of a large blue square, so red"
(`described_answer`); `short_answer` takes the answer back out, and answers are judged on it alone.

These are the training phrasings (the only object in a picture may be "it", "this" or "that"), with everyday
synonyms for the names in a question ("the big circle", "how many objects"): two to three dozen per kind, since a
model that knew ten per kind wrote new wording down as the nearest training question. They vary sentence structure
as well as words ("the {ref}, what colour is it?", "i wonder where the {ref} is", "quick question, ..."): a model
that had only ever seen questions open with "what" or "where" took a held-out "Is a red star anywhere in the
picture?" for a position question. Evaluation also asks in wording of its own (`mmgpt.data.heldout`): none of it is,
or holds, a training question, and it shares only everyday words with these.
"""

import random
import re
from dataclasses import dataclass
from typing import NamedTuple

from .scenes import (
    CELL_PIXELS, COLOURS, GRID_CELLS, HELD_OUT_PAIRS, SHAPES, SIZES, Scene, SceneObject, cell_of,
)

QUESTION_KINDS = ("colour", "shape", "size", "count", "position", "relation", "exists")
COUNT_WORDS = ("none", "one", "two", "three")
UNRECOGNISED_ANSWER = "i do not know"  # the answer to any question about a picture that is not a scene
CLEAR_CELL_PIXELS = 2.0  # ask where an object is only when its centre is this far inside its cell
CLEAR_RELATION_PIXELS = 8.0  # ask "is A left of B" only when their centres differ this much along that axis
ANSWER_AFTER = ", so "  # between the description of the picture and the answer; no caption or answer says "so"
FOLLOW_UP_PROBABILITY = 0.5  # in a conversation, the chance that a later turn is a follow-up of the one before

TEMPLATES = {
    "colour": ("what colour is the {ref}?", "what color is the {ref}?", "which colour is the {ref}?",
               "the {ref} is what colour?", "tell me the colour of the {ref}", "what is the colour of the {ref}?",
               "can you tell me the colour of the {ref}?", "what colour would you say the {ref} is?",
               "colour of the {ref}?", "the {ref}, what colour is it?",
               "what's the colour of the {ref}?", "tell me what colour the {ref} is",
               "do you know what colour the {ref} is?",
               "what colour is the {ref} in this image?", "how is the {ref} coloured?", "what is the {ref}'s colour?",
               "i would like to know the colour of the {ref}", "what color is the {ref} here?",
               "please tell me the colour of the {ref}", "what colour does the {ref} look?",
               "the {ref} looks what colour?", "what is the color of the {ref}?", "which color is the {ref}?",
               "what colour do you see on the {ref}?",
               "i wonder what colour the {ref} is", "could you let me know the {ref}'s colour?",
               "looking at the {ref}, which colour do you notice?", "quick question, the {ref} is which colour?",
               "which colour was used for the {ref}?", "the {ref}'s colour, please?",
               "if you look at the {ref}, what's its colour?"),
    "shape": ("what shape is the {ref}?", "what is the {ref}?", "which shape is the {ref}?",
              "what kind of shape is the {ref}?", "what is the shape of the {ref}?", "the {ref} is what shape?",
              "what sort of shape is the {ref}?", "can you tell me the shape of the {ref}?",
              "what is the {ref} shaped like?",
              "what's the {ref}?", "what's the shape of the {ref}?", "tell me what the {ref} is",
              "which kind of shape is the {ref}?", "what shape would you say the {ref} is?",
              "what is the {ref} exactly?", "do you know what shape the {ref} is?",
              "what shape is the {ref} in this image?", "the {ref} looks like what shape?",
              "please tell me the shape of the {ref}", "what figure is the {ref}?", "the {ref}, what shape is it?",
              "what does the {ref} look like?", "i would like to know the shape of the {ref}",
              "i wonder what shape the {ref} is", "looking at the {ref}, which shape is it?",
              "quick question, the {ref} is shaped how?", "hey, what sort of figure is the {ref}?",
              "say which shape the {ref} takes", "the {ref}'s shape, please?", "in terms of shape, the {ref} is what?",
              "which shape was used for the {ref}?"),
    "size": ("is the {ref} small or large?", "how big is the {ref}?", "is the {ref} large or small?",
             "what size is the {ref}?", "how large is the {ref}?", "what is the size of the {ref}?",
             "is the {ref} a small one or a large one?", "the {ref} is what size?",
             "what's the size of the {ref}?", "tell me how big the {ref} is", "does the {ref} look small or large?",
             "how large would you say the {ref} is?", "would you say the {ref} is small or large?",
             "is the {ref} small or is it large?", "do you know how big the {ref} is?",
             "how big does the {ref} look?", "how big is the {ref} in the picture?", "small or large, the {ref}?",
             "is the {ref} one of the small ones or the large ones?",
             "i wonder how big the {ref} is", "could you let me know if the {ref} is small or large?",
             "looking at the {ref}, is it big or little?", "quick question, small or big, which is the {ref}?",
             "hey, the {ref}, big or small?", "state whether the {ref} is small or large", "the {ref}'s size, please?",
             "how would you describe the {ref}'s size?", "the {ref} seems big or small to you?"),
    "count": ("how many {things} are there?", "how many {things} can you see?", "count the {things}",
              "how many {things} are in the picture?", "how many {things} do you see?",
              "how many {things} are there in the image?", "can you count the {things}?", "number of {things}?",
              "tell me how many {things} there are",
              "how many {things} does the picture show?", "how many {things} are shown?",
              "how many {things} are visible?", "how many {things} can i see?",
              "how many {things} appear in the image?", "do you know how many {things} there are?",
              "how many {things} are in this image?", "please count the {things}", "how many {things} are here?",
              "how many {things} does this image have?", "how many {things} would you say there are?",
              "the {things}, how many are there?", "i wonder how many {things} there are",
              "looking at the picture, what's the count of {things}?", "quick question, {things}, how many?",
              "state the total of {things} in the picture", "what number of {things} is shown?"),
    "position": ("where is the {ref}?", "where is the {ref} in the picture?", "in which part is the {ref}?",
                 "where can you see the {ref}?", "where is the {ref} located?",
                 "what is the position of the {ref}?", "where is the {ref} placed?",
                 "where's the {ref}?", "where does the {ref} appear?", "where would you find the {ref}?",
                 "tell me where the {ref} is", "where exactly is the {ref}?",
                 "in which area of the image is the {ref}?", "where is the {ref} in this image?",
                 "do you know where the {ref} is?", "where is the {ref} found?", "where does the {ref} lie?",
                 "can you tell me where the {ref} is?", "where is the {ref} shown?",
                 "the {ref} is where?", "could you let me know the {ref}'s position?",
                 "quick question, in what part of the picture is the {ref}?", "state the position of the {ref}, please",
                 "the {ref}'s location, please?"),
    "relation": ("is the {a} {relation} the {b}?", "is the {a} {relation} the {b} in the picture?",
                 "is the {a} placed {relation} the {b}?", "would you say the {a} is {relation} the {b}?",
                 "does the {a} lie {relation} the {b}?", "is the {a} located {relation} the {b}?",
                 "is the {a} found {relation} the {b}?", "tell me if the {a} is {relation} the {b}",
                 "is it true that the {a} is {relation} the {b}?", "the {a} is {relation} the {b}, isn't it?",
                 "do you see the {a} {relation} the {b}?", "does the {a} appear {relation} the {b}?",
                 "is the {a} positioned {relation} the {b}?", "can you tell me if the {a} is {relation} the {b}?",
                 "check whether the {a} is {relation} the {b}", "i wonder if the {a} is {relation} the {b}",
                 "could you let me know whether the {a} is {relation} the {b}?",
                 "true or false, the {a} is {relation} the {b}", "am i right that the {a} is {relation} the {b}?",
                 "the {a} lies {relation} the {b}, doesn't it?", "is the {a} {relation} the {b} or not?"),
    "exists": ("is there a {colour} {shape}?", "can you see a {colour} {shape}?", "is there a {colour} {shape} in "
               "the picture?", "do you see a {colour} {shape}?", "is there any {colour} {shape}?",
               "does the picture have a {colour} {shape}?", "is there a {colour} {shape} here?",
               "is a {colour} {shape} present?", "does the image show a {colour} {shape}?",
               "do we have a {colour} {shape}?", "are there any {colour} {shapes}?", "is a {colour} {shape} shown?",
               "does a {colour} {shape} appear?", "any {colour} {shape} in the picture?",
               "can i see a {colour} {shape} here?", "is there a {colour} {shape} in this image?",
               "do you notice a {colour} {shape}?", "are there {colour} {shapes} in the image?",
               "a {colour} {shape}, is there one?", "check for a {colour} {shape}, please",
               "i wonder if there's a {colour} {shape}", "could you let me know if a {colour} {shape} is there?",
               "looking at the picture, can a {colour} {shape} be found?",
               "quick question, any {colour} {shapes} at all?", "tell me whether a {colour} {shape} exists here",
               "the picture includes a {colour} {shape}, yes or no?"),
}
# About the only object in a picture, people point rather than name: "what colour is it?"
ABOUT_THE_ONLY_ONE = {
    "colour": ("what colour is it?", "what color is it?", "what colour is this?", "what colour is this shape?",
               "which colour is it?", "what's its colour?", "what colour is that?", "which color is it?"),
    "shape": ("what shape is it?", "what shape is this?", "what is this?", "what is it?", "what is this shape?",
              "what's this?", "what shape is that?", "what is that?"),
    "size": ("is it small or large?", "how big is it?", "is this shape small or large?", "what size is it?",
             "how big is this?", "is that small or large?"),
    "position": ("where is it?", "where is the shape?", "where is this shape?", "where's the shape?",
                 "where is that shape?"),
}
ABOUT_THE_ONLY_ONE_PROBABILITY = 0.3
FOLLOW_UPS = ("and the {ref}?", "what about the {ref}?", "and the {ref}", "how about the {ref}?",
              "and what about the {ref}?", "and how about the {ref}?", "the {ref}?", "same for the {ref}?",
              "and for the {ref}?", "now the {ref}?")


class Relation(NamedTuple):
    """What "A <relation> B" means: along `axis` (0: x, 1: y, which grows downwards), A's centre has the smaller
    coordinate when `first_smaller`; `wordings` are the ways people say it."""

    axis: int
    first_smaller: bool
    wordings: tuple[str, ...]


RELATIONS = {
    "left of": Relation(0, True, ("left of", "to the left of", "on the left of")),
    "right of": Relation(0, False, ("right of", "to the right of", "on the right of")),
    "above": Relation(1, True, ("above",)),
    "below": Relation(1, False, ("below", "beneath", "under")),
}
# Words a question may use for the names that captions and answers use: "the big circle", "how many objects".
# Only names inside a question change; answers keep the caption's words ("large"), so one answer fits both.
SYNONYMS = {"large": ("large", "big"), "small": ("small", "little"), "shapes": ("shapes", "objects", "figures")}


def _in_other_words(name: str, rng: random.Random) -> str:
    """`name` ("large red circle", "small shapes") with each word that has synonyms said in one of them."""
    return " ".join(rng.choice(SYNONYMS.get(word, (word,))) for word in name.split())


def plural(noun: str) -> str:
    """"circle" -> "circles", "cross" -> "crosses" (mmgpt-tiny v4 was trained before this, on "crosss")."""
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def with_articles(text: str) -> str:
    """"a orange star" -> "an orange star": templates write "a {colour}", and one colour begins with a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


@dataclass(frozen=True)
class QA:
    kind: str  # one of QUESTION_KINDS
    question: str
    answer: str
    subject: str | None = None  # the words that name the object asked about ("big circle"); None: no one object
    reasoning: str | None = None  # what decides the answer, step by step (`relation_reasoning`); None: nothing to say


def named_answer(qa: QA) -> str:
    """The answer written after the name of the object asked about, "circle red" (for "it", the object's shortest
    name: "red one circle"), or the answer alone when the question is about no one object. For ablations, not an
    answer to show: written right after the model has written the object's name, the answer is predicted where
    that name is in context; on colour questions about objects named by shape it was learned faster than the plain
    answer (`scripts/ablate_questions.py`)."""
    return f"{qa.subject} {qa.answer}" if qa.subject else qa.answer


ATTRIBUTE_OF_KIND = {"colour": "colour", "shape": "shape", "size": "size"}  # what the answer names
_REFERENCE_WORDS = (  # candidate names, shortest first
    ("shape",), ("colour", "one"), ("size", "one"), ("colour", "shape"), ("size", "shape"), ("size", "colour", "one"),
    ("size", "colour", "shape"),
)


def reference(obj: SceneObject, scene: Scene, without: str | None = None) -> str | None:
    """The shortest name that picks `obj` out of `scene` ("circle", "red one", "small red circle"), never using the
    attribute `without` ("colour", "shape" or "size"), which the question asks for; None if there is none."""
    words = _reference_words(obj, scene, without)
    return None if words is None else _name(words, {w: getattr(obj, w) for w in words if w != "one"})


def _name(words: tuple[str, ...], values: dict[str, str]) -> str:
    """An entry of `_REFERENCE_WORDS` said with `values` for its attributes: ("colour", "one") -> "red one"."""
    return " ".join([values[w] for w in words if w != "one"] + (["one"] if words[-1] == "one" else []))


def _reference_words(obj: SceneObject, scene: Scene, without: str | None) -> tuple[str, ...] | None:
    """What `reference` names `obj` by: an entry of `_REFERENCE_WORDS` ("colour", "one"); None if none picks it."""
    others = [o for o in scene.objects if o is not obj]
    for words in _REFERENCE_WORDS:
        if without in words:
            continue
        attributes = [getattr(obj, w) for w in words if w != "one"]
        if not any(all(a in (o.shape, o.colour, o.size) for a in attributes) for o in others):
            return words
    return None


def _clear_position(obj: SceneObject) -> bool:
    """Whether the object's centre is clearly inside one grid cell (not on a line between two)."""
    borders = [CELL_PIXELS * k for k in range(1, GRID_CELLS)]
    return all(min(abs(v - b) for b in borders) >= CLEAR_CELL_PIXELS for v in obj.centre)


def _about_object(kind: str, obj: SceneObject, scene: Scene, rng: random.Random,
                  templates: tuple[str, ...] | None = None) -> QA | None:
    """A colour, shape, size or position question about `obj`, or None when the scene does not allow it."""
    ref = reference(obj, scene, without=ATTRIBUTE_OF_KIND.get(kind))
    if ref is None or (kind == "position" and len(scene.objects) > 1 and not _clear_position(obj)):
        return None
    answer = cell_of(*obj.centre) if kind == "position" else getattr(obj, ATTRIBUTE_OF_KIND[kind])
    if len(scene.objects) == 1 and templates is None and rng.random() < ABOUT_THE_ONLY_ONE_PROBABILITY:
        return QA(kind, rng.choice(ABOUT_THE_ONLY_ONE[kind]), answer, subject=ref)
    template = rng.choice(templates or TEMPLATES[kind])
    said = _in_other_words(ref, rng)
    return QA(kind, template.format(ref=said), answer, subject=said)


def _count(scene: Scene, rng: random.Random) -> QA:
    choice = rng.random()
    if choice < 0.35:
        things, n = "shapes", len(scene.objects)
    elif choice < 0.6:
        shape = rng.choice([o.shape for o in scene.objects] + list(SHAPES))
        things, n = plural(shape), sum(o.shape == shape for o in scene.objects)
    elif choice < 0.85:
        colour = rng.choice([o.colour for o in scene.objects] + list(COLOURS))
        things, n = f"{colour} shapes", sum(o.colour == colour for o in scene.objects)
    else:
        size = rng.choice([o.size for o in scene.objects] + list(SIZES))
        things, n = f"{size} shapes", sum(o.size == size for o in scene.objects)
    return QA("count", rng.choice(TEMPLATES["count"]).format(things=_in_other_words(things, rng)), COUNT_WORDS[n])


def _exists_question(colour: str, shape: str, rng: random.Random) -> str:
    """"is there a red circle?", "is there an orange star?", or in the plural, "are there any red circles?"."""
    question = rng.choice(TEMPLATES["exists"]).format(colour=colour, shape=shape, shapes=plural(shape))
    return with_articles(question)


def _exists(scene: Scene, rng: random.Random) -> QA:
    present = {(o.colour, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:  # absent: often a near miss (the right colour or the right shape), so both words must be checked
        candidates = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present and (c, s) not in
                      HELD_OUT_PAIRS and any(c == pc or s == ps for pc, ps in present)]
        colour, shape = rng.choice(candidates)
    answer = "yes" if (colour, shape) in present else "no"
    return QA("exists", _exists_question(colour, shape, rng), answer)


def absent_object_question(scene: Scene, rng: random.Random, kind: str | None = None) -> QA:
    """A question of `kind` (an `OBJECT_KINDS` kind; None: any) about an object that `scene` does not hold, "what
    colour is the star?" with no star, answered "there is no star". The name is a present object's (`reference`)
    with one word changed, "the blue circle" beside a red circle: a near miss in the very form present objects are
    named in, so that neither the name's form nor its length tells that the object is absent; only the picture does.
    Without such questions mmgpt-tiny v4.39 named a colour for an object that was not there, sure of it (mean token
    probability 1.00)."""
    kind = kind or rng.choice(OBJECT_KINDS)
    if kind not in OBJECT_KINDS:
        raise ValueError(f"{kind!r} questions are not about one object; expected one of {OBJECT_KINDS}")
    return _about_absent(kind, _absent_name(scene, rng, without=ATTRIBUTE_OF_KIND.get(kind)), rng)


def absent_relation_question(scene: Scene, rng: random.Random) -> QA | None:
    """A relation question one of whose two objects `scene` does not hold, "is the blue circle left of the star?"
    beside a red circle, answered "there is no blue circle"; None where the scene allows no relation question. The
    other object is there. mmgpt-tiny v4.47, taught absent objects in questions about one object only, said "there is
    no ..." about present objects mostly in relation questions in unfamiliar wording."""
    drawn = relation_between_two(scene, rng)
    if drawn is None:
        return None
    ref_a, ref_b, relation, _ = drawn
    missing = _absent_name(scene, rng, without=None)
    ref_a, ref_b = (missing, ref_b) if rng.random() < 0.5 else (ref_a, missing)
    return QA("relation", _relation_question(ref_a, ref_b, relation, rng), absent_answer(missing))


def _absent_name(scene: Scene, rng: random.Random, without: str | None) -> str:
    """The name of an object `scene` does not hold, never saying the attribute `without`: a present object's name
    with one word changed where one has a word to change (`absent_object_question`)."""
    values = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES)}
    for _ in range(100):
        obj = rng.choice(scene.objects)
        words = _reference_words(obj, scene, without=without)
        if words is None:
            continue
        attributes = {word: getattr(obj, word) for word in words if word != "one"}
        changed = rng.choice(tuple(attributes))
        attributes[changed] = rng.choice([v for v in values[changed] if v != attributes[changed]])
        held_out = (attributes.get("colour"), attributes.get("shape")) in HELD_OUT_PAIRS
        if held_out or any(all(getattr(o, a) == v for a, v in attributes.items()) for o in scene.objects):
            continue
        return _name(words, attributes)
    # No present object's name has a word to change ("the large one" among three crosses, one large): a shape or
    # colour the picture lacks
    words = rng.choice([w for w in (("shape",), ("colour", "one")) if without not in w])
    missing = [v for v in values[words[0]] if all(getattr(o, words[0]) != v for o in scene.objects)]
    return _name(words, {words[0]: rng.choice(missing)})


def _about_absent(kind: str, name: str, rng: random.Random) -> QA:
    said = _in_other_words(name, rng)
    return QA(kind, rng.choice(TEMPLATES[kind]).format(ref=said), absent_answer(name), subject=said)


def absent_answer(name: str) -> str:
    """The answer to a question about an object that is not there: "star" -> "there is no star"."""
    return f"there is no {name}"


def says_absent(predicted: str) -> bool:
    """Whether an answer says that an object is not there ("there is no ...", "there's no ..."), whatever it names."""
    words = normalize_answer(predicted).split()
    return words[:2] == ["there", "no"] or words[:3] == ["there", "s", "no"]


def relation_between_two(scene: Scene, rng: random.Random) -> tuple[str, str, Relation, str] | None:
    """Two objects of `scene` by name, a relation, and whether the first stands in it to the second ("yes"/"no");
    None when the scene has one object, a name is ambiguous, or the centres are too close to tell."""
    if len(scene.objects) < 2:
        return None
    a, b = rng.sample(scene.objects, 2)
    ref_a, ref_b = reference(a, scene), reference(b, scene)
    relation = RELATIONS[rng.choice(tuple(RELATIONS))]
    gap = b.centre[relation.axis] - a.centre[relation.axis]
    if ref_a is None or ref_b is None or abs(gap) < CLEAR_RELATION_PIXELS:
        return None
    return ref_a, ref_b, relation, "yes" if (gap > 0) == relation.first_smaller else "no"


def first_comes_first(relation: Relation, answer: str) -> bool:
    """Whether the first object a relation question names lies left of (axis 0) or above (axis 1) the second one."""
    return relation.first_smaller == (answer == "yes")


def caption_order_clause(name_a: str, name_b: str, relation: Relation, answer: str) -> str:
    """The two objects in the order and words a caption of two objects uses, the one on the left (or top) first:
    ("star", "circle", right of, "no") -> "the star left of the circle". Which to name first is what the model
    decides when it captions two objects, and it captions them right."""
    first, second = (name_a, name_b) if first_comes_first(relation, answer) else (name_b, name_a)
    return f"the {first} {'left of' if relation.axis == 0 else 'above'} the {second}"


def layout_clause(name_a: str, name_b: str, relation: Relation, answer: str) -> str:
    """How the two objects really lie along the question's axis, its first object first: ("star", "circle", above,
    "no") -> "the star is below the circle"."""
    holds = [word for word, other in RELATIONS.items()
             if other.axis == relation.axis and other.first_smaller == first_comes_first(relation, answer)][0]
    return f"the {name_a} is {holds} the {name_b}"


def asked_clause(relation: Relation) -> str:
    """The relation a question asks about, in the words `layout_clause` uses: "you asked below" for "under"."""
    return "you asked " + [word for word, other in RELATIONS.items() if other == relation][0]


def relation_reasoning(name_a: str, name_b: str, relation: Relation, answer: str) -> str:
    """What decides a relation question, one step at a time: ("star", "circle", under, "no") -> "the star above the
    circle, so the star is above the circle, so you asked below" (then ", so no").

    Each step is one lookup: which of the two comes first, as a caption says; then how the question's first object
    lies to its second; then which relation was asked. The yes/no is then whether the last two relations written
    are the same word. Answered straight away, it is an exclusive-or of what the picture shows and which way the
    question asks, and a model that finds each named object and captions two objects in the right order still
    answers at the rate of guessing; so it did after the first step alone, the second alone, or the first two
    (`scripts/ablate_relations.py`)."""
    return ANSWER_AFTER.join((caption_order_clause(name_a, name_b, relation, answer),
                              layout_clause(name_a, name_b, relation, answer), asked_clause(relation)))


def _relation(scene: Scene, rng: random.Random) -> QA | None:
    drawn = relation_between_two(scene, rng)
    if drawn is None:
        return None
    ref_a, ref_b, relation, answer = drawn
    return QA("relation", _relation_question(ref_a, ref_b, relation, rng), answer,
              reasoning=relation_reasoning(ref_a, ref_b, relation, answer))


def _relation_question(ref_a: str, ref_b: str, relation: Relation, rng: random.Random) -> str:
    """A relation question ("is the <a> <relation> the <b>?") in one of its templates, names in other words."""
    return rng.choice(TEMPLATES["relation"]).format(
        a=_in_other_words(ref_a, rng), relation=rng.choice(relation.wordings), b=_in_other_words(ref_b, rng))


OBJECT_KINDS = ("colour", "shape", "size", "position")  # questions about one object, which a follow-up can repeat


def _ask(scene: Scene, rng: random.Random, kind: str | None) -> tuple[QA, SceneObject | None]:
    """One question and the object it is about (None for counts, existence and relations)."""
    if kind is not None and kind not in QUESTION_KINDS:
        raise ValueError(f"unknown question kind {kind!r}; expected one of {QUESTION_KINDS}")
    for _ in range(100):
        chosen = kind or rng.choice(QUESTION_KINDS)
        if chosen == "count":
            return _count(scene, rng), None
        if chosen == "exists":
            return _exists(scene, rng), None
        if chosen == "relation":
            qa, obj = _relation(scene, rng), None
        else:
            obj = rng.choice(scene.objects)
            qa = _about_object(chosen, obj, scene, rng)
        if qa is not None:
            return qa, obj
    raise ValueError(f"scene {scene.caption!r} allows no {kind} question")


def ask_about(scene: Scene, rng: random.Random, kind: str | None = None) -> QA:
    """One question about `scene`, of `kind` or of a random kind that the scene allows."""
    return _ask(scene, rng, kind)[0]


def conversation(scene: Scene, rng: random.Random, turns: int) -> list[QA]:
    """`turns` questions about `scene`; after the first, each is often a follow-up of the one before: "and the
    star?" asks the previous question's kind about another object."""
    qa, subject = _ask(scene, rng, None)
    talk = [qa]
    while len(talk) < turns:
        follow = None
        if subject is not None and qa.kind in OBJECT_KINDS and rng.random() < FOLLOW_UP_PROBABILITY:
            others = [o for o in scene.objects if o is not subject]
            for obj in rng.sample(others, len(others)):
                follow = _about_object(qa.kind, obj, scene, rng, FOLLOW_UPS)
                if follow is not None:
                    subject = obj
                    break
        if follow is None:
            follow, subject = _ask(scene, rng, None)
        qa = follow
        talk.append(qa)
    return talk


def the_same_question_about_two(scene: Scene, rng: random.Random, kind: str) -> tuple[QA, QA] | None:
    """One `kind` question (an `OBJECT_KINDS` kind) in one wording about two objects of `scene` whose answers differ,
    "what colour is the circle?" (red) and "what colour is the square?" (blue); None when no two objects allow it.
    Only the object named tells the two apart, so an answer that does not follow the name gets one of them wrong."""
    if kind not in OBJECT_KINDS:
        raise ValueError(f"{kind!r} questions are not about one object; expected one of {OBJECT_KINDS}")
    template = (rng.choice(TEMPLATES[kind]),)
    objects = rng.sample(scene.objects, len(scene.objects))
    for i, first in enumerate(objects):
        for second in objects[i + 1:]:
            pair = _about_object(kind, first, scene, rng, template), _about_object(kind, second, scene, rng, template)
            if None not in pair and pair[0].answer != pair[1].answer:
                return pair
    return None


def unrecognised_questions(rng: random.Random, turns: int) -> list[QA]:
    """Questions about a picture that is not a scene (`make_clutter`): the honest answer is that it does not know."""
    talk = []
    for _ in range(turns):
        kind = rng.choice(("colour", "shape", "count", "position", "exists"))
        ref = f"{rng.choice(tuple(COLOURS))} {rng.choice(SHAPES)}"
        question = {"count": rng.choice(TEMPLATES["count"]).format(things="shapes"),
                    "exists": _exists_question(*ref.split(), rng)
                    }.get(kind) or rng.choice(TEMPLATES[kind]).format(ref=ref)
        talk.append(QA(kind, question, UNRECOGNISED_ANSWER))
    return talk


def described_answer(seen: str, answer: str) -> str:
    """The answer after what the picture shows: ("a large red circle at the top", "red") ->
    "a large red circle at the top, so red"."""
    return f"{seen}{ANSWER_AFTER}{answer}"


def short_answer(text: str) -> str:
    """The answer alone, whether or not the model described the picture first. Split at the word of ANSWER_AFTER
    ("so") with or without its comma, as a model may write it."""
    return re.split(rf"\b{ANSWER_AFTER.strip(', ')}\b", text)[-1]


_DIGITS = {"0": "none", "zero": "none", "no": "no", "1": "one", "2": "two", "3": "three"}


def normalize_answer(text: str) -> str:
    """The short answer (`short_answer`), lowercase, single spaces, no final punctuation, counts as words ("2" ->
    "two"), "color" as "colour"."""
    words = re.sub(r"[^\w\s]", " ", short_answer(text.lower())).split()
    words = [w for w in words if w not in ("the", "a", "an", "at", "it", "is", "its")]
    if len(words) == 1 and words[0] in _DIGITS and words[0] != "no":
        return _DIGITS[words[0]]
    return " ".join(words)


def answer_is_right(predicted: str, truth: str) -> bool:
    """Whether a generated answer says what `truth` says ("At the top left." == "top left", "2" == "two")."""
    return normalize_answer(predicted) == normalize_answer(truth)



def random_question(rng: random.Random) -> str:
    """A question in the training phrasings about made-up objects, for speech that asks questions."""
    colour, shape, size = rng.choice(tuple(COLOURS)), rng.choice(SHAPES), rng.choice(tuple(SIZES))
    ref = _in_other_words(rng.choice((shape, f"{colour} one", f"{size} one", f"{colour} {shape}", f"{size} {shape}",
                                      f"{size} {colour} {shape}")), rng)
    kind = rng.choice(QUESTION_KINDS)
    if kind == "count":
        things = _in_other_words(rng.choice(("shapes", plural(shape), f"{colour} shapes", f"{size} shapes")), rng)
        return rng.choice(TEMPLATES[kind]).format(things=things)
    if kind == "exists":
        return _exists_question(colour, shape, rng)
    if kind == "relation":
        other = rng.choice([s for s in SHAPES if s != shape])
        relation = rng.choice(rng.choice([r.wordings for r in RELATIONS.values()]))
        return rng.choice(TEMPLATES[kind]).format(a=ref, relation=relation, b=other)
    return rng.choice(TEMPLATES[kind] + FOLLOW_UPS).format(ref=ref)
