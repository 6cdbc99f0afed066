"""Training configs: presets, YAML, overrides, typed errors, batch plan and learning-rate scaling."""

from __future__ import annotations

import math

import pytest

from cambrian.train.config import TRAIN_PRESETS, TrainConfig, resolve_config
from cambrian.utils.config import ConfigError, from_dict, parse_override, to_dict


def test_released_presets_hold_the_published_recipes():
    s1 = resolve_config(None, ["preset=cambrian-8b-stage1", "data.path=x.jsonl"])
    assert (s1.stage, s1.global_batch, s1.optim.lr, s1.optim.sva_lr, s1.optim.warmup_ratio) == (
        1,
        512,
        1e-3,
        1e-4,
        0.06,
    )
    assert s1.llm_frozen and s1.model.freeze_towers
    s2 = resolve_config(None, ["preset=cambrian-34b-stage2", "data.path=x.jsonl"])
    assert (s2.stage, s2.global_batch, s2.optim.lr, s2.optim.warmup_ratio) == (2, 1024, 2e-5, 0.03)
    assert not s2.llm_frozen and s2.data.group_by_modality_length
    assert {"tiny-stage1", "tiny-stage2", "cambrian-13b-stage2"} <= set(TRAIN_PRESETS.names())


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny-stage2\ndata:\n  path: d.jsonl\noptim:\n  lr: 1e-3\nper_device_batch: 2\n")
    cfg = resolve_config(path, ["optim.lr=5e-4", "data.image_root=null", "name=abc"])
    assert cfg.optim.lr == 5e-4 and cfg.per_device_batch == 2 and cfg.name == "abc"
    assert cfg.data.path == "d.jsonl" and cfg.data.image_root is None
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg  # what the run directory saves reloads identically


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key optim.lrr; valid keys of optim: "),
        ("precision=fp16", "precision: 'fp16' is not one of 'auto', 'bf16', 'fp32'"),
        ("per_device_batch=two", "per_device_batch: expected an integer"),
        ("stage=3", "stage: 3 is not one of 1, 2"),
        ("preset=nope", "nope"),
    ],
)
def test_bad_config_names_key_and_choices(override, message):
    with pytest.raises((ConfigError, KeyError)) as err:
        resolve_config(None, ["data.path=x.jsonl", override])
    assert message in str(err.value)


def test_override_syntax():
    assert parse_override("a.b=[1, 2]") == {"a": {"b": [1, 2]}}
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_override("novalue")


def test_batch_plan_and_sqrt_lr_scaling():
    cfg = resolve_config(
        None, ["preset=cambrian-8b-stage2", "data.path=x", "per_device_batch=4", "global_batch=128"]
    )
    assert cfg.batch_plan(world_size=8) == (4, 128)
    assert math.isclose(cfg.lr_scale(128), math.sqrt(128 / 512))
    with pytest.raises(ConfigError, match="not a multiple"):
        cfg.batch_plan(world_size=3)


def test_shipped_example_configs_resolve():
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = resolve_config(path)
        assert cfg.name == path.stem
