"""Placing objects in grid cells and sampling random scenes for the quickstart's synthetic data.

A scene is sampled by picking distinct cells and deriving each object's ground position ``(x, z)`` from a
jittered point in its cell (the camera model is ``scenes.SceneConfig``'s). Every stored number is
rounded, so a scene read back from ``scenes.jsonl`` equals the one that was rendered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from cambrian.quickstart.render import visible_fractions
from cambrian.quickstart.scenes import Scene, SceneConfig, SceneObject


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
    scene = Scene(tuple(sorted(objects, key=lambda o: o.cell)))
    fractions = visible_fractions(scene, cfg)
    return Scene(tuple(replace(o, visible=_r(f)) for o, f in zip(scene.objects, fractions)))


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
