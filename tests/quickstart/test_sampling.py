"""Sampled scenes: one object per cell, inside the frame, and occluded at most down to ``min_visible``."""

from __future__ import annotations

import numpy as np
import pytest

from cambrian.quickstart.render import label_map
from cambrian.quickstart.sampling import make_object, make_scene, sample_scene
from cambrian.quickstart.scenes import SceneConfig

CFG = SceneConfig()


def test_scene_invariants():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng, CFG)
        cells = [o.cell for o in scene.objects]
        assert CFG.min_objects <= len(cells) <= CFG.max_objects
        assert len(set(cells)) == len(cells) and cells == sorted(cells)
        for o in scene.objects:
            u, v = o.centre
            # The centre lies in its own cell and the whole object inside the frame.
            assert (int(v // CFG.cell), int(u // CFG.cell)) == o.cell
            assert o.size / 2 <= min(u, v) and max(u, v) + o.size / 2 <= CFG.image_size + 1e-6
            assert o.position == (o.x, pytest.approx(CFG.object_height / 2, abs=1e-4), o.z)


def test_occlusion_is_partial():
    rng = np.random.default_rng(2)
    for _ in range(60):
        scene = sample_scene(rng, CFG)
        labels = label_map(scene, CFG)
        for i, o in enumerate(scene.objects):
            assert CFG.min_visible <= o.visible <= 1.0
            alone = np.count_nonzero(label_map(make_scene([o], CFG), CFG))
            seen = np.count_nonzero(labels == i + 1)
            assert seen >= (CFG.min_visible - 0.1) * alone  # output-resolution check, some rounding slack


def test_visible_fraction_reports_occlusion():
    far = make_object(CFG, "cube", "red", 2, 1, dv=1.0)  # bottom of its cell ...
    near = make_object(CFG, "cube", "blue", 3, 1, dv=-1.0)  # ... right above the near one
    scene = make_scene([near, far], CFG)
    assert [o.colour for o in scene.objects] == ["red", "blue"]  # row-major order
    assert scene.objects[0].visible < 1.0 and scene.objects[1].visible == 1.0
    labels = label_map(scene, CFG)
    assert np.count_nonzero(labels == 2) > 0 and np.count_nonzero(labels == 1) > 0
