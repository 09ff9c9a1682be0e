"""Procedurally drawn shape scenes, each with one canonical caption that is decidable from the image alone.

A scene holds 1 to 3 objects (shape, colour, size) on any background a person might draw on: white or black
paper, light, dark or saturated colours, gradients, textures and noise. Objects are filled (sometimes edged in a
darker ink) or outlined, with any stroke width, rotated, with smooth or aliased edges and sometimes a hand-drawn
wobble; a shape alone may fill most of the picture; the picture has any size and aspect up to 2:1 and may be saved
as a JPEG. The caption grammar:
    1 object:  "a large red circle at the top left"              (position from a 3x3 grid of cells)
    2 objects: "a small blue square left of a large green star"  (or "... above ...", whichever axis dominates)
    3 objects: "a small red circle, a large blue square and a small green star"   (listed left to right)

Coordinates: layouts live on a 64x64 square (IMAGE_SIZE), x to the right and y down; `SceneObject` centres and boxes
are in that square. A picture of W x H pixels maps the square onto itself, so its shapes are drawn undistorted in
the picture and squashed in the square, exactly as the processor's resize to a square sees them.
"""

import hashlib
import io
import math
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 64  # side of the square that layouts live in (and the model's input size)
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
COLOUR_SHADES = {  # further shades a person would still call by the name, beside COLOURS' own
    "red": ((190, 20, 25), (240, 60, 50)),
    "orange": ((240, 110, 20), (255, 165, 40)),
    "yellow": ((240, 210, 0), (255, 240, 90)),
    "green": ((40, 140, 40), (60, 200, 90)),
    "blue": ((20, 60, 190), (50, 120, 255)),
    "purple": ((120, 30, 170), (170, 70, 230)),
    "pink": ((240, 100, 180), (255, 150, 210)),
    "white": ((240, 240, 240), (255, 255, 255)),
}
SIZES = {"small": 12.0, "large": 22.0}  # name -> typical extent in pixels of the square (diameter of a circle)
SIZE_RANGES = {"small": (9.0, 15.0), "large": (19.0, 27.0)}  # extents drawn uniformly; the gap keeps names decidable
# A shape drawn alone is often drawn big: people fill the canvas. A share of lone large shapes get an extent from
# LONE_LARGE_RANGE instead, up to most of the picture (v4.2 split such shapes into two or three objects).
LONE_LARGE_RANGE = (27.0, 50.0)
LONE_LARGE_SHARE = 0.4
ROTATION_DEGREES = {"square": 20.0, "diamond": 20.0}  # beyond this a square becomes a diamond; others turn freely
FREE_ROTATION_DEGREES = 180.0
POSITION_MARGIN_PIXELS = 2.5  # a single object's centre stays this far inside its grid cell
EDGE_MARGIN_PIXELS = 1.0  # objects stay fully inside the image by this much
GAP_PIXELS = 2.0  # minimum gap between the bounding circles of two objects
MIN_X_GAP_PIXELS = 8.0  # 3-object scenes: neighbouring centres differ in x by at least this, so the order is clear
DOMINANCE = 2.0  # 2-object scenes: the dominant axis separation is at least this times the other one
COLOUR_JITTER = 14  # +/- per channel on object colours
PIXEL_NOISE_STD = (0.0, 8.0)  # range of the Gaussian pixel noise std, in 0-255 levels
# Picture size: the short side in pixels and the aspect (long / short side). The model sees every picture resized
# to IMAGE_SIZE square, at training as at inference.
SHORT_SIDE_PIXELS = (48, 160)
MAX_ASPECT = 2.0
MIN_CONTRAST = 120.0  # RGB distance every object colour keeps from the background around it
OUTLINE_PROBABILITY = 0.35  # otherwise filled
# Of the filled shapes, this share gets an edge in another ink, as clip art and drawing programs' default shapes do:
# near-black, or a darker shade of the fill. The colour named is the fill's.
EDGED_PROBABILITY = 0.3
EDGE_INKS = ("black", "darker")
MAX_EDGE_FRACTION = 0.25  # edge width, at most this fraction of the shape's radius: the fill must still show
STROKE_PIXELS = (1.5, 4.0)  # outline width, in pixels of the square
WOBBLE_PROBABILITY = 0.3  # a hand-drawn outline: the edge wanders by a few percent of the size
WOBBLE = (0.02, 0.07)
ALIASED_PROBABILITY = 0.25  # drawn without antialiasing, as simple paint programs do
JPEG_PROBABILITY = 0.4
JPEG_QUALITY = (30, 90)
BACKGROUND_KINDS = {  # kind -> share of scenes
    "white": 0.22, "light": 0.14, "dark": 0.12, "grey": 0.10, "saturated": 0.12, "gradient": 0.15,
    "texture": 0.10, "noise": 0.05,
}

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
    image: Image.Image  # RGB, any size and aspect up to MAX_ASPECT
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


CIRCLE_POINTS = 48  # a circle is drawn as a polygon, so that it can be squashed and wobbled like the others


def _unit_outline(shape: str) -> list[tuple[float, float]]:
    """Polygon of a shape inside the unit circle, pointing up (y down)."""
    if shape == "circle":
        return [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, CIRCLE_POINTS, endpoint=False)]
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
    """A shape at its final size and rotation, squashed into the square, centred on its box at the origin."""

    shape: str
    colour: str
    size: str
    outline: tuple[tuple[float, float], ...]  # polygon relative to the centre, in pixels of the square
    half_width: float
    half_height: float
    reach: float  # radius of the bounding circle around the centre, for overlap tests

    def placed(self, x: float, y: float) -> SceneObject:
        box = (x - self.half_width, y - self.half_height, x + self.half_width, y + self.half_height)
        return SceneObject(self.shape, self.colour, self.size, (x, y), box)


def _canvas_size(rng: random.Random) -> tuple[int, int]:
    """(width, height) of the picture in pixels: square a third of the time, else up to MAX_ASPECT either way."""
    short = rng.randint(*SHORT_SIDE_PIXELS)
    aspect = 1.0 if rng.random() < 1 / 3 else rng.uniform(1.0, MAX_ASPECT)
    long = round(short * aspect)
    return (long, short) if rng.random() < 0.5 else (short, long)


def _extent(rng: random.Random, size: str, alone: bool) -> float:
    """The shape's extent in pixels of the square. It takes one draw whatever the range, so that the random stream,
    and with it every caption, stays as it was before lone shapes could be big (the speech cache is keyed by text)."""
    u = rng.random()
    if not (alone and size == "large"):
        low, high = SIZE_RANGES[size]
    elif u < 1 - LONE_LARGE_SHARE:  # the usual range, u rescaled to [0, 1)
        (low, high), u = SIZE_RANGES[size], u / (1 - LONE_LARGE_SHARE)
    else:
        (low, high), u = LONE_LARGE_RANGE, (u - (1 - LONE_LARGE_SHARE)) / LONE_LARGE_SHARE
    return low + (high - low) * u


def _make_body(rng: random.Random, shape: str, colour: str, size: str, squash: tuple[float, float],
               alone: bool = False) -> _Body:
    """`squash` = (short side / width, short side / height): how the square shrinks the picture's axes."""
    radius = _extent(rng, size, alone) / 2
    limit = ROTATION_DEGREES.get(shape, FREE_ROTATION_DEGREES)
    theta = math.radians(rng.uniform(-limit, limit))
    c, t = math.cos(theta), math.sin(theta)
    points = [(radius * (c * u - t * v) * squash[0], radius * (t * u + c * v) * squash[1])
              for u, v in _unit_outline(shape)]
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
    def span(index: int, half: float) -> tuple[float, float]:
        # anywhere in the cell, away from its borders, and with the whole shape inside the picture
        low = max(index * CELL_PIXELS + POSITION_MARGIN_PIXELS, half + EDGE_MARGIN_PIXELS)
        high = min((index + 1) * CELL_PIXELS - POSITION_MARGIN_PIXELS, IMAGE_SIZE - half - EDGE_MARGIN_PIXELS)
        return low, high

    # A big shape fits only the middle cells; every cell fits the usual sizes, so the draw is randrange(9) as before.
    cells = [cell for cell in range(GRID_CELLS * GRID_CELLS)
             if all(low < high for low, high in (span(cell % GRID_CELLS, body.half_width),
                                                 span(cell // GRID_CELLS, body.half_height)))]
    cell = rng.choice(cells)
    row, column = divmod(cell, GRID_CELLS)
    x, y = rng.uniform(*span(column, body.half_width)), rng.uniform(*span(row, body.half_height))
    return [(body, (x, y))], f"{body.placed(x, y).phrase} at the {POSITIONS[cell]}"


def _place_two(rng: random.Random, bodies: list[_Body]):
    relation = rng.choice(RELATIONS)
    a, b = bodies
    for _ in range(1000):
        pa, pb = _random_point(rng, a), _random_point(rng, b)
        if _overlaps(a, pa, b, pb):
            continue
        along, across = (0, 1) if relation == "left of" else (1, 0)
        if abs(pa[along] - pb[along]) < DOMINANCE * abs(pa[across] - pb[across]):
            continue
        placed = sorted([(a, pa), (b, pb)], key=lambda item: item[1][along])  # left/upper one first
        first, second = (body.placed(*p) for body, p in placed)
        return placed, f"{first.phrase} {relation} {second.phrase}"
    return None


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
    """[(body, centre)] in caption order, the caption, and the picture's (width, height)."""
    canvas = _canvas_size(rng)
    squash = (min(canvas) / canvas[0], min(canvas) / canvas[1])
    count = rng.randint(1, 3)
    while True:
        identities = _pick_identities(rng, split, count)
        bodies = [_make_body(rng, shape, colour, size, squash, alone=count == 1) for size, colour, shape in identities]
        if count == 1:
            return (*_place_one(rng, bodies[0]), canvas)
        layout = _place_two(rng, bodies) if count == 2 else _place_three(rng, bodies)
        if layout is not None:
            return (*layout, canvas)


# ---------------------------------------------------------------------------------------------------------
# Drawing


def _jitter(rng: random.Random, rgb, amount: float) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float32) + [rng.uniform(-amount, amount) for _ in range(3)], 0, 255)


def _object_colour(rng: random.Random, name: str) -> np.ndarray:
    return _jitter(rng, rng.choice((COLOURS[name], *COLOUR_SHADES[name])), COLOUR_JITTER)


def _flat_tone(rng: random.Random, kind: str) -> np.ndarray:
    """One background colour of `kind` (not gradient, texture or noise): RGB float32."""
    if kind == "white":
        return np.full(3, rng.uniform(236, 255), np.float32) + [rng.uniform(-4, 4) for _ in range(3)]
    if kind == "light":
        return np.array([255 - rng.uniform(0, 70) for _ in range(3)], np.float32)
    if kind == "dark":
        return np.array([rng.uniform(0, 55) for _ in range(3)], np.float32)
    if kind == "grey":
        return np.full(3, rng.uniform(70, 180), np.float32) + [rng.uniform(-8, 8) for _ in range(3)]
    if kind == "saturated":
        import colorsys

        rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 1.0))
        return np.array(rgb, np.float32) * 255
    raise ValueError(f"unknown flat background kind {kind!r}")


FLAT_KINDS = ("white", "light", "dark", "grey", "saturated")


def _background(rng: random.Random, width: int, height: int) -> np.ndarray:
    """A background of a random kind (BACKGROUND_KINDS): float32 (height, width, 3) in 0-255."""
    kind = rng.choices(tuple(BACKGROUND_KINDS), weights=tuple(BACKGROUND_KINDS.values()))[0]
    noise = np.random.default_rng(rng.getrandbits(64))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind in FLAT_KINDS:
        return np.broadcast_to(_flat_tone(rng, kind), (height, width, 3)).astype(np.float32)
    if kind == "gradient":
        start, end = (_flat_tone(rng, rng.choice(FLAT_KINDS)) for _ in range(2))
        angle = rng.uniform(0, 2 * math.pi)
        ramp = math.cos(angle) * xx / width + math.sin(angle) * yy / height
        t = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
        return start + t[..., None] * (end - start)
    base = _flat_tone(rng, rng.choice(FLAT_KINDS))
    if kind == "noise":
        return np.clip(base + noise.normal(0, rng.uniform(15, 35), (height, width, 3)), 0, 255).astype(np.float32)
    # texture: stripes, checks, dots or paper grain, at low contrast
    pattern = rng.choice(("stripes", "checks", "dots", "grain"))
    period = rng.uniform(4, 16) * min(width, height) / 64
    if pattern == "stripes":
        angle = rng.uniform(0, math.pi)
        field = np.sin(2 * math.pi * (math.cos(angle) * xx + math.sin(angle) * yy) / period)
    elif pattern == "checks":
        field = np.sign(np.sin(math.pi * xx / period) * np.sin(math.pi * yy / period))
    elif pattern == "dots":
        field = (np.hypot((xx % period) - period / 2, (yy % period) - period / 2) < period / 5).astype(np.float32)
    else:
        small = noise.normal(0, 1, (max(2, height // 4), max(2, width // 4))).astype(np.float32)
        field = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
    contrast = rng.uniform(8, 30) * np.array([rng.uniform(0.6, 1.0) for _ in range(3)], np.float32)
    return np.clip(base + field[..., None] * contrast, 0, 255).astype(np.float32)


def _wobbled(rng: random.Random, outline, amount: float) -> list[tuple[float, float]]:
    """The outline with its edges subdivided and pushed in and out by smooth noise, as a hand would draw it."""
    points = []
    for (x0, y0), (x1, y1) in zip(outline, outline[1:] + outline[:1]):
        steps = max(1, int(math.dist((x0, y0), (x1, y1)) / 1.5))
        points += [(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(steps)]
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
    n = len(points)
    scale = 1 + amount * sum(np.sin((k + 2) * 2 * math.pi * np.arange(n) / n + phase) / (k + 1)
                             for k, phase in enumerate(phases))
    return [(x * f, y * f) for (x, y), f in zip(points, scale)]


def _local_colour(background: np.ndarray, box, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    sx, sy = width / IMAGE_SIZE, height / IMAGE_SIZE
    region = background[max(0, int(y0 * sy)):max(1, int(math.ceil(y1 * sy))),
                        max(0, int(x0 * sx)):max(1, int(math.ceil(x1 * sx)))]
    return region.reshape(-1, 3).mean(axis=0)


def _nearest_colour_name(rgb: np.ndarray) -> str:
    """The COLOURS name closest to `rgb` (a green background must not hold a green shape, however dark)."""
    return min(COLOURS, key=lambda name: min(np.linalg.norm(rgb - np.array(shade, np.float32))
                                              for shade in (COLOURS[name], *COLOUR_SHADES[name])))


def _mask(points, canvas: tuple[int, int], supersample: int, line_width: float | None) -> np.ndarray:
    """(H, W, 1) coverage of the polygon `points`: filled when `line_width` is None, else its edge of that width."""
    width, height = canvas
    mask = Image.new("L", (width * supersample, height * supersample), 0)
    if line_width is None:
        ImageDraw.Draw(mask).polygon(points, fill=255)
    else:
        ImageDraw.Draw(mask).line(points + points[:1], fill=255, width=max(1, round(line_width)), joint="curve")
    if supersample > 1:
        mask = mask.resize((width, height), Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32)[..., None] / 255


def _paint(image: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return image * (1 - alpha) + colour * alpha


def _draw(rng: random.Random, layout, canvas: tuple[int, int]) -> Image.Image:
    width, height = canvas
    colours = [_object_colour(rng, body.colour) for body, _ in layout]
    for _ in range(30):  # a background on which every object stands out
        background = _background(rng, width, height)
        locals_ = [_local_colour(background, body.placed(*centre).box, width, height) for body, centre in layout]
        if all(np.linalg.norm(c - b) >= MIN_CONTRAST and _nearest_colour_name(b) != body.colour
               for c, b, (body, _) in zip(colours, locals_, layout)):
            break
    else:
        mean = background.mean(axis=(0, 1))
        background = np.broadcast_to(np.full(3, 0.0 if mean.mean() > 127 else 250.0, np.float32),
                                     (height, width, 3)).astype(np.float32)
        if any(np.linalg.norm(c - background[0, 0]) < MIN_CONTRAST for c in colours):
            background = np.broadcast_to(np.full(3, 128.0, np.float32), (height, width, 3)).astype(np.float32)
    image = background.copy()
    supersample = 1 if rng.random() < ALIASED_PROBABILITY else 3
    sx, sy = width / IMAGE_SIZE * supersample, height / IMAGE_SIZE * supersample
    stroke = rng.uniform(*STROKE_PIXELS) * min(width, height) / IMAGE_SIZE * supersample
    for (body, (x, y)), colour in zip(layout, colours):
        outline = list(body.outline)
        if rng.random() < WOBBLE_PROBABILITY:
            outline = _wobbled(rng, outline, rng.uniform(*WOBBLE))
        points = [((x + px) * sx, (y + py) * sy) for px, py in outline]
        outlined = rng.random() < OUTLINE_PROBABILITY
        image = _paint(image, _mask(points, canvas, supersample, stroke if outlined else None), colour)
        if not outlined and rng.random() < EDGED_PROBABILITY:
            ink = (np.full(3, rng.uniform(0, 45), np.float32) if rng.choice(EDGE_INKS) == "black"
                   else colour * rng.uniform(0.35, 0.65))
            radius = max(math.hypot(px * sx, py * sy) for px, py in outline)  # undistorted in the picture
            image = _paint(image, _mask(points, canvas, supersample, min(stroke, MAX_EDGE_FRACTION * radius)), ink)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(*PIXEL_NOISE_STD), image.shape)
    picture = Image.fromarray(np.clip(image + noise, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < JPEG_PROBABILITY:
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=rng.randint(*JPEG_QUALITY))
        picture = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return picture


def make_clutter(rng: random.Random) -> Image.Image:
    """A picture unlike any scene: dozens of overlapping blobs and strokes of any colour over a smooth field, at
    photo-like sizes. The model learns to say it does not recognise such a picture instead of naming shapes."""
    width, height = _canvas_size(rng)
    width, height = width * 2, height * 2
    noise = np.random.default_rng(rng.getrandbits(64))
    field = noise.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
    image = Image.fromarray(field, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(15, 60)):
        colour = tuple(rng.randrange(256) for _ in range(3))
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(2, 0.25 * min(width, height))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r * rng.uniform(0.3, 1.5), x + r, y + r), fill=colour)
        else:
            draw.line([(x, y), (x + rng.uniform(-r, r) * 3, y + rng.uniform(-r, r) * 3)], fill=colour,
                      width=max(1, int(r / 3)))
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3)))
    pixels = np.asarray(image, np.float32) + noise.normal(0, rng.uniform(0, 12), (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


UNRECOGNISED_CAPTION = "i do not recognise this picture"  # what a scene-less picture (`make_clutter`) is captioned


# ---------------------------------------------------------------------------------------------------------
# Public API


def make_scene(rng: random.Random, split: str) -> Scene:
    """Draw one scene of `split` ("train", "validation", "test" or "compositional") using `rng` only."""
    _check_split(split)
    layout, caption, canvas = _sample_layout(rng, split)
    image = _draw(rng, layout, canvas)
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
