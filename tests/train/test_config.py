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


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["max_steps=0"], "max_steps: must be >= 1 (or null), got 0"),
        (["max_steps=-3"], "max_steps: must be >= 1 (or null), got -3"),
        (["optim.lr=-1"], "optim.lr: must be a finite number >= 0, got -1.0"),
        (["optim.lr=.nan"], "optim.lr: must be a finite number >= 0, got nan"),
        (["optim.lr=0"], "optim.lr: 0 leaves the trainable llm parameters unchanged"),
        (["optim.connector_lr=0"], "optim.connector_lr: 0 leaves the trainable connector parameters"),
        (["optim.sva_lr=-1e-4"], "optim.sva_lr: must be a finite number >= 0, got -0.0001"),
        (["model.freeze_towers=false", "optim.tower_lr=0"], "optim.tower_lr: 0 leaves the trainable towers"),
        (["per_device_batch=0"], "per_device_batch: must be >= 1, got 0"),
        (["per_device_batch=-4"], "per_device_batch: must be >= 1, got -4"),
        (["global_batch=0"], "global_batch: must be >= 1 (or null), got 0"),
        (["grad_accum=0"], "grad_accum: must be >= 1, got 0"),
        (["epochs=0"], "epochs: must be a finite number > 0, got 0.0"),
        (["seed=-1"], "seed: must be >= 0, got -1"),
        (["keep_last=0"], "keep_last: must be >= 1, got 0"),
        (["save_every=-1"], "save_every: must be >= 0 (0: save only at the end), got -1"),
        (["name="], "name: '' is not a run name"),
        (["data.max_length=0"], "data.max_length: must be >= 1 (or null), got 0"),
        (["data.num_workers=-1"], "data.num_workers: must be >= 0, got -1"),
        (["optim.warmup_ratio=1.0"], "optim.warmup_ratio: must be in [0, 1), got 1.0"),
        (["optim.eps=0"], "optim.eps: must be a finite number > 0, got 0.0"),
        (["optim.weight_decay=-0.1"], "optim.weight_decay: must be >= 0, got -0.1"),
        (["optim.betas=[0.9, 1.0]"], "optim.betas[1]: must be in [0, 1), got 1.0"),
        (["optim.min_lr_ratio=2"], "optim.min_lr_ratio: must be in [0, 1], got 2.0"),
        (
            ["optim.max_grad_norm=0"],
            "optim.max_grad_norm: must be a finite number > 0 (or null: no clipping)",
        ),
        (["optim.base_global_batch=0"], "optim.base_global_batch: must be >= 1 (or null), got 0"),
    ],
)
def test_bad_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, ["preset=tiny-stage2", "data.path=x.jsonl", *overrides])
    assert message in str(err.value)


def test_python_built_configs_are_checked_by_the_same_validate():
    cfg = TrainConfig(max_steps=0)
    cfg.data.path = "x.jsonl"
    with pytest.raises(ConfigError, match=r"max_steps: must be >= 1"):
        cfg.validate()


def test_a_zero_learning_rate_is_fine_for_frozen_groups():
    # Stage 1 freezes the LLM: optim.lr feeds no trainable group once connector_lr is set.
    cfg = resolve_config(None, ["preset=tiny-stage1", "data.path=x.jsonl", "optim.lr=0"])
    assert cfg.optim.lr == 0 and cfg.lr_keys()["connector"] == "optim.connector_lr"
    with pytest.raises(ConfigError, match=r"optim\.lr: 0 leaves the trainable connector"):
        resolve_config(
            None, ["preset=tiny-stage1", "data.path=x.jsonl", "optim.lr=0", "optim.connector_lr=null"]
        )
