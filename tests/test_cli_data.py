"""`cambrian data validate`: exit codes 0/1/2, file:line: id: reason lines, --limit, --json, --images."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from cambrian.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMBRIAN_CACHE", str(tmp_path / "cache"))


def conv(*turns):
    return [{"from": f, "value": v} for f, v in turns]


@pytest.fixture
def files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), "green").save(images / "a.png")
    good = [
        {"id": "g1", "image": "a.png", "conversations": conv(("human", "<image>\nq"), ("gpt", "a"))},
        {"id": "g2", "conversations": conv(("human", "hi"), ("gpt", "hello"))},
    ]
    bad = [
        *good,
        {
            "id": "m1",
            "image": ["a.png", "a.png"],
            "conversations": conv(("human", "<image> [x]"), ("gpt", "a")),
        },
        {"id": "m2", "image": "lost.png", "conversations": conv(("human", "<image>"), ("gpt", "a"))},
    ]
    (tmp_path / "good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad) + '{"id": 5,\n')
    return tmp_path, images


def test_good_file_exits_0(files):
    tmp, images = files
    result = runner.invoke(app, ["data", "validate", str(tmp / "good.jsonl"), "--images", str(images)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "text-only rows" in result.output


def test_bad_rows_are_named_by_file_line_id_and_reason(files):
    tmp, images = files
    path = tmp / "bad.jsonl"
    out = tmp / "report.json"
    result = runner.invoke(
        app, ["data", "validate", str(path), "--images", str(images), "--json", str(out), "--workers", "1"]
    )
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert f"{path}:3: id=m1: 2 images but 1 <image> placeholder in the human turns" in lines
    assert f"{path}:4: id=m2: missing image 'lost.png' (looked under {images})" in lines
    assert any(line.startswith(f"{path}:5: id=?: bad JSON: Expecting") for line in lines)
    report = json.loads(out.read_text())
    assert report["n_bad"] == 3 and report["rows"] == 5 and [b["line"] for b in report["bad"]] == [3, 4, 5]

    limited = runner.invoke(app, ["data", "validate", str(path), "--images", str(images), "--limit", "1"])
    assert limited.exit_code == 1
    assert "... and 2 more bad rows" in limited.output and f"{path}:4:" not in limited.output

    unchecked = runner.invoke(app, ["data", "validate", str(path), "--no-check-images"])
    assert unchecked.exit_code == 1 and "lost.png" not in unchecked.output


def test_usage_errors_exit_2(files):
    tmp, _ = files
    missing = runner.invoke(app, ["data", "validate", str(tmp / "nope.jsonl")])
    assert missing.exit_code == 2 and f"data file {tmp / 'nope.jsonl'} does not exist" in missing.output
    no_dir = runner.invoke(app, ["data", "validate", str(tmp / "good.jsonl"), "--images", str(tmp / "none")])
    assert no_dir.exit_code == 2 and "image directory" in no_dir.output
    (tmp / "obj.json").write_text('{"id": 1}')
    not_array = runner.invoke(app, ["data", "validate", str(tmp / "obj.json")])
    assert not_array.exit_code == 2 and "name it .jsonl" in not_array.output
