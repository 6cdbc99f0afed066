"""The vision-tower family registry: look up registered ``TowerFamily`` specs and build towers.

Importing this module imports the built-in family modules once; each registers its own spec into
``TOWERS`` (defined in ``family.py``, which imports no family, so the imports form no cycle). Every
lookup is by exact id or exact name; the generic code in ``resolve.py`` works only through these
functions, so a new family is visible everywhere as soon as its spec is registered.
"""

from __future__ import annotations

from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import TowerConfig
from cambrian.models.vision.family import TOWERS, TowerFamily
from cambrian.registry import UnknownIdError


def get_family(family_id: str) -> TowerFamily:
    """The spec registered under ``family_id``; ``UnknownIdError`` lists the valid ids otherwise."""
    return TOWERS.get(family_id)


def families() -> list[TowerFamily]:
    """Every registered spec, by id."""
    return [TOWERS.get(name) for name in TOWERS]


def released_tower_names() -> list[str]:
    """Every released tower name some registered family answers to, sorted."""
    return sorted(name for spec in families() for name in spec.released)


def released_tower_family(name: str) -> TowerFamily:
    """The family a released tower name belongs to (exact name); ``UnknownIdError`` lists the names."""
    for spec in families():
        if name in spec.released:
            return spec
    raise UnknownIdError("released vision tower", name, released_tower_names())


def build_tower(cfg: TowerConfig) -> VisionTower:
    """Randomly initialised tower of family ``cfg.family`` built from ``cfg.arch`` (no I/O).

    Frozen towers get ``requires_grad=False`` on every parameter (their forward also runs under no_grad).
    Works under ``with torch.device("meta"):`` to inspect the big released towers without memory.
    """
    spec = get_family(cfg.family)
    if cfg.backend not in spec.backends:
        valid = ", ".join(repr(b) for b in spec.backends)
        raise ValueError(
            f"{spec.id} tower: backend {cfg.backend!r} is not supported; valid backends: {valid}"
        )
    tower = spec.tower(cfg)
    tower.requires_grad_(not cfg.frozen)
    return tower


# The built-in families register themselves on import. Imported after the functions above are defined:
# a family's first transformers import can fire cambrian's Auto-class hook (cambrian/__init__.py), which
# imports modeling_cambrian, which needs build_tower from this (then half-imported) module.
from cambrian.models.vision import clip, convnext, dinov2, siglip  # noqa: E402, F401
