"""Relation-only ablation: can mmgpt-tiny learn yes/no questions about where two objects lie relative to each other?

Each training question comes with its mirror in the same batch ("is the star left of the circle?" yes, "is the
circle left of the star?" no), so an answer that ignores which object is named first is wrong for one of the two.
Captions share every step, as in `ablate_questions.py --captions 16`. Prints, every 100 steps, the loss, the % of 200
relation questions about fresh test scenes answered right, how many of them got "yes", and the caption exact match
of 100 validation scenes.

Session 21, from v4.16, two threads, alone on the machine, lr 1.5e-4, 32 questions and 16 captions a step (made
by a scratch copy; this script gives its first 100 steps exactly: loss 0.209, 52.5%, 'yes' 141 of 200):

| run | step 0 | 100 | 200 | 300 | loss | captions, step 0 -> 300 |
|---|---|---|---|---|---|---|
| image encoder frozen (default) | 48.5 | 52.5 | 52.0 | 47.0 | 0.21 | 84 -> 77 |
| `--train-image` | 48.5 | 52.0 | 55.0 | 49.0 | 0.22 | 84 -> 72 |

Two hundred questions give a standard error of about 3.5 points: both runs stay at the rate of guessing. v4.16
itself says "no" to 145 of the 200, where the truth is about even. The loss is the mean of the question loss and
the caption loss (about 0.05), so the question half is about 0.37 nats a token, and guessing gives 0.35 (ln 2 over
the answer's one token and its end). The model writes these layouts in its captions ("a large green diamond above
a small blue triangle") but does not learn to answer a yes/no question about them from yes/no answers alone.
"""

import argparse
import random
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
from ablate_questions import caption_batch, question_batch  # noqa: E402

EVAL_QUESTIONS = 200
BATCH, CAPTIONS = 32, 16


def mirrored_relation_questions(scene, rng: random.Random) -> list[tuple[str, str]]:
    """A relation question about two objects of `scene` and the same question with the objects swapped, whose answer
    is the other one; none when the objects cannot be named or lie too close along the relation's axis."""
    drawn = questions.relation_between_two(scene, rng)
    if drawn is None:
        return []
    name_a, name_b, relation, answer = drawn
    template, wording = rng.choice(questions.TEMPLATES["relation"]), rng.choice(relation.wordings)

    def ask(first: str, second: str) -> str:
        return template.format(a=questions._in_other_words(first, rng), relation=wording,
                               b=questions._in_other_words(second, rng))

    return [(ask(name_a, name_b), answer), (ask(name_b, name_a), "no" if answer == "yes" else "yes")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-from", default="assets/mmgpt-tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--train-image", action="store_true", help="let the questions train the image encoder too")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MMGPTForCausalLM.from_pretrained(args.init_from)
    processor = MMGPTProcessor.from_pretrained(args.init_from)
    asking = random.Random(7)
    asked = [(scene, qa) for scene in scene_dataset("test", 600, 4321)
             for qa in [questions._relation(scene, asking)] if qa is not None][:EVAL_QUESTIONS]
    probe_scenes = scene_dataset("validation", 100, 99)

    def scores() -> str:
        model.eval()
        answers = []
        for i in range(0, len(asked), 50):
            chunk = asked[i:i + 50]
            inputs = processor(images=[s.image for s, _ in chunk], text=[qa.question for _, qa in chunk], task="ask")
            answers += greedy_texts(model, processor, [inputs], ANSWER_TOKENS)
        captions = caption_scores(model, processor, probe_scenes, batch=50)["exact_match"]
        model.train()
        right = np.mean([questions.answer_is_right(a, qa.answer) for a, (_, qa) in zip(answers, asked)])
        said_yes = sum(questions.normalize_answer(a) == "yes" for a in answers)
        return f"relations {100 * right:.1f}%, 'yes' {said_yes} of {len(asked)}, caption exact match {captions:.1f}"

    scenes, caption_scenes, draw = iter_scenes("train", 123), iter_scenes("train", 456), random.Random(7)

    def relation_batch() -> dict:
        asked = []
        while len(asked) < BATCH:
            scene = next(scenes)
            asked += [(scene.image, question, answer) for question, answer in mirrored_relation_questions(scene, draw)]
        return question_batch(processor, asked)

    if not args.train_image:
        model.transformer.image_encoder.requires_grad_(False)
    optimizer = training.make_optimizer(model, training.TrainConfig(lr=args.lr))
    print(0, scores(), flush=True)
    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        loss = (model(**relation_batch()).loss + model(**caption_batch(processor, caption_scenes, CAPTIONS)).loss) / 2
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            print(step, f"loss {np.mean(losses[-100:]):.3f}", scores(),
                  f"{(time.time() - started) / step:.2f} s/step", flush=True)


if __name__ == "__main__":
    main()
