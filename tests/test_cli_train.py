"""`cambrian train`: YAML config + overrides from the shell, resume, clear config errors."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from cambrian.cli import app
from cambrian.train.metrics import read_metrics
from tests.train.datagen import write_dataset

runner = CliRunner()


def test_train_from_yaml_with_overrides_then_resume(tmp_path):
    data = write_dataset(tmp_path / "d", n=8)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "preset": "tiny-stage2", "name": "cli", "output_dir": str(tmp_path / "runs"), "progress": False,
        "data": {"path": str(data), "template": "vicuna_v1", "system": ""},
    }))  # fmt: skip
    out = runner.invoke(app, ["train", str(cfg), "max_steps=2", "save_every=1", "optim.lr=2e-3"])
    assert out.exit_code == 0, out.output
    run = tmp_path / "runs" / "cli"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 2e-3 and saved["max_steps"] == 2 and saved["data"]["path"] == str(data)
    assert [m["step"] for m in read_metrics(run)] == [1, 2]
    again = runner.invoke(
        app, ["train", str(cfg), "max_steps=3", "save_every=1", "optim.lr=2e-3", "--resume"]
    )
    assert again.exit_code == 0, again.output
    assert [m["step"] for m in read_metrics(run)] == [1, 2, 3]


def test_bad_config_exits_2_naming_the_key(tmp_path):
    out = runner.invoke(app, ["train", "preset=tiny-stage2", "data.path=x.jsonl", "optim.lrr=1"])
    assert out.exit_code == 2
    assert "optim.lrr" in out.output and "warmup_ratio" in out.output
