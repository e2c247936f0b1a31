"""A deterministic procedural world: coloured shapes on backgrounds, as images and as videos.

Everything is a pure function of a seed. Images come with varied captions and question-answer
texts (colour, shape, size, count, spatial relations); videos add motion, objects entering
late, occlusion and lighting changes, with class labels, captions and questions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..text import QA_TEMPLATE, qa_text  # noqa: F401 - the world writes QA texts the shared way
from ..errors import OptionError

SHAPES = ("circle", "square", "triangle", "star", "hexagon", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SIZES = {"small": 0.09, "medium": 0.14, "large": 0.21}  # radius as a share of the image side
BACKGROUNDS = ("plain", "gradient", "striped", "checkered", "noisy")
BACKGROUND_TONES = ((128, 128, 128), (160, 150, 130), (100, 115, 130), (135, 155, 135), (150, 130, 150))
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
NUMBERS = ("zero", "one", "two", "three", "four")

CLASS_NAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
"""Zero-shot classes of the video benchmark: the colour and shape of the object in the video."""
CLASS_TEMPLATES = ("a {}", "a picture of a {}", "there is a {}")
"""Prompt templates for those classes (ensembled as CLIP does)."""


@dataclass
class Obj:
    """One shape in a scene; positions are in [0, 1] image coordinates."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    angle: float = 0.0

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """A still image's content and background."""

    objects: list[Obj]
    background: str
    tone: tuple[int, int, int]
    noise_seed: int = 0


# --------------------------------------------------------------------------- rendering
def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
        pts = [(x * 1.0, y * 1.0) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "hexagon":
        pts = [(math.cos(a), math.sin(a)) for a in (k * math.pi / 3 for k in range(6))]
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.65, 0.0), (0.0, 1.0), (-0.65, 0.0)]
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = 1.0 if k % 2 == 0 else 0.45
            pts.append((rr * math.cos(a), rr * math.sin(a)))
    else:
        raise OptionError(f"unknown shape {shape!r}")
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in pts]


def _background(kind: str, tone: tuple[int, int, int], size: int, seed: int) -> np.ndarray:
    base = np.array(tone, dtype=np.float32)
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = base
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    if kind == "gradient":
        img *= (0.75 + 0.5 * xx)[..., None]
    elif kind == "striped":
        img *= np.where((np.floor(yy * 8) % 2) == 0, 0.8, 1.15)[..., None]
    elif kind == "checkered":
        img *= np.where(((np.floor(yy * 6) + np.floor(xx * 6)) % 2) == 0, 0.82, 1.12)[..., None]
    elif kind == "noisy":
        rng = np.random.default_rng(seed)
        img += rng.normal(0, 18, (size, size, 1)).astype(np.float32)
    return img


def _draw_object(draw: ImageDraw.ImageDraw, obj: Obj, big: int, fill, outline=None) -> None:
    cx, cy, r = obj.x * big, obj.y * big, obj.radius * big
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, obj.angle), fill=fill, outline=outline)


def shape_coverage(scene: Scene, size: int = 64, patch: int = 8) -> np.ndarray:
    """Per-patch shape distribution of a still: (1 + len(SHAPES), size/patch, size/patch) float32.

    Channel 0 is background, channel 1 + k the share of the patch covered by SHAPES[k] (drawn at the
    same 2x supersampling as `render`); every patch sums to 1. Dense labels for training a ViT.
    """
    if size % patch:
        raise OptionError(f"size {size} is not a multiple of patch {patch}")
    big, grid = size * 2, size // patch
    out = np.zeros((1 + len(SHAPES), grid, grid), dtype=np.float32)
    for obj in scene.objects:
        im = Image.new("L", (big, big))
        _draw_object(ImageDraw.Draw(im), obj, big, 255)
        mask = np.asarray(im, dtype=np.float32).reshape(grid, 2 * patch, grid, 2 * patch).mean((1, 3)) / 255  # (grid, grid)
        out[1 + SHAPES.index(obj.shape)] += mask
    out[1:] = np.minimum(out[1:], 1.0)
    covered = out[1:].sum(0)
    out[1:] /= np.maximum(covered, 1.0)  # overlapping objects (not drawn by random_scene) still sum to 1
    out[0] = 1.0 - out[1:].sum(0)
    return out


def render(scene: Scene, size: int = 64, *, brightness: float = 1.0, occluder: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Draw a scene as an (size, size, 3) uint8 RGB image, supersampled 2x for smooth edges."""
    big = size * 2
    bg = _background(scene.background, scene.tone, big, scene.noise_seed)
    im = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for obj in scene.objects:
        outline = (60, 60, 60) if obj.colour in ("white", "yellow") else None
        _draw_object(draw, obj, big, COLOURS[obj.colour], outline)
    if occluder is not None:  # a grey bar passing in front of the scene
        x0, y0, x1, y1 = (v * big for v in occluder)
        draw.rectangle([x0, y0, x1, y1], fill=(90, 90, 90))
    im = im.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(im, dtype=np.float32) * brightness
    return np.clip(arr, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- scenes and texts
def _place(rng: random.Random, n: int) -> list[tuple[float, float]]:
    """n well-separated centres."""
    for _ in range(200):
        pts = [(rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75)) for _ in range(n)]
        if all(math.dist(a, b) > 0.3 for i, a in enumerate(pts) for b in pts[i + 1 :]):
            return pts
    return [(0.3 + 0.4 * (k % 2), 0.3 + 0.4 * (k // 2)) for k in range(n)]


def random_scene(rng: random.Random, *, max_objects: int = 3, colour: str | None = None,
                 background: tuple[str, tuple[int, int, int]] | None = None) -> Scene:
    """A random scene of 1..max_objects objects with distinct shapes.

    `colour` paints every object that colour and `background` fixes (kind, tone): a group of scenes
    sharing both differs only in shapes, sizes and places (hard negatives for the contrastive loss).
    The random draws are the same with and without them, so the other attributes do not change.
    """
    n = rng.choices(range(1, max_objects + 1), weights=[5, 3, 2][:max_objects])[0]
    kinds: list[tuple[str, str]] = []
    while len(kinds) < n:  # distinct shapes per object keep "the circle" unambiguous
        k = (rng.choice(SHAPES), rng.choice(list(COLOURS)))
        if all(k[0] != s for s, _ in kinds):
            kinds.append(k if colour is None else (k[0], colour))
    objects = [
        Obj(shape, c, rng.choice(list(SIZES)), x, y, rng.uniform(-0.3, 0.3))
        for (shape, c), (x, y) in zip(kinds, _place(rng, n))
    ]
    kind, tone = rng.choice(BACKGROUNDS), rng.choice(BACKGROUND_TONES)
    if background is not None:
        kind, tone = background
    return Scene(objects, kind, tone, rng.randrange(1 << 30))


def _relation(a: Obj, b: Obj) -> str:
    dx, dy = b.x - a.x, b.y - a.y
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"  # a is above b when b is further down
    return "to the left of" if dx > 0 else "to the right of"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(obj: Obj, rng: random.Random, *, with_size: bool | None = None) -> str:
    with_size = rng.random() < 0.6 if with_size is None else with_size
    words = f"{obj.size} {obj.colour} {obj.shape}" if with_size else f"{obj.colour} {obj.shape}"
    return f"{_article(words)} {words}"


def caption(scene: Scene, rng: random.Random) -> str:
    """One of several natural templates describing the scene."""
    objs = scene.objects
    bg = f"on {_article(scene.background)} {scene.background} background"
    if len(objs) == 1:
        d = _describe(objs[0], rng)
        return rng.choice([f"{d}", f"{d} {bg}", f"a picture of {d}", f"there is {d} {bg}", f"{d} in the picture"])
    if len(objs) == 2:
        a, b = objs
        da, db = _describe(a, rng), _describe(b, rng)
        return rng.choice([
            f"{da} {_relation(a, b)} {db}",
            f"{da} {_relation(a, b)} {db} {bg}",
            f"{da} and {db}",
            f"two shapes: {da} and {db}",
        ])
    ds = [_describe(o, rng, with_size=False) for o in objs]
    return rng.choice([
        f"three shapes: {ds[0]}, {ds[1]} and {ds[2]}",
        f"{ds[0]}, {ds[1]} and {ds[2]} {bg}",
        f"{ds[0]} {_relation(objs[0], objs[1])} {ds[1]}, and {ds[2]}",
    ])


def questions(scene: Scene) -> list[tuple[str, str]]:
    """Question-answer pairs answerable from the still image."""
    objs = scene.objects
    qa = [("how many shapes are there?", NUMBERS[len(objs)])]
    for o in objs:
        qa.append((f"what colour is the {o.shape}?", o.colour))
        if sum(p.colour == o.colour for p in objs) == 1:  # "the red object" must name one object
            qa.append((f"what shape is the {o.colour} object?", o.shape))
        qa.append((f"how big is the {o.shape}?", o.size))
    qa.append(("what is the background?", scene.background))
    return qa


def image_sample(seed: int, size: int = 64, *, qa_share: float = 0.3, colour: str | None = None,
                 background: tuple[str, tuple[int, int, int]] | None = None) -> tuple[np.ndarray, str]:
    """One training pair (image, text): a caption, or with probability `qa_share` a question with its answer.

    `colour` and `background` constrain the scene as in `random_scene`.
    """
    img, text, _ = image_sample_with_scene(seed, size, qa_share=qa_share, colour=colour, background=background)
    return img, text


def image_sample_with_scene(seed: int, size: int = 64, *, qa_share: float = 0.3, colour: str | None = None,
                            background: tuple[str, tuple[int, int, int]] | None = None) -> tuple[np.ndarray, str, Scene]:
    """`image_sample` plus the scene it drew (for dense labels such as `shape_coverage`)."""
    rng = random.Random(seed)
    scene = random_scene(rng, colour=colour, background=background)
    img = render(scene, size, brightness=rng.uniform(0.8, 1.15))
    if rng.random() < qa_share:
        q, a = rng.choice(questions(scene))
        return img, qa_text(q, a), scene
    return img, caption(scene, rng), scene


# --------------------------------------------------------------------------- videos
@dataclass
class VideoSpec:
    """A synthetic video: one object kind, its motion, and what happens to it."""

    seed: int
    obj: Obj
    direction: str
    background: str
    tone: tuple[int, int, int]
    appears_at: float = 0.0
    """Share of the video before the object enters (0: visible from the start)."""
    occluded: bool = False
    """A grey bar passes in front of the object mid-video."""
    lighting: tuple[float, float] = (1.0, 1.0)
    """Brightness at the start and at the end."""
    distractor: Obj | None = None
    """A second, static object of another shape (questions about it need no motion)."""
    speed: float = 0.35
    """Distance travelled over the whole video, in image widths."""

    @property
    def label(self) -> str:
        return self.obj.name

    def captions(self) -> list[str]:
        o = self.obj
        moving = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down"}[self.direction]
        base = f"{_article(o.size)} {o.size} {o.colour} {o.shape} {moving}"
        out = [base, f"{_article(o.colour)} {o.colour} {o.shape} {moving} on {_article(self.background)} {self.background} background"]
        if self.appears_at > 0:
            out.append(f"{_article(o.colour)} {o.colour} {o.shape} appears")
        if self.distractor is not None:
            d = self.distractor
            out.append(f"{_article(o.colour)} {o.colour} {o.shape} and {_article(d.colour)} {d.colour} {d.shape}")
        return out

    def questions(self) -> list[tuple[str, str, str]]:
        """(question, answer, kind) with kind in: colour, shape, count, size, motion, late."""
        o = self.obj
        qa = [
            (f"what colour is the {o.shape}?", o.colour, "late" if self.appears_at > 0 else "colour"),
            (f"what shape is the {o.colour} object?", o.shape, "late" if self.appears_at > 0 else "shape"),
            ("how many shapes are there?", NUMBERS[1 + (self.distractor is not None)], "count"),
            (f"how big is the {o.shape}?", o.size, "size"),
            (f"which way does the {o.shape} move?", self.direction, "motion"),
        ]
        return qa

    def frame_scene(self, t: float) -> tuple[Scene, float, tuple[float, float, float, float] | None]:
        """The scene at time t in [0, 1], its brightness, and the occluder rectangle if any."""
        dx, dy = DIRECTIONS[self.direction]
        o = self.obj
        shift = (t - 0.5) * self.speed
        moving = Obj(o.shape, o.colour, o.size, o.x + dx * shift, o.y + dy * shift, o.angle)
        objs = [] if t < self.appears_at else [moving]
        if self.distractor is not None:
            objs.append(self.distractor)
        b0, b1 = self.lighting
        occ = None
        if self.occluded and 0.35 <= t <= 0.6:
            occ = (moving.x - 0.25, 0.0, moving.x + 0.25, 1.0)
        return Scene(objs, self.background, self.tone, self.seed), b0 + (b1 - b0) * t, occ

    def render_frames(self, num_frames: int, size: int = 64) -> list[np.ndarray]:
        out = []
        for k in range(num_frames):
            scene, bright, occ = self.frame_scene(k / max(num_frames - 1, 1))
            out.append(render(scene, size, brightness=bright, occluder=occ))
        return out


def video_spec(seed: int, *, late_share: float = 0.2, occluded_share: float = 0.15, distractor_share: float = 0.25) -> VideoSpec:
    """A random video description; `late_share` of videos have the object enter in the second half."""
    rng = random.Random(seed)
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    direction = rng.choice(list(DIRECTIONS))
    dx, dy = DIRECTIONS[direction]
    # start so that the whole path stays inside the frame
    x = 0.5 if dx == 0 else rng.uniform(0.42, 0.58)
    y = 0.5 if dy == 0 else rng.uniform(0.42, 0.58)
    if dx == 0:
        x = rng.uniform(0.3, 0.7)
    if dy == 0:
        y = rng.uniform(0.3, 0.7)
    obj = Obj(shape, colour, rng.choice(list(SIZES)), x, y, rng.uniform(-0.3, 0.3))
    distractor = None
    if rng.random() < distractor_share:
        other = rng.choice([s for s in SHAPES if s != shape])
        other_colour = rng.choice([c for c in COLOURS if c != colour])
        cx = 0.15 if x > 0.5 else 0.85
        distractor = Obj(other, other_colour, "small", cx, rng.choice([0.15, 0.85]))
    return VideoSpec(
        seed=seed,
        obj=obj,
        direction=direction,
        background=rng.choice(BACKGROUNDS),
        tone=rng.choice(BACKGROUND_TONES),
        appears_at=rng.uniform(0.5, 0.7) if rng.random() < late_share else 0.0,
        occluded=rng.random() < occluded_share,
        lighting=(rng.uniform(0.75, 1.1), rng.uniform(0.75, 1.1)),
        distractor=distractor,
    )


@dataclass
class VideoItem:
    """A written synthetic video with its annotations."""

    path: str
    label: str
    captions: list[str]
    questions: list[tuple[str, str, str]] = field(default_factory=list)
    late: bool = False
