"""SigLIP tower (released: open_clip ``ViT-SO400M-14-SigLIP-384``, i.e. timm ``vit_so400m_patch14_siglip_384``).

Features are the last block's output after the final LayerNorm, with no CLS token (SigLIP has none):
at R = 384 and patch 14 the grid is 27 x 27 = 729 tokens (the last 384 - 27*14 = 6 pixels are never
seen by the patch conv), which the base class interpolates to the configured token count (576).
``select_layer`` is ignored, as in the original.

Backends:
  * ``"timm"``: ``timm.create_model(arch["model_name"], pretrained=False, num_classes=0, global_pool="",
    **other arch keys)``; features = ``forward_features`` (blocks -> ``norm``). ``global_pool=""`` means
    no attention-pooling (MAP) head is even built; its weights in open_clip files are skipped on load.
  * ``"hf"``: transformers ``SiglipVisionModel``; features = ``last_hidden_state`` (after post_layernorm).
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import CLIP_PAD_FILL, TowerConfig
from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)


class SiglipTower(VisionTower):
    # Source weights of heads this tower never uses (open_clip keeps the MAP pooling head in the trunk).
    unused_weight_prefixes = ("attn_pool.", "head.", "fc_norm.")

    def __init__(self, cfg: TowerConfig):
        super().__init__(cfg)
        if cfg.backend == "timm":
            fixed = ("model_name", "pretrained", "num_classes", "global_pool")
            kwargs: dict[str, Any] = {k: v for k, v in cfg.arch.items() if k not in fixed}
            kwargs.setdefault("img_size", cfg.image_size)  # timm checks the input size strictly
            kwargs["global_pool"] = ""  # no pooling head: features keep every token
            self.model = timm.create_model(cfg.arch["model_name"], pretrained=False, num_classes=0, **kwargs)
            self._hidden = int(self.model.num_features)
            self._grid = int(self.model.patch_embed.grid_size[0])
        else:
            self.model = SiglipVisionModel(SiglipVisionConfig.from_dict(dict(cfg.arch)))
            self._hidden = int(self.model.config.hidden_size)
            self._grid = cfg.image_size // int(self.model.config.patch_size)

    @property
    def hidden_size(self) -> int:
        return self._hidden

    @property
    def native_grid(self) -> int:
        return self._grid

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, 3, R, R) -> (B, g*g, C), g = R // patch; returned in the pixel dtype
        dtype = next(self.model.parameters()).dtype
        x = pixel_values.to(dtype)
        if self.cfg.backend == "timm":
            tokens = self.model.forward_features(x)  # (B, prefix + g*g, C), after trunk.norm
            tokens = tokens[:, self.model.num_prefix_tokens :]  # SigLIP: no prefix tokens
        else:
            tokens = self.model(pixel_values=x).last_hidden_state  # (B, g*g, C), after post_layernorm
        return tokens.to(pixel_values.dtype)


register_family(
    TowerFamily(
        id="siglip",
        tower=SiglipTower,
        backends=("timm", "hf"),  # released: the open_clip / timm trunk
        image_mean=SIGLIP_MEAN,
        image_std=SIGLIP_STD,
        pad_fill=CLIP_PAD_FILL,  # the original pads with the OpenAI-CLIP mean, not SigLIP's own 0.5
        released={
            # open_clip ViT-SO400M-14-SigLIP-384: its visual.trunk is timm vit_so400m_patch14_siglip_384
            "siglip/CLIP-ViT-SO400M-14-384": ReleasedTower(
                image_size=384,
                backend="timm",
                arch={"model_name": "vit_so400m_patch14_siglip_384"},
                source="timm/ViT-SO400M-14-SigLIP-384",
            ),
        },
        tiny={  # 4 x 4 native grid; 34 px with patch 8: the last 2 px are unused, as in the release
            "timm": TinyTower(
                34,
                {
                    "model_name": "vit_so400m_patch14_siglip_384",
                    "embed_dim": 32,
                    "depth": 2,
                    "num_heads": 2,
                    "mlp_ratio": 2.0,
                    "patch_size": 8,
                },
            ),
            "hf": TinyTower(
                34,
                {
                    "model_type": "siglip_vision_model",
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "image_size": 34,
                    "patch_size": 8,
                },
            ),
        },
        hf_model_types=("siglip_vision_model",),
        hf_full_model_types={"siglip": "siglip_vision_model"},
        open_clip_models={"vit_so400m_patch14_siglip_384": 384},
    )
)
