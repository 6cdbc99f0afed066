"""`cambrian eval report`: the paper's Table 4 layout, averages (MME-P / 20), published rows, files."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cambrian.cli import app
from cambrian.eval.benchmark import CATEGORIES
from cambrian.eval.report import PUBLISHED, PUBLISHED_COLUMNS, published_row, run_row

COLUMN_BENCH = {c.label: (c.benchmark, c.key) for cols in CATEGORIES.values() for c in cols}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_averages_reproduce_table_4(name):
    row = published_row(name)
    for cat, printed in row.printed_averages.items():
        assert row.averages[cat] == pytest.approx(printed, abs=0.1), cat


def test_cambrian_8b_worked_example():
    row = published_row("cambrian-8b")  # docs/eval-protocols.md 7.12
    assert row.averages["General"] == pytest.approx((1547.1 / 20 + 75.9 + 74.7 + 64.6) / 4)
    assert row.averages["Knowledge"] == pytest.approx(61.275)
    assert row.overall == pytest.approx(67.67, abs=0.005)


def _write_run(run, scores):
    """score.json files shaped as the runner writes them, one per benchmark."""
    for bench, score in scores.items():
        (run / bench).mkdir(parents=True, exist_ok=True)
        (run / bench / "score.json").write_text(json.dumps({"benchmark": bench, **score}))


def test_run_rows_reproduce_published_averages_and_cli(tmp_path):
    # A run whose per-benchmark headlines are Cambrian-1-8B's published numbers gives its averages.
    values = dict(zip(PUBLISHED_COLUMNS, PUBLISHED["cambrian-8b"]["scores"]))
    scores: dict[str, dict] = {}
    for label, value in values.items():
        bench, key = COLUMN_BENCH[label]
        scores.setdefault(bench, {"headline": 0.0, "n": 1})[key] = value
    scores["pope"] = {"headline": 87.0, "n": 9000}
    _write_run(tmp_path / "run8b", scores)
    row = run_row(tmp_path / "run8b")
    for cat, printed in PUBLISHED["cambrian-8b"]["averages"].items():
        assert row.averages[cat] == pytest.approx(printed, abs=0.1)
    assert row.extras == {"pope": 87.0}

    # A partial run: CV-Bench from the original's ade/coco/omni parts; incomplete categories stay empty.
    _write_run(tmp_path / "partial", {"ade": {"headline": 60.0}, "coco": {"headline": 70.0},
                                      "omni": {"headline": 50.0}, "mmvp": {"headline": 40.0},
                                      "realworldqa": {"headline": 55.0}})  # fmt: skip
    part = run_row(tmp_path / "partial")
    assert part.values["CV-Bench-2D"] == 65.0 and part.values["CV-Bench-3D"] == 50.0
    assert part.averages["Vision-Centric"] == pytest.approx((40 + 55 + 65 + 50) / 4)
    assert part.averages["General"] is None and part.overall is None

    res = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "run8b"), str(tmp_path / "partial"),
                                   "--published", "cambrian-8b", "--out", str(tmp_path / "rep")])  # fmt: skip
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Model | General avg | MME-P | MMB |" in md and "Cambrian-1-8B" in md and "| pope |" in md
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["label"] for r in doc["rows"]][-1] == "Cambrian-1-8B"
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"

    bad = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "nope" in bad.output
    bad = CliRunner().invoke(app, ["eval", "report", str(tmp_path / "run8b"), "--published", "cambrian-9b"])
    assert bad.exit_code == 2 and "cambrian-8b" in bad.output
