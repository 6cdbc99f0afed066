"""``TowerConfig``: the plain, torch-free description of one vision tower.

Kept apart from the tower code so that ``CambrianConfig`` (which stores a list of these as dicts) can be
imported without torch models, timm or any tower family. The family-specific facts (normalisation, pad
fill, released names, ...) live with each family in ``TowerFamily`` specs; this module only knows the
generic shape of a config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

# OpenAI-CLIP image statistics: the TowerConfig defaults, and the normalisation or pad fill (as
# int(m * 255), docs/checkpoint-format.md 3.2) of several families and of open_clip's own defaults.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_PAD_FILL = tuple(int(m * 255) for m in OPENAI_CLIP_MEAN)  # (122, 116, 104)

BACKENDS = ("hf", "timm")


@dataclass
class TowerConfig:
    """Everything needed to rebuild a tower without touching the network.

    ``arch`` holds the architecture hyper-parameters (a Hugging Face vision-config dict for ``backend
    == "hf"``, timm ``create_model`` keyword overrides for ``backend == "timm"``); weights come either
    from the Cambrian checkpoint itself (our format saves them) or from ``source``.
    """

    family: str  # id of a registered tower family (cambrian.models.vision.registry.TOWERS)
    token_len: int  # N: tokens returned per image, a perfect square
    image_size: int  # R: side of the square input image in pixels
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    pad_fill: tuple[int, int, int] = CLIP_PAD_FILL
    backend: str = "hf"  # "hf" (transformers model) or "timm" (timm / open_clip trunk)
    arch: dict[str, Any] = field(default_factory=dict)
    select_layer: int = -2  # hidden_states index used as features, by the families that honour it
    source: str | None = None  # released name, hub id or local directory the weights come from
    frozen: bool = True

    def __post_init__(self) -> None:
        side = math.isqrt(self.token_len)
        if side * side != self.token_len:
            raise ValueError(
                f"tower {self.family!r}: token_len {self.token_len} is not a perfect square "
                f"(towers return a square grid of tokens)"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"tower {self.family!r}: backend {self.backend!r} is not one of 'hf', 'timm'")
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        self.pad_fill = tuple(int(x) for x in self.pad_fill)

    @property
    def grid(self) -> int:
        return math.isqrt(self.token_len)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TowerConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown tower config fields {sorted(unknown)}; valid fields: {sorted(known)}")
        return cls(**d)
