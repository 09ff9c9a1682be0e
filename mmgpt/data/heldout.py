"""An independent scene renderer and wording set, used only to evaluate mmgpt: the out-of-distribution split.

Nothing here is used in training, and nothing here calls the training renderer (`mmgpt.data.scenes`) to draw:
the shapes' geometry, the hues of each colour name, strokes, backgrounds, picture sizes and artefacts are this
module's own. It shares with `scenes` only what the model must be able to say: the caption grammar and its words
(SHAPES, the names in COLOURS and SIZES, POSITIONS, `cell_of`) and the held-out colour+shape pairs, which it leaves
out so that this split measures how a picture is drawn, not which pairs training saw (that is "compositional").

Pictures: RGB `PIL.Image.Image` of any size and aspect, from 100x80 to 512x512, landscape and portrait. Each
`SceneObject`'s `centre` and `box` are in the IMAGE_SIZE x IMAGE_SIZE frame the model sees (x scaled by
IMAGE_SIZE/W, y by IMAGE_SIZE/H), so `cell_of` and the caption grammar read them as they read training scenes;
`pixel_box` gives the box in the picture's own pixels.

Every caption is decidable from the picture, in the picture's pixels and in the squeezed 64x64 frame alike: a
single object's centre lies well inside its 3x3 cell, two objects are separated clearly more along the named axis
than across it, three have clearly different x, objects never touch, small and large never meet, and every
object's paint stands out from the background under it.

The wording set: questions about a scene (`heldout_question`) and spoken phrases about shapes (`heldout_phrases`)
in phrasings of its own, with answers computed here from the scene's objects.
"""

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mmgpt.data.questions import (  # the kinds and answers, not the wording
    COUNT_WORDS, OBJECT_KINDS, QUESTION_KINDS, absent_answer,
)
from mmgpt.data.scenes import COLOURS, HELD_OUT_PAIRS, IMAGE_SIZE, SHAPES, SIZES, Scene, SceneObject, \
    cell_of, split_seed

# --- the pictures ---------------------------------------------------------------------------------------------

WIDTH_PIXELS = (100, 512)
HEIGHT_PIXELS = (80, 512)
ASPECTS = (1.0, 5 / 4, 4 / 3, 3 / 2, 16 / 9, 4 / 5, 3 / 4)  # width / height
SUPERSAMPLING = (1, 1, 2, 3)  # 1 draws aliased edges; 2 and 3 antialias

# Each name in several hues of this module's own choosing, all of which a person would still call by that name.
PALETTE = {
    "red": ((205, 20, 35), (232, 45, 45), (180, 25, 30), (240, 30, 60)),
    "orange": ((245, 125, 5), (255, 150, 30), (230, 105, 25), (250, 135, 60)),
    "yellow": ((255, 215, 0), (255, 238, 60), (245, 205, 20), (250, 228, 90)),
    "green": ((40, 150, 60), (30, 185, 80), (0, 125, 30), (90, 180, 70)),
    "blue": ((10, 90, 210), (45, 110, 250), (20, 60, 180), (60, 130, 225)),
    "purple": ((125, 20, 135), (140, 70, 180), (100, 35, 160), (160, 50, 190)),
    "pink": ((255, 110, 180), (245, 140, 200), (255, 150, 215), (235, 95, 160)),
    "white": ((255, 255, 255), (246, 246, 242), (238, 240, 244)),
}
HUE_JITTER = 6  # +/- per channel on top of the chosen hue

BACKGROUNDS = {  # kind -> base tones (RGB)
    "white paper": ((255, 255, 255), (252, 252, 250)),
    "off-white": ((246, 241, 228), (250, 247, 236), (241, 239, 233)),
    "light grey": ((226, 226, 226), (212, 214, 217), (236, 236, 239)),
    "mid grey": ((150, 150, 150), (132, 134, 138)),
    "dark": ((18, 18, 20), (38, 38, 42), (16, 26, 48), (38, 52, 44)),  # black, charcoal, navy, chalkboard
    "pastel": ((205, 225, 246), (250, 241, 192), (206, 240, 216), (246, 222, 229), (229, 216, 246)),
    "saturated": ((0, 120, 128), (96, 62, 36), (34, 44, 112), (120, 110, 20)),  # teal, brown, indigo, olive
}
BACKGROUND_FINISHES = ("flat", "gradient", "radial", "paper", "noise", "grid")
MIN_CONTRAST = 120.0  # "redmean" RGB distance every object's paint keeps from the background under it

# --- the objects ----------------------------------------------------------------------------------------------

# Diameter of the shape's bounding circle as a fraction of sqrt(W * H), inside the training scenes' ranges for each
# name; the gap between them keeps small and large apart even in a 16:9 picture squeezed square.
SIZE_FRACTIONS = {"small": (0.15, 0.21), "large": (0.31, 0.38)}
# One shape drawn big, as people draw a lone shape to fill the canvas: beyond every scene above, and beyond most of
# what training draws (`scenes.LONE_LARGE_RANGE` ends near 0.78 of the frame; these reach 0.75 of sqrt(W * H)).
BIG_SIZE_FRACTION = (0.45, 0.75)
# Filled, then edged in near-black or in a darker shade of the fill: what clip art and drawing programs draw.
EDGED_STYLES = ("filled with a dark outline", "filled with a darker outline")
STYLES = ("filled", "outlined", *EDGED_STYLES, "crayon")
MAX_ROTATION_DEGREES = {"square": 12, "triangle": 12, "diamond": 8, "cross": 12, "circle": 0, "star": 36}
# Corner rounding (Chaikin cut, up to 3 passes) per shape: a diamond or a triangle rounded much more reads as an oval
MAX_CORNER_CUT = {"square": 0.22, "triangle": 0.12, "diamond": 0.07, "star": 0.08, "cross": 0.1}
WOBBLE = (0.0, 0.045)  # hand-drawn wobble: amplitude as a fraction of the radius
STROKE_FRACTION = (0.14, 0.3)  # outline width, fraction of the radius
MIN_STROKE_FRAME_PIXELS = 1.6  # ... and never thinner than this in the 64x64 frame, so its colour survives

# --- layout (fractions of the picture's width or height, i.e. of the 64x64 frame) ----------------------------

CELL_MARGIN = 0.05  # a single object's centre stays this far inside its 3x3 cell (3.2 px of the frame)
EDGE_MARGIN = 0.015  # objects stay inside the picture by this much
GAP = 0.03  # bounding circles of two objects stay this far apart (fraction of sqrt(W * H))
DOMINANCE = 2.0  # two objects: the named axis separates them at least this many times more than the other
MIN_SEPARATION = 0.14  # ... and by at least this much
MIN_X_GAP = 0.13  # three objects: neighbouring centres differ in x by at least this much (8.3 px of the frame)


@dataclass(frozen=True)
class HeldOutDrawing:
    scene: Scene  # the picture, its caption and its objects (frame coordinates)
    paint_masks: tuple[np.ndarray, ...]  # bool (H, W) per object: pixels mostly covered by the object's colour
    background: str  # e.g. "white paper, grid"
    styles: tuple[str, ...]  # per object, one of STYLES


@dataclass(frozen=True)
class _Body:
    """A shape at its final size, rotation and wobble, in picture pixels, centred on its box."""

    shape: str
    colour: str
    size: str
    points: np.ndarray  # (N, 2) closed outline relative to the box centre
    half_width: float  # of the box, the outline's stroke included
    half_height: float
    reach: float  # radius of the bounding circle around the centre
    style: str
    paint: tuple[int, int, int]  # the object's colour as drawn
    stroke: float  # outline width in pixels (0 for plain fills)


def _redmean_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A cheap perceptual RGB distance (0 to ~765) between broadcastable (..., 3) arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mean_red = (a[..., 0] + b[..., 0]) / 2
    d = a - b
    return np.sqrt((2 + mean_red / 256) * d[..., 0] ** 2 + 4 * d[..., 1] ** 2
                   + (2 + (255 - mean_red) / 256) * d[..., 2] ** 2)


# --- shapes -----------------------------------------------------------------------------------------------------


def _regular(n: int, radius: float, start: float = -math.pi / 2) -> np.ndarray:
    angles = start + np.arange(n) * 2 * math.pi / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _round_corners(points: np.ndarray, cut: float, passes: int) -> np.ndarray:
    """Chaikin corner cutting: each pass replaces every corner by two points `cut` of the way along its edges."""
    for _ in range(passes):
        following = np.roll(points, -1, axis=0)
        points = np.stack([(1 - cut) * points + cut * following, cut * points + (1 - cut) * following], axis=1)
        points = points.reshape(-1, 2)
    return points


def _outline(rng: random.Random, shape: str) -> np.ndarray:
    """(N, 2) outline of `shape` inside the unit circle, pointing up (y down), in this renderer's proportions."""
    if shape == "circle":
        squash = rng.uniform(0.93, 1.0)  # a hand-drawn circle is rarely perfect
        circle = _regular(96, 1.0)
        return circle * ([1.0, squash] if rng.random() < 0.5 else [squash, 1.0])
    if shape == "square":
        h = rng.uniform(0.7, 0.78)
        points = np.array([(-h, -h), (h, -h), (h, h), (-h, h)])
    elif shape == "triangle":
        base_y, half_base = rng.uniform(0.5, 0.62), rng.uniform(0.8, 0.92)
        points = np.array([(0.0, -1.0), (half_base, base_y), (-half_base, base_y)])
    elif shape == "diamond":
        half_width = rng.uniform(0.52, 0.66)
        points = np.array([(0.0, -1.0), (half_width, 0.0), (0.0, 1.0), (-half_width, 0.0)])
    elif shape == "star":
        inner = rng.uniform(0.38, 0.52)
        outer_points, inner_points = _regular(5, 1.0), _regular(5, inner, -math.pi / 2 + math.pi / 5)
        points = np.stack([outer_points, inner_points], axis=1).reshape(-1, 2)
    elif shape == "cross":
        t, a = rng.uniform(0.22, 0.3), rng.uniform(0.85, 0.98)  # arm half-thickness and reach
        points = np.array([(-t, -a), (t, -a), (t, -t), (a, -t), (a, t), (t, t), (t, a), (-t, a), (-t, t), (-a, t),
                           (-a, -t), (-t, -t)])
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    if rng.random() < 0.5:  # rounded corners, from a touch to marker-pen round, never so round it looks a circle
        points = _round_corners(points, rng.uniform(0.03, MAX_CORNER_CUT[shape]), passes=rng.choice((1, 2, 3)))
    return points


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """Points every `step` (or closer) along the closed outline, corners kept."""
    dense = []
    for p, q in zip(points, np.roll(points, -1, axis=0)):
        n = max(1, math.ceil(math.dist(p, q) / step))
        dense.extend(p + (q - p) * k / n for k in range(n))
    return np.array(dense)


def _wobble(rng: random.Random, points: np.ndarray, amount: float) -> np.ndarray:
    """Push each point of a dense closed outline in or out by smooth, periodic noise of up to `amount`."""
    if amount <= 0:
        return points
    t = np.arange(len(points)) / len(points)
    radial = sum(rng.uniform(0.3, 1.0) * np.sin(2 * math.pi * k * t + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    radial = amount * radial / max(np.abs(radial).max(), 1e-9)
    norms = np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-9)
    return points + points / norms * radial[:, None]


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    return points @ np.array([[c, s], [-s, c]])


def _make_body(rng: random.Random, identity: tuple[str, str, str], width: int, height: int,
               fraction: tuple[float, float] | None = None) -> _Body:
    """fraction: the range of the bounding circle's diameter over sqrt(W * H); None: SIZE_FRACTIONS of the size."""
    size, colour, shape = identity
    scale = math.sqrt(width * height)
    radius = rng.uniform(*(fraction or SIZE_FRACTIONS[size])) * scale / 2
    unit = _wobble(rng, _densify(_outline(rng, shape), 0.08), rng.uniform(*WOBBLE))
    limit = MAX_ROTATION_DEGREES[shape]
    points = _rotate(unit, rng.uniform(-limit, limit)) * radius
    style = rng.choice(STYLES)
    frame_pixel = max(width, height) / IMAGE_SIZE  # picture pixels per frame pixel, on the longer axis
    stroke = max(rng.uniform(*STROKE_FRACTION) * radius, MIN_STROKE_FRAME_PIXELS * frame_pixel)
    if style in ("filled", "crayon"):
        stroke = 0.0
    low, high = points.min(axis=0) - stroke / 2, points.max(axis=0) + stroke / 2
    points = points - (low + high) / 2  # centre on the box: the middle a viewer would point at
    half_width, half_height = (high - low) / 2
    reach = float(np.linalg.norm(points, axis=1).max() + stroke / 2)
    hue = rng.choice(PALETTE[colour])
    paint = tuple(int(np.clip(v + rng.randint(-HUE_JITTER, HUE_JITTER), 0, 255)) for v in hue)
    return _Body(shape, colour, size, points, float(half_width), float(half_height), reach, style, paint, stroke)


# --- layout -----------------------------------------------------------------------------------------------------


def _pick_identities(rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    """`count` distinct (size, colour, shape) triples, none of them a held-out (compositional) pair."""
    pairs = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    chosen: list[tuple[str, str, str]] = []
    while len(chosen) < count:
        colour, shape = rng.choice(pairs)
        identity = (rng.choice(tuple(SIZES)), colour, shape)
        if identity not in chosen:
            chosen.append(identity)
    return chosen


def _apart(a: _Body, pa, b: _Body, pb, width: int, height: int) -> bool:
    return math.dist(pa, pb) >= a.reach + b.reach + GAP * math.sqrt(width * height)


def _place_one(rng: random.Random, body: _Body, width: int, height: int):
    """[(body, centre)] with the centre well inside a random cell, or None when the body cannot fit there."""
    row, column = divmod(rng.randrange(9), 3)
    spans = []
    for index, length, half in ((column, width, body.half_width), (row, height, body.half_height)):
        low = max((index / 3 + CELL_MARGIN) * length, half + EDGE_MARGIN * length)
        high = min(((index + 1) / 3 - CELL_MARGIN) * length, length - half - EDGE_MARGIN * length)
        if low > high:
            return None
        spans.append((low, high))
    return [(body, (rng.uniform(*spans[0]), rng.uniform(*spans[1])))]


def _random_centre(rng: random.Random, body: _Body, width: int, height: int) -> tuple[float, float] | None:
    low_x, high_x = body.half_width + EDGE_MARGIN * width, width - body.half_width - EDGE_MARGIN * width
    low_y, high_y = body.half_height + EDGE_MARGIN * height, height - body.half_height - EDGE_MARGIN * height
    if low_x > high_x or low_y > high_y:
        return None
    return rng.uniform(low_x, high_x), rng.uniform(low_y, high_y)


def _place_two(rng: random.Random, bodies: list[_Body], width: int, height: int):
    relation = rng.choice(("left of", "above"))
    along, across = (0, 1) if relation == "left of" else (1, 0)
    lengths = (width, height)
    for _ in range(2000):
        pa, pb = (_random_centre(rng, body, width, height) for body in bodies)
        if pa is None or pb is None or not _apart(bodies[0], pa, bodies[1], pb, width, height):
            continue
        d_pixels = [abs(pa[i] - pb[i]) for i in (0, 1)]
        d_frame = [d_pixels[i] / lengths[i] for i in (0, 1)]
        if d_frame[along] < MIN_SEPARATION or any(d[along] < DOMINANCE * d[across] for d in (d_pixels, d_frame)):
            continue
        return sorted(zip(bodies, (pa, pb)), key=lambda item: item[1][along])  # the left or upper one first
    return None


def _place_three(rng: random.Random, bodies: list[_Body], width: int, height: int):
    for _ in range(2000):
        centres = [_random_centre(rng, body, width, height) for body in bodies]
        if any(c is None for c in centres):
            return None
        placed = sorted(zip(bodies, centres), key=lambda item: item[1][0])
        if any((placed[i + 1][1][0] - placed[i][1][0]) / width < MIN_X_GAP for i in range(2)):
            continue
        if all(_apart(*placed[i], *placed[j], width, height) for i in range(3) for j in range(i + 1, 3)):
            return placed
    return None


def _layout(rng: random.Random, width: int, height: int, big: bool = False):
    """[(body, centre in pixels)] in caption order; `big`: one large shape of BIG_SIZE_FRACTION."""
    count = 1 if big else rng.randint(1, 3)
    while True:
        identities = [("large", c, s) if big else (size, c, s) for size, c, s in _pick_identities(rng, count)]
        bodies = [_make_body(rng, identity, width, height, BIG_SIZE_FRACTION if big else None)
                  for identity in identities]
        if count == 1:
            placed = _place_one(rng, bodies[0], width, height)
        else:
            placed = (_place_two if count == 2 else _place_three)(rng, bodies, width, height)
        if placed is not None:  # else these bodies do not fit: draw new ones
            return placed


def _frame_object(body: _Body, centre: tuple[float, float], width: int, height: int) -> SceneObject:
    sx, sy = IMAGE_SIZE / width, IMAGE_SIZE / height
    x, y = centre
    box = ((x - body.half_width) * sx, (y - body.half_height) * sy, (x + body.half_width) * sx,
           (y + body.half_height) * sy)
    return SceneObject(body.shape, body.colour, body.size, (x * sx, y * sy), box)


def _caption(objects: list[SceneObject]) -> str:
    phrases = [f"a {o.size} {o.colour} {o.shape}" for o in objects]
    if len(objects) == 1:
        return f"{phrases[0]} at the {cell_of(*objects[0].centre)}"
    if len(objects) == 2:
        (ax, ay), (bx, by) = objects[0].centre, objects[1].centre
        relation = "left of" if abs(bx - ax) > abs(by - ay) else "above"
        return f"{phrases[0]} {relation} {phrases[1]}"
    return f"{phrases[0]}, {phrases[1]} and {phrases[2]}"


# --- backgrounds and painting -----------------------------------------------------------------------------------


def _smooth_noise(nprng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: float32 (H, W), a random `cells` x `cells` grid upsampled bicubically."""
    grid = nprng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid, "L").resize((width, height), Image.Resampling.BICUBIC), np.float32)
    return smooth / 127.5 - 1.0


def _background(rng: random.Random, nprng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, str]:
    """Float32 (H, W, 3) in 0-255, and its description."""
    kind = rng.choice(tuple(BACKGROUNDS))
    base = np.array(rng.choice(BACKGROUNDS[kind]), dtype=np.float32)
    finish = rng.choice(BACKGROUND_FINISHES)
    canvas = np.broadcast_to(base, (height, width, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if finish == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = math.cos(angle) * xs / width + math.sin(angle) * ys / height
        ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
        other = base * rng.uniform(0.8, 1.15) + np.array([rng.uniform(-20, 20) for _ in range(3)])
        canvas = base + ramp[..., None] * (np.clip(other, 0, 255) - base)
    elif finish == "radial":  # a lit centre, darker corners, as on a photographed page
        distance = np.hypot(xs / width - 0.5, ys / height - 0.5) / math.hypot(0.5, 0.5)
        canvas = canvas * (1 - rng.uniform(0.08, 0.25) * distance[..., None] ** 2)
    elif finish == "paper":  # blotches plus fibre grain
        blotches = _smooth_noise(nprng, width, height, rng.randint(3, 8)) * rng.uniform(4, 10)
        canvas = canvas + blotches[..., None] + nprng.normal(0, rng.uniform(1.5, 4), (height, width, 1))
    elif finish == "noise":
        canvas = canvas + nprng.normal(0, rng.uniform(6, 14), (height, width, 3))
    elif finish == "grid":  # squared or ruled paper: faint lines a little darker (or lighter) than the page
        spacing = rng.uniform(0.05, 0.1) * max(width, height)
        shade = np.array((-25, -12, 10) if base.mean() > 128 else (30, 30, 30), dtype=np.float32)
        lines = (np.mod(ys, spacing) < 1.0) | ((np.mod(xs, spacing) < 1.0) if rng.random() < 0.6 else False)
        canvas = canvas + lines[..., None] * shade
    return np.clip(canvas, 0, 255).astype(np.float32), f"{kind}, {finish}"


def _stands_out(body: _Body, centre, canvas: np.ndarray) -> bool:
    """Whether nearly all of the background under the body's box is far from the body's paint."""
    height, width = canvas.shape[:2]
    x, y = centre
    x0, x1 = max(int(x - body.half_width), 0), min(int(math.ceil(x + body.half_width)), width)
    y0, y1 = max(int(y - body.half_height), 0), min(int(math.ceil(y + body.half_height)), height)
    under = canvas[y0:y1, x0:x1].reshape(-1, 3)
    return float(np.percentile(_redmean_distance(under, body.paint), 2)) >= MIN_CONTRAST


def _masks(body: _Body, centre, width: int, height: int, supersampling: int):
    """(fill, stroke) coverage in [0, 1] over the picture, float32 (H, W); stroke is None for plain fills."""
    ss = supersampling
    x, y = centre
    outline = [((x + px) * ss, (y + py) * ss) for px, py in body.points]
    masks = []
    for kind in ("fill", "stroke"):
        if kind == "fill" and body.style == "outlined" or kind == "stroke" and not body.stroke:
            masks.append(None)
            continue
        canvas = Image.new("L", (width * ss, height * ss), 0)
        draw = ImageDraw.Draw(canvas)
        if kind == "fill":
            draw.polygon(outline, fill=255)
        else:
            draw.line(outline + outline[:1], fill=255, width=max(1, round(body.stroke * ss)), joint="curve")
        if ss > 1:
            canvas = canvas.resize((width, height), Image.Resampling.BOX)
        masks.append(np.asarray(canvas, dtype=np.float32) / 255)
    return masks


def _paint(rng: random.Random, nprng: np.random.Generator, canvas: np.ndarray, body: _Body, centre,
           supersampling: int) -> np.ndarray:
    """Paint `body` onto `canvas` in place; returns the bool mask of pixels mostly in the body's own colour."""
    height, width = canvas.shape[:2]
    fill, stroke = _masks(body, centre, width, height, supersampling)
    paint = np.array(body.paint, dtype=np.float32)
    if fill is not None:
        alpha = fill
        if body.style == "crayon":  # streaky strokes of a crayon or marker, the page showing through a little
            angle = rng.uniform(0, math.pi)
            ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
            period = rng.uniform(2.5, 5.0) * max(width, height) / IMAGE_SIZE
            streaks = np.sin((math.cos(angle) * xs + math.sin(angle) * ys) * 2 * math.pi / period)
            alpha = fill * np.clip(0.88 + 0.12 * streaks + nprng.normal(0, 0.04, fill.shape), 0.72, 1.0)
        canvas += alpha[..., None] * (paint - canvas)
    if stroke is not None:
        if body.style == "filled with a dark outline":
            ink = np.array([rng.uniform(10, 40)] * 3, dtype=np.float32)
        elif body.style == "filled with a darker outline":
            ink = paint * rng.uniform(0.45, 0.65)
        else:
            ink = paint
        canvas += stroke[..., None] * (ink - canvas)
        if body.style != "outlined":  # the outline is another colour: what shows the name is the fill inside it
            return (fill > 0.5) & (stroke < 0.1)
        return stroke > 0.5
    return fill > 0.5


def _finish(rng: random.Random, nprng: np.random.Generator, canvas: np.ndarray) -> Image.Image:
    """Camera blur, sensor noise and JPEG, each sometimes."""
    height, width = canvas.shape[:2]
    image = Image.fromarray(np.clip(canvas, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * max(width, height) / 128))
    if rng.random() < 0.5:
        noisy = np.asarray(image, np.float32) + nprng.normal(0, rng.uniform(2, 7), (height, width, 3))
        image = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), "RGB")
    if rng.random() < 0.6:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(30, 90))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def _picture_size(rng: random.Random) -> tuple[int, int]:
    width = rng.randint(*WIDTH_PIXELS)
    height = round(width / rng.choice(ASPECTS))
    return width, min(max(height, HEIGHT_PIXELS[0]), HEIGHT_PIXELS[1])


# --- public API: scenes ------------------------------------------------------------------------------------------


def draw_heldout_scene(rng: random.Random, big: bool = False) -> HeldOutDrawing:
    """One held-out scene drawn with `rng` only, with the masks and styles that show how it was drawn.

    big: a single large shape of BIG_SIZE_FRACTION instead of 1 to 3 objects of SIZE_FRACTIONS."""
    nprng = np.random.default_rng(rng.getrandbits(64))
    width, height = _picture_size(rng)
    while True:
        canvas, background = _background(rng, nprng, width, height)
        placed = _layout(rng, width, height, big)
        if all(_stands_out(body, centre, canvas) for body, centre in placed):
            break
    supersampling = rng.choice(SUPERSAMPLING)
    masks = tuple(_paint(rng, nprng, canvas, body, centre, supersampling) for body, centre in placed)
    objects = [_frame_object(body, centre, width, height) for body, centre in placed]
    scene = Scene(_finish(rng, nprng, canvas), _caption(objects), tuple(objects))
    return HeldOutDrawing(scene, masks, background, tuple(body.style for body, _ in placed))


def heldout_drawings(n: int, seed: int, big: bool = False) -> list[HeldOutDrawing]:
    """`n` held-out scenes with how each was drawn, the same for the same (n, seed); a larger n extends them.

    big: pictures of one big shape each (`draw_heldout_scene(..., big=True)`), from a seed stream of their own."""
    rng = random.Random(split_seed("heldout-renderer-big" if big else "heldout-renderer", seed))
    return [draw_heldout_scene(random.Random(rng.getrandbits(64)), big) for _ in range(n)]


def heldout_scene_dataset(n: int, seed: int) -> list[Scene]:
    """The scenes of `heldout_drawings(n, seed)`."""
    return [drawing.scene for drawing in heldout_drawings(n, seed)]


def pixel_box(scene: Scene, obj: SceneObject) -> tuple[float, float, float, float]:
    """`obj.box` in the pixels of `scene.image` (it is stored in the 64x64 frame)."""
    sx, sy = scene.image.width / IMAGE_SIZE, scene.image.height / IMAGE_SIZE
    x0, y0, x1, y1 = obj.box
    return x0 * sx, y0 * sy, x1 * sx, y1 * sy


# --- the wording set: questions --------------------------------------------------------------------------------

POSITION_CLEARANCE = 3.0  # frame pixels: a position is asked about only when the centre is this far from a cell line
RELATION_CLEARANCE = 6.0  # frame pixels: a relation is asked about only along an axis separating this much ...
RELATION_DOMINANCE = 2.0  # ... and this many times more than the other axis does
PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}

# Phrasings of this set only, none of them a frame the training questions (`mmgpt.data.questions`) use;
# {ref}/{a}/{b} are referring expressions such as "the red one" or "the large star".
COLOUR_QUESTIONS = ("In what hue is {ref} drawn?", "Name {ref}'s colour.",
                    "What color has {ref} been painted?", "{Ref} has which colour?", "Say what colour {ref} has.")
SHAPE_QUESTIONS = ("Name the shape of {ref}.", "{Ref} is which shape?", "Which shape does {ref} have?",
                   "Tell me what shape {ref} is.", "What form does {ref} have?")
SIZE_QUESTIONS = ("Is {ref} big or small?", "Would you call {ref} large or small?", "Is {ref} drawn small or large?",
                  "Tell me the size of {ref}.")
COUNT_QUESTIONS = {
    "all": ("What is the number of shapes in the picture?", "Count the objects in this picture.",
            "How many things are drawn here?"),
    "colour": ("How many {value} things are in the picture?", "Count every {value} object."),
    "shape": ("How many {plural} are drawn here?", "Give me the number of {plural}."),
    "size": ("How many {value} objects does this picture hold?", "Tally the {value} objects."),
}
POSITION_QUESTIONS = ("Whereabouts is {ref}?", "Which part of the image is {ref} in?",
                      "Where in the image has {ref} been drawn?", "Which part of the picture holds {ref}?")
RELATION_QUESTIONS = {
    "left": ("Is {a} further left than {b}?", "Is {a} nearer the left edge than {b}?"),
    "right": ("Is {a} further right than {b}?", "Does {a} sit to the right of {b}?"),
    "up": ("Is {a} higher up than {b}?", "Does {a} sit over {b}?"),
    "down": ("Is {a} lower down than {b}?", "Is {a} underneath {b}?"),
}
EXISTS_QUESTIONS = ("Can you spot {article} {colour} {shape}?", "Does this picture contain {article} {colour} {shape}?",
                    "Do you see any {colour} {plural}?", "Is {article} {colour} {shape} anywhere in the picture?")


@dataclass(frozen=True)
class HeldOutQuestion:
    kind: str  # one of QUESTION_KINDS
    question: str  # as typed: capitalized, with its final punctuation
    answer: str  # a colour, shape or size word, a COUNT_WORDS word, a POSITIONS name, or "yes" / "no"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# The attributes an object may be named by, "the large star" or "the red one"
NAME_FORMS = (("shape",), ("size", "shape"), ("colour", "shape"), ("size", "colour", "shape"), ("colour",),
              ("size", "colour"))
# The wording of questions about one object's attribute or place, by kind
ONE_OBJECT_QUESTIONS = {"colour": COLOUR_QUESTIONS, "shape": SHAPE_QUESTIONS, "size": SIZE_QUESTIONS,
                        "position": POSITION_QUESTIONS}


def _name(values: dict[str, str]) -> str:
    """{"size": "large", "shape": "star"} -> "large star"; without a shape, "red one"."""
    return " ".join(list(values.values()) + ([] if "shape" in values else ["one"]))


def _references(obj: SceneObject, objects, hide: str | None) -> list[str]:
    """Every phrase that names `obj` alone among `objects` without saying its `hide` attribute."""
    phrases = []
    for attributes in NAME_FORMS:
        if hide in attributes:
            continue
        matching = [o for o in objects if all(getattr(o, a) == getattr(obj, a) for a in attributes)]
        if len(matching) == 1:
            phrases.append("the " + _name({a: getattr(obj, a) for a in attributes}))
    return phrases


def _cell_clearance(obj: SceneObject) -> float:
    """Distance of the centre, in frame pixels, from the nearest line between 3x3 cells."""
    lines = (IMAGE_SIZE / 3, 2 * IMAGE_SIZE / 3)
    return min(abs(v - line) for v in obj.centre for line in lines)


def _capitalized(text: str) -> str:
    return text[0].upper() + text[1:]


def _ask_attribute(rng, scene, kind, templates):
    candidates = [(o, refs) for o in scene.objects if (refs := _references(o, scene.objects, hide=kind))]
    if not candidates:
        return None
    obj, refs = rng.choice(candidates)
    ref = rng.choice(refs)
    question = rng.choice(templates).format(ref=ref, Ref=_capitalized(ref))
    return HeldOutQuestion(kind, _capitalized(question), getattr(obj, kind))


def _ask_count(rng, scene):
    category = rng.choice(tuple(COUNT_QUESTIONS))
    if category == "all":
        count, question = len(scene.objects), rng.choice(COUNT_QUESTIONS["all"])
    else:
        values = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}[category]
        present = [getattr(o, category) for o in scene.objects]
        value = rng.choice(present if rng.random() < 0.7 else values)  # "none" now and then
        count = present.count(value)
        question = rng.choice(COUNT_QUESTIONS[category]).format(value=value, plural=PLURALS.get(value, value))
    return HeldOutQuestion("count", question, COUNT_WORDS[count])


def _ask_position(rng, scene):
    candidates = [o for o in scene.objects if _cell_clearance(o) >= POSITION_CLEARANCE
                  and _references(o, scene.objects, hide=None)]
    if not candidates:
        return None
    obj = rng.choice(candidates)
    question = rng.choice(POSITION_QUESTIONS).format(ref=rng.choice(_references(obj, scene.objects, hide=None)))
    return HeldOutQuestion("position", question, cell_of(*obj.centre))


def _ask_relation(rng, scene):
    pairs = []
    for a in scene.objects:
        for b in scene.objects:
            if a is b:
                continue
            dx, dy = b.centre[0] - a.centre[0], b.centre[1] - a.centre[1]
            if abs(dx) >= RELATION_CLEARANCE and abs(dx) >= RELATION_DOMINANCE * abs(dy):
                pairs.append((a, b, "left" if dx > 0 else "right"))  # a is left of b when b lies to its right
            if abs(dy) >= RELATION_CLEARANCE and abs(dy) >= RELATION_DOMINANCE * abs(dx):
                pairs.append((a, b, "up" if dy > 0 else "down"))
    if not pairs:
        return None
    a, b, truth = rng.choice(pairs)
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}[truth]
    asked = truth if rng.random() < 0.5 else opposite
    ref_a = rng.choice(_references(a, scene.objects, hide=None))
    ref_b = rng.choice(_references(b, scene.objects, hide=None))
    question = rng.choice(RELATION_QUESTIONS[asked]).format(a=ref_a, b=ref_b)
    return HeldOutQuestion("relation", _capitalized(question), "yes" if asked == truth else "no")


def _ask_exists(rng, scene):
    present = {(o.colour, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        colour, shape = rng.choice(sorted(present))
    else:
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        near = [(c, s) for c, s in absent if any(s == o.shape or c == o.colour for o in scene.objects)]
        colour, shape = rng.choice(near if near and rng.random() < 0.7 else absent)  # mostly near misses
    question = rng.choice(EXISTS_QUESTIONS).format(article=_article(colour), colour=colour, shape=shape,
                                                   plural=PLURALS[shape])
    return HeldOutQuestion("exists", question, "yes" if (colour, shape) in present else "no")


def heldout_question(scene: Scene, rng: random.Random, kind: str) -> HeldOutQuestion | None:
    """A question of `kind` about `scene` in this set's wording, answered from `scene.objects`; None when no
    question of that kind has a clear answer in this scene (e.g. no object can be named without its colour)."""
    if kind in ("colour", "shape", "size"):
        return _ask_attribute(rng, scene, kind, ONE_OBJECT_QUESTIONS[kind])
    askers = {"count": _ask_count, "position": _ask_position, "relation": _ask_relation, "exists": _ask_exists}
    if kind not in askers:
        raise ValueError(f"unknown question kind {kind!r}; expected one of {QUESTION_KINDS}")
    return askers[kind](rng, scene)


def heldout_questions(scenes, per_kind: int, seed: int) -> list[tuple[Scene, HeldOutQuestion]]:
    """`per_kind` (scene, question) pairs of every kind; each kind starts at its own place in `scenes` and moves on
    to the next scene after every question, skipping scenes that allow no clear question of that kind."""
    rng = random.Random(split_seed("heldout-questions", seed))
    pairs = []
    for k, kind in enumerate(QUESTION_KINDS):
        start, asked = k * len(scenes) // len(QUESTION_KINDS), 0
        for step in range(20 * per_kind):
            if asked == per_kind:
                break
            scene = scenes[(start + step) % len(scenes)]
            question = heldout_question(scene, rng, kind)
            if question is not None:
                pairs.append((scene, question))
                asked += 1
    return pairs


def heldout_absent_question(scene: Scene, rng: random.Random, kind: str) -> HeldOutQuestion:
    """A question of `kind` in this set's wording about an object that `scene` does not hold, mostly a near miss
    (one of its words fits a present object): "Name the red star's colour." beside a red circle has no answer but
    `absent_answer`, "there is no red star"."""
    if kind not in OBJECT_KINDS:
        raise ValueError(f"{kind!r} questions name no one object; expected one of {OBJECT_KINDS}")
    values = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}
    options = [form for form in NAME_FORMS if kind not in form]
    near = rng.random() < 0.7
    for _ in range(1000):
        attributes = {a: rng.choice(values[a]) for a in rng.choice(options)}
        fits = [sum(getattr(o, a) == v for a, v in attributes.items()) for o in scene.objects]
        if len(attributes) == max(fits) or (attributes.get("colour"), attributes.get("shape")) in HELD_OUT_PAIRS:
            continue  # an object is so named, or training never saw the pair
        if near and len(attributes) > 1 and not max(fits):
            continue
        name = _name(attributes)
        question = rng.choice(ONE_OBJECT_QUESTIONS[kind]).format(ref=f"the {name}", Ref=f"The {name}")
        return HeldOutQuestion(kind, _capitalized(question), absent_answer(name))
    raise ValueError(f"scene {scene.caption!r} holds every object a {kind} question could name")


def heldout_absent_questions(scenes, per_kind: int, seed: int) -> list[tuple[Scene, HeldOutQuestion]]:
    """`per_kind` questions of each of OBJECT_KINDS about objects not in `scenes`, one scene after another."""
    rng = random.Random(split_seed("heldout-absent-questions", seed))
    pairs = []
    for k, kind in enumerate(OBJECT_KINDS):
        for i in range(per_kind):
            scene = scenes[(k * per_kind + i) % len(scenes)]
            pairs.append((scene, heldout_absent_question(scene, rng, kind)))
    return pairs


# --- the wording set: spoken phrases ----------------------------------------------------------------------------

SIDES = ("left", "right", "top", "bottom")
# Transcript convention of the speech set: lowercase, no punctuation, numbers as digits. Weighted by kind.
PHRASES = {  # none of them a frame of the speech set's own phrases (`mmgpt.data.speech.PHRASE_TEMPLATES`)
    "shape": (0.6, (
        "{colour} {plural}", "this {shape} is {colour}", "the {colour} {shape} is {size}",
        "look at the {colour} {shape}",
        "i count {number} {colour} {plural}", "i can see {number} {plural}", "there is a {size} {shape} on the {side}",
        "paint the {shape} {colour}", "the {colour} one is a {shape}", "find the {size} {colour} {shape}",
        "where is the {colour} {shape}", "is the {shape} {colour}", "make the {shape} {colour}",
        "move the {shape} to the {side}", "take a picture of the {shape}",
    )),
    "number": (0.2, ("{number}", "number {number}", "{number} and {number2}", "{number} {plural} left")),
    "command": (0.2, ("go {side} and stop", "turn right and go forward", "play the next song", "show me the time",
                      "close the map", "turn the light on", "open the door and turn left", "read the map")),
}


def heldout_phrases(n: int, seed: int) -> list[str]:
    """`n` short spoken phrases about shapes, numbers and commands, in this set's wording (transcript convention)."""
    rng = random.Random(split_seed("heldout-phrases", seed))
    kinds = tuple(PHRASES)
    phrases = []
    for _ in range(n):
        kind = rng.choices(kinds, weights=[PHRASES[k][0] for k in kinds])[0]
        shape = rng.choice(SHAPES)
        phrases.append(rng.choice(PHRASES[kind][1]).format(
            colour=rng.choice(tuple(COLOURS)), shape=shape, plural=PLURALS[shape], size=rng.choice(tuple(SIZES)),
            side=rng.choice(SIDES), number=rng.randint(2, 99), number2=rng.randint(0, 999)))
    return phrases
