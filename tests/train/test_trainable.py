"""What each stage trains (``CambrianForCausalLM.set_trainable``) and the optimizer groups over it
(``param_groups``), pinned by parameter name on tiny models."""

from __future__ import annotations

import pytest

from cambrian import build_tiny
from cambrian.train import resolve_config
from cambrian.train.setup import group_lrs, set_trainable

SVA_PREFIXES = ("connector.samplers.", "connector.llm_layers.")


def _part(name: str) -> str:
    """The part of a parameter, by name: the rule the trainer used before the model owned it."""
    if name.startswith("vision_towers."):
        return "towers"
    if name.startswith(SVA_PREFIXES) or name == "connector.vision_query":
        return "sva"
    return "connector" if name.startswith("connector.") else "llm"


# (stage, freeze_* keyword arguments) -> the parts that train
CASES = [
    (1, {}, {"connector", "sva"}),
    (2, {}, {"connector", "sva", "llm"}),
    (1, {"freeze_llm": False}, {"connector", "sva", "llm"}),
    (2, {"freeze_llm": True}, {"connector", "sva"}),
    (2, {"freeze_towers": False}, {"towers", "connector", "sva", "llm"}),
    (2, {"freeze_connector": True}, {"llm"}),
    (1, {"freeze_towers": False, "freeze_connector": True}, {"towers"}),
]


@pytest.mark.parametrize("preset", ["tiny", "tiny-mlp"])
@pytest.mark.parametrize(("stage", "kwargs", "parts"), CASES)
def test_set_trainable_pins_the_parameters_of_each_stage(preset, stage, kwargs, parts):
    model, _ = build_tiny(preset)
    trainable = model.set_trainable(stage, **kwargs)
    assert {p for p, t in trainable.items() if t} == parts
    names = dict(model.named_parameters())
    assert {n for n, p in names.items() if p.requires_grad} == {n for n in names if _part(n) in parts}
    assert {(part, name) for part, name, _ in model.named_parameters_by_part()} == {
        (_part(n), n) for n in names
    }
    frozen = "towers" not in parts
    assert all(t.cfg.frozen is frozen for t in model.vision_towers)
    assert all(t["frozen"] is frozen for t in model.config.vision_towers)


def test_sva_part_is_the_sva_layers_and_queries():
    model, _ = build_tiny("tiny")
    sva = {n for part, n, _ in model.named_parameters_by_part() if part == "sva"}
    assert "connector.vision_query" in sva
    assert any(n.startswith("connector.samplers.") for n in sva)
    assert any(n.startswith("connector.llm_layers.") for n in sva)
    mlp, _ = build_tiny("tiny-mlp")
    assert not any(part == "sva" for part, _, _ in mlp.named_parameters_by_part())


@pytest.mark.parametrize("preset", ["tiny", "tiny-mlp"])
@pytest.mark.parametrize(("stage", "kwargs", "parts"), CASES)
def test_param_groups_partition_the_trainable_parameters(preset, stage, kwargs, parts):
    model, _ = build_tiny(preset)
    model.set_trainable(stage, **kwargs)
    lrs = {"llm": 1e-5, "towers": 2e-5, "connector": 3e-4, "sva": 4e-4}
    groups = model.param_groups(lrs, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))  # disjoint
    assert set(grouped) == {id(p) for p in model.parameters() if p.requires_grad}  # covering
    assert len({g["name"] for g in groups}) == len(groups)
    for g in groups:
        part, _, no_decay = g["name"].partition("/")
        assert part in parts and g["lr"] == lrs[part]
        assert g["weight_decay"] == (0.0 if no_decay else 0.1)
        for p in g["params"]:
            assert _part(names[id(p)]) == part
            assert (p.ndim < 2) == bool(no_decay), names[id(p)]  # biases, norms, 1-D: no decay


def test_unknown_stage_is_refused():
    model, _ = build_tiny("tiny")
    with pytest.raises(ValueError, match="stage: 3 is not one of 1"):
        model.set_trainable(3)


@pytest.mark.parametrize(
    "overrides",
    [
        ["preset=tiny-stage1"],
        ["preset=tiny-stage2", "model.freeze_towers=false", "optim.tower_lr=1e-5"],
        ["preset=tiny-stage1", "model.freeze_llm=false", "optim.sva_lr=2e-4"],
    ],
)
def test_config_reaches_the_model_unchanged(overrides):
    cfg = resolve_config(None, [*overrides, "data.path=x.jsonl"])
    a, _ = build_tiny("tiny")
    b, _ = build_tiny("tiny")
    m = cfg.model
    trainable = set_trainable(a, cfg)
    assert trainable == b.set_trainable(
        cfg.stage, freeze_towers=m.freeze_towers, freeze_llm=m.freeze_llm, freeze_connector=m.freeze_connector
    )
    assert trainable["llm"] is not cfg.llm_frozen  # the config's own reading of its stage agrees
    assert [n for n, p in a.named_parameters() if p.requires_grad] == [
        n for n, p in b.named_parameters() if p.requires_grad
    ]
    lrs = group_lrs(cfg, 2.0)
    assert set(lrs) == set(cfg.lr_keys())  # every part's lr has its config key
