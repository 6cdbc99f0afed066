"""Rendered scenes: perspective in pixels, a ground that darkens with distance, per-cell dense targets."""

from __future__ import annotations

import numpy as np

from cambrian.quickstart.render import dense_targets, render
from cambrian.quickstart.sampling import make_object, make_scene, sample_scene
from cambrian.quickstart.scenes import Scene, SceneConfig

CFG = SceneConfig()


def test_perspective_in_pixels_farther_is_higher_and_smaller():
    background = np.asarray(render(Scene(()), CFG), dtype=int)

    def extent(row: int) -> tuple[int, int]:
        scene = make_scene([make_object(CFG, "cube", "red", row, 1)], CFG)
        changed = np.abs(np.asarray(render(scene, CFG), dtype=int) - background).sum(-1) > 60
        ys = np.flatnonzero(changed.any(1))
        return ys[0], ys[-1] - ys[0] + 1  # (top row, height)

    tops, heights = zip(*(extent(r) for r in range(CFG.grid)))
    assert list(tops) == sorted(tops) and len(set(tops)) == CFG.grid  # far rows drawn higher
    assert list(heights) == sorted(heights) and heights[-1] >= 1.6 * heights[0]  # and smaller


def test_ground_gets_darker_with_distance():
    grey = np.asarray(render(Scene(()), CFG), dtype=float).mean(axis=(1, 2))  # (S,) brightness per row
    assert grey[: CFG.image_size // 4].mean() < grey[-CFG.image_size // 4 :].mean() - 20


def test_dense_targets_match_the_scene():
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, CFG, n_objects=5)
    t = dense_targets(scene, CFG)
    assert set(t) == {"kind", "colour", "depth"}
    occupied = np.zeros((CFG.grid, CFG.grid), bool)
    for o in scene.objects:
        occupied[o.cell] = True
        assert CFG.kinds[t["kind"][o.cell] - 1] == o.kind
        assert CFG.colours[t["colour"][o.cell] - 1] == o.colour
        assert 1 <= t["depth"][o.cell] <= CFG.depth_bins
    for arr in t.values():
        assert arr.shape == (CFG.grid, CFG.grid) and arr.dtype == np.uint8
        assert np.all(arr[~occupied] == 0) and np.all(arr[occupied] > 0)
    zs = sorted((o.z, t["depth"][o.cell]) for o in scene.objects)
    assert [b for _, b in zs] == sorted(b for _, b in zs)  # bins grow with depth
