"""Vision towers: one registered ``TowerFamily`` per file, built offline from a ``TowerConfig``.

``build_tower(cfg)`` creates a randomly initialised tower (no file or network access); weights are
loaded separately with ``load_tower_weights``. ``resolve_tower`` turns a name from a checkpoint's
``mm_vision_tower_aux_list`` (a released name or a local directory) into a config plus a weights dir.

Modules: ``config`` (the torch-free ``TowerConfig``), ``base`` (the ``VisionTower`` contract and image
preprocessing), ``family`` (the ``TowerFamily`` spec and the ``TOWERS`` registry), one file per family
(``siglip``, ``clip``, ``dinov2``, ``convnext``: tower class + spec + one ``register_family`` call),
``registry`` (imports the families; lookups and ``build_tower``) and ``resolve`` (generic name, directory
and weight resolution over the registered specs).

The public names below load on first use (PEP 562), so importing ``cambrian.models.vision.config`` (as
``CambrianConfig`` does) does not import the tower families, timm or the transformers vision models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "TowerConfig": "cambrian.models.vision.config",
    "ImagePreprocessor": "cambrian.models.vision.base",
    "VisionTower": "cambrian.models.vision.base",
    "resize_tokens": "cambrian.models.vision.base",
    "ReleasedTower": "cambrian.models.vision.family",
    "TinyTower": "cambrian.models.vision.family",
    "TowerFamily": "cambrian.models.vision.family",
    "register_family": "cambrian.models.vision.family",
    # TOWERS is read through the registry module so the built-in families are registered first
    "TOWERS": "cambrian.models.vision.registry",
    "build_tower": "cambrian.models.vision.registry",
    "get_family": "cambrian.models.vision.registry",
    "RELEASED_TOWERS": "cambrian.models.vision.resolve",
    "load_tower_weights": "cambrian.models.vision.resolve",
    "released_tower_config": "cambrian.models.vision.resolve",
    "resolve_tower": "cambrian.models.vision.resolve",
    "tiny_tower_config": "cambrian.models.vision.resolve",
    "tower_config_from_dir": "cambrian.models.vision.resolve",
}

if TYPE_CHECKING:
    from cambrian.models.vision.base import ImagePreprocessor, VisionTower, resize_tokens
    from cambrian.models.vision.config import TowerConfig
    from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family
    from cambrian.models.vision.registry import TOWERS, build_tower, get_family
    from cambrian.models.vision.resolve import (
        RELEASED_TOWERS,
        load_tower_weights,
        released_tower_config,
        resolve_tower,
        tiny_tower_config,
        tower_config_from_dir,
    )


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [  # the keys of _LAZY (a literal list, so linters and IDEs see the public names)
    "RELEASED_TOWERS",
    "TOWERS",
    "ImagePreprocessor",
    "ReleasedTower",
    "TinyTower",
    "TowerConfig",
    "TowerFamily",
    "VisionTower",
    "build_tower",
    "get_family",
    "load_tower_weights",
    "register_family",
    "released_tower_config",
    "resize_tokens",
    "resolve_tower",
    "tiny_tower_config",
    "tower_config_from_dir",
]
