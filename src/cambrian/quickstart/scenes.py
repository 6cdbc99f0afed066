"""The scene model of the quickstart's synthetic CV-Bench-style data: scene settings, camera, objects.

The scenes are designed so that a tiny Cambrian trained from scratch on a CPU can learn them from few
samples:

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
default horizon therefore sits above the frame (no sky band in view) and far objects stay ~7 px.

Sampling scenes is in ``sampling``, drawing them in ``render``, questions about them in ``questions``
and the files ``make quickstart`` trains on in ``dataset``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

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

CAMERA_HEIGHT = 1.0  # H, world units ("metres"); only ratios matter


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
        return rho * CAMERA_HEIGHT / (1 + rho / 2)

    def size_at(self, v: float) -> float:
        """Drawn size (px) of an object whose centre is at image row ``v``."""
        return self.size_per_row * (v - self.horizon_px)

    def depth_at(self, v: float) -> float:
        """Depth z of an object whose centre is at image row ``v``."""
        return self.focal * (CAMERA_HEIGHT - self.object_height / 2) / (v - self.horizon_px)

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


# --- objects ------------------------------------------------------------------------------------------
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
