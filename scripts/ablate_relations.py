"""Relation-only ablation: can mmgpt-tiny learn yes/no questions about where two objects lie relative to each other?

Each training question comes with its mirror in the same batch ("is the star left of the circle?" yes, "is the
circle left of the star?" no), so an answer that ignores which object is named first is wrong for one of the two.
Captions share every step, as in `ablate_questions.py --captions 16`. Prints, every 100 steps, the loss, the % of 200
relation questions about fresh test scenes answered right, how many of them got "yes", how often each clause an
answer writes before its yes/no is right (and the yes/no after a right one), and the caption exact match of 100
validation scenes.

Two threads, alone on the machine, lr 1.5e-4, 32 questions and 16 captions a step, image encoder frozen:

| run | from | step 0 | 100 | 200 | 300 | 400 | 500 | 1000 | captions at the end |
|---|---|---|---|---|---|---|---|---|---|
| yes/no alone (session 21) | v4.16 | 48.5 | 52.5 | 52.0 | 47.0 | | | | 77 |
| `--train-image` (session 21) | v4.16 | 48.5 | 52.0 | 55.0 | 49.0 | | | | 72 |
| `--describe layout` (session 22) | v4.16 | 48.5 | 53.5 | 54.0 | 48.5 | | | | 78 |
| `--describe positions` (session 22) | v4.16 | 48.5 | 48.0 | 52.5 | 49.0 | | | | 77 |
| `--describe caption` (session 22) | v4.16 | 48.5 | 47.0 | 48.5 | 49.0 | | | | 76 |
| `--describe caption` | v4.17 | 48.0 | 54.0 | 54.0 | 49.5 | 45.5 | 46.0 | 47.5 | 82 |
| `--describe restated` | the run above | 47.5 | 55.0 | 50.0 | 53.0 | 56.5 | 51.0 | | 88 |
| `--describe asked` | the run above | 51.0 | 53.0 | 55.0 | 56.5 | 69.0 | **91.0** | | 85 |
| `--describe asked`, stopped at step 400 | v4.17 | 48.0 | 56.0 | 52.0 | 50.0 | 45.0 | | | 84 |

Two hundred questions give a standard error of about 3.5 points. Answered straight away, relation questions stay at
the rate of guessing, though the model writes these layouts in its captions and finds one named object well: asked
where one named object is, v4.17 answers 98% right alone, 93% among two and 83% among three (`--breakdown`; v4.16
99/85/70), and a wider gap between the two does not help (v4.16: 41.4% of the 111 questions whose centres lie 30
pixels or more apart).

What the answer writes first (`DESCRIBED`, each clause joined by ", so "):
- `caption`: the two in a caption's order and words, "the circle above the star". The order written is right for
  0 -> 51 -> 65 -> 65 -> 69 -> 72.5 -> 82.5 (step 600) -> 89.0 (800) -> 86.5% at step 1000, but the yes/no after a right
  order stays at chance (47.4% at step 1000), swinging between nearly all "no" (4 "yes" of 200 at step 500) and
  nearly all "yes" (196 at step 700).
- `restated`: that, then how the question's first object lies to its second in the question's words, "the star is
  below the circle". From the caption run above, the relation written is right 52 -> 64 -> 84 -> 89.5 -> 90.5% at
  steps 100-500, yet the yes/no after a right one stays at chance (51.4% at step 500).
- `asked`: that, then the relation the question asked in the same words, "you asked below" (for "under", "beneath" or
  "below"), so the yes/no is whether the last two relations written are the same word. From the restated run, the
  yes/no was at chance for 300 steps, then 69.0% at step 400 and 91.0% at step 500, where it is right after 99.5% of
  the right relations written: 199 of the 200 answers say "yes" exactly when the two words agree. The errors left are
  in the relation written (91.5% right).
- `asked` straight from v4.17 (stopped at step 400 to free the machine for v4.18's run): the yes/no after a right
  relation written is right 50.0 -> 66.1 -> 88.7 -> 98.7% at steps 100-400, far sooner than above, but the order and
  the relation written are right only 63.0% and 39.5% at step 400, where the caption run had the order at 69.0%.

So the model did not fail to see the relation: it wrote it right 90% of the time and still could not turn it into a
yes/no. The yes/no is an exclusive-or of which way the objects lie and which way the question asks, and neither half
alone says anything about it; it was learned only once both halves were written as the same kind of word, side by
side. `questions.relation_reasoning` is the `asked` form, and `train --relation-reasoning` writes it before every
relation answer.

Then every task, 40 minutes from the `asked` run above with `train --relation-reasoning` (437 steps, otherwise v4.17's
command, seed 18; mmgpt-tiny v4.18, not shipped): relation questions stay learned, 92.2% of 400 fresh ones
(`--breakdown`; 96.4% when the centres lie 30+ pixels apart, 88-89% under 20), and typed questions go 84.6 -> 88.2%
(relation 50.0 -> 92.5%). But
2000 steps of relations and captions alone had cost the other tasks more than 40 minutes won back: Shakespeare
1.657 -> 1.706 nats/char (the target is 1.69), test-scene captions 87.0 -> 84.0%, spoken questions in held-out wording
56.4 -> 50.7%, both answers of a pair right 78.1 -> 74.4%. Resumed to 60 minutes (661 steps) it won most of that back:
Shakespeare 1.685, test-scene captions 87.25%, pairs 80.0%, and typed questions 90.7% (relation 95.0%), though spoken
questions in held-out wording fell further (48.2%). 60 minutes more with spoken questions weighted as typed ones
made v4.19, the first shipped checkpoint to answer relations: typed 95.0%, spoken 77.5% (v4.17: 50.0 and 52.5%), and
83.3% of pairs about two shapes painted with plain PIL calls both right (`painted_pairs.py`; v4.17: 7.3%). A cleaner
recipe would mix the other tasks into the relation steps.
"""

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmgpt import train as training  # noqa: E402
from mmgpt.data import iter_scenes, scene_dataset  # noqa: E402
from mmgpt.data import questions  # noqa: E402
from mmgpt.evaluate import ANSWER_TOKENS, caption_scores, greedy_texts  # noqa: E402
from mmgpt.model import MMGPTForCausalLM, MMGPTProcessor  # noqa: E402

# this folder is on sys.path when a script runs
from ablate_questions import ablation_step, caption_batch, question_batch  # noqa: E402

EVAL_QUESTIONS = 200
BATCH, CAPTIONS = 32, 16


def where_is(scene, on_grid: bool = False) -> dict:
    """Each object of `scene` by its name (`questions.reference`): its centre, or with `on_grid` its cell on the grid
    of position answers ("top left")."""
    return {questions.reference(obj, scene): questions.cell_of(*obj.centre) if on_grid else obj.centre
            for obj in scene.objects}


def positions_clause(scene, name_a: str, name_b: str) -> str:
    """Where each object is on the grid of position answers: "the star is at the top left and the circle is at the
    bottom", what the model already answers about one object (position questions)."""
    where = where_is(scene, on_grid=True)
    return f"the {name_a} is at the {where[name_a]} and the {name_b} is at the {where[name_b]}"


# What an answer says before its yes/no, for each --describe: clauses joined by ", so ", then ", so yes". The
# clauses are `questions.layout_clause`, `questions.caption_order_clause`, `questions.asked_clause` and
# `positions_clause`; "asked" is `questions.relation_reasoning`, which training writes (`relation_reasoning`).
DESCRIBED = {"layout": ("layout",), "positions": ("positions",), "caption": ("caption",),
             "restated": ("caption", "layout"), "asked": ("caption", "layout", "asked")}


def plain_name(name: str) -> str:
    """A name as a question may say it ("big circle") as captions and `questions.reference` say it ("large circle")."""
    plain = {said: word for word, sayings in questions.SYNONYMS.items() for said in sayings}
    return " ".join(plain.get(word, word) for word in name.split())


def cells_written(answer: str, scene) -> list[bool]:
    """For an answer in the form of `positions_clause`, whether each of the two cells it writes is where the object it
    names is (a name that no object of `scene` has, or an answer in another form, counts as wrong)."""
    said = re.match(r"the (.+?) is at the (.+?) and the (.+?) is at the (.+?)(,|$)", answer)
    if said is None:
        return [False, False]
    where = where_is(scene, on_grid=True)

    def right(name: str, cell: str) -> bool:
        return where.get(plain_name(name)) == cell

    return [right(said[1], said[2]), right(said[3], said[4])]


def order_written(answer: str, scene) -> bool:
    """For an answer that opens with a `caption_order_clause`, whether the object it names first does lie left of
    (above) the one it names second, by a clear gap (a name that no object of `scene` has counts as wrong)."""
    said = re.match(r"the ([^,]+?) (left of|above) the ([^,]+?)(,|$)", answer)
    return said is not None and relation_holds(scene, said[1], said[2], said[3])


def layout_written(answer: str, scene) -> bool:
    """For an answer with a `layout_clause`, whether the relation it writes holds between the two objects it names."""
    said = re.search(r"the ([^,]+?) is (left of|right of|above|below) the ([^,]+?)(,|$)", answer)
    return said is not None and relation_holds(scene, said[1], said[2], said[3])


def relation_holds(scene, name_a: str, relation: str, name_b: str) -> bool:
    """Whether "the <name_a> <relation> the <name_b>" is true of `scene` by a clear gap (a name that no object of
    `scene` has makes it false)."""
    where = where_is(scene)
    a, b = (where.get(plain_name(name)) for name in (name_a, name_b))
    if a is None or b is None:
        return False
    holds = questions.RELATIONS[relation]
    gap = b[holds.axis] - a[holds.axis]
    return (gap if holds.first_smaller else -gap) >= questions.CLEAR_RELATION_PIXELS


# How to score each clause an answer writes: (what it writes, whether that is right of the scene).
WRITTEN = {"positions": ("cells", lambda answer, scene: all(cells_written(answer, scene))),
           "caption": ("order", order_written), "layout": ("relation", layout_written)}


def mirrored_relation_questions(scene, rng: random.Random, describe: str | None = None) -> list[tuple[str, str]]:
    """A relation question about two objects of `scene` and the same question with the objects swapped, whose answer
    is the other one; none when the objects cannot be named or lie too close along the relation's axis. With
    `describe` (a key of DESCRIBED), each answer first says what decides it."""
    drawn = questions.relation_between_two(scene, rng)
    if drawn is None:
        return []
    name_a, name_b, relation, answer = drawn
    template, wording = rng.choice(questions.TEMPLATES["relation"]), rng.choice(relation.wordings)
    mirrored = "no" if answer == "yes" else "yes"

    def ask(first: str, second: str) -> str:
        return template.format(a=questions._in_other_words(first, rng), relation=wording,
                               b=questions._in_other_words(second, rng))

    def said(first: str, second: str, truth: str) -> str:
        if describe is None:
            return truth
        if describe == "asked":  # the chain that training writes, from its one source
            return questions.described_answer(questions.relation_reasoning(first, second, relation, truth), truth)
        clauses = {"layout": lambda: questions.layout_clause(first, second, relation, truth),
                   "caption": lambda: questions.caption_order_clause(first, second, relation, truth),
                   "positions": lambda: positions_clause(scene, first, second)}
        return questions.described_answer(questions.ANSWER_AFTER.join(clauses[c]() for c in DESCRIBED[describe]),
                                          truth)

    return [(ask(name_a, name_b), said(name_a, name_b, answer)), (ask(name_b, name_a), said(name_b, name_a, mirrored))]


def answers_to(model, processor, pictures: list, asked: list[str], batch: int = 50) -> list[str]:
    """Greedy answers to `asked[i]` about `pictures[i]`, `batch` questions at a time."""
    inputs = (processor(images=pictures[i:i + batch], text=asked[i:i + batch], task="ask")
              for i in range(0, len(asked), batch))
    return greedy_texts(model, processor, inputs, ANSWER_TOKENS)


def guessing_breakdown(model, processor, count: int = 400) -> None:
    """Prints the % right of `count` fresh relation questions in each relation's first wording, by how far apart the
    two centres lie along the question's axis, and by whether that axis is the one where they lie farther apart
    (the one a caption of two objects names); then, for contrast, of position questions about one of 1, 2 or 3
    objects."""
    rng, rows = random.Random(7), []
    for scene in scene_dataset("test", 3 * count, 4321):
        drawn = questions.relation_between_two(scene, rng)
        if drawn is None:
            continue
        name_a, name_b, relation, answer = drawn
        where = where_is(scene)
        apart = [abs(where[name_a][axis] - where[name_b][axis]) for axis in (0, 1)]
        question = questions.TEMPLATES["relation"][len(rows) % 4].format(a=name_a, relation=relation.wordings[0],
                                                                         b=name_b)
        rows.append((scene, question, answer, apart[relation.axis], apart[relation.axis] >= apart[1 - relation.axis],
                     len(scene.objects)))
    rows = rows[:count]
    answers = answers_to(model, processor, [r[0].image for r in rows], [r[1] for r in rows])
    right = np.array([questions.answer_is_right(a, r[2]) for a, r in zip(answers, rows)])
    apart, farther, objects = (np.array([r[i] for r in rows]) for i in (3, 4, 5))
    print(f"all: {100 * right.mean():.1f}% of {len(rows)}")
    for low, high in ((8, 10), (10, 20), (20, 30), (30, 64)):
        chosen = (apart >= low) & (apart < high)
        print(f"centres {low}-{high} pixels apart: {100 * right[chosen].mean():.1f}% of {chosen.sum()}")
    for count_ in (2, 3):
        for along_farther in (True, False):
            chosen = (objects == count_) & (farther == along_farther)
            print(f"{count_} objects, asked along the axis where they lie {'farther' if along_farther else 'closer'}"
                  f" apart: {100 * right[chosen].mean():.1f}% of {chosen.sum()}")
    # The contrast: where one named object is, among as many others, on the grid that position questions answer.
    rng, located = random.Random(3), {1: [], 2: [], 3: []}
    for scene in scene_dataset("test", 1500, 777):
        if len(located[len(scene.objects)]) < 100:
            qa = questions._about_object("position", rng.choice(scene.objects), scene, rng)
            located[len(scene.objects)] += [(scene, qa)] if qa else []
    for count_, asked in located.items():
        answers = answers_to(model, processor, [s.image for s, _ in asked], [qa.question for _, qa in asked])
        right = np.mean([questions.answer_is_right(a, qa.answer) for a, (_, qa) in zip(answers, asked)])
        print(f"position of one of {count_} objects: {100 * right:.1f}% of {len(asked)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-from", default="assets/mmgpt-tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--train-image", action="store_true", help="let the questions train the image encoder too")
    parser.add_argument("--describe", choices=tuple(DESCRIBED), default=None,
                        help="what answers say before the yes/no (DESCRIBED): how the two lie, where each is, the "
                             "two in a caption's order, that and then how they lie, or all that and the relation "
                             "asked")
    parser.add_argument("--save", default=None, help="write the trained model and processor here at the end")
    parser.add_argument("--breakdown", action="store_true",
                        help="only print where the starting checkpoint's guessing is (`guessing_breakdown`)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MMGPTForCausalLM.from_pretrained(args.init_from)
    processor = MMGPTProcessor.from_pretrained(args.init_from)
    if args.breakdown:
        return guessing_breakdown(model.eval(), processor)
    asking = random.Random(7)
    asked = [(scene, qa) for scene in scene_dataset("test", 600, 4321)
             for qa in [questions._relation(scene, asking)] if qa is not None][:EVAL_QUESTIONS]
    probe_scenes = scene_dataset("validation", 100, 99)

    def scores() -> str:
        model.eval()
        answers = answers_to(model, processor, [s.image for s, _ in asked], [qa.question for _, qa in asked])
        captions = caption_scores(model, processor, probe_scenes, batch=50)["exact_match"]
        model.train()
        right = np.mean([questions.answer_is_right(a, qa.answer) for a, (_, qa) in zip(answers, asked)])
        said_yes = sum(questions.normalize_answer(a) == "yes" for a in answers)
        described = ""
        for clause in [c for c in DESCRIBED.get(args.describe, ()) if c in WRITTEN]:
            what, check = WRITTEN[clause]
            written = np.array([check(answer, scene) for answer, (scene, _) in zip(answers, asked)])
            right_after = np.mean([questions.answer_is_right(a, qa.answer)
                                   for a, (_, qa), w in zip(answers, asked, written) if w] or [np.nan])
            described += (f"{what} written right {100 * written.mean():.1f}% (the yes/no after it right "
                          f"{100 * right_after:.1f}%), ")
        return (f"relations {100 * right:.1f}%, 'yes' {said_yes} of {len(asked)}, {described}caption exact match "
                f"{captions:.1f}, e.g. {asked[0][1].question!r} -> {answers[0]!r}")

    scenes, caption_scenes, draw = iter_scenes("train", 123), iter_scenes("train", 456), random.Random(7)

    def relation_batch() -> dict:
        asked = []
        while len(asked) < BATCH:
            scene = next(scenes)
            asked += [(scene.image, question, answer)
                      for question, answer in mirrored_relation_questions(scene, draw, args.describe)]
        return question_batch(processor, asked)

    if not args.train_image:
        model.transformer.image_encoder.requires_grad_(False)
    optimizer = training.make_optimizer(model, training.TrainConfig(lr=args.lr))
    print(0, scores(), flush=True)
    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        loss = (model(**relation_batch()).loss + model(**caption_batch(processor, caption_scenes, CAPTIONS)).loss) / 2
        ablation_step(model, optimizer, loss)
        losses.append(loss.item())
        if step % 100 == 0:
            print(step, f"loss {np.mean(losses[-100:]):.3f}", scores(),
                  f"{(time.time() - started) / step:.2f} s/step", flush=True)
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)


if __name__ == "__main__":
    main()
