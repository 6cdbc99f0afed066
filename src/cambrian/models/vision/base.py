"""The vision-tower contract shared by every tower family, and the image preprocessing they all use.

A tower turns a batch of preprocessed square images (B, 3, R, R) into tokens (B, N, C) on a square
grid of side sqrt(N), where N is the tower's configured token count (bilinear interpolation of its
native grid when they differ, as in the original release). Each tower also knows its own image
preprocessing (pad to square with a per-family fill colour, resize to R, normalise), so training and
inference share one code path.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cambrian.models.vision.config import TowerConfig
from cambrian.utils.images import to_rgb


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad to a square canvas, image centred along the short side (original `expand2square`)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@dataclass(frozen=True)
class ImagePreprocessor:
    """Pad to square -> bicubic resize to R x R -> [0, 1] -> normalise; returns float32 (3, R, R)."""

    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pad_fill: tuple[int, int, int]

    @classmethod
    def from_tower_config(cls, cfg: TowerConfig) -> ImagePreprocessor:
        return cls(cfg.image_size, tuple(cfg.image_mean), tuple(cfg.image_std), tuple(cfg.pad_fill))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = pad_to_square(to_rgb(image), self.pad_fill)
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        arr = np.asarray(image, dtype=np.float32) / 255.0  # (R, R, 3)
        arr = (arr - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def resize_tokens(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinearly resize a row-major token grid (B, h*w, C) to (B, side*side, C).

    Computed in float32 with ``align_corners=False`` and no antialias, then cast back: the original's rule.
    A no-op when the grid already has ``side*side`` tokens.
    """
    b, n, c = tokens.shape
    if n == side * side:
        return tokens
    h = math.isqrt(n)
    if h * h != n:
        raise ValueError(f"cannot resize a non-square token grid of {n} tokens")
    grid = tokens.reshape(b, h, h, c).permute(0, 3, 1, 2).float()  # (B, C, h, h)
    grid = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    return grid.to(tokens.dtype).permute(0, 2, 3, 1).reshape(b, side * side, c)


class VisionTower(nn.Module, ABC):
    """Base class of every tower family. Subclasses build their network from ``cfg.arch``."""

    # Prefixes of source-checkpoint weights the tower deliberately never builds (e.g. a pooling head);
    # the timm weight loader skips them instead of reporting them as unexpected.
    unused_weight_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        self.preprocess = ImagePreprocessor.from_tower_config(cfg)

    @property
    @abstractmethod
    def hidden_size(self) -> int:
        """C: channel width of the returned tokens."""

    @property
    @abstractmethod
    def native_grid(self) -> int:
        """Side of the token grid the network produces before interpolation."""

    @property
    def family(self) -> str:
        """Id of the tower family this tower was built for (its config's ``family``)."""
        return self.cfg.family

    @property
    def token_len(self) -> int:
        return self.cfg.token_len

    @abstractmethod
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Native features (B, native_grid**2, C) for pixels (B, 3, R, R)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) -> (B, N, C), interpolated to the configured token count."""
        if self.cfg.frozen:
            with torch.no_grad():
                return resize_tokens(self.features(pixel_values), self.cfg.grid)
        return resize_tokens(self.features(pixel_values), self.cfg.grid)


class HFPatchTower(VisionTower):
    """A tower wrapping a Hugging Face ViT-style vision model built from ``cfg.arch`` (grid = R // patch)."""

    hf_config_class: ClassVar[type]
    hf_model_class: ClassVar[type]

    def __init__(self, cfg: TowerConfig):
        super().__init__(cfg)
        self.model = self.hf_model_class(self.hf_config_class.from_dict(dict(cfg.arch)))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def native_grid(self) -> int:
        return self.cfg.image_size // int(self.model.config.patch_size)
