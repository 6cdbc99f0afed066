"""A tiny checkpoint directory in the RELEASED Cambrian-1 layout, plus its ground-truth reference model.

``build_released_checkpoint(path)`` writes what a released repository (nyu-visionx/cambrian-8b, ...)
holds (docs/checkpoint-format.md 1-2), at toy size:

- ``config.json``: the flat released config of ``tests.reference.original.make_tiny_released`` (Llama
  fields + ``mm_*`` keys), with ``mm_vision_tower_aux_list`` replaced by directories relative to the
  checkpoint and two optional keys our loader reads: ``sva_num_heads`` (the original hard-codes 16) and
  ``conv_mode`` (released configs carry none; ours picks the template from ``image_position`` then);
- the weights: the reference model's ``state_dict()`` under the released names, either as sharded
  safetensors with ``model.safetensors.index.json`` or as one ``pytorch_model.bin``;
- one tiny Hugging Face vision model per tower (``save_pretrained`` + ``preprocessor_config.json``):
  SigLIP, CLIP, DINOv2 and ConvNeXt, one per family our loader supports. Their widths are the
  reference's ``tower_dims``; SigLIP's native 5 x 5 grid is interpolated to 4 x 4 and DINOv2's 5 x 5
  position table to its 4 x 4 patch grid, as in the release (27 -> 24 and 37 -> 27);
- the tiny in-process tokenizer (``<image>`` is already one of its special tokens).

The prompt template is ``llama_3`` with an empty system prompt: ``<|begin_of_text|><|start_header_id|>
user<|end_header_id|><image>...`` puts the image at index 6, so ``image_position`` is 6 and the
original's hard-coded in-LLM SVA span hits the image tokens (docs/checkpoint-format.md 6.1).

Reusable by bench scripts: everything is deterministic given ``seed``; nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from cambrian.models.vision.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from tests.reference.original import OriginalCambrian, make_tiny_released

# Tower i: (family, relative directory, token count N_i, channel width C_i). Tower 0 (SigLIP) gives the
# global context; ConvNeXt's 8 x 8 grid against the 4 x 4 query grid gives 2 x 2 windows (a pos_embed).
TOWERS: tuple[tuple[str, str, int, int], ...] = (
    ("siglip", "towers/siglip", 16, 24),
    ("clip", "towers/clip", 16, 20),
    ("dinov2", "towers/dinov2", 16, 28),
    ("convnext", "towers/convnext", 64, 24),
)
IMAGE_POSITION = 6  # index of <image> in the llama_3 prompt with system="" and the tiny tokenizer
CONV_MODE = "llama_3"
SVA_NUM_HEADS = 4
VOCAB_SIZE = 512  # = len(build_tiny_tokenizer()); the reference default (256) is too small for it


@dataclass
class ReleasedCheckpoint:
    path: Path
    cfg: dict[str, Any]  # the config.json written (tower names are the relative directories)
    reference: OriginalCambrian  # ground truth; its state_dict() is exactly the saved weights
    tower_dirs: list[Path]
    towers: list[torch.nn.Module]  # the HF vision models saved in tower_dirs


def _tower_model(family: str, width: int, seed: int):
    """A tiny HF vision model of ``family`` with ``width`` output channels and its image processor."""
    import transformers as tf

    torch.manual_seed(seed)
    if family == "siglip":  # 40 px / patch 8 -> native 5 x 5 grid, interpolated to 4 x 4
        cfg = tf.SiglipVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
            image_size=40, patch_size=8,
        )  # fmt: skip
        model = tf.SiglipVisionModel(cfg)
        proc = tf.SiglipImageProcessor(size={"height": 40, "width": 40})
    elif family == "clip":  # 32 px / patch 8 -> 4 x 4; features = hidden_states[-2] without CLS
        cfg = tf.CLIPVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8, projection_dim=16, hidden_act="quick_gelu",
        )  # fmt: skip
        model = tf.CLIPVisionModel(cfg)
        proc = tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    elif family == "dinov2":  # 5 x 5 position table (image_size 40) fed at 32 px: 4 x 4, interpolated
        cfg = tf.Dinov2Config(
            hidden_size=width, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, use_swiglu_ffn=True,
            image_size=40, patch_size=8,
        )  # fmt: skip
        model = tf.Dinov2Model(cfg)
        proc = tf.BitImageProcessor(
            size={"shortest_edge": 32},
            crop_size={"height": 32, "width": 32},
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    elif family == "convnext":  # 64 px: stages at 16, 8, 4, 2 px, each resized to 8 x 8
        assert width % 6 == 0, "stage widths w/6, w/6, w/3, w/3"
        w = width // 6
        cfg = tf.ConvNextConfig(hidden_sizes=[w, w, 2 * w, 2 * w], depths=[1, 1, 1, 1], image_size=64)
        model = tf.ConvNextModel(cfg)
        # open_clip's CLIP-ConvNeXt normalises with the OpenAI CLIP mean/std (not ImageNet's)
        proc = tf.ConvNextImageProcessor(
            size={"shortest_edge": 64},
            crop_pct=1.0,
            image_mean=list(OPENAI_CLIP_MEAN),
            image_std=list(OPENAI_CLIP_STD),
        )
    else:
        raise ValueError(f"no tiny tower for family {family!r}")
    # Non-trivial LayerNorm affines, so loading them (vs keeping the defaults) is visible in the outputs.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("LayerNorm"):
                if getattr(m, "weight", None) is not None:
                    m.weight.normal_(1.0, 0.1)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, 0.1)
    return model.eval(), proc


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, weights: str, num_shards: int = 3) -> None:
    """Released-style weight files: ``"safetensors"`` (sharded + index) or ``"bin"`` (one pytorch_model.bin)."""
    sd = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}
    if weights == "bin":
        torch.save(sd, path / "pytorch_model.bin")
        return
    if weights != "safetensors":
        raise ValueError(f"weights {weights!r} is not one of 'safetensors', 'bin'")
    keys = sorted(sd)
    shards = [keys[i::num_shards] for i in range(num_shards)]
    weight_map = {}
    for i, shard_keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file({k: sd[k] for k in shard_keys}, str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard_keys, name))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def build_released_checkpoint(
    path: str | Path,
    *,
    seed: int = 0,
    weights: str = "safetensors",
    state_dict: dict[str, torch.Tensor] | None = None,
    **overrides: Any,
) -> ReleasedCheckpoint:
    """Write a tiny released-layout checkpoint to ``path`` (created); see the module docstring.

    ``state_dict`` replaces the weights written (e.g. with a key added or removed, to test the loader's
    errors); ``overrides`` replace config keys of the reference (``make_tiny_released``).
    """
    from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg, reference = make_tiny_released(
        seed,
        tower_dims=tuple(c for *_, c in TOWERS),
        num_heads=SVA_NUM_HEADS,
        **{
            "vocab_size": VOCAB_SIZE,
            "image_position": IMAGE_POSITION,
            "mm_vision_tower_aux_token_len_list": [n for _, _, n, _ in TOWERS],
            **overrides,
        },
    )
    # Non-trivial norm weights and biases: defaults (ones, zeros) would hide a skipped load.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if p.dim() == 1 and name.endswith(".weight"):  # LayerNorm / RMSNorm scales
                p.normal_(1.0, 0.1, generator=g)
            elif p.dim() == 1 and name.endswith(".bias"):
                p.normal_(0.0, 0.1, generator=g)
    tower_dirs, towers = [], []
    for i, (family, rel, _, width) in enumerate(TOWERS):
        model, proc = _tower_model(family, width, seed * 100 + i)
        out = path / rel
        model.save_pretrained(str(out))
        proc.save_pretrained(str(out))
        tower_dirs.append(out)
        towers.append(model)
    cfg = {
        **cfg,
        "mm_vision_tower_aux_list": [rel for _, rel, _, _ in TOWERS],
        "sva_num_heads": SVA_NUM_HEADS,
        "conv_mode": CONV_MODE,
    }
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_weights(reference.state_dict() if state_dict is None else state_dict, path, weights)
    build_tiny_tokenizer(vocab_size=VOCAB_SIZE).save_pretrained(str(path))
    return ReleasedCheckpoint(path=path, cfg=cfg, reference=reference, tower_dirs=tower_dirs, towers=towers)
