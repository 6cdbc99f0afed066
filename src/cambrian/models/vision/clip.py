"""CLIP tower (released: ``openai/clip-vit-large-patch14-336``, HF ``CLIPVisionModel``).

Features are ``hidden_states[cfg.select_layer]`` (released: -2, the output of the 23rd of 24 encoder
layers, before any post-LayerNorm) with the CLS token dropped (``mm_vision_select_feature == "patch"``).
At R = 336 and patch 14 that is 24 x 24 = 576 tokens, so the released config needs no interpolation.
Only the ``"hf"`` backend exists.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from cambrian.models.vision import TOWERS
from cambrian.models.vision.base import HFPatchTower


@TOWERS.register("clip")
class ClipTower(HFPatchTower):
    family = "clip"
    hf_config_class = CLIPVisionConfig
    hf_model_class = CLIPVisionModel

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, 3, R, R) -> (B, g*g, C); returned in the pixel dtype like the original
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        # hidden_states: num_hidden_layers + 1 tensors (B, 1 + g*g, C); index 0 is the embedding output
        tokens = out.hidden_states[self.cfg.select_layer][:, 1:]  # drop CLS -> (B, g*g, C)
        return tokens.to(pixel_values.dtype)
