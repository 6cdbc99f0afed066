"""Loading checkpoints in the released Cambrian-1 layout (nyu-visionx/cambrian-8b, -13b, -34b, -phi3-3b).

The released ``config.json`` is a flat Llama/Phi-3 config with ``mm_*`` keys, and the weights hold
the LLM plus the connector under the original module names (docs/checkpoint-format.md 1-2); the vision
towers are not in the checkpoint and load from their own sources. This module converts the config,
renames the keys onto ``CambrianForCausalLM`` and loads shard by shard (safetensors or .bin), so
memory stays at the model's size in the requested dtype. A checkpoint is recognised by its keys
(``mm_vision_tower_aux_list``), never by ``model_type`` or ``architectures``, which changed between
revisions of the released files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.models.tokenization import load_tokenizer_with_image_token
from cambrian.utils.weights import read_weight_file, weight_files, weight_keys

# (released name, our name) pattern pairs, applied in order, each at most once per key, in either
# direction. ``{i}`` is an index, ``{x}`` is k or v; ``^``/``$`` anchor the pattern.
KEY_NAME_PAIRS: list[tuple[str, str]] = [
    ("^model.vision_query$", "^connector.vision_query$"),
    ("^model.image_newline$", "^connector.image_newline$"),
    ("^model.mm_projector.", "^connector.projector."),
    ("^model.mm_projector_aux_{i}.", "^connector.tower_projectors.{i}."),
    ("^model.vision_sampler_{i}.layers.", "^connector.samplers.{i}.layers."),
    ("^model.vision_sampler_layers.{i}.layers.0.", "^connector.llm_layers.{i}."),
    (".cross_attn.{x}_proj_{i}.", ".cross_attn.{x}_proj.{i}."),
    (".pos_embed_{i}$", ".pos_embed.{i}$"),
    ("^model.", "^language_model.model."),
    ("^lm_head.", "^language_model.lm_head."),
]
_GROUPS = {"i": r"(?P<i>\d+)", "x": r"(?P<x>[kv])"}


def _compile(source: str, target: str) -> tuple[re.Pattern[str], str]:
    pattern = re.escape(source).replace(r"\^", "^").replace(r"\$", "$")
    for name, group in _GROUPS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), group)
    repl = target.strip("^$")
    for name in _GROUPS:
        repl = repl.replace("{" + name + "}", rf"\g<{name}>")
    return re.compile(pattern), repl


_TO_OURS = [_compile(released, ours) for released, ours in KEY_NAME_PAIRS]
_TO_RELEASED = [_compile(ours, released) for released, ours in KEY_NAME_PAIRS]


def _rename(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key, count=1)
    return key


# The released configs carry no template name, but the hard-coded image_position identifies the
# template the model was trained with (docs/checkpoint-format.md 4.3).
IMAGE_POSITION_TEMPLATES = {91: "llama_3", 35: "vicuna_v1", 87: "chatml_direct", 13: "phi3"}
# Exact model_type values seen in released configs -> LLM family.
LLM_FAMILIES = {
    "llava_llama": "llama",
    "cambrian_llama": "llama",
    "llama": "llama",
    "cambrian_phi3": "phi3",
    "llava_phi3": "phi3",
    "phi3": "phi3",
}
# Keys that belong to the multimodal wrapper, not to the LLM config.
_CAMBRIAN_KEYS = {
    "mm_projector_type", "mm_vision_tower_aux_list", "mm_vision_tower_aux_token_len_list",
    "vision_tower_aux_token_len_list", "image_token_len", "num_query_group", "query_num_list",
    "connector_depth", "connector_only", "num_of_vision_sampler_layers", "start_of_vision_sampler_layers",
    "stride_of_vision_sampler_layers", "image_position", "vision_hidden_size", "mm_vision_select_layer",
    "mm_vision_select_feature", "image_aspect_ratio", "mm_use_im_start_end", "mm_use_im_patch_token",
    "mm_patch_merge_type", "tokenizer_model_max_length", "tokenizer_padding_side", "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter", "unfreeze_mm_vision_tower", "use_mm_proj", "mm_projector_lr",
    "mm_vision_sampler_lr", "mm_vision_tower_lr", "mm_hidden_size", "mm_vision_tower", "architectures",
    "auto_map", "_name_or_path", "model_type", "transformers_version", "conv_mode",
    # Optional keys of our own (not in the released files) that CambrianConfig reads; keep them out of
    # the LLM config.
    "sva_num_heads", "released_image_position",
}  # fmt: skip


def rename_released_key(key: str) -> str:
    """A released checkpoint's parameter name -> ours."""
    return _rename(key, _TO_OURS)


def released_key_name(key: str) -> str:
    """Our parameter name -> its name in the released checkpoint (inverse of ``rename_released_key``)."""
    return _rename(key, _TO_RELEASED)


def is_released_config(d: dict[str, Any]) -> bool:
    return "mm_vision_tower_aux_list" in d and "text_config" not in d


def is_released_checkpoint(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    return is_released_config(json.loads(cfg.read_text()))


def _llm_family(d: dict[str, Any], weight_keys: set[str] | None) -> str:
    if weight_keys:  # fused Phi-3 projections settle it (the processor passes no keys)
        if any(".qkv_proj." in k or ".gate_up_proj." in k for k in weight_keys):
            return "phi3"
        return "llama"
    mt = d.get("model_type")
    if mt not in LLM_FAMILIES:
        raise ValueError(
            f"released config model_type {mt!r} is not recognised; valid: {', '.join(sorted(LLM_FAMILIES))}"
        )
    return LLM_FAMILIES[mt]


def config_from_released(
    d: dict[str, Any],
    base_dir: str | Path | None = None,
    tower_paths: dict[str, str] | None = None,
    allow_download: bool = False,
    weight_keys: set[str] | None = None,
    require_tower_weights: bool = True,
) -> tuple[CambrianConfig, list[str | None]]:
    """Released config dict -> (CambrianConfig, local weight directory of each tower).

    With ``require_tower_weights=False`` (the processor: it needs only the towers' preprocessing) a released
    tower name gets its known config and no weights directory, instead of an error when no local copy is
    given.
    """
    from cambrian.models.vision import RELEASED_TOWERS, released_tower_config, resolve_tower

    if d.get("mm_projector_type") != "sva":
        raise ValueError(f"released config: mm_projector_type {d.get('mm_projector_type')!r} is not 'sva'")
    family = _llm_family(d, weight_keys)
    llm = {k: v for k, v in d.items() if k not in _CAMBRIAN_KEYS}
    llm.setdefault("tie_word_embeddings", False)
    llm["model_type"] = family
    names = d["mm_vision_tower_aux_list"]
    lens = d.get("mm_vision_tower_aux_token_len_list") or d["vision_tower_aux_token_len_list"]
    towers, dirs = [], []
    select_layer = d.get("mm_vision_select_layer", -2)
    for name, n in zip(names, lens):
        if not require_tower_weights and name in RELEASED_TOWERS and name not in (tower_paths or {}):
            towers.append(released_tower_config(name, n, select_layer))
            dirs.append(None)
            continue
        cfg, wdir = resolve_tower(
            name,
            n,
            select_layer=select_layer,
            base_dir=base_dir,
            tower_paths=tower_paths,
            allow_download=allow_download,
        )
        towers.append(cfg)
        dirs.append(wdir)
    conv = d.get("conv_mode") or IMAGE_POSITION_TEMPLATES.get(d.get("image_position"))
    config = CambrianConfig(
        text_config=llm,
        vision_towers=[t.to_dict() for t in towers],
        mm_projector_type="sva",
        vision_hidden_size=d.get("vision_hidden_size", 1024),
        image_token_len=d["image_token_len"],
        num_query_group=d.get("num_query_group", 1),
        query_num_list=d.get("query_num_list", [d["image_token_len"]]),
        connector_depth=d.get("connector_depth", 3),
        num_of_vision_sampler_layers=d.get("num_of_vision_sampler_layers", 10),
        start_of_vision_sampler_layers=d.get("start_of_vision_sampler_layers", 0),
        stride_of_vision_sampler_layers=d.get("stride_of_vision_sampler_layers", 3),
        connector_only=d.get("connector_only", False),
        conv_mode=conv,
        sva_num_heads=d.get("sva_num_heads", 16),
        released_image_position=d.get("image_position"),
    )
    return config, dirs


def load_released(
    cls,
    path: str | Path,
    tower_paths: dict[str, str] | None = None,
    allow_download: bool = False,
    dtype: torch.dtype | None = None,
    image_token_id: int | None = None,
):
    """Build ``cls`` from a released-layout directory; strict: no missing and no unexpected keys."""
    from transformers import initialization as init

    from cambrian.models.vision import load_tower_weights

    path = Path(path)
    raw = json.loads((path / "config.json").read_text())
    files = weight_files(path)
    keys = weight_keys(files)
    config, tower_dirs = config_from_released(raw, path, tower_paths, allow_download, weight_keys=keys)
    config.image_token_id = image_token_id if image_token_id is not None else _image_token_id_from_dir(path)
    dtype = dtype or torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with init.no_init_weights():
            model = cls(config)
    finally:
        torch.set_default_dtype(previous)
    expected = {k for k in model.state_dict() if not k.startswith("vision_towers.")}
    renamed = {rename_released_key(k): k for k in keys}
    unexpected = sorted(renamed[k] for k in set(renamed) - expected)
    # Reported under their released names, like the unexpected ones (not our internal names).
    missing = sorted(released_key_name(k) for k in expected - set(renamed))
    if unexpected or missing:
        raise ValueError(
            f"{path}: released checkpoint does not match the config: "
            f"{len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}"
        )
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for f in files:
        shard = {rename_released_key(k): v.to(dtype) for k, v in read_weight_file(f).items()}
        wrong = [
            f"{released_key_name(k)} {tuple(v.shape)} (config expects {tuple(shapes[k])})"
            for k, v in shard.items()
            if v.shape != shapes[k]
        ]
        if wrong:
            raise ValueError(f"{f}: tensors do not match the config: {'; '.join(wrong[:8])}")
        model.load_state_dict(shard, strict=False)
        del shard
    for i, (tower, wdir) in enumerate(zip(model.vision_towers, tower_dirs)):
        if wdir is None:
            raise ValueError(
                f"{path}: no weights for vision tower {i} ({raw['mm_vision_tower_aux_list'][i]})"
            )
        load_tower_weights(tower, wdir)
        tower.to(dtype)
    model.eval()
    return model


def _image_token_id_from_dir(path: Path) -> int | None:
    """The id the processor gives ``<image>`` for this checkpoint's tokenizer (added after its vocabulary)."""
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    _, token_id = load_tokenizer_with_image_token(path)
    return token_id
