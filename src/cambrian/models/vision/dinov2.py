"""DINOv2 tower (released: ``facebook/dinov2-giant`` fed at 378 px, HF ``Dinov2Model``).

Features are ``last_hidden_state`` (after the final LayerNorm) without the CLS token (and without
register tokens, if a config has any); ``select_layer`` is ignored, as in the original. At R = 378 and
patch 14 the patch grid is 27 x 27, while the model's position table is 37 x 37 (image_size 518).

Position embeddings are resized the way transformers 4.37 did it, which the released model was trained
and evaluated with: bicubic, ``align_corners=False``, no antialias, in float32, with the "+0.1"
``scale_factor = ((27 + 0.1) / 37, (27 + 0.1) / 37)`` rather than an explicit output size. Newer
transformers releases use an explicit size (and at times antialias), which changes the features, so
the embedding step is rebuilt here from the HF model's own submodules instead of calling its forward.
Only the ``"hf"`` backend exists.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model

from cambrian.models.vision.base import HFPatchTower
from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The original pads DINOv2 inputs with the ImageNet mean as int(m * 255) (docs/checkpoint-format.md 3.2).
DINO_PAD_FILL = tuple(int(m * 255) for m in IMAGENET_MEAN)  # (123, 116, 103)


def interpolate_pos_embed_437(pos_embed: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """transformers-4.37 DINOv2 position interpolation: (1, 1 + n*n, C) -> (1, 1 + grid_h*grid_w, C).

    The CLS position (index 0) is kept as is; the n x n patch table is resized bicubically with the
    "+0.1" scale factor. Because ``scale_factor`` is given (not a size), PyTorch maps coordinates with
    ``n / (grid + 0.1)``, not ``n / grid``: this is what makes the result differ from a size-based resize.
    """
    num_positions = pos_embed.shape[1] - 1
    if num_positions == grid_h * grid_w and grid_h == grid_w:
        return pos_embed  # native resolution: no interpolation (4.37's early return)
    side = int(math.sqrt(num_positions))
    dim = pos_embed.shape[-1]
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]  # (1, 1, C), (1, n*n, C)
    patch_pos = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, C, n, n)
    height, width = grid_h + 0.1, grid_w + 0.1
    patch_pos = F.interpolate(
        patch_pos.to(torch.float32),
        scale_factor=(float(height / math.sqrt(num_positions)), float(width / math.sqrt(num_positions))),
        mode="bicubic",
        align_corners=False,
    ).to(pos_embed.dtype)  # (1, C, grid_h, grid_w)
    if patch_pos.shape[-2:] != (grid_h, grid_w):
        raise ValueError(
            f"DINOv2 position interpolation gave {tuple(patch_pos.shape[-2:])}, not {grid_h}x{grid_w}"
        )
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)  # row-major (1, h*w, C)
    return torch.cat((cls_pos, patch_pos), dim=1)


class Dinov2Tower(HFPatchTower):
    hf_config_class = Dinov2Config
    hf_model_class = Dinov2Model

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # pixel_values (B, 3, R, R) -> (B, g*g, C), g = R // patch; returned in the pixel dtype
        emb = self.model.embeddings
        dtype = emb.patch_embeddings.projection.weight.dtype
        x = emb.patch_embeddings(pixel_values.to(dtype))  # (B, g*g, C)
        b, _, h_px, w_px = pixel_values.shape
        patch = emb.patch_embeddings.patch_size
        grid_h, grid_w = h_px // patch[0], w_px // patch[1]
        x = torch.cat((emb.cls_token.expand(b, -1, -1).to(x.dtype), x), dim=1)  # (B, 1 + g*g, C)
        x = x + interpolate_pos_embed_437(emb.position_embeddings, grid_h, grid_w).to(x.dtype)
        x = emb.dropout(x)
        x = self.model.encoder(x).last_hidden_state  # (B, 1 + g*g, C)
        x = self.model.layernorm(x)
        prefix = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)  # CLS (+ registers)
        return x[:, prefix:].to(pixel_values.dtype)  # (B, g*g, C)


register_family(
    TowerFamily(
        id="dinov2",
        tower=Dinov2Tower,
        backends=("hf",),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        pad_fill=DINO_PAD_FILL,
        released={
            "facebook/dinov2-giant-res378": ReleasedTower(
                image_size=378,
                backend="hf",
                # image_size 518 keeps the 37 x 37 position table; it is interpolated to 27 x 27 at R = 378
                arch={
                    "model_type": "dinov2",
                    "hidden_size": 1536,
                    "num_hidden_layers": 40,
                    "num_attention_heads": 24,
                    "mlp_ratio": 4,
                    "use_swiglu_ffn": True,
                    "patch_size": 14,
                    "image_size": 518,
                    "layerscale_value": 1.0,
                    "layer_norm_eps": 1e-6,
                    "hidden_act": "gelu",
                    "qkv_bias": True,
                },
                source="facebook/dinov2-giant",
            ),
        },
        tiny={  # 4 x 4 grid at R = 32 from a 5 x 5 position table (image_size 40): interpolation is exercised
            "hf": TinyTower(
                32,
                {
                    "model_type": "dinov2",
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 2,
                    "mlp_ratio": 2,
                    "use_swiglu_ffn": True,
                    "image_size": 40,
                    "patch_size": 8,
                },
            ),
        },
        hf_model_types=("dinov2",),
    )
)
