"""CLIP tower (released: ``openai/clip-vit-large-patch14-336``, HF ``CLIPVisionModel``).

Features are ``hidden_states[cfg.select_layer]`` (released: -2, the output of the 23rd of 24 encoder
layers, before any post-LayerNorm) with the CLS token dropped (``mm_vision_select_feature == "patch"``).
At R = 336 and patch 14 that is 24 x 24 = 576 tokens, so the released config needs no interpolation.
Only the ``"hf"`` backend exists.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from cambrian.models.vision.base import HFPatchTower
from cambrian.models.vision.config import CLIP_PAD_FILL, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family


class ClipTower(HFPatchTower):
    hf_config_class = CLIPVisionConfig
    hf_model_class = CLIPVisionModel

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, 3, R, R) -> (B, g*g, C); returned in the pixel dtype like the original
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        # hidden_states: num_hidden_layers + 1 tensors (B, 1 + g*g, C); index 0 is the embedding output
        tokens = out.hidden_states[self.cfg.select_layer][:, 1:]  # drop CLS -> (B, g*g, C)
        return tokens.to(pixel_values.dtype)


register_family(
    TowerFamily(
        id="clip",
        tower=ClipTower,
        backends=("hf",),
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        pad_fill=CLIP_PAD_FILL,
        released={
            "openai/clip-vit-large-patch14-336": ReleasedTower(
                image_size=336,
                backend="hf",
                arch={
                    "model_type": "clip_vision_model",
                    "hidden_size": 1024,
                    "intermediate_size": 4096,
                    "num_hidden_layers": 24,
                    "num_attention_heads": 16,
                    "patch_size": 14,
                    "image_size": 336,
                    "hidden_act": "quick_gelu",
                    "layer_norm_eps": 1e-5,
                    "projection_dim": 768,
                },
                source="openai/clip-vit-large-patch14-336",
            ),
        },
        tiny={  # 4 x 4 native grid
            "hf": TinyTower(
                32,
                {
                    "model_type": "clip_vision_model",
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "image_size": 32,
                    "patch_size": 8,
                    "hidden_act": "quick_gelu",
                    "projection_dim": 16,
                },
            ),
        },
        hf_model_types=("clip_vision_model",),
        hf_full_model_types={"clip": "clip_vision_model"},
    )
)
