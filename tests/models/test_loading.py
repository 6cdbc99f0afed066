"""``load_model``: a model directory or, only when asked, a preset id; everything else a one-line
``ModelLoadError`` worded for its caller (Python arguments by default, CLI options with ``CLI_HINTS``)."""

from __future__ import annotations

import json

import pytest
import torch

from cambrian import build_tiny
from cambrian.models.loading import (
    CLI_HINTS,
    ModelLoadError,
    load_model,
    looks_like_path,
    tower_names,
)
from cambrian.models.vision import RELEASED_TOWERS

TOWER = "openai/clip-vit-large-patch14-336"


def test_a_saved_directory_loads_and_a_preset_only_with_random_ok(tmp_path):
    model, proc = build_tiny("tiny", seed=0)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    loaded, _ = load_model(str(tmp_path / "m"))
    assert not loaded.training
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ModelLoadError) as err:
        load_model("tiny")
    assert str(err.value) == (
        "tiny is a preset with random weights; pass random_ok=True to build it, or give a model directory"
    )
    assert isinstance(err.value, ValueError)  # callers catching ValueError keep working
    with pytest.raises(ModelLoadError, match="pass --random to build it"):
        load_model("cambrian-8b", hints=CLI_HINTS)  # refused before any of its 8B weights exist
    built, _ = load_model("tiny", random_ok=True, dtype="bfloat16")
    assert next(built.parameters()).dtype == torch.bfloat16


def test_local_directory_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    model, proc = build_tiny("tiny", seed=1)
    model.save_pretrained(tmp_path / "tiny")
    proc.save_pretrained(tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    loaded, _ = load_model("tiny")  # the directory ./tiny, no random_ok needed
    assert torch.equal(next(iter(loaded.state_dict().values())), next(iter(model.state_dict().values())))


@pytest.mark.parametrize(
    "name, is_path",
    [
        ("./runs/mdoel", True),
        ("/abs/model", True),
        ("~/model", True),
        ("runs/x/final", True),
        ("model.safetensors", True),
        ("C:\\models\\x", True),
        ("org/name", False),
        ("cambrian-8b", False),
        ("Phi-3.5-mini", False),
    ],
)
def test_looks_like_path(name, is_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_path(name) is is_path


def test_dir_slash_name_is_a_path_when_dir_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_like_path("runs/mdoel")
    (tmp_path / "runs").mkdir()
    assert looks_like_path("runs/mdoel")
    with pytest.raises(ModelLoadError, match=r"^no such directory: runs/mdoel$"):
        load_model("runs/mdoel")


def test_hub_id_without_downloads_names_the_option():
    with pytest.raises(ModelLoadError, match=r"pass allow_download=True to fetch it as a hub id$"):
        load_model("org/name")
    with pytest.raises(ModelLoadError, match=r"pass --allow-download to fetch it as a hub id$"):
        load_model("org/name", hints=CLI_HINTS)


def _released(path, towers=(TOWER,)):
    path.mkdir()
    cfg = {"mm_vision_tower_aux_list": list(towers), "mm_vision_tower_aux_token_len_list": [576] * len(towers),
           "image_token_len": 576, "mm_projector_type": "sva", "model_type": "llava_llama"}  # fmt: skip
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_released_layout_tower_checks(tmp_path):
    d = _released(tmp_path / "rel")
    assert tower_names(d) == [TOWER]
    assert tower_names(tmp_path / "nothing") == sorted(RELEASED_TOWERS)
    with pytest.raises(ModelLoadError) as err:
        load_model(str(d))
    assert str(err.value) == (
        f"{d}: vision tower {TOWER!r} has no weights in the checkpoint; pass tower_paths={{{TOWER!r}: DIR}} "
        f"(a local copy of {TOWER}) or allow_download=True"
    )
    with pytest.raises(ModelLoadError, match=f"has no such tower; valid: {TOWER}$"):
        load_model(str(d), {"clip": str(tmp_path)})
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(str(d), {TOWER: str(tmp_path / "nope")})
    # Towers given: the (empty) weight file is what fails now, still in one line naming the directory.
    with pytest.raises(ModelLoadError, match=f"^{d}: cannot load the model: "):
        load_model(str(d), {TOWER: str(tmp_path)})


def test_long_loader_messages_are_cut_to_one_line(tmp_path):
    model, proc = build_tiny("tiny", seed=0)
    model.save_pretrained(tmp_path / "m")
    proc.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["text_config"]["model_type"] = "no-such-llm"  # transformers lists every model type it knows
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "m"))
    text = str(err.value)
    assert "\n" not in text and len(text) < 400 and text.endswith("...") and "no-such-llm" in text
