"""`cambrian quickstart`: QuickstartConfig key=value overrides from the shell, saved into the run; clear errors."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from cambrian.cli import app

runner = CliRunner()


def test_overrides_reach_the_run_and_are_saved(tmp_path):
    out = tmp_path / "qs"
    args = ["quickstart", "train_scenes=40", "test_items=8", "curve_items=4", "curve_points=2", "batch=4",
            "scene.max_objects=3", "--minutes", "0.05", "--seed", "3", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "quickstart.yaml").read_text())
    assert (saved["train_scenes"], saved["batch"], saved["seed"], saved["minutes"]) == (40, 4, 3, 0.05)
    assert saved["scene"] == {"max_objects": 3}
    assert (out / "metrics.json").is_file() and "cambrian chat" in result.output


def test_bad_keys_exit_2_naming_the_valid_ones(tmp_path):
    bad = runner.invoke(app, ["quickstart", "bogus=1", "--out", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "unknown config key bogus" in bad.output and "train_scenes" in bad.output
    bad = runner.invoke(app, ["quickstart", "scene.colour=1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "unknown scene key(s) colour" in bad.output and "max_objects" in bad.output
    bad = runner.invoke(app, ["quickstart", "scene.caption_order=depth", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "caption_order must be 'kind' or 'raster'" in bad.output
    bad = runner.invoke(app, ["quickstart", "train_scenes", "--out", str(tmp_path / "d")])
    assert bad.exit_code == 2 and "is not of the form key.sub=value" in bad.output
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_a_non_positive_budget_or_bad_value_is_refused_naming_it(tmp_path):
    for minutes in ("-1", "0", "nan"):
        bad = runner.invoke(app, ["quickstart", "--minutes", minutes, "--out", str(tmp_path / "m")])
        assert bad.exit_code == 2 and "minutes (--minutes): must be a finite number > 0" in bad.output, (
            bad.output
        )
    bad = runner.invoke(app, ["quickstart", "batch=0", "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "batch: must be >= 1, got 0" in bad.output
    bad = runner.invoke(app, ["quickstart", "towers=[clip, vit]", "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "towers: ['clip', 'vit'] must be one or more of siglip, clip" in bad.output
    bad = runner.invoke(app, ["quickstart", "--seed", "-1", "--out", str(tmp_path / "m")])
    assert bad.exit_code == 2 and "seed (--seed): must be >= 0, got -1" in bad.output
    assert not (tmp_path / "m").exists()
