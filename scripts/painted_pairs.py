"""Two shapes painted with plain PIL calls on white, and the same question about each: does the answer follow the
object named?

None of our scene generators draws these pictures: flat colours from a small paint box, one shape on the left and
one on the right, 128 x 128 pixels. 144 pairs, fixed by seed 0: half ask "what colour is the <shape>?" about both
shapes, half "what shape is the <colour> one?".

96 more pairs, fixed by seed 1, ask where the two lie. One shape lies at least 36 pixels further left, or further
up, than the other, at sizes and places drawn at random. The pair asks "is the A <relation> the B?", then the same
with A and B swapped, so the two right answers differ. The wording is the training wording (`questions.TEMPLATES`):
this measures the pictures, and the evaluation's held-out wording measures the words.

Prints how often both answers are right, how often the two answers differ (an answer that ignores the name gives the
same one twice), and the share of single questions answered right. It prints them per kind, and for colour and shape
together (the figure quoted before relations were added).

    python scripts/painted_pairs.py assets/mmgpt-tiny
"""

import argparse
import json
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image, ImageDraw  # noqa: E402
from transformers import AutoModelForCausalLM, AutoProcessor  # noqa: E402

import mmgpt  # noqa: E402, F401  (registers mmgpt with the Auto classes)
from mmgpt.data.questions import RELATIONS, TEMPLATES, answer_is_right, normalize_answer  # noqa: E402
from mmgpt.data.scenes import SHAPES  # noqa: E402
from mmgpt.evaluate import ANSWER_TOKENS, greedy_texts  # noqa: E402

PAINTS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255), "yellow": (255, 215, 0),
          "purple": (128, 0, 128), "orange": (255, 128, 0), "pink": (255, 105, 180)}
PAIRS, RELATION_PAIRS, BATCH = 144, 96, 48


def paint(draw: ImageDraw.ImageDraw, shape: str, colour: tuple, cx: int, cy: int, r: int) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "star":
        radii = [r if i % 2 == 0 else r * 0.45 for i in range(10)]
        draw.polygon([(cx + radius * math.sin(i * math.pi / 5), cy - radius * math.cos(i * math.pi / 5))
                      for i, radius in enumerate(radii)], fill=colour)
    else:  # cross
        arm = r // 3
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=colour)


def picture(*placed: tuple[str, str, int, int, int]) -> Image.Image:
    """(colour, shape, centre x, centre y, radius) painted on a white square."""
    image = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(image)
    for colour, shape, cx, cy, r in placed:
        paint(draw, shape, PAINTS[colour], cx, cy, r)
    return image


def relation_cases(rng: random.Random) -> list[tuple[str, Image.Image, str, str]]:
    """Pairs of relation questions, A about B and then B about A, with the two shapes clearly apart on one axis."""
    out = []
    for _ in range(RELATION_PAIRS):
        (colour_a, colour_b), (shape_a, shape_b) = rng.sample(list(PAINTS), 2), rng.sample(SHAPES, 2)
        r_a, r_b = rng.randint(12, 22), rng.randint(12, 22)
        along = [rng.randint(8 + r_a, 58 - r_a), rng.randint(70 + r_b, 120 - r_b)]  # A first along the axis
        across = [rng.randint(30, 98), rng.randint(30, 98)]
        if rng.random() < 0.5:
            along.reverse()
        horizontal = rng.random() < 0.5
        (xa, xb), (ya, yb) = (along, across) if horizontal else (across, along)
        image = picture((colour_a, shape_a, xa, ya, r_a), (colour_b, shape_b, xb, yb, r_b))
        word = rng.choice(("left of", "right of") if horizontal else ("above", "below"))
        relation = RELATIONS[word]
        a_first = (along[0] < along[1]) == relation.first_smaller
        template = rng.choice(TEMPLATES["relation"])
        names = (f"{colour_a} {shape_a}", f"{colour_b} {shape_b}") if rng.random() < 0.5 else (shape_a, shape_b)
        wording = rng.choice(relation.wordings)
        out += [("relation", image, template.format(a=names[0], relation=wording, b=names[1]),
                 "yes" if a_first else "no"),
                ("relation", image, template.format(a=names[1], relation=wording, b=names[0]),
                 "no" if a_first else "yes")]
    return out


def cases() -> list[tuple[str, Image.Image, str, str]]:
    """(kind, picture, question, answer), the two questions of a pair one after the other."""
    rng, out = random.Random(0), []
    for i in range(PAIRS):
        colour_a, colour_b = rng.sample(list(PAINTS), 2)
        shape_a, shape_b = rng.sample(SHAPES, 2)
        image = picture((colour_a, shape_a, 34, 64, 20), (colour_b, shape_b, 94, 64, 20))
        if i % 2 == 0:
            out += [("colour", image, f"what colour is the {shape_a}?", colour_a),
                    ("colour", image, f"what colour is the {shape_b}?", colour_b)]
        else:
            out += [("shape", image, f"what shape is the {colour_a} one?", shape_a),
                    ("shape", image, f"what shape is the {colour_b} one?", shape_b)]
    return out + relation_cases(random.Random(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="checkpoint folder, e.g. assets/mmgpt-tiny")
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    asked = cases()
    batches = (processor(images=[c[1] for c in asked[i:i + BATCH]], text=[c[2] for c in asked[i:i + BATCH]],
                         task="ask") for i in range(0, len(asked), BATCH))
    answers = greedy_texts(model, processor, batches, ANSWER_TOKENS)
    right = [answer_is_right(answer, case[3]) for answer, case in zip(answers, asked)]
    report = {}
    groups = {"colour": ("colour",), "shape": ("shape",), "colour and shape": ("colour", "shape"),
              "relation": ("relation",)}
    for group, kinds in groups.items():
        firsts = [i for i in range(0, len(asked), 2) if asked[i][0] in kinds]
        both = sum(right[i] and right[i + 1] for i in firsts)
        differ = sum(normalize_answer(answers[i]) != normalize_answer(answers[i + 1]) for i in firsts)
        single = sum(right[i] + right[i + 1] for i in firsts)
        report[group] = {"both_right": round(100 * both / len(firsts), 1),
                        "differ": round(100 * differ / len(firsts), 1),
                        "questions_right": round(100 * single / (2 * len(firsts)), 1), "pairs": len(firsts)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
