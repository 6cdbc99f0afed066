"""Vision towers: one registered family per file, built offline from a ``TowerConfig``.

``build_tower(cfg)`` creates a randomly initialised tower (no file or network access); weights are
loaded separately with ``load_tower_weights``. ``resolve_tower`` turns a name from a checkpoint's
``mm_vision_tower_aux_list`` (a released name or a local directory) into a config plus a weights dir.
"""

from __future__ import annotations

from cambrian.models.vision.base import ImagePreprocessor, TowerConfig, VisionTower, resize_tokens
from cambrian.registry import Registry

TOWERS: Registry[type[VisionTower]] = Registry("vision tower family")

# The family modules register themselves with TOWERS on import, so TOWERS must exist first.
from cambrian.models.vision import clip, convnext, dinov2, siglip  # noqa: E402, F401
from cambrian.models.vision.resolve import (  # noqa: E402
    RELEASED_TOWERS,
    load_tower_weights,
    released_tower_config,
    resolve_tower,
    tiny_tower_config,
    tower_config_from_dir,
)


def build_tower(cfg: TowerConfig) -> VisionTower:
    """Randomly initialised tower of family ``cfg.family`` built from ``cfg.arch`` (no I/O).

    Frozen towers get ``requires_grad=False`` on every parameter (their forward also runs under no_grad).
    Works under ``with torch.device("meta"):`` to inspect the big released towers without memory.
    """
    tower = TOWERS.get(cfg.family)(cfg)
    tower.requires_grad_(not cfg.frozen)
    return tower


__all__ = [
    "RELEASED_TOWERS",
    "TOWERS",
    "ImagePreprocessor",
    "TowerConfig",
    "VisionTower",
    "build_tower",
    "load_tower_weights",
    "released_tower_config",
    "resize_tokens",
    "resolve_tower",
    "tiny_tower_config",
    "tower_config_from_dir",
]
