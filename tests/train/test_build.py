"""Building the model to train: pretrained LLM weights from a local directory, clear errors for missing weights."""

from __future__ import annotations

import pytest
import torch

from cambrian import build_tiny
from cambrian.models.assembly import load_connector
from cambrian.train import resolve_config
from cambrian.train.trainer import build_model, param_groups, set_trainable


def test_llm_path_fills_the_language_model(tmp_path):
    donor, processor = build_tiny("tiny", seed=7)
    donor.language_model.save_pretrained(tmp_path / "llm")
    processor.tokenizer.save_pretrained(tmp_path / "llm")
    cfg = resolve_config(
        None, ["preset=tiny-stage1", "data.path=x.jsonl", f"model.llm_path={tmp_path / 'llm'}"]
    )
    torch.manual_seed(0)
    model, proc = build_model(cfg)
    for k, v in donor.language_model.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[k], v), k
    assert proc.image_token_id == model.config.image_token_id


def test_released_towers_without_local_weights_fail_clearly():
    cfg = resolve_config(None, ["preset=cambrian-8b-stage1", "data.path=x.jsonl"])
    with pytest.raises(ValueError, match=r"tower 0 \(timm/ViT-SO400M-14-SigLIP-384\) has no local weights"):
        with torch.device("meta"):
            build_model(cfg)


def test_connector_of_another_architecture_is_rejected(tmp_path):
    from safetensors.torch import save_file

    mlp, _ = build_tiny("tiny-mlp")
    save_file(
        {k: v.contiguous() for k, v in mlp.connector.state_dict().items()}, str(tmp_path / "c.safetensors")
    )
    model, _ = build_tiny("tiny")
    with pytest.raises(ValueError, match="does not match this model's connector"):
        load_connector(model, tmp_path / "c.safetensors")


def test_stage1_groups_and_learning_rates():
    cfg = resolve_config(
        None, ["preset=tiny-stage1", "data.path=x.jsonl", "optim.connector_lr=1e-3", "optim.sva_lr=1e-4"]
    )
    model, _ = build_tiny("tiny")
    trainable = set_trainable(model, cfg)
    assert trainable == {"towers": False, "connector": True, "sva": True, "llm": False}
    groups = {
        g["name"]: g
        for g in param_groups(model, {"llm": 1.0, "towers": 1.0, "connector": 1e-3, "sva": 1e-4}, 0.0)
    }
    assert set(groups) == {"connector", "connector/no_decay", "sva", "sva/no_decay"}
    sva_ids = {id(p) for g in ("sva", "sva/no_decay") for p in groups[g]["params"]}
    assert id(model.connector.vision_query) in sva_ids
    assert all(id(p) in sva_ids for p in model.connector.llm_layers.parameters())
    assert groups["sva"]["lr"] == 1e-4 and groups["connector"]["lr"] == 1e-3


def test_unfrozen_towers_get_gradients():
    cfg = resolve_config(None, ["preset=tiny-stage2", "data.path=x.jsonl", "model.freeze_towers=false"])
    model, proc = build_tiny("tiny")
    assert set_trainable(model, cfg)["towers"]
    from PIL import Image

    batch = proc(text=["<image>\nhi"], images=[Image.new("RGB", (40, 30), (9, 99, 199))])
    model(**batch).logits.sum().backward()
    for tower in model.vision_towers:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters()), tower.family
    assert all(t["frozen"] is False for t in model.config.vision_towers)
