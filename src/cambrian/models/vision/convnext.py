"""ConvNeXt multi-stage tower (released: open_clip ``CLIP-convnext_xxlarge``, timm ``convnext_xxlarge`` trunk).

The released tower is fed 1024 px images. Features are the outputs of all four stages (stem -> stage0
-> stage1 -> stage2 -> stage3; no ``norm_pre`` and no head), at strides 4/8/16/32, i.e. 256², 128², 64²
and 32² maps with 384/768/1536/3072 channels. Each map is bilinearly resized in float32 to the tower
grid (96 x 96 = 9216 tokens for the released config; ``align_corners=False``, no antialias), cast back,
flattened row-major and concatenated along channels in stage order -> (B, 9216, 5760).

Because the tower resizes each stage itself, ``native_grid`` is the configured grid and the base
class's token resize is a no-op.

Backends:
  * ``"timm"``: ``timm.create_model(arch["model_name"], pretrained=False, num_classes=0, **other arch keys)``;
    the unused ``head.norm`` stays in the module so open_clip trunk weights load strictly.
  * ``"hf"``: transformers ``ConvNextModel``; the stage outputs are ``hidden_states[1:5]``.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from transformers import ConvNextConfig, ConvNextModel

from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import CLIP_PAD_FILL, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TowerConfig
from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family


def merge_stages(stages: list[torch.Tensor], side: int) -> torch.Tensor:
    """[(B, C_s, h_s, w_s)] -> (B, side*side, sum C_s): resize each in float32, flatten, concat channels."""
    out = []
    for feat in stages:
        resized = F.interpolate(feat.float(), size=(side, side), mode="bilinear", align_corners=False)
        out.append(resized.to(feat.dtype).flatten(2).transpose(1, 2))  # (B, side*side, C_s), row-major
    return torch.cat(out, dim=-1)


class ConvNextTower(VisionTower):
    def __init__(self, cfg: TowerConfig):
        super().__init__(cfg)
        if cfg.backend == "timm":
            fixed = ("model_name", "pretrained", "num_classes")
            kwargs: dict[str, Any] = {k: v for k, v in cfg.arch.items() if k not in fixed}
            self.model = timm.create_model(cfg.arch["model_name"], pretrained=False, num_classes=0, **kwargs)
            self._dims = [int(info["num_chs"]) for info in self.model.feature_info]  # per-stage C_s
        else:
            self.model = ConvNextModel(ConvNextConfig.from_dict(dict(cfg.arch)))
            self._dims = [int(d) for d in self.model.config.hidden_sizes]
        if len(self._dims) != 4:
            raise ValueError(f"convnext tower: expected 4 stages, got channel widths {self._dims}")

    @property
    def hidden_size(self) -> int:
        return sum(self._dims)

    @property
    def native_grid(self) -> int:
        return self.cfg.grid  # stages are resized to the configured grid inside features()

    def stage_outputs(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The four stage maps [(B, C_s, R/4/2**s, R/4/2**s)] for s = 0..3, in the model dtype."""
        dtype = next(self.model.parameters()).dtype
        x = pixel_values.to(dtype)
        if self.cfg.backend == "hf":
            hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
            return list(hidden[1:5])  # hidden[0] is the stem (embeddings) output
        x = self.model.stem(x)  # (B, C_0, R/4, R/4)
        stages = []
        for stage in self.model.stages:
            x = stage(x)
            stages.append(x)
        return stages

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, 3, R, R) -> (B, grid*grid, sum C_s); returned in the pixel dtype
        tokens = merge_stages(self.stage_outputs(pixel_values), self.cfg.grid)
        return tokens.to(pixel_values.dtype)


register_family(
    TowerFamily(
        id="convnext",
        tower=ConvNextTower,
        backends=("timm", "hf"),  # released: the open_clip / timm trunk
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        pad_fill=CLIP_PAD_FILL,
        released={
            # open_clip CLIP-convnext_xxlarge trunk (stage dims 384/768/1536/3072), fed at 1024 px, not 256
            "clip-convnext-XXL-multi-stage": ReleasedTower(
                image_size=1024,
                backend="timm",
                arch={"model_name": "convnext_xxlarge"},
                source="laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup",
            ),
        },
        tiny={  # 64 px: stage maps of 16, 8, 4 and 2 px
            "timm": TinyTower(
                64, {"model_name": "convnext_xxlarge", "dims": [8, 8, 16, 16], "depths": [1, 1, 1, 1]}
            ),
            "hf": TinyTower(
                64,
                {
                    "model_type": "convnext",
                    "hidden_sizes": [8, 8, 16, 16],
                    "depths": [1, 1, 1, 1],
                    "image_size": 64,
                },
            ),
        },
        hf_model_types=("convnext",),
        open_clip_models={"convnext_xxlarge": 1024},  # open_clip's own image_size is 256
    )
)
