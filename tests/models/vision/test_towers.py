"""Vision towers: shapes, interpolation, freezing, preprocessing, loading and name resolution.

Everything runs on tiny random towers (hidden 32-48, 2 layers, 32-64 px); the released towers are only
built on the meta device. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
import torch.nn.functional as F
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

from cambrian.models.vision import (
    RELEASED_TOWERS,
    TOWERS,
    TowerConfig,
    build_tower,
    load_tower_weights,
    released_tower_config,
    resolve_tower,
    tiny_tower_config,
    tower_config_from_dir,
)
from cambrian.models.vision.dinov2 import interpolate_pos_embed_437
from cambrian.models.vision.resolve import read_state_dict, tiny_backends
from cambrian.registry import UnknownIdError

FAMILY_BACKENDS = [(f, b) for f in TOWERS for b in tiny_backends(f)]
FB_IDS = [f"{f}-{b}" for f, b in FAMILY_BACKENDS]
PAD_FILL = {"siglip": (122, 116, 104), "clip": (122, 116, 104), "convnext": (122, 116, 104), "dinov2": (123, 116, 103)}  # fmt: skip
HF_CLASSES = {
    "clip": (transformers.CLIPVisionConfig, transformers.CLIPVisionModel),
    "siglip": (transformers.SiglipVisionConfig, transformers.SiglipVisionModel),
    "dinov2": (transformers.Dinov2Config, transformers.Dinov2Model),
    "convnext": (transformers.ConvNextConfig, transformers.ConvNextModel),
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pixels(cfg, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.image_size, cfg.image_size)


def grid_resize(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """Reference bilinear resize of a row-major token grid (B, g*g, C) -> (B, side*side, C)."""
    b, n, c = tokens.shape
    g = int(n**0.5)
    maps = tokens.reshape(b, g, g, c).permute(0, 3, 1, 2)
    maps = F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
    return maps.permute(0, 2, 3, 1).reshape(b, side * side, c)


def test_registered_families() -> None:
    assert TOWERS.names() == ["clip", "convnext", "dinov2", "siglip"]
    with pytest.raises(UnknownIdError, match="clip, convnext, dinov2, siglip"):
        build_tower(TowerConfig(family="vit", token_len=4, image_size=32))


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize(("family", "backend"), FAMILY_BACKENDS, ids=FB_IDS)
@pytest.mark.parametrize("token_len", [16, 9])
def test_output_shape(family: str, backend: str, token_len: int) -> None:
    tower = build_tower(tiny_tower_config(family, token_len=token_len, backend=backend)).eval()
    out = tower(pixels(tower.cfg))
    assert out.shape == (2, token_len, tower.hidden_size)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(("family", "backend"), [fb for fb in FAMILY_BACKENDS if fb[0] != "convnext"])
def test_vit_interpolation_only_when_grids_differ(family: str, backend: str) -> None:
    tower = build_tower(tiny_tower_config(family, token_len=9, backend=backend)).eval()
    x = pixels(tower.cfg)
    native = tower.features(x)
    assert tower.native_grid == 4 and native.shape == (2, 16, tower.hidden_size)
    torch.testing.assert_close(tower(x), grid_resize(native, 3), rtol=0, atol=1e-6)
    same = build_tower(tiny_tower_config(family, token_len=16, backend=backend)).eval()
    same.load_state_dict(tower.state_dict())
    assert torch.equal(same(x), native)  # 4 x 4 -> 4 x 4: untouched


@pytest.mark.parametrize("backend", tiny_backends("convnext"))
def test_convnext_multi_stage_features(backend: str) -> None:
    tower = build_tower(tiny_tower_config("convnext", token_len=9, backend=backend)).eval()
    assert tower.native_grid == 3 and tower.hidden_size == 8 + 8 + 16 + 16
    x = pixels(tower.cfg)
    with torch.no_grad():  # reference stage maps from the library's own APIs
        if backend == "timm":
            stages = tower.model.forward_intermediates(x, indices=4, intermediates_only=True)
        else:
            stages = tower.model(pixel_values=x, output_hidden_states=True).hidden_states[1:]
    assert [s.shape[-1] for s in stages] == [16, 8, 4, 2]  # strides 4, 8, 16, 32 of 64 px
    expected = torch.cat([grid_resize(s.flatten(2).transpose(1, 2), 3) for s in stages], dim=-1)
    torch.testing.assert_close(tower(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("family", "backend"), FAMILY_BACKENDS, ids=FB_IDS)
def test_frozen_and_trainable(family: str, backend: str) -> None:
    frozen = build_tower(tiny_tower_config(family, token_len=9, backend=backend))
    assert not any(p.requires_grad for p in frozen.parameters())
    x = pixels(frozen.cfg).requires_grad_(True)
    assert not frozen(x).requires_grad  # ran under no_grad

    trainable = build_tower(tiny_tower_config(family, token_len=9, backend=backend, frozen=False))
    trainable(pixels(trainable.cfg)).sum().backward()
    assert any(p.grad is not None for p in trainable.parameters())


def test_half_precision_tower_returns_pixel_dtype() -> None:
    tower = build_tower(tiny_tower_config("clip", token_len=16)).to(torch.bfloat16)
    out = tower(pixels(tower.cfg))
    assert out.dtype == torch.float32  # cast back to the pixel dtype, like the original CLIP/DINO towers


# ----------------------------------------------------------------------------- preprocessing


def _denormalise(t: torch.Tensor, cfg) -> torch.Tensor:
    mean = torch.tensor(cfg.image_mean).view(3, 1, 1)
    std = torch.tensor(cfg.image_std).view(3, 1, 1)
    return ((t * std + mean) * 255).round().to(torch.int64)  # (3, R, R) back to 0..255


@pytest.mark.parametrize("family", sorted(PAD_FILL))
@pytest.mark.parametrize("wide", [True, False])
def test_pad_to_square_fill_and_centring(family: str, wide: bool) -> None:
    cfg = tiny_tower_config(family)
    tower = build_tower(cfg)
    side, short = cfg.image_size, cfg.image_size // 2 + 1  # odd margin: floor puts the extra px at the end
    colour = (10, 200, 30)
    image = Image.new("RGB", (side, short) if wide else (short, side), colour)
    out = tower.preprocess(image)  # padded square is already R x R, so no resize blurs the edges
    assert out.shape == (3, side, side) and out.dtype == torch.float32
    rgb = _denormalise(out, cfg)
    if not wide:
        rgb = rgb.transpose(1, 2)  # check columns as rows
    start = (side - short) // 2
    fill = torch.tensor(PAD_FILL[family]).view(3, 1, 1)
    assert cfg.pad_fill == PAD_FILL[family]
    assert torch.equal(rgb[:, :start], fill.expand(3, start, side))
    assert torch.equal(rgb[:, start + short :], fill.expand(3, side - start - short, side))
    assert torch.equal(
        rgb[:, start : start + short], torch.tensor(colour).view(3, 1, 1).expand(3, short, side)
    )


@pytest.mark.parametrize("family", sorted(PAD_FILL))
def test_preprocess_resizes_to_r(family: str) -> None:
    tower = build_tower(tiny_tower_config(family))
    for size in [(97, 41), (20, 150), (5, 5)]:
        out = tower.preprocess(Image.new("RGB", size, (0, 0, 0)))
        assert out.shape == (3, tower.cfg.image_size, tower.cfg.image_size)


# ----------------------------------------------------------------------------- DINOv2 positions


def test_dinov2_437_position_interpolation_matches_scale_factor() -> None:
    pos = torch.randn(1, 1 + 37 * 37, 8)
    out = interpolate_pos_embed_437(pos, 27, 27)
    patch = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(patch, scale_factor=(27.1 / 37, 27.1 / 37), mode="bicubic", align_corners=False)
    assert out.shape == (1, 1 + 27 * 27, 8)
    assert torch.equal(out[:, :1], pos[:, :1])  # CLS position kept
    assert torch.equal(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 729, 8))
    # newer transformers (explicit size, antialias) give measurably different embeddings
    new = F.interpolate(patch, size=(27, 27), mode="bicubic", align_corners=False, antialias=True)
    assert (new.permute(0, 2, 3, 1).reshape(1, 729, 8) - out[:, 1:]).abs().max() > 1e-2
    # half precision is interpolated in float32 and cast back
    half = interpolate_pos_embed_437(pos.half(), 27, 27)
    ref_half = interpolate_pos_embed_437(pos.half().float(), 27, 27).half()
    assert half.dtype == torch.float16 and torch.equal(half, ref_half)
    assert interpolate_pos_embed_437(pos, 37, 37) is pos  # native grid: untouched


def test_dinov2_tower_equals_hf_forward_with_437_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    tower = build_tower(tiny_tower_config("dinov2", token_len=16)).eval()  # 5 x 5 table, 4 x 4 grid
    x = pixels(tower.cfg)
    emb = tower.model.embeddings
    # the test (not the tower) patches HF's step, to show the rest of our embedding pipeline is HF's
    monkeypatch.setattr(
        emb, "interpolate_pos_encoding", lambda e, h, w: interpolate_pos_embed_437(emb.position_embeddings, h // 8, w // 8)
    )  # fmt: skip
    with torch.no_grad():
        ref = tower.model(pixel_values=x).last_hidden_state[:, 1:]
    torch.testing.assert_close(tower.features(x), ref, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- saved directories


def _write_processor(path: Path, **kwargs) -> None:
    (path / "preprocessor_config.json").write_text(json.dumps(kwargs))


PROCESSORS = {  # each family exercises another size format; R must come out as the tiny tower's
    "clip": {"size": {"shortest_edge": 48}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True},
    "siglip": {"size": {"height": 34, "width": 34}},
    "dinov2": {"size": {"shortest_edge": 64}, "crop_size": 40, "do_center_crop": True},  # native 5 x 5
    "convnext": {"size": 64},
}


def _hf_reference(family: str, model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if family == "clip":
            return model(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        if family == "dinov2":
            return model(pixel_values=x).last_hidden_state[:, 1:]
        if family == "siglip":
            return model(pixel_values=x).last_hidden_state
        stages = model(pixel_values=x, output_hidden_states=True).hidden_states[1:]  # 16², 8², 4², 2²
        return torch.cat([grid_resize(s.flatten(2).transpose(1, 2), 4) for s in stages], dim=-1)


@pytest.mark.parametrize("family", sorted(HF_CLASSES))
def test_hf_dir_roundtrip(family: str, tmp_path: Path) -> None:
    config_cls, model_cls = HF_CLASSES[family]
    model = model_cls(config_cls.from_dict(tiny_tower_config(family, backend="hf").arch)).eval()
    model.save_pretrained(tmp_path)
    _write_processor(tmp_path, image_mean=[0.4, 0.4, 0.4], image_std=[0.2, 0.3, 0.4], **PROCESSORS[family])

    native = {"convnext": 4, "dinov2": 5}.get(family, 4)  # convnext: 16 tokens = 4 x 4 resize target
    cfg = tower_config_from_dir(tmp_path, token_len=native * native)
    assert (cfg.family, cfg.backend, cfg.source) == (family, "hf", str(tmp_path))
    assert cfg.image_size == {"dinov2": 40}.get(family, tiny_tower_config(family).image_size)
    assert cfg.image_mean == (0.4, 0.4, 0.4) and cfg.image_std == (0.2, 0.3, 0.4)
    assert cfg.pad_fill == PAD_FILL[family]  # the family constant, not the processor mean

    tower = build_tower(cfg).eval()
    x = pixels(cfg)
    ref = _hf_reference(family, model, x)
    assert not torch.equal(tower(x), ref)  # random init differs: the equality below comes from loading
    assert load_tower_weights(tower, tmp_path) is tower
    assert torch.equal(tower(x), ref)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_full_two_tower_dir_takes_vision_half(family: str, tmp_path: Path) -> None:
    vision = tiny_tower_config(family, backend="hf").arch
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 99}  # fmt: skip
    if family == "clip":
        full = transformers.CLIPModel(
            transformers.CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)
        )
    else:
        full = transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text))
    full.eval().save_pretrained(tmp_path)
    _write_processor(tmp_path, image_mean=[0.5] * 3, image_std=[0.5] * 3, **PROCESSORS[family])
    cfg = tower_config_from_dir(tmp_path, token_len=16)
    assert cfg.family == family and cfg.arch["model_type"] == f"{family}_vision_model"
    assert cfg.arch["hidden_size"] == 32
    tower = load_tower_weights(build_tower(cfg), tmp_path).eval()
    x = pixels(cfg)
    assert torch.equal(tower(x), _hf_reference(family, full.vision_model, x))


def test_legacy_vision_model_prefix_dir(tmp_path: Path) -> None:
    # CLIPVisionModel dirs saved by older transformers keep every key under "vision_model."
    cfg = tiny_tower_config("clip", token_len=16)
    src = build_tower(cfg)
    src.model.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    save_file({f"vision_model.{k}": v for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    _write_processor(tmp_path, **PROCESSORS["clip"])
    tower = load_tower_weights(build_tower(tower_config_from_dir(tmp_path, 16)), tmp_path)
    x = pixels(cfg)
    assert torch.equal(tower(x), src(x))


def test_hf_load_reports_missing_keys(tmp_path: Path) -> None:
    src = build_tower(tiny_tower_config("clip", token_len=16))
    src.model.save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    del sd["post_layernorm.weight"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing: .*post_layernorm\.weight"):
        load_tower_weights(build_tower(tiny_tower_config("clip", token_len=16)), tmp_path)


def _write_open_clip(
    path: Path, timm_name: str, trunk: dict[str, torch.Tensor], binary: bool = False
) -> None:
    cfg = {
        "model_cfg": {"embed_dim": 16, "vision_cfg": {"timm_model_name": timm_name, "image_size": 256}},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    (path / "open_clip_config.json").write_text(json.dumps(cfg))
    sd = {f"visual.trunk.{k}": v.clone() for k, v in trunk.items()}
    sd["text.token_embedding.weight"] = torch.zeros(4, 2)  # the text tower is ignored
    sd["logit_scale"] = torch.zeros(())
    if binary:
        torch.save(sd, path / "open_clip_pytorch_model.bin")
    else:
        save_file(sd, str(path / "open_clip_model.safetensors"))


@pytest.mark.parametrize(("family", "timm_name", "size"), [("siglip", "vit_so400m_patch14_siglip_384", 384), ("convnext", "convnext_xxlarge", 1024)])  # fmt: skip
@pytest.mark.parametrize("binary", [False, True])
def test_open_clip_dir(family: str, timm_name: str, size: int, binary: bool, tmp_path: Path) -> None:
    tiny = tiny_tower_config(family, token_len=16)
    src = build_tower(tiny).eval()
    trunk = dict(src.model.state_dict())
    if family == "siglip":  # open_clip's trunk keeps the MAP pooling head; the tower never uses it
        trunk["attn_pool.latent"] = torch.zeros(1, 1, 32)
    _write_open_clip(tmp_path, timm_name, trunk, binary=binary)

    cfg = tower_config_from_dir(tmp_path, token_len=576)  # parsed only: the real trunk is too big here
    assert (cfg.family, cfg.backend, cfg.arch, cfg.image_size) == (
        family,
        "timm",
        {"model_name": timm_name},
        size,
    )
    assert cfg.image_mean == (0.5, 0.5, 0.5) and cfg.image_std == (0.25, 0.25, 0.25)
    assert cfg.pad_fill == PAD_FILL[family]

    tower = load_tower_weights(build_tower(tiny), tmp_path).eval()
    x = pixels(tiny)
    assert torch.equal(tower(x), src(x))


def test_timm_load_reports_unexpected_and_missing(tmp_path: Path) -> None:
    tiny = tiny_tower_config("convnext", token_len=16)
    trunk = dict(build_tower(tiny).model.state_dict())
    trunk["bogus.weight"] = torch.zeros(1)
    del trunk["stem.0.weight"]
    _write_open_clip(tmp_path, "convnext_xxlarge", trunk)
    with pytest.raises(ValueError, match=r"missing: stem\.0\.weight.*unexpected: bogus\.weight"):
        load_tower_weights(build_tower(tiny), tmp_path)


def test_read_state_dict_prefers_safetensors_and_reads_shards(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(1)}, tmp_path / "pytorch_model.bin")
    assert torch.equal(read_state_dict(tmp_path)["a"], torch.ones(1))  # .bin via weights_only torch.load
    save_file({"a": torch.zeros(1)}, str(tmp_path / "s1.safetensors"))
    save_file({"b": torch.zeros(2)}, str(tmp_path / "s2.safetensors"))
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    sd = read_state_dict(tmp_path)
    assert sorted(sd) == ["a", "b"] and torch.equal(sd["a"], torch.zeros(1))
    with pytest.raises(FileNotFoundError, match="no weights"):
        read_state_dict(tmp_path / "s1.safetensors.d")


def test_unknown_model_types_list_valid_values(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match=r"config\.json: model_type 'vit'.*clip, clip_vision_model, convnext, dinov2, siglip"):  # fmt: skip
        tower_config_from_dir(tmp_path, 16)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"vision_cfg": {"timm_model_name": "vit_b"}}}))  # fmt: skip
    with pytest.raises(ValueError, match=r"'vit_b'.*convnext_xxlarge, vit_so400m_patch14_siglip_384"):
        tower_config_from_dir(tmp_path, 16)
    with pytest.raises(FileNotFoundError, match=r"neither config\.json nor open_clip_config\.json"):
        tower_config_from_dir(tmp_path / "missing", 16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"config\.json is not valid JSON \(line 1, column 2"),
        ("", r"config\.json is not valid JSON"),
        ("[1, 2]", r"config\.json holds a JSON list; expected an object"),
    ],
)
def test_garbage_tower_config_names_the_file(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        tower_config_from_dir(tmp_path, 16)
    assert str(tmp_path / "config.json") in str(err.value)


# ----------------------------------------------------------------------------- released names


RELEASED_EXPECTED = {  # name: (family, backend, R, hidden, native grid, token_len, pad fill)
    "siglip/CLIP-ViT-SO400M-14-384": ("siglip", "timm", 384, 1152, 27, 576, (122, 116, 104)),
    "openai/clip-vit-large-patch14-336": ("clip", "hf", 336, 1024, 24, 576, (122, 116, 104)),
    "facebook/dinov2-giant-res378": ("dinov2", "hf", 378, 1536, 27, 576, (123, 116, 103)),
    "clip-convnext-XXL-multi-stage": ("convnext", "timm", 1024, 5760, 96, 9216, (122, 116, 104)),
}


@pytest.mark.parametrize("name", sorted(RELEASED_EXPECTED))
def test_released_towers_on_meta(name: str) -> None:
    family, backend, size, hidden, grid, token_len, fill = RELEASED_EXPECTED[name]
    cfg = released_tower_config(name, token_len)
    assert (cfg.family, cfg.backend, cfg.image_size, cfg.pad_fill) == (family, backend, size, fill)
    with torch.device("meta"):
        tower = build_tower(cfg)
        out = tower(torch.empty(1, 3, size, size))
    assert (tower.hidden_size, tower.native_grid) == (hidden, grid)
    assert out.shape == (1, token_len, hidden)


def test_released_names_are_exact() -> None:
    assert sorted(RELEASED_TOWERS) == sorted(RELEASED_EXPECTED)
    for bad in ["siglip", "openai/clip-vit-large-patch14", "facebook/dinov2-giant-res378-interp576"]:
        with pytest.raises(UnknownIdError) as err:
            released_tower_config(bad, 576)
        assert all(name in str(err.value) for name in RELEASED_TOWERS)


def test_resolve_without_download_is_explicit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_download(repo_id: str, **kwargs) -> str:
        calls.append(repo_id)
        (tmp_path / "model.safetensors").write_bytes(b"")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    name = "facebook/dinov2-giant-res378"
    with pytest.raises(FileNotFoundError, match=r"tower_paths=.*allow_download=True"):
        resolve_tower(name, 576)
    assert calls == []
    cfg, path = resolve_tower(name, 576, tower_paths={name: tmp_path})
    assert cfg.family == "dinov2" and path == tmp_path and calls == []
    cfg, path = resolve_tower(name, 576, allow_download=True)
    assert calls == ["facebook/dinov2-giant"] and path == tmp_path
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        resolve_tower(name, 576, tower_paths={name: tmp_path / "nope"})


def test_resolve_local_directories(tmp_path: Path) -> None:
    tower_dir = tmp_path / "towers" / "my_clip"
    tower_dir.mkdir(parents=True)
    build_tower(tiny_tower_config("clip")).model.save_pretrained(tower_dir)
    _write_processor(tower_dir, **PROCESSORS["clip"])
    cfg, path = resolve_tower("towers/my_clip", 16, select_layer=-1, base_dir=tmp_path)
    assert (cfg.family, cfg.select_layer, path) == ("clip", -1, tmp_path / "towers" / "my_clip")
    cfg, path = resolve_tower(str(tower_dir), 16)
    assert cfg.family == "clip" and path == tower_dir
    with pytest.raises(UnknownIdError, match="not a local directory either") as err:
        resolve_tower("towers/other", 16, base_dir=tmp_path)
    assert all(name in str(err.value) for name in RELEASED_TOWERS)


def test_tiny_configs_reject_unknown() -> None:
    with pytest.raises(UnknownIdError, match="clip, convnext, dinov2, siglip"):
        tiny_tower_config("vit")
    with pytest.raises(ValueError, match="valid"):
        tiny_tower_config("clip", backend="timm")
    with pytest.raises(ValueError, match="valid backends: 'hf'"):
        build_tower(TowerConfig(family="clip", token_len=4, image_size=32, backend="timm"))
