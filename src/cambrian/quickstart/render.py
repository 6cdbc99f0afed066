"""Drawing quickstart scenes: the RGB image, per-pixel object labels and per-cell dense targets.

Images are drawn at ``supersample`` x resolution on a perspective ground plane (darker and with denser
grid lines far away), objects far to near so nearer ones occlude, then box-filtered down. The same
drawing, with object indices for colours, gives the label maps that measure how much of each object is
visible; the per-cell targets are what tower pretraining (stage 0) learns, known here for free.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cambrian.quickstart.scenes import CAMERA_HEIGHT, COLOUR_RGB, Scene, SceneConfig, SceneObject

_BACKGROUND_NEAR = np.array([176.0, 170.0, 158.0])  # ground colour at the bottom edge
_BACKGROUND_FAR = np.array([96.0, 96.0, 104.0])  # ... and at the farthest visible depth (darker)
_SKY_TOP, _SKY_HORIZON = np.array([120.0, 165.0, 225.0]), np.array([205.0, 222.0, 240.0])


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


def visible_fractions(scene: Scene, cfg: SceneConfig) -> list[float]:
    """Per object, the fraction of its area not hidden by nearer objects (at supersampled resolution)."""
    full = [_object_area(o, cfg) for o in scene.objects]
    seen = np.bincount(_labels(scene, cfg, cfg.supersample).ravel(), minlength=len(scene.objects) + 1)
    return [float(seen[i + 1] / full[i]) for i in range(len(scene.objects))]


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
    z_ground = np.where(below, f * CAMERA_HEIGHT / np.maximum(v - y_h, 1e-3), np.inf)
    z_bottom = f * CAMERA_HEIGHT / (cfg.image_size - y_h)
    # Farthest ground depth in view: at the top edge, or (horizon in frame) half a pixel below the horizon.
    z_top = f * CAMERA_HEIGHT / max(0.0 - y_h, 0.5)
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
    while (row := y_h + f * CAMERA_HEIGHT / z) > max(y_h, 0.0) + 1:
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
