"""Checks before a run starts: missing/empty inputs and unknown ids name their key; a run directory holding
a run is refused; --overwrite clears only what a run wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from cambrian.train import resolve_config
from cambrian.train.preflight import check_run_dir, clear_run, holds_a_run
from cambrian.train.trainer import train
from cambrian.utils.config import ConfigError
from tests.train.datagen import write_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"), n=8)


def _bad(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "not_a_model").mkdir()
    return {
        "missing data": ([f"data.path={tmp_path / 'nope.jsonl'}"], "data.path: .*nope.jsonl does not exist"),
        "data dir": ([f"data.path={tmp_path}"], "data.path: .* is a directory, not a .json or .jsonl"),
        "empty data": ([f"data.path={tmp_path / 'empty.jsonl'}"], r"data.path: .*empty.jsonl is empty"),
        "template": (
            ["data.template=vicuna"],
            "data.template: unknown conversation template 'vicuna'; .*vicuna_v1",
        ),
        "model preset": (["model.preset=tinyy"], "model.preset: unknown model preset 'tinyy'; .*tiny-qwen2"),
        "tower dir": (
            [f"model.tower_paths=[{tmp_path / 'gone'}]"],
            r"tower_paths\[0\]: .*gone is not a directory",
        ),
        "released tower": (
            ["model.preset=cambrian-8b"],
            r"tower_paths\[0\]: tower 0 \(timm/.*\) has no local weights",
        ),
        "model path": (
            [f"model.path={tmp_path / 'not_a_model'}"],
            "model.path: .*not_a_model has no config.json",
        ),
        "connector": ([f"model.connector_path={tmp_path / 'c'}"], "model.connector_path: .*c does not exist"),
        "image root": (
            [f"data.image_root={tmp_path / 'imgs'}"],
            "data.image_root: .*imgs is not a directory",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["missing data", "data dir", "empty data", "template", "model preset", "tower dir", "released tower",
     "model path", "connector", "image root"],
)  # fmt: skip
def test_bad_inputs_fail_before_anything_is_built_or_written(tmp_path, data, case):
    overrides, message = _bad(tmp_path)[case]
    cfg = resolve_config(
        None, ["preset=tiny-stage2", f"data.path={data}", f"output_dir={tmp_path / 'runs'}", *overrides]
    )
    with pytest.raises(ValueError, match=message):
        train(cfg)
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_is_recognised_and_overwrite_clears_only_run_outputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not holds_a_run(run)  # an empty directory (a run that failed before writing) is free
    check_run_dir(run, resume=False, overwrite=False)
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "step-00000007").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "skipped.rank1.jsonl").write_text("")
    assert holds_a_run(run)
    with pytest.raises(
        ConfigError, match=r"already holds a run \(an earlier run's files\).*--resume.*--overwrite"
    ):
        check_run_dir(run, resume=False, overwrite=False)
    check_run_dir(run, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match="contradict"):
        check_run_dir(run, resume=True, overwrite=True)
    removed = clear_run(run)
    assert sorted(p.name for p in removed) == ["checkpoints", "metrics.jsonl", "skipped.rank1.jsonl"]
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and not holds_a_run(run)
