"""Scene settings and camera: impossible settings are rejected, perspective holds in the object metadata."""

from __future__ import annotations

import numpy as np
import pytest

from cambrian.quickstart.sampling import sample_scene
from cambrian.quickstart.scenes import SceneConfig

CFG = SceneConfig()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"grid": 7},  # no position words for 7 columns
        {"kinds": ("cube", "pyramid")},
        {"colours": ("mauve",)},
        {"max_objects": 17},
        {"min_objects": 3, "max_objects": 2},
        {"horizon": 0.1},  # horizon inside the frame: far objects would be a few pixels
        {"count_choices": 8},
    ],
)
def test_config_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


def test_perspective_metadata_farther_is_higher_and_smaller():
    rng = np.random.default_rng(1)
    objects = [o for _ in range(100) for o in sample_scene(rng, CFG).objects]
    objects.sort(key=lambda o: (o.z, -o.centre[1]))  # z is stored rounded: ties possible
    v = np.array([o.centre[1] for o in objects])
    size = np.array([o.size for o in objects])
    # Over increasing depth: rows go up and sizes shrink (ties only where values round alike).
    assert np.all(np.diff(v) <= 0) and np.all(np.diff(size) <= 0)
    assert v[0] - v[-1] > CFG.image_size / 2 and size[0] > 1.6 * size[-1]
    rows = [o.cell[0] for o in objects]
    assert rows == sorted(rows, reverse=True)  # near rows at the bottom
