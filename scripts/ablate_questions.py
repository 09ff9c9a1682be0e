"""Question-only ablation: continue a checkpoint on colour questions about one of two or three objects, then score.

Settles where a question's answer should be written, in minutes. Each question names its object by shape alone
("what colour is the circle?", in any training wording) on a training scene of 2 or 3 objects; the arms differ only
in the answer the model learns to write:

    plain       red
    noun-first  circle red
    colon       circle: red
    restated    the circle is red

With `plain`, the answer is predicted at `<|answer|>`, which must first read which object the question names and
then find that object's patches: two steps, and mmgpt-tiny v4.6 has hardly learned the first (its two answers
differ in 11.2% of `qa_paired`'s pairs). With `noun-first`, the colour is predicted right after the model has
written the object's name itself, where that name is in the position's own context. Answers are encoded as
training encodes them, without a leading space, so "circle red" is the tokens `c ir cle Ġred` (the question has
the one token `Ġcircle`), and "the circle is red" is `the Ġcircle Ġis Ġred`. It prints one line per 50 steps: the
loss, and the % of fresh validation questions of the same kind whose last word is the right colour. Example, as
run in session 13 (one thread each, two runs at a time, lr 1.5e-4 constant, batch 32, from v4.6):

    OMP_NUM_THREADS=1 python scripts/ablate_questions.py --answer plain
    OMP_NUM_THREADS=1 python scripts/ablate_questions.py --answer noun-first

| answer | step 0 | 50 | 100 | 150 | 200 | 250 |
|---|---|---|---|---|---|---|
| plain | 39.6 | 41.7 | 49.2 | 50.4 | 59.2 | 57.1 |
| noun-first | 39.6 | 47.1 | 55.0 | 65.0 | 67.5 | **73.3** |
| colon | 39.6 | 33.8 | 52.1 | 53.8 | 52.1 | 54.6 |
| restated | 39.6 | 35.4 | 50.8 | 57.5 | 57.1 | 65.4 |

240 validation questions: one run's figure has a standard error of about 3 points, so two runs differ beyond noise
at about 9 points. The runs were made by a scratch copy of this script; this one gives the noun-first run's first
50 steps exactly (loss 1.136, 47.1%). `noun-first` learns faster than `plain` (+16 points at step 250); `colon` does
not; `restated` lies between and is not told apart from either by one run each. So the slow step is carrying which
object is named to the position that answers; an answer written right after the object's name learns quicker.
This script itself, `--answer noun-first --steps 500`, went on to 80.4% at step 300, 80.8% at 400, 82.1% at 500.

Does a noun-first warm-up help the plain answers people see? `--answer noun-first --plain-after 400 --steps 550`
(a scratch copy, two threads) gave 50.8 / 74.2 / 75.4% after 50 / 100 / 150 plain steps; this script's
`--answer plain --steps 550` (session 14, two threads, alone on the machine) gave 61.3 / 62.5 / 64.2 / 64.6 / 78.3 /
70.0% at steps 300-550 (its first 100 steps as the table's). Within one run's noise of each other: the warm-up's
head start does not carry over to plain answers, and plain answers simply need more steps (v4.6 had 39.6%).

What else moves (session 14, `--steps 400`, one thread each, two runs at a time; the last line of a run asks the
same question about two objects of 400 validation scenes, 40 pairs per kind, and captions 100 of them):

| run | colour, 2-3 objects | pairs both right / differ: colour | shape | size | position | caption exact match |
|---|---|---|---|---|---|---|
| v4.6 (step 0) | 39.6 | 2.5 / 2.5 | 12.5 / 47.5 | 0 / 2.5 | 2.5 / 2.5 | 67.0 |
| `--answer plain` | 60.8 | 32.5 / 47.5 | 0 / 22.5 | 0 / 30.0 | 0 / 55.0 | **0.0** |
| `--answer plain --captions 16` | 73.8 | 47.5 / 60.0 | 0 / 22.5 | 0 / 17.5 | 0 / 45.0 | 57.0 |
| `--answer plain --freeze-image` | 77.9 | 60.0 / 67.5 | 0 / 12.5 | 0 / 25.0 | 0 / 52.5 | 13.0 |
| `--answer plain --captions 16 --freeze-image` | 77.5 | 57.5 / 67.5 | 0 / 17.5 | 0 / 25.0 | 0 / 50.0 | **63.0** |

Colour questions alone teach the model to tell two objects apart by name, but it then answers every question with
a colour and forgets how to caption; half of each update on captions keeps most captions (57 of 67). With the image
encoder frozen, the binding is learned faster (both answers right 57.5-60% against 32.5-47.5%) and captions keep
63 of 67: the questions' gradient into the image encoder is what costs the captions, and it does not help the
questions (`TrainConfig.questions_train_image`). Whether the binding carries to other kinds is not told: their
answers turned into colours (which is why they "differ"). Each run gave colour questions all or half of every
update; mmgpt-tiny's runs until v4.6 gave typed questions of all seven kinds together a fifth of each step, and
v4.6's tripled question batch left that share as it was.

`--save DIR` keeps the trained model to continue from. Session 15 reran the table's last row with two threads and
`--save runs/colour400` (the same figures to the decimal) and went on with every task (mmgpt-tiny v4.9, whose card
gives the command: questions weighted 6 and captions 2, the questions kept out of the image encoder). On this
script's 160 validation pairs (40 per kind; both right / differ), colour went 57.5 / 67.5 -> 30.0 / 35.0 after 150
mixed steps -> 45.0 / 62.5 after 300, where the same mix from v4.6 (session 14's v4.8b) had 5.0 / 13.1 over all
kinds at step 300, and typed questions of every kind together from v4.6, with the encoder frozen and captions beside
them, had 4.4 / 9.4 at step 200. A colour-only phase is what teaches the binding; the mix keeps most of it. It did
not reach size or position questions (2.5 / 7.5 and 2.5 / 2.5 at step 300).

`--kinds` asks the named object kinds instead, each question in any training wording and about an object named as
training names them (`questions.reference`). Session 16, from v4.9, one thread each, two runs at a time, `--captions
16 --freeze-image --steps 400`; the second column is the run's own validation questions (its kinds, 2-3 objects):

| run | own kinds, step 0 -> 400 | pairs both right / differ: colour | shape | size | position | caption exact match |
|---|---|---|---|---|---|---|
| v4.9 (step 0) | | 42.5 / 55.0 | 15.0 / 50.0 | 7.5 / 10.0 | 2.5 / 2.5 | 68.0 |
| `--kinds colour,shape,size,position` | 64.2 -> 62.5 | 52.5 / 60.0 | **37.5 / 70.0** | 5.0 / 5.0 | 5.0 / 5.0 | 62.0 |
| `--kinds size,position` | 67.9 -> 59.6 | 25.0 / 67.5 | 5.0 / 30.0 | 7.5 / 10.0 | 10.0 / 10.0 | 69.0 |

The binding that colour questions taught carries to shape questions asked beside them, but 400 steps of size and
position questions, alone or with the others, leave both where they were: the model gives nearly the same size or
place for either of two objects. The loss of the size-and-position run stayed at 0.15-0.17 from step 50 on.
The same run from v4.10 with the image encoder training (`--kinds size,position --captions 16 --steps 300`, two
threads) moved size pairs from 7.5 / 10.0 to 10.0 / 20.0 and position from 5.0 / 10.0 to 7.5 / 10.0, while colour
pairs fell from 57.5 to 40.0 both right, shape from 57.5 to 15.0, and captions from 70.0 to 57.0. The image encoder
already holds each object's size and place (`scripts/probe_objects.py`: a linear probe reads them at 95% and 92%),
so what is missing is the decoder reading them off the object named. Nor is it only carrying the name to the
position that answers: with the answer written right after the object's name (`--kinds size,position --answer
noun-first --captions 16 --freeze-image --steps 300`, from v4.10, two threads), its own validation questions went
66.2 -> 67.5% and size and position pairs (last words judged) 7.5 -> 10.0% and 5.0 -> 12.5% both right, where colour
questions in that format had gained 33 points in 250 steps. Nor is it a slow learning rate: `--kinds size,position
--captions 16 --freeze-image --lr 5e-4 --steps 300` (from v4.10) ended with a higher loss (0.19 against 0.15-0.17),
62.9% of its own questions, and every kind's pairs at 2.5% or less both right.

What does move them is training on the pairs themselves. `--paired` draws each training question from
`questions.the_same_question_about_two` and puts both questions of a pair in the batch, so an answer that ignores the
object named is wrong for one of the two. (A likely reason, not measured: with two sizes, objects in one picture
often share theirs, so one answer for every size question of a picture is right for most of them.) Session 17, from
v4.11, two threads, `--kinds size,position --paired --captions 16 --freeze-image --steps 300` (1.6 s/step): size
pairs 0.0 / 0.0 -> 27.5 / 42.5 both right / differ, position 7.5 / 10.0 -> 22.5 / 42.5, while colour fell 60.0 ->
45.0 and shape 55.0 -> 30.0 both right (not asked in that run); its own validation questions 63.3 -> 63.7%, captions
73.0 -> 72.0. With every object kind paired (`--kinds colour,shape,size,position --paired --captions 16
--freeze-image --steps 400 --save runs/paired400`, from v4.11, two threads, 1.6 s/step), size went 0.0 / 0.0 ->
25.0 / 35.0 and position 7.5 / 10.0 -> 12.5 / 20.0 while colour (60.0 -> 62.5) and shape (55.0 -> 55.0) kept theirs;
all pairs 30.6 / 39.4 -> 38.8 / 53.8, own validation questions 68.3 -> 66.2%, captions 73.0 -> 78.0. Then 25 minutes
of every task as v4.11's run (its command with `--init-from runs/paired400 --max-minutes 25`, 370 steps; not
shipped): `python -m mmgpt evaluate` against v4.11 gave pairs 32.5 / 43.1 -> 38.8 / 49.4 (size 2.5 -> 10.0,
position 5.0 -> 15.0 both right), compositional exact match 37.8 -> 43.0%, typed size questions 82.5 -> 90.0%, and on
144 PIL-painted pairs 51.4 -> 61.1% both right; but Shakespeare 1.679 -> 1.701 nats/char, past its 1.69 target, and
typed relations 65.0 -> 47.5%. The mix keeps less of the size and position binding than of colour's (25.0 -> 10.0).
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
from mmgpt.data.questions import TEMPLATES, normalize_answer  # noqa: E402
from mmgpt.evaluate import caption_scores, greedy_texts, paired_questions, paired_scores  # noqa: E402
from mmgpt.model import MMGPTForCausalLM, MMGPTProcessor  # noqa: E402

ANSWERS = {"plain": "{colour}", "noun-first": "{shape} {colour}", "colon": "{shape}: {colour}",
           "restated": "the {shape} is {colour}"}
EVAL_QUESTIONS = 240
BATCH = 32


def colour_questions(scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, colour, shape) about each object of `scene` that its shape alone names."""
    return [(rng.choice(TEMPLATES["colour"]).format(ref=o.shape), o.colour, o.shape) for o in scene.objects
            if sum(other.shape == o.shape for other in scene.objects) == 1]


def ends_with_answer(predicted: str, truth: str) -> bool:
    """Whether the answer's last words are `truth`, in any --answer format ("circle red", "the circle is red")."""
    return normalize_answer(predicted).split()[-len(truth.split()):] == truth.split()


def object_questions(scene, rng: random.Random, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(question, answer, name) of a random kind of `kinds` about each object of `scene`, in any training wording and
    named as training names objects (`questions.reference`: "the circle", "the big red one")."""
    asked = []
    for obj in scene.objects:
        qa = questions._about_object(rng.choice(kinds), obj, scene, rng)
        if qa is not None:
            asked.append((qa.question, qa.answer, qa.subject))
    return asked


def caption_batch(processor: MMGPTProcessor, scenes, count: int) -> dict:
    """The next `count` scenes of `scenes`, captioned as training captions them."""
    chosen = [next(scenes) for _ in range(count)]
    eos, prompt = processor.token_ids["<|endoftext|>"], processor.prompt_ids("caption")
    rows = [prompt + processor._encode(s.caption) + [eos] for s in chosen]
    padded = training.pad_right(rows, [len(prompt)] * len(rows), eos)
    padded["pixel_values"] = torch.from_numpy(np.stack([processor.image_to_pixels(s.image) for s in chosen]))
    return padded


def question_batch(processor: MMGPTProcessor, asked: list[tuple]) -> dict:
    """(picture, question, answer) triples laid out as training lays out a typed question, loss on the answer only."""
    ids, eos = processor.token_ids, processor.token_ids["<|endoftext|>"]
    picture = [ids["<|image|>"]] + [ids["<|patch|>"]] * processor.num_patches
    rows = [[(picture + [ids["<|ask|>"], *processor._encode(question), ids["<|answer|>"]], False),
             (processor._encode(answer) + [eos], True)] for _, question, answer in asked]
    padded = training.pad_segments(rows, eos)
    padded["pixel_values"] = torch.from_numpy(np.stack([processor.image_to_pixels(im) for im, _, _ in asked]))
    return padded


def ablation_step(model, optimizer, loss: torch.Tensor, grad_clip: float = 1.0) -> None:
    """One optimizer step on `loss`, its gradient clipped as training clips it."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer", choices=ANSWERS, default="plain")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--init-from", default="assets/mmgpt-tiny", help="checkpoint every run starts from")
    parser.add_argument("--plain-after", type=int, default=None,
                        help="after this step, answers are plain: a warm-up in the --answer format before")
    parser.add_argument("--captions", type=int, default=0,
                        help="also caption this many training pictures a step (the two losses averaged)")
    parser.add_argument("--freeze-image", action="store_true",
                        help="leave the image encoder as it is: only the decoder (and audio encoder) learn")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated object kinds (colour, shape, size, position) asked in every training "
                             "wording and naming; without it, colour questions naming the object by shape alone")
    parser.add_argument("--paired", action="store_true",
                        help="with --kinds: train on the same question about two objects whose answers differ "
                             "(questions.the_same_question_about_two), both in one batch, so that an answer that "
                             "ignores the object named is wrong for one of them")
    parser.add_argument("--save", default=None, help="save the trained model and processor here, to continue from")
    args = parser.parse_args()

    kinds = tuple(args.kinds.split(",")) if args.kinds else None
    if kinds and set(kinds) - set(questions.OBJECT_KINDS):
        parser.error(f"--kinds takes {questions.OBJECT_KINDS}")
    if args.paired and not kinds:
        parser.error("--paired needs --kinds")

    def asked_about(scene, rng: random.Random) -> list[tuple[str, str, str]]:
        return object_questions(scene, rng, kinds) if kinds else colour_questions(scene, rng)

    torch.manual_seed(0)
    model = MMGPTForCausalLM.from_pretrained(args.init_from)
    processor = MMGPTProcessor.from_pretrained(args.init_from)

    several = [s for s in scene_dataset("validation", 700, 11) if len(s.objects) >= 2]
    rng = random.Random(3)
    asked = [(s, q) for s in several for q in asked_about(s, rng)[:1]][:EVAL_QUESTIONS]

    def accuracy() -> float:
        model.eval()
        right = []
        for i in range(0, len(asked), 60):
            chunk = asked[i:i + 60]
            inputs = processor(images=[s.image for s, _ in chunk], text=[q for _, (q, _, _) in chunk], task="ask")
            texts = greedy_texts(model, processor, [inputs], max_new_tokens=6)
            right += [ends_with_answer(text, truth) for text, (_, (_, truth, _)) in zip(texts, chunk)]
        model.train()
        return round(100 * float(np.mean(right)), 1)

    probe_scenes = scene_dataset("validation", 400, 99)
    pairs = paired_questions(probe_scenes, 40, 99)

    def what_else() -> str:
        """Whether the binding reaches other kinds of question, and what captions lose meanwhile. "Answers differ"
        compares whole answers, so it means something for `--answer plain` only."""
        model.eval()
        paired = paired_scores(model, processor, pairs, 50, ends_with_answer)
        captions = caption_scores(model, processor, probe_scenes[:100], batch=50)["exact_match"]
        model.train()
        return (f"pairs both right / answers differ: {paired['both_right']:.1f} / {paired['answers_differ']:.1f} ("
                + ", ".join(f"{kind} {f['both_right']:.1f} / {f['answers_differ']:.1f}"
                            for kind, f in paired["by_kind"].items())
                + f"); caption exact match {captions:.1f}")

    scenes, draw = iter_scenes("train", 123), random.Random(7)
    caption_scenes = iter_scenes("train", 456)

    def chosen_questions(scene) -> list[tuple[str, str, str]]:
        if len(scene.objects) < 2:
            return []
        if args.paired:
            pair = questions.the_same_question_about_two(scene, draw, draw.choice(kinds))
            return [(qa.question, qa.answer, qa.subject) for qa in pair] if pair else []
        candidates = asked_about(scene, draw)
        return [draw.choice(candidates)] if candidates else []

    def batch(answer_format: str) -> dict:
        asked = []
        while len(asked) < BATCH:
            scene = next(scenes)
            asked += [(scene.image, question, ANSWERS[answer_format].format(colour=truth, shape=name))
                      for question, truth, name in chosen_questions(scene)]
        return question_batch(processor, asked)

    if args.freeze_image:
        model.transformer.image_encoder.requires_grad_(False)
    optimizer = training.make_optimizer(model, training.TrainConfig(lr=args.lr))
    for group in optimizer.param_groups:
        group["lr"] = args.lr
    print(args.answer, 0, accuracy(), what_else(), flush=True)
    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        plain = args.plain_after is not None and step > args.plain_after
        loss = model(**batch("plain" if plain else args.answer)).loss
        if args.captions:
            loss = (loss + model(**caption_batch(processor, caption_scenes, args.captions)).loss) / 2
        ablation_step(model, optimizer, loss)
        losses.append(loss.item())
        if step % 50 == 0:
            print(args.answer, step, f"loss {np.mean(losses[-50:]):.3f}", accuracy(),
                  f"{(time.time() - started) / step:.2f} s/step", flush=True)
    print(args.answer, args.steps, what_else(), flush=True)
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)


if __name__ == "__main__":
    main()
