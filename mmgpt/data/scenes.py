"""Procedurally drawn shape scenes, each with one canonical caption that is decidable from the image alone.

A scene holds 1 to 3 objects (shape, colour, size) on a muted background. The caption grammar:
    1 object:  "a large red circle at the top left"              (position from a 3x3 grid of cells)
    2 objects: "a small blue square left of a large green star"  (or "... above ...", whichever axis dominates)
    3 objects: "a small red circle, a large blue square and a small green star"   (listed left to right)

Shapes: an image is a 64x64 RGB `PIL.Image.Image`; centres and boxes are in pixels of that image,
x to the right and y down.
"""

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64  # pixels per side of the returned image (the model's input)
SUPERSAMPLE = 4  # draw at 4x and box-downsample, which antialiases the edges
GRID_CELLS = 3  # positions of single objects are named on a 3x3 grid
CELL_PIXELS = IMAGE_SIZE / GRID_CELLS

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")
COLOURS = {  # name -> RGB; saturated, and each far from every background below
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 230, 30),
    "green": (20, 175, 50),
    "blue": (30, 80, 240),
    "purple": (150, 40, 215),
    "pink": (255, 120, 205),
    "white": (250, 250, 250),
}
SIZES = {"small": 12.0, "large": 22.0}  # name -> extent of the shape in pixels (diameter of a circle)
SIZE_JITTER = 0.1  # relative; small stays 10.8-13.2 px and large 19.8-24.2 px, so they never meet
ROTATION_JITTER_DEGREES = 8.0  # for everything but circles
POSITION_JITTER_PIXELS = 3.0  # for single objects, around their cell's centre
EDGE_MARGIN_PIXELS = 1.0  # objects stay fully inside the image by this much
GAP_PIXELS = 2.0  # minimum gap between the bounding circles of two objects
MIN_X_GAP_PIXELS = 8.0  # 3-object scenes: neighbouring centres differ in x by at least this, so the order is clear
DOMINANCE = 2.0  # 2-object scenes: the dominant axis separation is at least this times the other one
COLOUR_JITTER = 12  # +/- per channel on object fills
BACKGROUND_JITTER = 8  # +/- per channel on background tones
PIXEL_NOISE_STD = (2.0, 6.0)  # range of the Gaussian pixel noise std, in 0-255 levels

BACKGROUNDS = {  # muted, low-saturation mid tones (RGB)
    "grey": (128, 128, 128),
    "charcoal": (78, 80, 84),
    "stone": (146, 141, 133),
    "taupe": (124, 114, 104),
    "ash": (104, 108, 110),
    "olive grey": (118, 118, 100),
}
GRADIENT_PROBABILITY = 0.4  # otherwise the background is flat

# One held-out (colour, shape) pair per colour, covering every shape. They appear only in "compositional".
HELD_OUT_PAIRS = frozenset({
    ("red", "square"),
    ("orange", "star"),
    ("yellow", "triangle"),
    ("green", "circle"),
    ("blue", "diamond"),
    ("purple", "cross"),
    ("pink", "star"),
    ("white", "triangle"),
})

SPLITS = ("train", "validation", "test")
SCENE_SPLITS = SPLITS + ("compositional",)
POSITIONS = (  # 3x3 grid, row by row; index = row * 3 + column
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
RELATIONS = ("left of", "above")
VOCABULARY_WORDS = tuple(sorted(
    {"a", "and", "at", "the", "above", "left", "of", "top", "bottom", "right", "center"}
    | set(SIZES) | set(COLOURS) | set(SHAPES)
))


@dataclass(frozen=True)
class SceneObject:
    shape: str  # one of SHAPES
    colour: str  # one of COLOURS
    size: str  # one of SIZES
    centre: tuple[float, float]  # (x, y) in pixels: the centre of `box`
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels, tight around the drawn shape

    @property
    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    image: Image.Image  # 64x64 RGB
    caption: str  # canonical caption, lowercase, no final period
    objects: tuple[SceneObject, ...]  # in the order the caption names them


@dataclass(frozen=True)
class ParsedCaption:
    objects: tuple[tuple[str, str, str], ...]  # (size, colour, shape) in caption order
    position: str | None  # one of POSITIONS for 1 object, else None
    relation: str | None  # one of RELATIONS for 2 objects, else None


def split_seed(split: str, seed: int) -> int:
    """A 64-bit seed mixing the split name in, stable across processes (unlike `hash()`)."""
    digest = hashlib.sha256(f"{split}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_split(split: str) -> None:
    if split not in SCENE_SPLITS:
        raise ValueError(f"unknown scene split {split!r}; expected one of {SCENE_SPLITS}")


def cell_of(x: float, y: float) -> str:
    """The 3x3 grid position name of the pixel (x, y)."""
    column = min(int(x // CELL_PIXELS), GRID_CELLS - 1)
    row = min(int(y // CELL_PIXELS), GRID_CELLS - 1)
    return POSITIONS[row * GRID_CELLS + column]


# ---------------------------------------------------------------------------------------------------------
# Layout: which objects, where. Cheap (no drawing), so captions alone can be sampled quickly.


def _unit_outline(shape: str) -> list[tuple[float, float]] | None:
    """Polygon of a shape inside the unit circle, pointing up (y down); None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        h = 0.8  # half-side; the corners poke past the unit circle so the square looks as big as the circle
        return [(-h, -h), (h, -h), (h, h), (-h, h)]
    if shape == "triangle":
        return [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)]  # narrower than tall: never a tilted square
    if shape == "star":
        points = []
        for i in range(10):
            radius = 1.0 if i % 2 == 0 else 0.45  # fat inner radius keeps a small star recognisable
            angle = -math.pi / 2 + i * math.pi / 5
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
        return points
    if shape == "cross":
        a, t = 0.95, 0.33  # arm reach and half-thickness
        return [(-t, -a), (t, -a), (t, -t), (a, -t), (a, t), (t, t), (t, a), (-t, a), (-t, t), (-a, t), (-a, -t), (-t, -t)]
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


@dataclass(frozen=True)
class _Body:
    """A shape at its final size and rotation, centred on its box at the origin."""

    shape: str
    colour: str
    size: str
    outline: tuple[tuple[float, float], ...] | None  # polygon relative to the centre; None for a circle
    half_width: float
    half_height: float
    reach: float  # radius of the bounding circle around the centre, for overlap tests

    def placed(self, x: float, y: float) -> SceneObject:
        box = (x - self.half_width, y - self.half_height, x + self.half_width, y + self.half_height)
        return SceneObject(self.shape, self.colour, self.size, (x, y), box)


def _make_body(rng: random.Random, shape: str, colour: str, size: str) -> _Body:
    radius = SIZES[size] / 2 * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER)
    unit = _unit_outline(shape)
    if unit is None:
        return _Body(shape, colour, size, None, radius, radius, radius)
    theta = math.radians(rng.uniform(-ROTATION_JITTER_DEGREES, ROTATION_JITTER_DEGREES))
    c, s = math.cos(theta), math.sin(theta)
    points = [(radius * (c * u - s * v), radius * (s * u + c * v)) for u, v in unit]
    # centre the polygon on its bounding box, so "centre" means what a viewer would call the middle
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    points = [(px - mx, py - my) for px, py in points]
    reach = max(math.hypot(px, py) for px, py in points)
    half_width, half_height = (max(xs) - min(xs)) / 2, (max(ys) - min(ys)) / 2
    return _Body(shape, colour, size, tuple(points), half_width, half_height, reach)


def _pick_identities(rng: random.Random, split: str, count: int) -> list[tuple[str, str, str]]:
    """`count` distinct (size, colour, shape) triples; exactly one uses a held-out pair in "compositional"."""
    seen_pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    held_out = sorted(HELD_OUT_PAIRS)
    chosen: list[tuple[str, str, str]] = []
    novel_index = rng.randrange(count) if split == "compositional" else -1
    while len(chosen) < count:
        colour, shape = rng.choice(held_out if len(chosen) == novel_index else seen_pairs)
        identity = (rng.choice(tuple(SIZES)), colour, shape)
        if identity not in chosen:
            chosen.append(identity)
    return chosen


def _overlaps(a: _Body, pa: tuple[float, float], b: _Body, pb: tuple[float, float]) -> bool:
    return math.dist(pa, pb) < a.reach + b.reach + GAP_PIXELS


def _random_point(rng: random.Random, body: _Body) -> tuple[float, float]:
    lo_x, hi_x = body.half_width + EDGE_MARGIN_PIXELS, IMAGE_SIZE - body.half_width - EDGE_MARGIN_PIXELS
    lo_y, hi_y = body.half_height + EDGE_MARGIN_PIXELS, IMAGE_SIZE - body.half_height - EDGE_MARGIN_PIXELS
    return rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)


def _place_one(rng: random.Random, body: _Body) -> tuple[list[tuple[_Body, tuple[float, float]]], str]:
    cell = rng.randrange(GRID_CELLS * GRID_CELLS)
    row, column = divmod(cell, GRID_CELLS)
    x = (column + 0.5) * CELL_PIXELS + rng.uniform(-POSITION_JITTER_PIXELS, POSITION_JITTER_PIXELS)
    y = (row + 0.5) * CELL_PIXELS + rng.uniform(-POSITION_JITTER_PIXELS, POSITION_JITTER_PIXELS)
    # pull corner objects inwards until they fit; the centre still lies well inside its cell
    x = min(max(x, body.half_width + EDGE_MARGIN_PIXELS), IMAGE_SIZE - body.half_width - EDGE_MARGIN_PIXELS)
    y = min(max(y, body.half_height + EDGE_MARGIN_PIXELS), IMAGE_SIZE - body.half_height - EDGE_MARGIN_PIXELS)
    return [(body, (x, y))], f"{body.placed(x, y).phrase} at the {POSITIONS[cell]}"


def _place_two(rng: random.Random, bodies: list[_Body]):
    relation = rng.choice(RELATIONS)
    a, b = bodies
    while True:
        pa, pb = _random_point(rng, a), _random_point(rng, b)
        if _overlaps(a, pa, b, pb):
            continue
        along, across = (0, 1) if relation == "left of" else (1, 0)
        if abs(pa[along] - pb[along]) < DOMINANCE * abs(pa[across] - pb[across]):
            continue
        placed = sorted([(a, pa), (b, pb)], key=lambda item: item[1][along])  # left/upper one first
        first, second = (body.placed(*p) for body, p in placed)
        return placed, f"{first.phrase} {relation} {second.phrase}"


def _place_three(rng: random.Random, bodies: list[_Body]):
    for _ in range(1000):
        points = [_random_point(rng, body) for body in bodies]
        placed = sorted(zip(bodies, points), key=lambda item: item[1][0])
        if any(placed[i + 1][1][0] - placed[i][1][0] < MIN_X_GAP_PIXELS for i in range(2)):
            continue
        if any(_overlaps(*placed[i], *placed[j]) for i in range(3) for j in range(i + 1, 3)):
            continue
        a, b, c = (body.placed(*p).phrase for body, p in placed)
        return placed, f"{a}, {b} and {c}"
    return None  # these bodies are too big to fit often enough; the caller draws new ones


def _sample_layout(rng: random.Random, split: str):
    """[(body, centre)] in caption order, and the caption."""
    count = rng.randint(1, 3)
    while True:
        identities = _pick_identities(rng, split, count)
        bodies = [_make_body(rng, shape, colour, size) for size, colour, shape in identities]
        if count == 1:
            return _place_one(rng, bodies[0])
        if count == 2:
            return _place_two(rng, bodies)
        layout = _place_three(rng, bodies)
        if layout is not None:
            return layout


# ---------------------------------------------------------------------------------------------------------
# Drawing


def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float32) + [rng.uniform(-amount, amount) for _ in range(3)], 0, 255)


def _background(rng: random.Random, side: int) -> np.ndarray:
    """Flat or linear-gradient background: float32 (side, side, 3)."""
    tones = tuple(BACKGROUNDS.values())
    start = _jitter(rng, rng.choice(tones), BACKGROUND_JITTER)
    if rng.random() >= GRADIENT_PROBABILITY:
        return np.broadcast_to(start, (side, side, 3)).astype(np.float32)
    end = _jitter(rng, rng.choice(tones), BACKGROUND_JITTER)
    angle = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
    ramp = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]  # (side, side)
    t = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    return (start + t[..., None] * (end - start)).astype(np.float32)


def _draw(rng: random.Random, layout) -> Image.Image:
    side = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.fromarray(_background(rng, side).round().astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for body, (x, y) in layout:
        fill = tuple(int(v) for v in _jitter(rng, COLOURS[body.colour], COLOUR_JITTER).round())
        if body.outline is None:
            r = body.half_width * SUPERSAMPLE
            draw.ellipse((x * SUPERSAMPLE - r, y * SUPERSAMPLE - r, x * SUPERSAMPLE + r, y * SUPERSAMPLE + r), fill=fill)
        else:
            draw.polygon([((x + px) * SUPERSAMPLE, (y + py) * SUPERSAMPLE) for px, py in body.outline], fill=fill)
    image = np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(*PIXEL_NOISE_STD), image.shape)
    return Image.fromarray(np.clip(image + noise, 0, 255).round().astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------------------
# Public API


def make_scene(rng: random.Random, split: str) -> Scene:
    """Draw one scene of `split` ("train", "validation", "test" or "compositional") using `rng` only."""
    _check_split(split)
    layout, caption = _sample_layout(rng, split)
    image = _draw(rng, layout)
    return Scene(image, caption, tuple(body.placed(*centre) for body, centre in layout))


def iter_scenes(split: str, seed: int) -> Iterator[Scene]:
    """Endless, deterministic stream of scenes; the first n equal `scene_dataset(split, n, seed)`."""
    _check_split(split)
    rng = random.Random(split_seed(split, seed))
    while True:
        # one sub-seed per scene, so the captions alone (`iter_captions`) follow the same sequence
        yield make_scene(random.Random(rng.getrandbits(64)), split)


def scene_dataset(split: str, n: int, seed: int) -> list[Scene]:
    """`n` scenes of `split`, the same for the same (split, n, seed)."""
    scenes = iter_scenes(split, seed)
    return [next(scenes) for _ in range(n)]


def iter_captions(split: str, seed: int) -> Iterator[str]:
    """The captions of `iter_scenes(split, seed)` without drawing the images (fast)."""
    _check_split(split)
    rng = random.Random(split_seed(split, seed))
    while True:
        yield _sample_layout(random.Random(rng.getrandbits(64)), split)[1]


def example_captions(n: int, seed: int = 0, split: str = "train") -> list[str]:
    """`n` canonical captions, e.g. for the speech set; the same as the captions of `scene_dataset(split, n, seed)`."""
    captions = iter_captions(split, seed)
    return [next(captions) for _ in range(n)]


def caption_words(caption: str) -> list[str]:
    """The words of a caption, commas dropped."""
    return caption.replace(",", " ").split()


def parse_caption(caption: str) -> ParsedCaption:
    """Invert the caption grammar, e.g. to score a generated caption; raises ValueError if it doesn't parse."""
    words = caption_words(caption)

    def object_at(i: int) -> tuple[str, str, str]:
        if i + 4 > len(words) or words[i] != "a" or words[i + 1] not in SIZES or words[i + 2] not in COLOURS \
                or words[i + 3] not in SHAPES:
            raise ValueError(f"expected 'a SIZE COLOUR SHAPE' at word {i} of {caption!r}")
        return words[i + 1], words[i + 2], words[i + 3]

    first = object_at(0)
    rest = " ".join(words[4:])
    if rest.startswith("at the ") and rest[len("at the "):] in POSITIONS:
        return ParsedCaption((first,), rest[len("at the "):], None)
    for relation in RELATIONS:
        n = len(relation.split())
        if " ".join(words[4:4 + n]) == relation and len(words) == 8 + n:
            return ParsedCaption((first, object_at(4 + n)), None, relation)
    if len(words) == 13 and words[8] == "and" and caption.count(",") == 1:
        return ParsedCaption((first, object_at(4), object_at(9)), None, None)
    raise ValueError(f"caption {caption!r} does not follow the scene grammar")
