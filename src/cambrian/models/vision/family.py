"""``TowerFamily``: everything one vision-tower family declares about itself, and the registry it joins.

A family file (``siglip.py``, ``clip.py``, ...) defines its ``VisionTower`` subclass and one
``TowerFamily`` spec, and registers it with a single ``register_family(spec)`` call. The spec holds every
family-specific fact the generic code needs: the tower class, the supported backends, the image
normalisation and pad-to-square fill, the exact released tower names it answers to (and the config each
one means), a tiny random config per backend for tests, and the saved-model formats it recognises
(Hugging Face ``model_type`` values, open_clip timm trunk names). ``resolve.py`` only iterates over the
registered specs, so adding a family is one file plus one registration.

This module never imports a family module (families import it), so there is no import cycle; the
family modules are imported once, by ``cambrian.models.vision.registry``, which is where lookups go.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import BACKENDS, TowerConfig
from cambrian.registry import Registry


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # Specs are shared process-wide; a read-only view stops one caller's edit leaking into every config.
    return MappingProxyType(copy.deepcopy(dict(value)))


@dataclass(frozen=True)
class ReleasedTower:
    """What one released tower name (an entry of ``mm_vision_tower_aux_list``) stands for."""

    image_size: int  # R the released model feeds the tower
    backend: str  # "hf" or "timm"
    arch: Mapping[str, Any]  # TowerConfig.arch
    source: str  # Hugging Face hub id the weights are downloaded from (only when allowed)

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", _frozen_mapping(self.arch))


@dataclass(frozen=True)
class TinyTower:
    """A small random tower of a family for tests and tiny presets (hidden ~32, 2 layers, 32-64 px)."""

    image_size: int
    arch: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", _frozen_mapping(self.arch))


@dataclass(frozen=True)
class TowerFamily:
    """The spec of one vision-tower family. Registered under ``id`` (the ``TowerConfig.family`` value)."""

    id: str
    tower: type[VisionTower]  # built as tower(cfg) by registry.build_tower
    backends: tuple[str, ...]  # supported backends; the first is the one the released towers use
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pad_fill: tuple[int, int, int]  # pad-to-square colour, never read from a processor config
    released: Mapping[str, ReleasedTower] = field(default_factory=dict)  # exact released name -> tower
    tiny: Mapping[str, TinyTower] = field(default_factory=dict)  # backend -> tiny random tower
    # config.json model_type values that describe this family's vision model itself
    hf_model_types: tuple[str, ...] = ()
    # config.json model_type of a full (e.g. image-text) model -> model_type of its ``vision_config``
    hf_full_model_types: Mapping[str, str] = field(default_factory=dict)
    # open_clip vision_cfg.timm_model_name -> R Cambrian feeds that trunk (may differ from open_clip's)
    open_clip_models: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (isinstance(self.tower, type) and issubclass(self.tower, VisionTower)):
            raise TypeError(
                f"tower family {self.id!r}: tower must be a VisionTower subclass, got {self.tower!r}"
            )
        bad = [b for b in self.backends if b not in BACKENDS]
        if not self.backends or bad:
            raise ValueError(
                f"tower family {self.id!r}: backends {self.backends!r}; valid backends: {BACKENDS}"
            )
        for name, rel in self.released.items():
            if rel.backend not in self.backends:
                raise ValueError(
                    f"tower family {self.id!r}: released tower {name!r} uses backend {rel.backend!r}, "
                    f"not one of {self.backends}"
                )
        extra = [b for b in self.tiny if b not in self.backends]
        if extra:
            raise ValueError(f"tower family {self.id!r}: tiny towers for unsupported backends {extra}")
        for name in ("image_mean", "image_std"):
            object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
        object.__setattr__(self, "pad_fill", tuple(int(x) for x in self.pad_fill))
        object.__setattr__(self, "backends", tuple(self.backends))
        object.__setattr__(self, "hf_model_types", tuple(self.hf_model_types))
        for name in ("released", "tiny", "hf_full_model_types", "open_clip_models"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def default_backend(self) -> str:
        """The backend the released towers use (and tiny towers default to)."""
        return self.backends[0]

    @property
    def tiny_backends(self) -> list[str]:
        """Backends a tiny tower exists for, the default backend first."""
        return sorted(self.tiny, key=lambda b: b != self.default_backend)

    def config(
        self,
        token_len: int,
        image_size: int,
        backend: str,
        arch: Mapping[str, Any],
        *,
        select_layer: int = -2,
        source: str | None = None,
        frozen: bool = True,
        image_mean: tuple[float, ...] | None = None,
        image_std: tuple[float, ...] | None = None,
    ) -> TowerConfig:
        """A ``TowerConfig`` of this family: its own normalisation unless a saved processor overrides the
        mean/std, and always its own pad fill."""
        return TowerConfig(
            family=self.id, token_len=token_len, image_size=image_size,
            image_mean=self.image_mean if image_mean is None else tuple(image_mean),
            image_std=self.image_std if image_std is None else tuple(image_std),
            pad_fill=self.pad_fill, backend=backend, arch=copy.deepcopy(dict(arch)),
            select_layer=select_layer, source=source, frozen=frozen,
        )  # fmt: skip


# Every registered family by id. Lookups should go through cambrian.models.vision.registry, which
# imports the built-in family modules first; this module only holds the registry they register into.
TOWERS: Registry[TowerFamily] = Registry("vision tower family")

# What a saved or released name may match, per spec field: each value must belong to one family only.
_CLAIMS = {
    "released tower name": lambda s: s.released,
    "config.json model_type": lambda s: (*s.hf_model_types, *s.hf_full_model_types),
    "open_clip timm_model_name": lambda s: s.open_clip_models,
}


def register_family(spec: TowerFamily) -> TowerFamily:
    """Register ``spec`` under ``spec.id`` (exact id, once). Its released names, model types and open_clip
    names must not be claimed by another family already, so every lookup has exactly one answer."""
    if not isinstance(spec, TowerFamily):
        raise TypeError(f"register_family expects a TowerFamily, got {type(spec).__name__}")
    for what, claims in _CLAIMS.items():
        for other_id in TOWERS:
            clash = sorted(set(claims(spec)) & set(claims(TOWERS.get(other_id))))
            if clash and other_id != spec.id:
                raise ValueError(
                    f"tower family {spec.id!r}: {what} {', '.join(map(repr, clash))} already belongs to "
                    f"family {other_id!r}"
                )
    TOWERS.register(spec.id, spec)
    return spec
