"""From a tower name to a ``TowerConfig`` and its weights, without surprises.

A name in a checkpoint's ``mm_vision_tower_aux_list`` is either one of the four released names (exact
match only, see ``RELEASED_TOWERS``) or a local directory holding a saved vision model (absolute, or
relative to the checkpoint directory). Released towers' weights are never in the Cambrian checkpoint
(docs/checkpoint-format.md 2.1): they come from a local directory given in ``tower_paths`` or, only when
``allow_download=True``, from the Hugging Face hub. Nothing here touches the network or the disk at
import time.

Also: ``tiny_tower_config`` builds small random towers of every family for tests and tiny presets.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from cambrian.models.vision.base import (
    CLIP_PAD_FILL,
    DINO_PAD_FILL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    TowerConfig,
    VisionTower,
)
from cambrian.registry import UnknownIdError
from cambrian.utils.weights import read_state_dict as _read_weights

SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)

# ----------------------------------------------------------------------------- released towers


def _siglip_so400m(token_len: int, select_layer: int) -> TowerConfig:
    # open_clip ViT-SO400M-14-SigLIP-384: its visual.trunk is timm vit_so400m_patch14_siglip_384
    return TowerConfig(
        family="siglip", token_len=token_len, image_size=384, image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD,
        pad_fill=CLIP_PAD_FILL, backend="timm", arch={"model_name": "vit_so400m_patch14_siglip_384"},
        select_layer=select_layer, source="timm/ViT-SO400M-14-SigLIP-384",
    )  # fmt: skip


def _clip_l14_336(token_len: int, select_layer: int) -> TowerConfig:
    arch = {
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768,
    }  # fmt: skip
    return TowerConfig(
        family="clip", token_len=token_len, image_size=336, image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD, pad_fill=CLIP_PAD_FILL, backend="hf", arch=arch,
        select_layer=select_layer, source="openai/clip-vit-large-patch14-336",
    )  # fmt: skip


def _dinov2_giant_378(token_len: int, select_layer: int) -> TowerConfig:
    # image_size 518 keeps the 37 x 37 position table; it is interpolated to 27 x 27 at R = 378
    arch = {
        "model_type": "dinov2", "hidden_size": 1536, "num_hidden_layers": 40, "num_attention_heads": 24,
        "mlp_ratio": 4, "use_swiglu_ffn": True, "patch_size": 14, "image_size": 518,
        "layerscale_value": 1.0, "layer_norm_eps": 1e-6, "hidden_act": "gelu", "qkv_bias": True,
    }  # fmt: skip
    return TowerConfig(
        family="dinov2", token_len=token_len, image_size=378, image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD, pad_fill=DINO_PAD_FILL, backend="hf", arch=arch,
        select_layer=select_layer, source="facebook/dinov2-giant",
    )  # fmt: skip


def _convnext_xxl_multi_stage(token_len: int, select_layer: int) -> TowerConfig:
    # open_clip CLIP-convnext_xxlarge trunk (stage dims 384/768/1536/3072), fed at 1024 px, not 256
    return TowerConfig(
        family="convnext", token_len=token_len, image_size=1024, image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD, pad_fill=CLIP_PAD_FILL, backend="timm",
        arch={"model_name": "convnext_xxlarge"}, select_layer=select_layer,
        source="laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup",
    )  # fmt: skip


# Exact names used by the released checkpoints -> factory(token_len, select_layer) -> TowerConfig
RELEASED_TOWERS: dict[str, Callable[[int, int], TowerConfig]] = {
    "siglip/CLIP-ViT-SO400M-14-384": _siglip_so400m,
    "openai/clip-vit-large-patch14-336": _clip_l14_336,
    "facebook/dinov2-giant-res378": _dinov2_giant_378,
    "clip-convnext-XXL-multi-stage": _convnext_xxl_multi_stage,
}


def released_tower_config(name: str, token_len: int, select_layer: int = -2) -> TowerConfig:
    """Full config (architecture, preprocessing, hub source) of a released tower name."""
    if name not in RELEASED_TOWERS:
        raise UnknownIdError("released vision tower", name, sorted(RELEASED_TOWERS))
    return RELEASED_TOWERS[name](token_len, select_layer)


# ----------------------------------------------------------------------------- tiny towers

# family -> backend -> (R, arch); all give a 4 x 4 native grid (DINOv2: 5 x 5 position table at R=32)
_TINY: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {
    "siglip": {
        "timm": (34, {"model_name": "vit_so400m_patch14_siglip_384", "embed_dim": 32, "depth": 2,
                      "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 8}),  # 34 px: last 2 px unused
        "hf": (34, {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 34, "patch_size": 8}),
    },
    "clip": {
        "hf": (32, {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                    "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                    "hidden_act": "quick_gelu", "projection_dim": 16}),
    },
    "dinov2": {
        "hf": (32, {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "mlp_ratio": 2, "use_swiglu_ffn": True, "image_size": 40,
                    "patch_size": 8}),
    },
    "convnext": {
        "timm": (64, {"model_name": "convnext_xxlarge", "dims": [8, 8, 16, 16], "depths": [1, 1, 1, 1]}),
        "hf": (64, {"model_type": "convnext", "hidden_sizes": [8, 8, 16, 16], "depths": [1, 1, 1, 1],
                    "image_size": 64}),
    },
}  # fmt: skip
_DEFAULT_BACKEND = {"siglip": "timm", "clip": "hf", "dinov2": "hf", "convnext": "timm"}  # as released
_NORM = {
    "siglip": (SIGLIP_MEAN, SIGLIP_STD, CLIP_PAD_FILL),
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIP_PAD_FILL),
    "dinov2": (IMAGENET_MEAN, IMAGENET_STD, DINO_PAD_FILL),
    "convnext": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIP_PAD_FILL),
}


def tiny_backends(family: str) -> list[str]:
    """Backends a tiny tower exists for (the first one is the released backend)."""
    if family not in _TINY:
        raise UnknownIdError("vision tower family", family, sorted(_TINY))
    return sorted(_TINY[family], key=lambda b: b != _DEFAULT_BACKEND[family])


def tiny_tower_config(
    family: str, token_len: int = 16, backend: str | None = None, frozen: bool = True, select_layer: int = -2
) -> TowerConfig:
    """A small random tower of ``family`` (hidden 32-48, 2 layers, 32-64 px) with the family's real
    normalisation and pad fill; ``backend`` defaults to the released one."""
    backend = backend or _DEFAULT_BACKEND.get(family, "hf")
    if backend not in tiny_backends(family):
        raise ValueError(f"no tiny {family!r} tower for backend {backend!r}; valid: {tiny_backends(family)}")
    size, arch = _TINY[family][backend]
    mean, std, fill = _NORM[family]
    return TowerConfig(
        family=family, token_len=token_len, image_size=size, image_mean=mean, image_std=std, pad_fill=fill,
        backend=backend, arch=copy.deepcopy(arch), select_layer=select_layer, frozen=frozen,
    )  # fmt: skip


# ----------------------------------------------------------------------------- local directories

# config.json model_type -> family (exact); "clip"/"siglip" are full two-tower configs: use vision_config
HF_MODEL_TYPES = {
    "siglip_vision_model": "siglip",
    "siglip": "siglip",
    "clip_vision_model": "clip",
    "clip": "clip",
    "dinov2": "dinov2",
    "convnext": "convnext",
}
_NESTED_MODEL_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
# open_clip vision_cfg.timm_model_name -> (family, R Cambrian feeds it: ConvNeXt-XXL runs at 1024, not 256)
OPEN_CLIP_TIMM_MODELS = {
    "vit_so400m_patch14_siglip_384": ("siglip", 384),
    "convnext_xxlarge": ("convnext", 1024),
}
_HF_META_KEYS = ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype")


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _square_side(value: Any, where: str) -> int:
    """Processor ``size``/``crop_size``: an int, {"height", "width"} or {"shortest_edge"}."""
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        if "height" in value:
            if value.get("width", value["height"]) != value["height"]:
                raise ValueError(f"{where}: towers need square inputs, got {dict(value)}")
            return int(value["height"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"])
    raise ValueError(f"{where}: cannot read an image size from {value!r}")


def _processor_settings(path: Path, family: str) -> tuple[int, tuple, tuple]:
    """(R, mean, std) from preprocessor_config.json: the crop size when the processor crops, else size."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no preprocessor_config.json (needed for image size, mean, std)")
    pp = _read_json(file)
    crop = pp.get("crop_size") if pp.get("do_center_crop", True) else None
    size = _square_side(crop if crop is not None else pp.get("size"), str(file))
    mean, std, _ = _NORM[family]
    return size, tuple(pp.get("image_mean", mean)), tuple(pp.get("image_std", std))


def _open_clip_config(path: Path, token_len: int, select_layer: int, image_size: int | None) -> TowerConfig:
    file = path / "open_clip_config.json"
    oc = _read_json(file)
    name = oc.get("model_cfg", {}).get("vision_cfg", {}).get("timm_model_name")
    if name not in OPEN_CLIP_TIMM_MODELS:
        raise ValueError(
            f"{file}: model_cfg.vision_cfg.timm_model_name {name!r} is not a supported tower; "
            f"valid values: {', '.join(sorted(OPEN_CLIP_TIMM_MODELS))}"
        )
    family, size = OPEN_CLIP_TIMM_MODELS[name]
    pre = oc.get("preprocess_cfg", {})  # open_clip's own defaults are the OpenAI CLIP mean/std
    fill = _NORM[family][2]
    return TowerConfig(
        family=family, token_len=token_len, image_size=image_size or size,
        image_mean=tuple(pre.get("mean", OPENAI_CLIP_MEAN)), image_std=tuple(pre.get("std", OPENAI_CLIP_STD)),
        pad_fill=fill, backend="timm", arch={"model_name": name}, select_layer=select_layer, source=str(path),
    )  # fmt: skip


def tower_config_from_dir(
    path: str | Path, token_len: int, select_layer: int = -2, image_size: int | None = None
) -> TowerConfig:
    """Config of a saved vision model directory: Hugging Face (``config.json`` + ``preprocessor_config.json``)
    or open_clip (``open_clip_config.json``). ``image_size`` overrides R (e.g. DINOv2 at 378 instead of
    its processor's 224). The pad fill is the family constant, never the processor mean."""
    path = Path(path)
    if (path / "open_clip_config.json").is_file():
        return _open_clip_config(path, token_len, select_layer, image_size)
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds neither config.json nor open_clip_config.json")
    config = _read_json(file)
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ValueError(
            f"{file}: model_type {model_type!r} is not a supported vision tower; "
            f"valid model types: {', '.join(sorted(HF_MODEL_TYPES))}"
        )
    family = HF_MODEL_TYPES[model_type]
    if model_type in _NESTED_MODEL_TYPES:  # full CLIP / SigLIP model: keep only its vision half
        config = {**config.get("vision_config", {}), "model_type": _NESTED_MODEL_TYPES[model_type]}
    arch = {k: v for k, v in config.items() if k not in _HF_META_KEYS}
    size, mean, std = _processor_settings(path, family)
    return TowerConfig(
        family=family, token_len=token_len, image_size=image_size or size, image_mean=mean, image_std=std,
        pad_fill=_NORM[family][2], backend="hf", arch=arch, select_layer=select_layer, source=str(path),
    )  # fmt: skip


# ----------------------------------------------------------------------------- weights

# Keys a full two-tower HF checkpoint holds besides the vision model (taken: vision_model.* only)
_NON_VISION_PREFIXES = ("text_model.", "text_projection", "visual_projection", "logit_scale", "logit_bias")
# Weight files in order of preference: safetensors first; .bin only through weights_only torch.load
_WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw state dict of a tower directory (first of ``_WEIGHT_FILES`` found; sharded indexes supported)."""
    return _read_weights(path, _WEIGHT_FILES)


def _check_keys(path: Path, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
    def show(keys: list[str]) -> str:
        return ", ".join(keys[:20]) + (f" ... ({len(keys)} in all)" if len(keys) > 20 else "")

    problems = [
        f"{what}: {show(sorted(keys))}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        raise ValueError(f"tower weights in {path} do not match the tower; " + "; ".join(problems))


def _load_hf(tower: VisionTower, path: Path) -> None:
    # transformers' own loader maps old key layouts to the installed version (DINOv2 attention.attention.*
    # and fused SwiGLU weights, the vision_model. prefix of CLIP/SigLIP dirs) and reads .bin with
    # weights_only=True; we then copy into the tower so its device, dtype and requires_grad are kept.
    model = tower.model
    try:
        loaded, info = type(model).from_pretrained(
            path,
            config=copy.deepcopy(model.config),
            output_loading_info=True,
            local_files_only=True,
            ignore_mismatched_sizes=True,  # reported below with the other key problems
        )
    except OSError as err:
        raise FileNotFoundError(
            f"no Hugging Face weights for {type(model).__name__} in {path}: {err}"
        ) from err
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith(_NON_VISION_PREFIXES)]
    # mismatched entries are (key, checkpoint shape, model shape)
    mismatched = [f"{m[0]} {tuple(m[1])} vs {tuple(m[2])}" for m in info.get("mismatched_keys", [])]
    _check_keys(path, list(info["missing_keys"]), unexpected, mismatched)
    model.load_state_dict(loaded.state_dict(), strict=True)


def _load_timm(tower: VisionTower, path: Path) -> None:
    sd = read_state_dict(path)
    for prefix in ("visual.trunk.", "trunk."):  # open_clip model file / open_clip visual module
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    own = tower.model.state_dict()
    unused = tuple(getattr(tower, "unused_weight_prefixes", ()))  # e.g. SigLIP's attention-pool head
    sd = {k: v for k, v in sd.items() if k in own or not (unused and k.startswith(unused))}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if k in own and v.shape != own[k].shape]  # fmt: skip
    _check_keys(path, missing, unexpected, mismatched)
    tower.model.load_state_dict(sd, strict=True)


def load_tower_weights(tower: VisionTower, path: str | Path) -> VisionTower:
    """Load a saved vision model's weights from directory ``path`` into ``tower`` (strict; returns it).

    HF backends: ``SiglipVisionModel``/``CLIPVisionModel`` dirs, full CLIP/SigLIP model dirs (only the
    vision half is taken), ``Dinov2Model`` and ``ConvNextModel`` dirs. timm backends: open_clip dirs
    (``visual.trunk.`` keys) or plain timm state dicts. Missing, unexpected or mis-shaped keys raise.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tower weights directory {path} does not exist")
    if tower.cfg.backend == "hf":
        _load_hf(tower, path)
    else:
        _load_timm(tower, path)
    return tower


# ----------------------------------------------------------------------------- resolution


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download  # only imported when a download is allowed

    # configs plus one weight format: safetensors when the repo has them, else .bin
    local = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    if not any(local.glob("*.safetensors")):
        local = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.bin"]))
    return local


def resolve_tower(
    name: str,
    token_len: int,
    select_layer: int = -2,
    base_dir: str | Path | None = None,
    tower_paths: Mapping[str, str | Path] | None = None,
    allow_download: bool = False,
) -> tuple[TowerConfig, Path | None]:
    """(config, weights directory) for a tower name from a checkpoint config.

    ``name`` is a released name (``RELEASED_TOWERS``), an absolute directory, or a directory relative to
    ``base_dir`` (the checkpoint directory). ``tower_paths`` maps a name to a local weights directory.
    Released weights are downloaded from the hub only when ``allow_download`` is True.
    """
    tower_paths = dict(tower_paths or {})
    if name in RELEASED_TOWERS:
        cfg = released_tower_config(name, token_len, select_layer)
        if name in tower_paths:
            local = Path(tower_paths[name]).expanduser()
            if not local.is_dir():
                raise FileNotFoundError(f"tower_paths[{name!r}] = {str(local)!r} is not a directory")
            return cfg, local
        if allow_download:
            return cfg, _download(str(cfg.source))
        raise FileNotFoundError(
            f"vision tower {name!r}: its weights are not in the Cambrian checkpoint and no local copy was "
            f"given. Pass tower_paths={{{name!r}: '/path/to/dir'}} (a directory holding {cfg.source!r}) "
            f"or allow_download=True to fetch {cfg.source!r} from the Hugging Face hub."
        )
    candidates = [Path(tower_paths[name])] if name in tower_paths else []
    given = Path(name).expanduser()
    # relative names are relative to the checkpoint directory when there is one
    candidates.append(Path(base_dir) / given if base_dir is not None and not given.is_absolute() else given)
    for local in candidates:
        if local.is_dir():
            return tower_config_from_dir(local, token_len, select_layer), local
    err = UnknownIdError("released vision tower", name, sorted(RELEASED_TOWERS))
    looked = ", ".join(str(c) for c in candidates)
    err.args = (f"{err.args[0]}; {name!r} is not a local directory either (looked at {looked})",)
    raise err
