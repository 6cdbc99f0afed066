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

    # A new run into the same directory: refused in one line, unless --overwrite (or --resume).
    fresh = runner.invoke(app, ["train", str(cfg), "max_steps=1"])
    assert fresh.exit_code == 2 and fresh.output.count("\n") == 1, fresh.output
    assert (
        f"error: run directory {run} already holds a run (checkpoints up to step 3); pass --resume"
        in fresh.output
    )
    assert "--overwrite" in fresh.output and [m["step"] for m in read_metrics(run)] == [1, 2, 3]
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text())
    moved = runner.invoke(app, ["train", str(cfg), f"data.path={other}", "max_steps=4", "--resume"])
    assert moved.exit_code == 2 and moved.output.count("\n") == 1, moved.output
    assert f"trained on {data}, not {other}; resuming needs the same data" in moved.output
    over = runner.invoke(app, ["train", str(cfg), "max_steps=1", "--overwrite"])
    assert over.exit_code == 0, over.output
    assert [m["step"] for m in read_metrics(run)] == [1] and sorted(
        p.name for p in (run / "checkpoints").iterdir()
    ) == ["step-00000001"]


def test_bad_config_exits_2_naming_the_key(tmp_path):
    out = runner.invoke(app, ["train", "preset=tiny-stage2", "data.path=x.jsonl", "optim.lrr=1"])
    assert out.exit_code == 2
    assert "optim.lrr" in out.output and "warmup_ratio" in out.output


def _one_line_error(args: list[str]) -> str:
    out = runner.invoke(app, ["train", *args])
    assert out.exit_code == 2 and out.output.startswith("error: ") and out.output.count("\n") == 1, out.output
    return out.output


def test_bad_input_is_one_line_naming_the_key_and_choices(tmp_path):
    data = write_dataset(tmp_path / "d", n=8)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.json").write_text('[{"id": 1},\n')
    base = ["preset=tiny-stage2", f"output_dir={tmp_path / 'runs'}", "progress=false"]
    msg = _one_line_error([*base, f"data.path={tmp_path / 'nope.jsonl'}"])
    assert f"data.path: {tmp_path / 'nope.jsonl'} does not exist" in msg
    assert f"data.path: {tmp_path / 'empty.jsonl'} is empty" in _one_line_error(
        [*base, f"data.path={tmp_path / 'empty.jsonl'}"]
    )
    msg = _one_line_error([f"data.path={data}", "preset=tiny-stage3"])
    assert "unknown training preset 'tiny-stage3'" in msg and "tiny-stage2" in msg
    msg = _one_line_error([*base, f"data.path={data}", "data.template=vicuna"])
    assert "data.template: unknown conversation template 'vicuna'" in msg and "vicuna_v1" in msg
    msg = _one_line_error([*base, f"data.path={data}", f"model.tower_paths=[{tmp_path / 'tower'}]"])
    assert f"model.tower_paths[0]: {tmp_path / 'tower'} is not a directory" in msg
    assert "max_steps: must be >= 1 (or null), got 0" in _one_line_error(
        [*base, f"data.path={data}", "max_steps=0"]
    )
    assert "optim.lr: must be a finite number >= 0, got -1.0" in _one_line_error(
        [*base, f"data.path={data}", "optim.lr=-1"]
    )
    assert "per_device_batch: must be >= 1" in _one_line_error(
        [*base, f"data.path={data}", "per_device_batch=0"]
    )
    assert "config file nope.yaml does not exist" in _one_line_error(["nope.yaml", f"data.path={data}"])
    assert not (tmp_path / "runs").exists()  # all refused before anything was built or written
    # Garbage is found when the data is indexed (after the model is built): still one line with file:line.
    msg = _one_line_error([*base, f"data.path={tmp_path / 'bad.json'}"])
    assert f"{tmp_path / 'bad.json'}:2: unexpected end of file" in msg


def test_overrides_work_without_a_config_file(tmp_path):
    # The first argument is an override even when its value has a suffix (data.path=x.jsonl).
    data = write_dataset(tmp_path / "d", n=8)
    args = [f"data.path={data}", "preset=tiny-stage2", "data.template=vicuna_v1", "data.system=",
            f"output_dir={tmp_path}", "name=o", "max_steps=1", "progress=false"]  # fmt: skip
    out = runner.invoke(app, ["train", *args])
    assert out.exit_code == 0, out.output
    saved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert saved["data"]["path"] == str(data) and saved["max_steps"] == 1
