"""From a tower name to a ``TowerConfig`` and its weights, without surprises; generic over tower families.

A name in a checkpoint's ``mm_vision_tower_aux_list`` is either a released name (exact match only: one
some registered ``TowerFamily`` lists in ``released``, see ``RELEASED_TOWERS``) or a local directory
holding a saved vision model (absolute, or relative to the checkpoint directory). Released towers'
weights are never in the Cambrian checkpoint (docs/checkpoint-format.md 2.1): they come from a local
directory given in ``tower_paths`` or, only when ``allow_download=True``, from the Hugging Face hub.
Nothing here touches the network or the disk at import time.

Also: ``tiny_tower_config`` builds small random towers of every family for tests and tiny presets.
Every family-specific fact comes from the registered specs (``registry.families()``); nothing here
names a family.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TowerConfig
from cambrian.models.vision.family import TowerFamily
from cambrian.models.vision.registry import families, get_family, released_tower_family, released_tower_names
from cambrian.registry import UnknownIdError
from cambrian.utils.weights import read_state_dict as _read_weights

# ----------------------------------------------------------------------------- released towers


def released_tower_config(name: str, token_len: int, select_layer: int = -2) -> TowerConfig:
    """Full config (architecture, preprocessing, hub source) of a released tower name."""
    spec = released_tower_family(name)
    rel = spec.released[name]
    return spec.config(
        token_len, rel.image_size, rel.backend, rel.arch, select_layer=select_layer, source=rel.source
    )


class _ReleasedTowers(Mapping):
    """Read-only live view: released name -> ``factory(token_len, select_layer=-2) -> TowerConfig``.

    Live so that a family registered later (a plugin, a test) is seen without rebuilding anything.
    """

    def __getitem__(self, name: str) -> partial[TowerConfig]:
        if name not in self:
            raise UnknownIdError("released vision tower", name, released_tower_names())
        return partial(released_tower_config, name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(name in spec.released for spec in families())

    def __iter__(self) -> Iterator[str]:
        return iter(released_tower_names())

    def __len__(self) -> int:
        return len(released_tower_names())

    def __repr__(self) -> str:
        return f"RELEASED_TOWERS({released_tower_names()})"


# Exact names used by the released checkpoints -> factory(token_len, select_layer) -> TowerConfig
RELEASED_TOWERS: Mapping[str, partial[TowerConfig]] = _ReleasedTowers()


# ----------------------------------------------------------------------------- tiny towers


def tiny_backends(family: str) -> list[str]:
    """Backends a tiny tower exists for (the first one is the released backend)."""
    return get_family(family).tiny_backends


def tiny_tower_config(
    family: str, token_len: int = 16, backend: str | None = None, frozen: bool = True, select_layer: int = -2
) -> TowerConfig:
    """A small random tower of ``family`` (hidden 32-48, 2 layers, 32-64 px) with the family's real
    normalisation and pad fill; ``backend`` defaults to the released one."""
    spec = get_family(family)
    backend = backend or spec.default_backend
    if backend not in spec.tiny:
        raise ValueError(f"no tiny {family!r} tower for backend {backend!r}; valid: {spec.tiny_backends}")
    tiny = spec.tiny[backend]
    return spec.config(
        token_len, tiny.image_size, backend, tiny.arch, select_layer=select_layer, frozen=frozen
    )


# ----------------------------------------------------------------------------- local directories

_HF_META_KEYS = ("architectures", "_name_or_path", "transformers_version", "dtype", "torch_dtype")


def _hf_model_types() -> dict[str, TowerFamily]:
    """config.json model_type -> family, over the vision-model and full-model types of every spec."""
    return {t: spec for spec in families() for t in (*spec.hf_model_types, *spec.hf_full_model_types)}


def _open_clip_models() -> dict[str, TowerFamily]:
    """open_clip vision_cfg.timm_model_name -> family."""
    return {name: spec for spec in families() for name in spec.open_clip_models}


def _read_json(path: Path) -> dict[str, Any]:
    """A tower directory's JSON config; ``ValueError`` naming the file when it is not a JSON object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}; expected an object")
    return value


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


def _processor_settings(path: Path, spec: TowerFamily) -> tuple[int, tuple, tuple]:
    """(R, mean, std) from preprocessor_config.json: the crop size when the processor crops, else size."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no preprocessor_config.json (needed for image size, mean, std)")
    pp = _read_json(file)
    crop = pp.get("crop_size") if pp.get("do_center_crop", True) else None
    size = _square_side(crop if crop is not None else pp.get("size"), str(file))
    return size, tuple(pp.get("image_mean", spec.image_mean)), tuple(pp.get("image_std", spec.image_std))


def _open_clip_config(path: Path, token_len: int, select_layer: int, image_size: int | None) -> TowerConfig:
    file = path / "open_clip_config.json"
    oc = _read_json(file)
    name = oc.get("model_cfg", {}).get("vision_cfg", {}).get("timm_model_name")
    known = _open_clip_models()
    if name not in known:
        raise ValueError(
            f"{file}: model_cfg.vision_cfg.timm_model_name {name!r} is not a supported tower; "
            f"valid values: {', '.join(sorted(known))}"
        )
    spec = known[name]
    pre = oc.get("preprocess_cfg", {})  # open_clip's own defaults are the OpenAI CLIP mean/std
    return spec.config(
        token_len, image_size or spec.open_clip_models[name], "timm", {"model_name": name},
        select_layer=select_layer, source=str(path), image_mean=tuple(pre.get("mean", OPENAI_CLIP_MEAN)),
        image_std=tuple(pre.get("std", OPENAI_CLIP_STD)),
    )  # fmt: skip


def tower_config_from_dir(
    path: str | Path, token_len: int, select_layer: int = -2, image_size: int | None = None
) -> TowerConfig:
    """Config of a saved vision model directory: Hugging Face (``config.json`` + ``preprocessor_config.json``)
    or open_clip (``open_clip_config.json``). ``image_size`` overrides R (e.g. a tower fed larger images
    than its processor's crop). The pad fill is the family constant, never the processor mean."""
    path = Path(path)
    if (path / "open_clip_config.json").is_file():
        return _open_clip_config(path, token_len, select_layer, image_size)
    file = path / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} holds neither config.json nor open_clip_config.json")
    config = _read_json(file)
    model_type = config.get("model_type")
    known = _hf_model_types()
    if model_type not in known:
        raise ValueError(
            f"{file}: model_type {model_type!r} is not a supported vision tower; "
            f"valid model types: {', '.join(sorted(known))}"
        )
    spec = known[model_type]
    if model_type in spec.hf_full_model_types:  # a full (e.g. image-text) model: keep only its vision half
        config = {**config.get("vision_config", {}), "model_type": spec.hf_full_model_types[model_type]}
    arch = {k: v for k, v in config.items() if k not in _HF_META_KEYS}
    size, mean, std = _processor_settings(path, spec)
    return spec.config(
        token_len, image_size or size, "hf", arch, select_layer=select_layer, source=str(path),
        image_mean=mean, image_std=std,
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
    unused = tuple(tower.unused_weight_prefixes)  # heads the tower never builds (see VisionTower)
    sd = {k: v for k, v in sd.items() if k in own or not (unused and k.startswith(unused))}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items() if k in own and v.shape != own[k].shape]  # fmt: skip
    _check_keys(path, missing, unexpected, mismatched)
    tower.model.load_state_dict(sd, strict=True)


def load_tower_weights(tower: VisionTower, path: str | Path) -> VisionTower:
    """Load a saved vision model's weights from directory ``path`` into ``tower`` (strict; returns it).

    HF backends: a directory saved from the tower's transformers vision model, or from a full (e.g.
    image-text) model holding it (only the vision half is taken). timm backends: open_clip dirs
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
    err = UnknownIdError("released vision tower", name, released_tower_names())
    looked = ", ".join(str(c) for c in candidates)
    err.args = (f"{err.args[0]}; {name!r} is not a local directory either (looked at {looked})",)
    raise err
