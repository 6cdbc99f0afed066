"""Tower families as registered specs: one spec per family file, exact-id lookups, generic resolution.

Checks that each built-in family registers one ``TowerFamily`` under its exact id, that unknown ids and
near-miss names fail listing the valid ones, that the released tower names resolve to their families
through the registry, that tiny towers carry their family's normalisation, that a new family (one spec,
one registration, defined here) is resolvable, buildable and loadable end to end with no change to the
generic code, and that the vision modules import on their own without a cycle. Tiny random towers only;
nothing is downloaded.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from cambrian.models.vision import base, config, family, registry, resolve
from cambrian.models.vision.base import VisionTower
from cambrian.models.vision.config import TowerConfig
from cambrian.models.vision.family import ReleasedTower, TinyTower, TowerFamily, register_family
from cambrian.models.vision.registry import (
    TOWERS,
    build_tower,
    get_family,
    released_tower_family,
    released_tower_names,
)
from cambrian.models.vision.resolve import (
    RELEASED_TOWERS,
    load_tower_weights,
    released_tower_config,
    resolve_tower,
    tiny_tower_config,
    tower_config_from_dir,
)
from cambrian.registry import UnknownIdError

ROOT = Path(__file__).resolve().parents[3]
BUILTIN = ["clip", "convnext", "dinov2", "siglip"]
# Written out here, not read from the specs, so a wrong spec fails the test.
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
EXPECTED_NORM = {  # family: (mean, std, pad fill) as in the original release (docs/checkpoint-format.md 3.2)
    "siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (122, 116, 104)),
    "clip": (OPENAI_MEAN, OPENAI_STD, (122, 116, 104)),
    "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (123, 116, 103)),
    "convnext": (OPENAI_MEAN, OPENAI_STD, (122, 116, 104)),
}
RELEASED_FAMILY = {  # the names the released configs use -> (family, backend, R)
    "siglip/CLIP-ViT-SO400M-14-384": ("siglip", "timm", 384),
    "openai/clip-vit-large-patch14-336": ("clip", "hf", 336),
    "facebook/dinov2-giant-res378": ("dinov2", "hf", 378),
    "clip-convnext-XXL-multi-stage": ("convnext", "timm", 1024),
}
RELEASED_FAMILY_BACKEND = {f: b for f, b, _ in RELEASED_FAMILY.values()}


# ----------------------------------------------------------------------------- built-in registrations


def test_each_builtin_family_is_registered_once_from_its_own_file() -> None:
    assert TOWERS.names() == BUILTIN
    for family_id in BUILTIN:
        spec = get_family(family_id)
        module = importlib.import_module(f"cambrian.models.vision.{family_id}")
        assert spec.id == family_id and spec.tower.__module__ == module.__name__
        assert issubclass(spec.tower, VisionTower)
        # one spec, one registration call, in the family's own file
        assert inspect.getsource(module).count("register_family(") == 1
        with pytest.raises(ValueError, match=f"'{family_id}' is already registered"):
            register_family(spec)
    assert TOWERS.names() == BUILTIN  # the refused re-registrations changed nothing


@pytest.mark.parametrize(
    ("lookup", "kind"),
    [
        (lambda: get_family("vit"), "vision tower family"),
        (lambda: get_family("SigLIP"), "vision tower family"),  # exact: case matters
        (lambda: tiny_tower_config("dino"), "vision tower family"),  # exact: no prefix matching
        (
            lambda: build_tower(TowerConfig(family="clip_vision_model", token_len=4, image_size=32)),
            "vision tower family",
        ),
        (lambda: released_tower_config("siglip", 576), "released vision tower"),
        (lambda: released_tower_family("facebook/dinov2-giant"), "released vision tower"),
        (lambda: RELEASED_TOWERS["openai/clip-vit-large-patch14-336 "], "released vision tower"),
    ],
)
def test_unknown_ids_fail_listing_the_valid_choices(lookup, kind: str) -> None:
    with pytest.raises(UnknownIdError) as err:
        lookup()
    message = str(err.value)
    assert message.startswith(f"unknown {kind} ")
    valid = BUILTIN if kind == "vision tower family" else sorted(RELEASED_FAMILY)
    assert err.value.valid == valid
    assert all(name in message for name in valid)


def test_released_names_of_the_docs_resolve_to_their_families() -> None:
    # the tower list the released configs carry, as documented (docs/checkpoint-format.md section 1)
    row = next(
        line
        for line in (ROOT / "docs" / "checkpoint-format.md").read_text().splitlines()
        if line.startswith("| `mm_vision_tower_aux_list`")
    )
    documented = json.loads(re.search(r"`(\[.*?\])`", row).group(1))
    assert sorted(documented) == sorted(RELEASED_FAMILY) == released_tower_names() == sorted(RELEASED_TOWERS)
    for name in documented:
        family_id, backend, size = RELEASED_FAMILY[name]
        spec = released_tower_family(name)
        assert spec is get_family(family_id) and name in spec.released
        cfg = released_tower_config(name, 576, select_layer=-1)
        assert (cfg.family, cfg.backend, cfg.image_size, cfg.select_layer) == (family_id, backend, size, -1)
        assert (cfg.image_mean, cfg.image_std, cfg.pad_fill) == EXPECTED_NORM[family_id]
        assert cfg.source == spec.released[name].source and "/" in cfg.source  # a hub id to download from
        assert RELEASED_TOWERS[name](576, -1) == cfg
    for bad in [
        "siglip",
        "clip-convnext-XXL",
        "facebook/dinov2-giant-res378/",
        "OpenAI/clip-vit-large-patch14-336",
    ]:
        assert bad not in RELEASED_TOWERS


@pytest.mark.parametrize("family_id", BUILTIN)
def test_tiny_config_builds_a_tower_with_the_family_normalisation(family_id: str) -> None:
    mean, std, fill = EXPECTED_NORM[family_id]
    spec = get_family(family_id)
    for backend in spec.tiny_backends:
        cfg = tiny_tower_config(family_id, token_len=9, backend=backend)
        assert (cfg.family, cfg.backend) == (family_id, backend)
        tower = build_tower(cfg).eval()
        assert type(tower) is spec.tower and tower.family == family_id
        pre = tower.preprocess
        assert (pre.image_mean, pre.image_std, pre.pad_fill) == (mean, std, fill)
        grey = tower.preprocess(Image.new("RGB", (7, 7), (51, 102, 204)))
        expected = (np.array([51, 102, 204]) / 255.0 - np.array(mean)) / np.array(std)
        torch.testing.assert_close(grey[:, 0, 0], torch.tensor(expected, dtype=torch.float32))
        torch.manual_seed(0)
        out = tower(torch.randn(2, 3, cfg.image_size, cfg.image_size))
        assert out.shape == (2, 9, tower.hidden_size)
    assert tiny_tower_config(family_id).backend == spec.default_backend == RELEASED_FAMILY_BACKEND[family_id]


def test_specs_are_read_only_and_configs_are_copies() -> None:
    spec = get_family("clip")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pad_fill = (0, 0, 0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.released["mine"] = spec.released["openai/clip-vit-large-patch14-336"]  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.tiny["hf"].arch["hidden_size"] = 1  # type: ignore[index]
    cfg = tiny_tower_config("clip")
    cfg.arch["hidden_size"] = 1
    assert tiny_tower_config("clip").arch["hidden_size"] == 32


def test_bad_specs_are_refused_before_registration() -> None:
    common = dict(image_mean=(0.5,) * 3, image_std=(0.5,) * 3, pad_fill=(0, 0, 0))
    with pytest.raises(TypeError, match="VisionTower subclass"):
        TowerFamily(id="bad", tower=nn.Linear, backends=("hf",), **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="valid backends"):
        TowerFamily(id="bad", tower=ToyTower, backends=("onnx",), **common)
    with pytest.raises(ValueError, match="uses backend 'hf'"):
        TowerFamily(id="bad", tower=ToyTower, backends=("timm",), released={"x": ReleasedTower(8, "hf", {}, "a/b")}, **common)  # fmt: skip
    with pytest.raises(ValueError, match="unsupported backends"):
        TowerFamily(id="bad", tower=ToyTower, backends=("timm",), tiny={"hf": TinyTower(8, {})}, **common)
    # a name another family already answers to would make lookups ambiguous: refused, nothing registered
    for claim, owner in [
        ({"released": {"openai/clip-vit-large-patch14-336": ReleasedTower(8, "hf", {}, "a/b")}}, "clip"),
        ({"hf_model_types": ("dinov2",)}, "dinov2"),
        ({"hf_full_model_types": {"siglip": "siglip_vision_model"}}, "siglip"),
        ({"open_clip_models": {"convnext_xxlarge": 64}}, "convnext"),
    ]:
        spec = TowerFamily(id="thief", tower=ToyTower, backends=("hf", "timm"), **common, **claim)
        with pytest.raises(ValueError, match=f"already belongs to family '{owner}'"):
            register_family(spec)
        assert "thief" not in TOWERS
    with pytest.raises(TypeError, match="expects a TowerFamily"):
        register_family(ToyTower)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- a new family, end to end

TOY_TRUNKS = {"toy_trunk": {"width": 8, "patch": 4}}  # like timm model names: named default architectures


class ToyTower(VisionTower):
    """A patchify convolution: (B, 3, R, R) -> (B, (R / patch)**2, width)."""

    unused_weight_prefixes = ("head.",)

    def __init__(self, cfg: TowerConfig):
        super().__init__(cfg)
        arch = {
            **TOY_TRUNKS[cfg.arch["model_name"]],
            **{k: v for k, v in cfg.arch.items() if k != "model_name"},
        }
        self.model = nn.Conv2d(3, arch["width"], arch["patch"], stride=arch["patch"])

    @property
    def hidden_size(self) -> int:
        return self.model.out_channels

    @property
    def native_grid(self) -> int:
        return self.cfg.image_size // self.model.stride[0]

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.model(pixel_values.to(self.model.weight.dtype))  # (B, C, g, g)
        return x.flatten(2).transpose(1, 2).to(pixel_values.dtype)


TOY = TowerFamily(
    id="toy",
    tower=ToyTower,
    backends=("timm",),
    image_mean=(0.1, 0.2, 0.3),
    image_std=(0.4, 0.5, 0.6),
    pad_fill=(1, 2, 3),
    released={"toy/toy-24": ReleasedTower(24, "timm", {"model_name": "toy_trunk"}, source="example/toy-24")},
    tiny={"timm": TinyTower(16, {"model_name": "toy_trunk", "width": 4})},
    open_clip_models={"toy_trunk": 24},
)


@contextlib.contextmanager
def registered(spec: TowerFamily) -> Iterator[TowerFamily]:
    register_family(spec)  # the one call a family file makes
    try:
        yield spec
    finally:
        TOWERS.unregister(spec.id)  # tests must leave the process-wide registry as they found it


def _write_open_clip(path: Path, timm_name: str, trunk: dict[str, torch.Tensor]) -> None:
    cfg = {
        "model_cfg": {"vision_cfg": {"timm_model_name": timm_name, "image_size": 256}},
        "preprocess_cfg": {"mean": [0.25, 0.25, 0.25], "std": [0.5, 0.5, 0.5]},
    }
    (path / "open_clip_config.json").write_text(json.dumps(cfg))
    sd = {f"visual.trunk.{k}": v.clone() for k, v in trunk.items()}
    sd["visual.trunk.head.weight"] = torch.zeros(2)  # a head the tower never builds: skipped
    sd["text.token_embedding.weight"] = torch.zeros(4, 2)  # the text tower is ignored
    save_file(sd, str(path / "open_clip_model.safetensors"))


def test_a_new_family_is_one_spec_and_one_registration(tmp_path: Path) -> None:
    name = "toy/toy-24"
    with pytest.raises(UnknownIdError):
        tiny_tower_config("toy")
    assert name not in RELEASED_TOWERS

    with registered(TOY):
        assert TOWERS.names() == sorted([*BUILTIN, "toy"]) and get_family("toy") is TOY
        # tiny config -> tower with the toy normalisation, interpolated 4 x 4 -> 3 x 3
        cfg = tiny_tower_config("toy", token_len=9)
        assert (cfg.backend, cfg.image_size, cfg.pad_fill) == ("timm", 16, (1, 2, 3))
        tower = build_tower(cfg)
        assert isinstance(tower, ToyTower) and not any(p.requires_grad for p in tower.parameters())
        assert (tower.hidden_size, tower.native_grid) == (4, 4)
        assert tower(torch.randn(2, 3, 16, 16)).shape == (2, 9, 4)
        assert tower.preprocess(Image.new("RGB", (4, 8), (0, 0, 0))).shape == (3, 16, 16)

        # released name: listed with the built-in ones, resolved to the toy spec, weights from a local dir
        assert name in RELEASED_TOWERS and released_tower_names() == sorted([*RELEASED_FAMILY, name])
        assert released_tower_family(name) is TOY
        rel = released_tower_config(name, 36)
        assert (rel.family, rel.image_size, rel.image_mean, rel.source) == ("toy", 24, (0.1, 0.2, 0.3), "example/toy-24")  # fmt: skip
        torch.manual_seed(1)
        source = build_tower(rel).eval()
        _write_open_clip(tmp_path, "toy_trunk", source.model.state_dict())
        with pytest.raises(FileNotFoundError, match=r"example/toy-24"):
            resolve_tower(name, 36)
        cfg, path = resolve_tower(name, 36, tower_paths={name: tmp_path})
        assert cfg == rel and path == tmp_path
        x = torch.randn(2, 3, 24, 24)
        loaded = load_tower_weights(build_tower(cfg), path)
        assert torch.equal(loaded(x), source(x))  # 6 x 6 native grid, no interpolation

        # the same directory as a local tower: open_clip trunk name -> toy, R from the spec
        local = tower_config_from_dir(tmp_path, token_len=9)
        assert (local.family, local.image_size, local.arch) == ("toy", 24, {"model_name": "toy_trunk"})
        assert (local.image_mean, local.pad_fill) == (
            (0.25, 0.25, 0.25),
            (1, 2, 3),
        )  # processor mean, family fill

    assert "toy" not in TOWERS and name not in RELEASED_TOWERS and TOWERS.names() == BUILTIN
    with pytest.raises(ValueError, match=r"'toy_trunk' is not a supported tower"):
        tower_config_from_dir(tmp_path, token_len=9)


# ----------------------------------------------------------------------------- no family-specific code


def _family_values() -> set[str]:
    """Every family-specific string a spec declares: ids, released names, hub ids, model types."""
    values: set[str] = set()
    for spec in registry.families():
        values |= {spec.id, *spec.released, *spec.hf_model_types, *spec.hf_full_model_types}
        values |= {*spec.hf_full_model_types.values(), *spec.open_clip_models}
        values |= {r.source for r in spec.released.values()}
        values |= {str(t.arch.get("model_name")) for t in (*spec.released.values(), *spec.tiny.values())}
    return values - {"None"}


@pytest.mark.parametrize("module", [resolve, registry, family, base, config], ids=lambda m: m.__name__)
def test_generic_modules_name_no_family(module) -> None:
    tree = ast.parse(inspect.getsource(module))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }
    assert not strings & _family_values()
    # nothing is taken from a family module (registry imports them only so that they register)
    family_modules = {f"cambrian.models.vision.{f}" for f in BUILTIN}
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {
        f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }
    taken = imported & family_modules
    assert taken == (family_modules if module is registry else set())


# ----------------------------------------------------------------------------- imports

VISION_MODULES = sorted(
    ["cambrian.models.vision"]
    + [
        f"cambrian.models.vision.{p.stem}"
        for p in Path(resolve.__file__).parent.glob("*.py")
        if p.stem != "__init__"
    ]
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_each_vision_module_imports_first_without_a_cycle() -> None:
    # One fresh interpreter per module, that module imported first: no half-initialised module on the
    # way, not even through cambrian's Auto-class hook (it fires inside transformers' first Auto import).
    # The interpreters run side by side: each pays for torch / transformers / timm on its own.
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import {module}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in VISION_MODULES
    }
    failed = {}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or "partially initialized" in err or "could not register" in err:
            failed[module] = err[-2000:]
    assert not failed, failed


def test_tower_config_imports_without_torch_or_families() -> None:
    run = _python(
        "import sys\n"
        "import cambrian.models.vision\n"
        "from cambrian.models.vision.config import TowerConfig\n"
        "TowerConfig(family='clip', token_len=4, image_size=8)\n"
        "heavy = ['torch', 'timm', 'transformers', 'cambrian.models.vision.base', 'cambrian.models.vision.clip']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
