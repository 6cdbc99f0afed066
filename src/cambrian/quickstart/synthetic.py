"""Synthetic CV-Bench-style scenes that a tiny Cambrian trained from scratch on a CPU can actually learn.

Everything ``make quickstart`` trains and evaluates on comes from here: rendered images, grounded
alignment captions (stage 1), instruction rows (stage 2), a held-out CV-Bench-format test split and
dense per-cell targets for tower pretraining (stage 0). The design serves learnability from few samples:

- the image is cut into a ``grid x grid`` array of cells and every object's centre lies in its own cell,
  so a ``grid x grid`` visual token map sees at most one object per token;
- few kinds ("cube", "ball", "cone", "ring") and colours, one word each; objects named in a question are
  the only one of their kind in the scene, so "the cube" always means one object;
- positions are quantised to words: a column word ("left", "midleft", ...) and a row word ("far",
  "midfar", ...); captions name every object followed by its position, which binds names to locations.

Camera: a level pinhole camera at height ``H`` above a ground plane, looking along +z, whose image is the
part of the sensor below the horizon (a shifted principal point). A ground point ``(x, 0, z)`` lands at
``u = cx + f x / z``, ``v = horizon + f H / z``; an object of world size ``R`` at depth ``z`` is drawn
``f R / z`` pixels wide, centred at ``v = horizon + f (H - R/2) / z``. So the image row follows depth
(farther = higher) and the size follows ``1 / z`` (farther = smaller). Under this law size is linear in
the distance to the horizon, so a horizon inside a 64 px frame would shrink far objects to 1-3 px; the
default horizon therefore sits above the frame (no sky band in view) and far objects stay ~7 px. Scenes
are sampled by picking distinct cells and deriving ``(x, z)`` from a jittered point in each cell.

Questions (all checked to have exactly one correct choice):

- Count (2D): "How many cubes are in the image?" with numeric choices near the true count;
- Relation (2D): "Where is the cube located with respect to the ball?" left/right or above/below;
- Depth (3D): "Which object is closer to the camera, the cube or the ball?";
- Distance (3D): "Which object is closer to the ring, the cube or the ball?" (ground distance).

The correct option's letter is cycled so every position is equally often right. Same seed, same bytes.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cambrian.eval.cvbench import ANSWER_SUFFIX, SELECT_SUFFIX, format_prompt

SHAPES = ("cube", "ball", "cone", "ring")  # the 2D primitives the renderer can draw
COLOUR_RGB = {
    "red": (225, 35, 35),
    "green": (30, 180, 55),
    "blue": (40, 90, 240),
    "yellow": (245, 215, 25),
}
# Single-word position vocabulary, indexed by grid size: G columns -> G words, G rows -> G words.
COLUMN_WORDS = {
    2: ("left", "right"),
    3: ("left", "middle", "right"),
    4: ("left", "midleft", "midright", "right"),
    5: ("left", "midleft", "middle", "midright", "right"),
}
ROW_WORDS = {
    2: ("far", "near"),
    3: ("far", "middle", "near"),
    4: ("far", "midfar", "midnear", "near"),
    5: ("far", "midfar", "middle", "midnear", "near"),
}

TASKS = ("Count", "Relation", "Depth", "Distance")
TASK_TYPE = {"Count": "2D", "Relation": "2D", "Depth": "3D", "Distance": "3D"}
SOURCE = {"2D": "Synthetic2D", "3D": "Synthetic3D"}
LETTERS = "ABCDEFGHIJ"
# The multiple-choice wording is the scorer's (cambrian.eval.cvbench), so train and test prompts match.
CHOICES_SUFFIX = SELECT_SUFFIX
MC_SUFFIX = ANSWER_SUFFIX
SHORT_SUFFIX = "Answer the question using a single word or phrase."
CAPTION_INSTRUCTIONS = (
    "Describe the objects in the image and where they are.",
    "List every object with its position.",
    "What objects are in the image, and where?",
    "Name each object and its location.",
)
DESCRIBE_INSTRUCTION = "Describe the scene."

_CAMERA_HEIGHT = 1.0  # H, world units ("metres"); only ratios matter
_BACKGROUND_NEAR = np.array([176.0, 170.0, 158.0])  # ground colour at the bottom edge
_BACKGROUND_FAR = np.array([96.0, 96.0, 104.0])  # ... and at the farthest visible depth (darker)
_SKY_TOP, _SKY_HORIZON = np.array([120.0, 165.0, 225.0]), np.array([205.0, 222.0, 240.0])


@dataclass(frozen=True)
class SceneConfig:
    """What a scene may contain and how it is drawn. Frozen (hashable) so the background can be cached.

    ``horizon`` is the horizon's image row as a fraction of the image height (< 0: above the frame);
    ``object_scale`` is the size of an object centred in the bottom row, as a fraction of a cell;
    ``jitter`` is how far (fraction of a cell) an object's centre may wander around its cell centre.
    """

    image_size: int = 64
    grid: int = 4
    kinds: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    min_objects: int = 2
    max_objects: int = 6
    seed: int = 0  # default seed of ``generate``
    horizon: float = -0.75
    object_scale: float = 0.85
    jitter: float = 0.5
    min_visible: float = 0.7  # every object keeps at least this fraction of its area visible
    depth_bins: int = 8  # dense depth target: 1 (nearest) .. depth_bins, equal steps in z; 0 = empty cell
    depth_margin: float = 0.05  # Depth questions: the farther object is >= 5% farther
    distance_ratio: float = 1.3  # Distance questions: the farther candidate is >= 1.3x as far
    # Probability that a scene's kinds are dealt without repetition as far as they go. Relation, Depth and
    # Distance can only name kinds that occur once; with kinds drawn independently only ~15% of scenes
    # have the three unique kinds a Distance question needs, with 0.5 about 40%.
    unique_kinds: float = 0.5
    count_choices: int = 4
    supersample: int = 4  # draw at 4x and box-filter down: smooth edges keep 7 px shapes recognisable
    # Caption order: "kind" lists the objects kind by kind (``kinds`` order, raster order within a kind),
    # so each caption line is the lookup the questions need (find the cubes, read their cells); "raster"
    # lists them in image order, which a model can write by walking the cells without finding anything.
    caption_order: str = "kind"
    # Captions and rationales state each object's colour. Off by default: no question needs it, and the
    # quickstart model did not learn to read it in 10 minutes (23% with 4 colours), so the colour words were
    # noise in every fact; without them every task learned faster (CV-Bench 72 vs 70, Relation 65 vs 55).
    describe_colour: bool = False

    def __post_init__(self) -> None:
        for name in ("kinds", "colours"):  # lists from YAML or JSON: tuples keep the config hashable
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.caption_order not in ("kind", "raster"):
            raise ValueError(f"caption_order must be 'kind' or 'raster', got {self.caption_order!r}")
        if self.grid not in COLUMN_WORDS:
            raise ValueError(f"grid must be one of {sorted(COLUMN_WORDS)} (position words exist for those)")
        if self.image_size % self.grid:
            raise ValueError(f"image_size {self.image_size} is not a multiple of grid {self.grid}")
        unknown = [k for k in self.kinds if k not in SHAPES]
        if unknown or len(set(self.kinds)) != len(self.kinds) or len(self.kinds) < 2:
            raise ValueError(f"kinds must be >= 2 distinct names from {SHAPES}, got {self.kinds}")
        unknown = [c for c in self.colours if c not in COLOUR_RGB]
        if unknown or len(set(self.colours)) != len(self.colours) or not self.colours:
            raise ValueError(f"colours must be distinct names from {tuple(COLOUR_RGB)}, got {self.colours}")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid**2:
            raise ValueError("need 1 <= min_objects <= max_objects <= grid**2")
        if not 2 <= self.count_choices <= self.max_objects + 1:
            raise ValueError("count_choices must be in 2..max_objects+1 (choices are counts 0..max_objects)")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if not 0.0 <= self.unique_kinds <= 1.0 or not 0.0 < self.min_visible <= 1.0:
            raise ValueError("unique_kinds must be in [0, 1] and min_visible in (0, 1]")
        for row in range(self.grid):
            for col in range(self.grid):
                (v_lo, v_hi), (u_lo, u_hi) = self.centre_range(row, col)
                if v_lo > v_hi or u_lo > u_hi:
                    raise ValueError(
                        f"objects in cell {(row, col)} cannot fit in the frame; lower object_scale"
                    )
        smallest = self.size_at(self.centre_range(0, 0)[0][0])
        if smallest < 4.0:
            raise ValueError(
                f"far objects would be {smallest:.1f} px; move the horizon up or enlarge objects"
            )

    # --- camera -------------------------------------------------------------------------------------
    @property
    def cell(self) -> float:
        """Cell side in pixels."""
        return self.image_size / self.grid

    @property
    def horizon_px(self) -> float:
        """Image row of the horizon (negative: above the frame)."""
        return self.horizon * self.image_size

    @property
    def focal(self) -> float:
        """Focal length in pixels (a 53 degree horizontal field of view)."""
        return float(self.image_size)

    @property
    def size_per_row(self) -> float:
        """rho in ``size = rho * (v - horizon)``: drawn size per pixel of distance below the horizon."""
        bottom_centre = self.image_size - self.cell / 2
        return self.object_scale * self.cell / (bottom_centre - self.horizon_px)

    @property
    def object_height(self) -> float:
        """R, the world size of every object (rho = R / (H - R/2))."""
        rho = self.size_per_row
        return rho * _CAMERA_HEIGHT / (1 + rho / 2)

    def size_at(self, v: float) -> float:
        """Drawn size (px) of an object whose centre is at image row ``v``."""
        return self.size_per_row * (v - self.horizon_px)

    def depth_at(self, v: float) -> float:
        """Depth z of an object whose centre is at image row ``v``."""
        return self.focal * (_CAMERA_HEIGHT - self.object_height / 2) / (v - self.horizon_px)

    def ground_xz(self, u: float, v: float) -> tuple[float, float]:
        """Ground coordinates (x, z) of an object centred at pixel (u, v)."""
        z = self.depth_at(v)
        return (u - self.image_size / 2) * z / self.focal, z

    def centre_range(self, row: int, col: int) -> tuple[tuple[float, float], tuple[float, float]]:
        """((v_lo, v_hi), (u_lo, u_hi)): where an object centre in this cell may lie.

        The jitter window around the cell centre, shrunk so the object stays inside the frame. The u
        range is for the largest object the v range allows (a conservative, v-independent window).
        """
        c, half, s_img = self.cell, self.jitter * self.cell / 2, self.image_size
        rho, y_h = self.size_per_row, self.horizon_px
        v_lo, v_hi = (row + 0.5) * c - half, (row + 0.5) * c + half
        # v - size/2 >= 0 and v + size/2 <= S, with size = rho (v - y_h)
        v_lo = max(v_lo, -rho * y_h / (2 - rho))
        v_hi = min(v_hi, (s_img + rho * y_h / 2) / (1 + rho / 2))
        s_max = self.size_at(v_hi)
        u_lo = max((col + 0.5) * c - half, s_max / 2)
        u_hi = min((col + 0.5) * c + half, s_img - s_max / 2)
        return (v_lo, v_hi), (u_lo, u_hi)

    @property
    def depth_range(self) -> tuple[float, float]:
        """(z_near, z_far): depths of object centres at the bottom and top edge of the frame."""
        return self.depth_at(float(self.image_size)), self.depth_at(0.0)


# --- scenes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneObject:
    """One object: what it is, its cell, where it is drawn (pixels) and where it stands (world)."""

    kind: str
    colour: str
    cell: tuple[int, int]  # (row, col) in the grid
    centre: tuple[float, float]  # (u, v) image centre in pixels
    size: float  # drawn width = height, pixels
    x: float  # ground coordinate, + = right of the camera
    z: float  # depth: distance from the camera along the view direction
    position: tuple[float, float, float]  # 3D centre (x, height above ground, z)
    visible: float = 1.0  # fraction of its area not hidden by nearer objects

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "colour": self.colour,
            "cell": list(self.cell),
            "centre": list(self.centre),
            "size": self.size,
            "x": self.x,
            "z": self.z,
            "position": list(self.position),
            "visible": self.visible,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SceneObject:
        return cls(
            kind=d["kind"],
            colour=d["colour"],
            cell=(int(d["cell"][0]), int(d["cell"][1])),
            centre=(float(d["centre"][0]), float(d["centre"][1])),
            size=float(d["size"]),
            x=float(d["x"]),
            z=float(d["z"]),
            position=tuple(float(p) for p in d["position"]),  # type: ignore[arg-type]
            visible=float(d["visible"]),
        )


@dataclass(frozen=True)
class Scene:
    """The objects of one image, in row-major cell order (far row first, left to right)."""

    objects: tuple[SceneObject, ...]

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.objects)

    def unique(self) -> list[int]:
        """Indices of objects whose kind occurs once (only those can be named as "the <kind>")."""
        counts = Counter(o.kind for o in self.objects)
        return [i for i, o in enumerate(self.objects) if counts[o.kind] == 1]

    def named(self, kind: str) -> SceneObject:
        """The one object of ``kind``; raises when there is none or several."""
        found = [o for o in self.objects if o.kind == kind]
        if len(found) != 1:
            raise ValueError(f"'the {kind}' names no single object: {len(found)} in the scene")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        return {"objects": [o.to_json() for o in self.objects]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scene:
        return cls(tuple(SceneObject.from_json(o) for o in d["objects"]))


def _r(x: float) -> float:
    # Stored values are rounded so that the JSON metadata and the in-memory scene are the same numbers.
    return round(float(x), 6)


def make_object(
    cfg: SceneConfig, kind: str, colour: str, row: int, col: int, du: float = 0.0, dv: float = 0.0
) -> SceneObject:
    """An object in cell (row, col); ``du``, ``dv`` in [-1, 1] place its centre within the cell's window."""
    (v_lo, v_hi), (u_lo, u_hi) = cfg.centre_range(row, col)
    u = _r(u_lo + (du + 1) / 2 * (u_hi - u_lo))
    v = _r(v_lo + (dv + 1) / 2 * (v_hi - v_lo))
    x, z = cfg.ground_xz(u, v)
    return SceneObject(
        kind=kind,
        colour=colour,
        cell=(row, col),
        centre=(u, v),
        size=_r(cfg.size_at(v)),
        x=_r(x),
        z=_r(z),
        position=(_r(x), _r(cfg.object_height / 2), _r(z)),
    )


def make_scene(objects: Sequence[SceneObject], cfg: SceneConfig) -> Scene:
    """A scene from objects in distinct cells, sorted row-major, with their visible fractions filled in."""
    cells = [o.cell for o in objects]
    if len(set(cells)) != len(cells):
        raise ValueError("two objects share a cell")
    objs = sorted(objects, key=lambda o: o.cell)
    full = [_object_area(o, cfg) for o in objs]
    seen = np.bincount(_labels(Scene(tuple(objs)), cfg, cfg.supersample).ravel(), minlength=len(objs) + 1)
    return Scene(tuple(replace(o, visible=_r(seen[i + 1] / full[i])) for i, o in enumerate(objs)))


def sample_scene(rng: np.random.Generator, cfg: SceneConfig, n_objects: int | None = None) -> Scene:
    """A random scene: distinct cells (uniformly chosen), kinds per ``cfg.unique_kinds``, uniform colours
    and jitter; resampled until every object keeps ``cfg.min_visible`` of its area."""
    g = cfg.grid
    while True:
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) if n_objects is None else n_objects
        cells = rng.choice(g * g, size=n, replace=False)
        if rng.random() < cfg.unique_kinds:
            dealt = rng.permutation(len(cfg.kinds))[:n]
            kinds = np.concatenate([dealt, rng.integers(len(cfg.kinds), size=n - len(dealt))])
        else:
            kinds = rng.integers(len(cfg.kinds), size=n)
        colours = rng.integers(len(cfg.colours), size=n)
        jit = rng.uniform(-1.0, 1.0, size=(n, 2))
        objs = [
            make_object(cfg, cfg.kinds[k], cfg.colours[c], int(cell) // g, int(cell) % g, du, dv)
            for cell, k, c, (du, dv) in zip(cells, kinds, colours, jit)
        ]
        scene = make_scene(objs, cfg)
        if min(o.visible for o in scene.objects) >= cfg.min_visible:
            return scene


# --- rendering ---------------------------------------------------------------------------------------
def _draw_order(scene: Scene) -> list[int]:
    # Far to near (painter's algorithm), so nearer objects occlude farther ones.
    return sorted(range(len(scene.objects)), key=lambda i: (-scene.objects[i].z, scene.objects[i].cell))


def _draw_object(
    draw: ImageDraw.ImageDraw,
    o: SceneObject,
    scale: int,
    fill: Any,
    outline: Any = None,
    offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Draw ``o`` at ``scale`` x resolution. ``outline`` (a darker edge) separates touching objects."""
    u, v = (o.centre[0] - offset[0]) * scale, (o.centre[1] - offset[1]) * scale
    h = o.size * scale / 2
    box = (u - h, v - h, u + h, v + h)
    edge = max(1, scale // 2)  # half an output pixel
    if o.kind == "cube":
        draw.rectangle(box, fill=fill)
        if outline is not None:
            draw.rectangle(box, outline=outline, width=edge)
    elif o.kind == "ball":
        draw.ellipse(box, fill=fill)
        if outline is not None:
            draw.ellipse(box, outline=outline, width=edge)
    elif o.kind == "cone":
        tri = [(u, v - h), (u + h, v + h), (u - h, v + h)]
        draw.polygon(tri, fill=fill)
        if outline is not None:
            draw.polygon(tri, outline=outline, width=edge)
    elif o.kind == "ring":
        band = max(1, round(0.3 * o.size * scale))  # annulus: hole diameter = 40% of the outer one
        draw.ellipse(box, outline=fill, width=band)
        if outline is not None:
            draw.ellipse(box, outline=outline, width=edge)
            inner = (box[0] + band - edge, box[1] + band - edge, box[2] - band + edge, box[3] - band + edge)
            draw.ellipse(inner, outline=outline, width=edge)
    else:
        raise ValueError(f"unknown kind {o.kind!r}")


def _labels(scene: Scene, cfg: SceneConfig, scale: int) -> np.ndarray:
    """(S*scale, S*scale) uint8: 1 + index of the object seen at each pixel, 0 = ground."""
    size = cfg.image_size * scale
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for i in _draw_order(scene):
        _draw_object(draw, scene.objects[i], scale, fill=i + 1)
    return np.asarray(img)


def _object_area(o: SceneObject, cfg: SceneConfig) -> int:
    """Pixels (at supersampled resolution) the object covers when drawn alone, on a crop around it."""
    s = cfg.supersample
    side = math.ceil(o.size) + 4
    # Whole-pixel crop offsets: the shape rasterises exactly as in the full frame, just shifted.
    left, top = math.floor(o.centre[0] - side / 2), math.floor(o.centre[1] - side / 2)
    img = Image.new("L", (side * s, side * s), 0)
    _draw_object(ImageDraw.Draw(img), o, s, fill=1, offset=(left, top))
    return int(np.count_nonzero(np.asarray(img)))


def label_map(scene: Scene, cfg: SceneConfig) -> np.ndarray:
    """(S, S) uint8 at output resolution: 1 + index of the visible object per pixel, 0 = ground."""
    s = cfg.supersample
    return _labels(scene, cfg, s)[s // 2 :: s, s // 2 :: s].copy()


@lru_cache(maxsize=8)
def _background(cfg: SceneConfig) -> Image.Image:
    """The empty ground plane at supersampled resolution (the same for every scene of a config).

    Ground brightness falls with ground depth (darker far away); perspective grid lines run along
    constant x (converging to the vanishing point on the horizon) and constant z (closer together with
    distance). Rows above the horizon, if any are in the frame, are sky.
    """
    s, size = cfg.supersample, cfg.image_size * cfg.supersample
    f, y_h, cx = cfg.focal, cfg.horizon_px, cfg.image_size / 2
    v = (np.arange(size) + 0.5) / s  # (size,) row centres in output pixels
    below = v > y_h + 1e-3
    z_ground = np.where(below, f * _CAMERA_HEIGHT / np.maximum(v - y_h, 1e-3), np.inf)
    z_bottom = f * _CAMERA_HEIGHT / (cfg.image_size - y_h)
    # Farthest ground depth in view: at the top edge, or (horizon in frame) half a pixel below the horizon.
    z_top = f * _CAMERA_HEIGHT / max(0.0 - y_h, 0.5)
    t = np.clip((z_ground - z_bottom) / (z_top - z_bottom), 0.0, 1.0)[:, None]  # (size, 1), 0 = near
    rows = (1 - t) * _BACKGROUND_NEAR + t * _BACKGROUND_FAR  # (size, 3)
    sky_t = np.clip(v / max(y_h, 1e-3), 0.0, 1.0)[:, None]
    rows = np.where(below[:, None], rows, (1 - sky_t) * _SKY_TOP + sky_t * _SKY_HORIZON)
    pixels = np.broadcast_to(rows[:, None, :], (size, size, 3)).round().astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(pixels), "RGB")

    draw = ImageDraw.Draw(img)
    line = tuple(int(c) for c in (_BACKGROUND_NEAR * 0.82).round())
    vanish = (cx * s, y_h * s)
    # Lines of constant x cross the bottom edge every quarter image width.
    for k in range(-8, 9):
        draw.line([vanish, ((cx + k * cfg.image_size / 4) * s, size)], fill=line, width=max(1, s // 2))
    # Lines of constant z at depths growing geometrically from the bottom edge.
    z = z_bottom
    while (row := y_h + f * _CAMERA_HEIGHT / z) > max(y_h, 0.0) + 1:
        draw.line([(0, row * s), (size, row * s)], fill=line, width=max(1, s // 2))
        z *= 1.3
    return img


def render(scene: Scene, cfg: SceneConfig) -> Image.Image:
    """The scene as an RGB ``image_size`` x ``image_size`` PIL image (drawn far to near, box-filtered)."""
    img = _background(cfg).copy()
    draw = ImageDraw.Draw(img)
    for i in _draw_order(scene):
        o = scene.objects[i]
        rgb = COLOUR_RGB[o.colour]
        _draw_object(draw, o, cfg.supersample, fill=rgb, outline=tuple(c * 11 // 20 for c in rgb))
    return img.reduce(cfg.supersample) if cfg.supersample > 1 else img


def depth_bin(z: float, cfg: SceneConfig) -> int:
    """1 (nearest) .. ``cfg.depth_bins``: equal steps in z over the depths the frame can show."""
    near, far = cfg.depth_range
    b = int((z - near) / (far - near) * cfg.depth_bins)
    return 1 + min(max(b, 0), cfg.depth_bins - 1)


def dense_targets(scene: Scene, cfg: SceneConfig) -> dict[str, np.ndarray]:
    """Per-cell targets, each a (grid, grid) uint8 array with 0 = empty cell.

    ``kind``: 1 + index in ``cfg.kinds``; ``colour``: 1 + index in ``cfg.colours``; ``depth``: ``depth_bin``.
    """
    g = cfg.grid
    out = {name: np.zeros((g, g), np.uint8) for name in ("kind", "colour", "depth")}
    for o in scene.objects:
        r, c = o.cell
        out["kind"][r, c] = cfg.kinds.index(o.kind) + 1
        out["colour"][r, c] = cfg.colours.index(o.colour) + 1
        out["depth"][r, c] = depth_bin(o.z, cfg)
    return out


# --- language ----------------------------------------------------------------------------------------
def plural(kind: str) -> str:
    return kind + "es" if kind.endswith(("s", "x", "ch", "sh")) else kind + "s"


def position_words(o: SceneObject, cfg: SceneConfig) -> tuple[str, str]:
    """(column word, row word): e.g. ("midleft", "near"). The row word is also the depth word."""
    return COLUMN_WORDS[cfg.grid][o.cell[1]], ROW_WORDS[cfg.grid][o.cell[0]]


def describe(o: SceneObject, cfg: SceneConfig) -> str:
    """One object as the captions and rationales state it: kind first, then (``cfg.describe_colour``)
    colour, then column and row.

    E.g. "cube midleft near." ("cube red midleft near." with colour). The kind comes first because a
    question names objects by kind: once the kind is written, each later word is a one-hop lookup from
    that token to the visual token of the object (the cell the towers encode), rather than a lookup that
    must first recall which kind is being described.
    """
    colour = [o.colour] if cfg.describe_colour else []
    return " ".join([o.kind, *colour, *position_words(o, cfg)]) + "."


def caption(scene: Scene, cfg: SceneConfig) -> str:
    """Grounded caption: each object (``describe``) in ``cfg.caption_order``, then a count summary.

    E.g. "cube left far. ball midright near. 1 cube, 1 ball." Counts are digits, the same tokens the
    Count answers use.
    """
    objects = scene.objects
    if cfg.caption_order == "kind":
        objects = sorted(objects, key=lambda o: cfg.kinds.index(o.kind))  # stable: raster within a kind
    parts = [describe(o, cfg) for o in objects]
    counts = Counter(o.kind for o in scene.objects)
    summary = ", ".join(f"{counts[k]} {k if counts[k] == 1 else plural(k)}" for k in cfg.kinds if counts[k])
    return " ".join([*parts, summary + "."])


@dataclass(frozen=True)
class Question:
    """One multiple-choice question about a scene. ``named`` lists the kinds the question refers to:
    Count (kind,), Relation (subject, reference), Depth (first, second), Distance (anchor, first, second)."""

    task: str
    question: str
    choices: tuple[str, ...]
    answer: int  # index of the correct choice
    named: tuple[str, ...]

    @property
    def type(self) -> str:
        return TASK_TYPE[self.task]

    @property
    def letter(self) -> str:
        return LETTERS[self.answer]

    @property
    def short_answer(self) -> str:
        return self.choices[self.answer]

    @property
    def prompt(self) -> str:
        return format_prompt(self.question, self.choices)


def n_choices(task: str, cfg: SceneConfig) -> int:
    return cfg.count_choices if task == "Count" else 2


def _ground_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


# Distance answers must also follow from the position words alone: with every object moved to its cell
# centre, the same candidate is closer, by at least this ratio (no ties between quantised positions).
_CELL_DISTANCE_RATIO = 1.1


def _cell_xz(o: SceneObject, cfg: SceneConfig) -> tuple[float, float]:
    # Ground position of an object placed exactly at its cell centre: what the position words say.
    r, c = o.cell
    return cfg.ground_xz((c + 0.5) * cfg.cell, (r + 0.5) * cfg.cell)


def _closer(anchor: tuple[float, float], p: tuple[float, float], q: tuple[float, float]) -> tuple[int, float]:
    """(0 if p is closer to anchor else 1, far distance / near distance)."""
    dp, dq = _ground_distance(anchor, p), _ground_distance(anchor, q)
    return (0 if dp < dq else 1), max(dp, dq) / max(min(dp, dq), 1e-9)


def correct_choices(q: Question, scene: Scene, cfg: SceneConfig) -> list[int]:
    """Indices of the choices that are right for ``scene``, recomputed from the scene (not from ``q``).

    Returns an empty list when the question is ill-posed: a named kind is not unique, or the answer
    does not clear the configured margin.
    """
    try:
        objs = [scene.named(k) for k in q.named] if q.task != "Count" else []
    except ValueError:
        return []
    if q.task == "Count":
        n = scene.count(q.named[0])
        return [i for i, c in enumerate(q.choices) if c == str(n)]
    if q.task == "Relation":
        a, b = objs
        truth = {
            "left": a.cell[1] < b.cell[1],
            "right": a.cell[1] > b.cell[1],
            "above": a.cell[0] < b.cell[0],
            "below": a.cell[0] > b.cell[0],
        }
        return [i for i, c in enumerate(q.choices) if truth[c]]
    if q.task == "Depth":
        a, b = objs
        if a.cell[0] == b.cell[0] or max(a.z, b.z) / min(a.z, b.z) < 1 + cfg.depth_margin:
            return []
        return [i for i, c in enumerate(q.choices) if c == (a if a.z < b.z else b).kind]
    if q.task == "Distance":
        anchor, p, r = objs
        xz = (anchor.x, anchor.z), (p.x, p.z), (r.x, r.z)
        which, ratio = _closer(*xz)
        cell_which, cell_ratio = _closer(*(_cell_xz(o, cfg) for o in (anchor, p, r)))
        if ratio < cfg.distance_ratio or cell_which != which or cell_ratio < _CELL_DISTANCE_RATIO:
            return []
        return [i for i, c in enumerate(q.choices) if c == (p, r)[which].kind]
    raise ValueError(f"unknown task {q.task!r}")


def rationale(q: Question, scene: Scene, cfg: SceneConfig) -> str:
    """A short grounded chain of thought ending in the letter: the facts the answer rests on, the answer
    word, then ``answer: X`` (the legacy CV-Bench extraction reads the letter after "answer:").

    Each step is a one-hop lookup the caption stage already trained: name an object and read its cell
    ("cube midleft near."), so the comparison happens between words, not hidden states. Count lists
    every instance, then the number. The options are then walked in order up to the matching one, so
    the letter is copied from the line just written rather than looked up in the prompt. E.g.
    "cube midleft near. ball right far. cube. A ball no. B cube yes. answer: B".
    (Starting with the whole caption and copying the facts from it was measured worse: the copy, a
    text-to-text lookup, did not form at the default budget either.)
    """
    if q.task == "Count":
        (kind,) = q.named
        facts = [describe(o, cfg) for o in scene.objects if o.kind == kind]
        n = scene.count(kind)
        facts.append(f"{n} {kind if n == 1 else plural(kind)}.")
    else:
        facts = [describe(scene.named(k), cfg) for k in q.named]
        facts.append(f"{q.short_answer}.")
    # Walk the options until the one that matches: the letter to give is then the one just written.
    for k, choice in enumerate(q.choices[: q.answer + 1]):
        facts.append(f"{LETTERS[k]} {choice} {'yes' if k == q.answer else 'no'}.")
    return " ".join([*facts, f"answer: {q.letter}"])


def _ordered(answer: str, other: str, answer_pos: int) -> tuple[str, ...]:
    return (answer, other) if answer_pos == 0 else (other, answer)


def make_question(
    task: str,
    scene: Scene,
    cfg: SceneConfig,
    rng: np.random.Generator,
    answer_pos: int,
    count: int | None = None,
) -> Question | None:
    """A ``task`` question about ``scene`` whose correct choice is at ``answer_pos``; None if impossible.

    ``count`` (Count only): ask about a kind that occurs exactly ``count`` times (None if there is
    none); by default the kind is uniform. The answer is asserted unique (``correct_choices``).
    """
    if not 0 <= answer_pos < n_choices(task, cfg):
        raise ValueError(f"answer_pos {answer_pos} out of range for {task}")
    objs, uniq = scene.objects, scene.unique()
    if task == "Count":
        kinds = [kd for kd in cfg.kinds if count is None or scene.count(kd) == count]
        if not kinds:
            return None
        kind = kinds[int(rng.integers(len(kinds)))]
        n, k = scene.count(kind), cfg.count_choices
        # The options are k consecutive counts in 0..max_objects containing n, in shuffled order.
        start = int(rng.integers(max(0, n - k + 1), min(n, cfg.max_objects - k + 1) + 1))
        others = [str(m) for m in rng.permutation(np.arange(start, start + k)) if m != n]
        choices = (*others[:answer_pos], str(n), *others[answer_pos:])
        q = Question(task, f"How many {plural(kind)} are in the image?", choices, answer_pos, (kind,))
    elif task == "Relation":
        if len(uniq) < 2:
            return None
        ia, ib = rng.choice(uniq, size=2, replace=False)
        a, b = objs[ia], objs[ib]
        axes = [ax for ax, d in (("h", a.cell[1] != b.cell[1]), ("v", a.cell[0] != b.cell[0])) if d]
        if axes[int(rng.integers(len(axes)))] == "h":
            right, wrong = ("left", "right") if a.cell[1] < b.cell[1] else ("right", "left")
        else:
            right, wrong = ("above", "below") if a.cell[0] < b.cell[0] else ("below", "above")
        question = f"Where is the {a.kind} located with respect to the {b.kind}?"
        q = Question(task, question, _ordered(right, wrong, answer_pos), answer_pos, (a.kind, b.kind))
    elif task == "Depth":
        pairs = [
            (i, j)
            for i in uniq
            for j in uniq
            if i < j
            and objs[i].cell[0] != objs[j].cell[0]
            and max(objs[i].z, objs[j].z) / min(objs[i].z, objs[j].z) >= 1 + cfg.depth_margin
        ]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        near, far = (objs[i], objs[j]) if objs[i].z < objs[j].z else (objs[j], objs[i])
        first, second = _ordered(near.kind, far.kind, answer_pos)
        question = f"Which object is closer to the camera, the {first} or the {second}?"
        q = Question(task, question, (first, second), answer_pos, (first, second))
    elif task == "Distance":
        triples = []
        for a in uniq:
            for i in uniq:
                for j in uniq:
                    if a in (i, j) or i >= j:
                        continue
                    trio = objs[a], objs[i], objs[j]
                    which, ratio = _closer(*((o.x, o.z) for o in trio))
                    cell_which, cell_ratio = _closer(*(_cell_xz(o, cfg) for o in trio))
                    if (
                        ratio >= cfg.distance_ratio
                        and cell_which == which
                        and cell_ratio >= _CELL_DISTANCE_RATIO
                    ):
                        triples.append((a, (i, j)[which], (j, i)[which]))
        if not triples:
            return None
        a, near_i, far_i = triples[int(rng.integers(len(triples)))]
        first, second = _ordered(objs[near_i].kind, objs[far_i].kind, answer_pos)
        question = f"Which object is closer to the {objs[a].kind}, the {first} or the {second}?"
        q = Question(task, question, (first, second), answer_pos, (objs[a].kind, first, second))
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    assert correct_choices(q, scene, cfg) == [q.answer], f"ambiguous or wrong question: {q}"
    return q


# --- files -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneratedData:
    """Where ``generate`` wrote everything (absolute paths) and how much of each."""

    out_dir: Path
    images_dir: Path
    stage1: Path
    stage2: Path
    test: Path
    scenes: Path
    dense_targets: Path
    n_train_scenes: int
    n_test_items: int
    n_stage1: int
    n_stage2: int
    stage2_tasks: dict[str, int] = field(default_factory=dict)  # rows per task (and "Describe")
    test_tasks: dict[str, int] = field(default_factory=dict)


def _row(rid: str, image: str, human: str, gpt: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\n" + human}, {"from": "gpt", "value": gpt}],
        **extra,
    }


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps the current time into the zip entries; a fixed date keeps the bytes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(arr), allow_pickle=False)


_MAX_TEST_COUNT = 3  # test Count answers cycle over 0..3; scenes with 4+ of one kind are rare


class _Progress:
    """A rich progress bar over ``total`` steps when ``show``; a no-op otherwise."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = None
        if show:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.task = self.bar.add_task("rendering synthetic scenes", total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def generate(
    out_dir: str | Path,
    n_train_scenes: int,
    n_test_items: int,
    seed: int | None = None,
    cfg: SceneConfig = SceneConfig(),  # frozen, so a shared default is safe
    *,
    describe_every: int = 4,
    progress: bool | None = None,
    reasoning: bool = False,
) -> GeneratedData:
    """Render ``n_train_scenes`` training scenes and ``n_test_items`` test items (one scene each) into
    ``out_dir``: ``images/``, ``stage1.jsonl``, ``stage2.jsonl``, ``test.jsonl``, ``scenes.jsonl`` and
    ``dense_targets.npz``.

    Train and test scenes come from two independent streams spawned from ``seed`` (default
    ``cfg.seed``). Stage 2 asks a scene a task's question only while that task is not ahead of the
    others, then trims every task to the same count (a multiple of formats x letters), so tasks,
    multiple-choice/short formats and correct letters are exactly balanced; Count asks for the count
    value seen least so far. Test items cycle tasks, correct letters and (Count) answers 0..3. ``progress``: show a bar
    (default: when there are at least 500 images). ``reasoning``: multiple-choice answers state the
    grounded facts first and end in "answer: X" (``rationale``) instead of the bare letter.
    """
    seed = cfg.seed if seed is None else seed
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    show = (n_train_scenes + n_test_items >= 500) if progress is None else progress

    scene_rows: list[dict[str, Any]] = []
    stage1: list[dict[str, Any]] = []
    # Stage-2 candidates per task: (scene index, row without id); descriptions kept separately.
    asked: dict[str, list[tuple[int, dict[str, Any]]]] = {t: [] for t in TASKS}
    describe: list[tuple[int, dict[str, Any]]] = []
    dense: dict[str, list[np.ndarray]] = {"kind": [], "colour": [], "depth": []}
    test_rows: list[dict[str, Any]] = []
    count_answers: Counter[int] = Counter()  # training Count answers so far

    with _Progress(n_train_scenes + n_test_items, show) as bar:
        for i in range(n_train_scenes):
            scene = sample_scene(train_rng, cfg)
            name = f"images/train_{i:06d}.png"
            render(scene, cfg).save(out / name)
            scene_rows.append({"image": name, "split": "train", **scene.to_json()})
            for key, arr in dense_targets(scene, cfg).items():
                dense[key].append(arr)
            text = caption(scene, cfg)
            stage1.append(
                _row(f"stage1-{i:06d}", name, CAPTION_INSTRUCTIONS[i % len(CAPTION_INSTRUCTIONS)], text)
            )
            if i % describe_every == 0:
                describe.append((i, _row("", name, DESCRIBE_INSTRUCTION, text, task="Describe")))
            least = min(len(v) for v in asked.values())
            for task in TASKS:
                done = len(asked[task])
                if done > least:
                    continue  # this task is ahead: let the rarer tasks catch up
                # Alternate formats; within each format cycle the correct position.
                pos = (done // 2) % n_choices(task, cfg)
                count = None
                if task == "Count":  # ask for the count seen least so far: flattens the answer histogram
                    count = min({scene.count(k) for k in cfg.kinds}, key=lambda n: (count_answers[n], n))
                q = make_question(task, scene, cfg, train_rng, pos, count)
                if q is None:
                    continue
                if task == "Count":
                    count_answers[count] += 1
                if done % 2 == 0:
                    human = q.prompt + "\n" + MC_SUFFIX
                    gpt = rationale(q, scene, cfg) if reasoning else q.letter
                else:
                    human, gpt = q.question + "\n" + SHORT_SUFFIX, q.short_answer
                asked[task].append((i, _row("", name, human, gpt, task=task)))
            bar.advance()

        # Test: items cycle through the tasks; each task cycles its correct position and Count also
        # cycles its answer over 0..3 (independently of the position), so no answer value dominates.
        per_task: Counter[str] = Counter()
        counts = range(min(cfg.max_objects, _MAX_TEST_COUNT) + 1)
        for idx in range(n_test_items):
            task = TASKS[idx % len(TASKS)]
            j, k = per_task[task], n_choices(task, cfg)
            pos = j % k
            count = counts[(j // k) % len(counts)] if task == "Count" else None
            per_task[task] += 1
            q = None
            while q is None:  # resample scenes until one admits this item (e.g. three unique kinds)
                scene = sample_scene(test_rng, cfg)
                q = make_question(task, scene, cfg, test_rng, pos, count)
            name = f"images/test_{idx:06d}.png"
            render(scene, cfg).save(out / name)
            scene_rows.append({"image": name, "split": "test", **scene.to_json()})
            test_rows.append({
                "idx": idx,
                "type": q.type,
                "task": task,
                "question": q.question,
                "choices": list(q.choices),
                "answer": f"({q.letter})",
                "prompt": q.prompt,
                "filename": name,
                "source": SOURCE[q.type],
            })  # fmt: skip
            bar.advance()

    # Equal rows per task, a multiple of 2 formats x the number of choices when there is enough data.
    keep = min(len(v) for v in asked.values())
    cycle = math.lcm(*(2 * n_choices(t, cfg) for t in TASKS))
    keep = keep // cycle * cycle if keep >= cycle else keep
    merged = sorted([x for t in TASKS for x in asked[t][:keep]] + describe, key=lambda x: x[0])
    stage2 = [{**row, "id": f"stage2-{k:06d}"} for k, (_, row) in enumerate(merged)]

    out_paths = {
        "stage1": out / "stage1.jsonl",
        "stage2": out / "stage2.jsonl",
        "test": out / "test.jsonl",
        "scenes": out / "scenes.jsonl",
        "dense_targets": out / "dense_targets.npz",
    }
    _write_jsonl(out_paths["stage1"], stage1)
    _write_jsonl(out_paths["stage2"], stage2)
    _write_jsonl(out_paths["test"], test_rows)
    _write_jsonl(out_paths["scenes"], scene_rows)
    g = cfg.grid
    arrays = {k: np.stack(v) if v else np.zeros((0, g, g), np.uint8) for k, v in dense.items()}
    _save_npz(
        out_paths["dense_targets"], {**arrays, "image": np.array([r["image"] for r in stage1], dtype=str)}
    )
    return GeneratedData(
        out_dir=out.resolve(),
        images_dir=(out / "images").resolve(),
        **{k: p.resolve() for k, p in out_paths.items()},
        n_train_scenes=n_train_scenes,
        n_test_items=n_test_items,
        n_stage1=len(stage1),
        n_stage2=len(stage2),
        stage2_tasks=dict(Counter(r["task"] for r in stage2)),
        test_tasks=dict(Counter(r["task"] for r in test_rows)),
    )


def corpus(out_dir: str | Path) -> Iterator[str]:
    """Every text of a generated dataset (for training a tokenizer): conversation turns without the
    ``<image>`` placeholder, test prompts, choices and answers, and the fixed instruction strings."""
    out = Path(out_dir)
    for name in ("stage1.jsonl", "stage2.jsonl"):
        with open(out / name) as fh:
            for line in fh:
                for turn in json.loads(line)["conversations"]:
                    yield turn["value"].replace("<image>\n", "").replace("<image>", "")
    with open(out / "test.jsonl") as fh:
        for line in fh:
            item = json.loads(line)
            yield item["prompt"] + "\n" + MC_SUFFIX
            yield item["answer"]
            yield from item["choices"]
    yield from (MC_SUFFIX, SHORT_SUFFIX, DESCRIBE_INSTRUCTION, *CAPTION_INSTRUCTIONS)


def example_grid(scenes: Sequence[Scene], cfg: SceneConfig, columns: int = 4, scale: int = 4) -> Image.Image:
    """The scenes rendered side by side (each enlarged ``scale`` x, nearest), for a quick look."""
    side = cfg.image_size * scale
    rows = math.ceil(len(scenes) / columns)
    sheet = Image.new("RGB", (columns * (side + 4) + 4, rows * (side + 4) + 4), (255, 255, 255))
    for k, scene in enumerate(scenes):
        tile = render(scene, cfg).resize((side, side), Image.Resampling.NEAREST)
        sheet.paste(tile, (4 + (k % columns) * (side + 4), 4 + (k // columns) * (side + 4)))
    return sheet
