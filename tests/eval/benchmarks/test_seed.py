"""SEED-Bench (image): snapshot loading with video rows skipped, the prompt, the first image of the list,
the records, X1 scoring and the per-dimension breakdown."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("seed")
SUFFIX = "Answer with the option's letter from the given choices directly."
FILE = "test-00000-of-00001.parquet"
# (question_id, question_type_id, frames, answer)
ROWS = [("101669", 1, 1, "A"), ("v1", 10, 3, "B"), ("200", 5, 1, "C"), ("300", 9, 1, "D")]


def _png(seed: int) -> bytes:
    return png((20 + seed, 30), (seed * 30 % 255, 60, 60))


def write_snapshot(root: Path) -> None:
    """lmms-lab/SEED-Bench layout: data/test-*.parquet; ``image`` is a list (several frames for video)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "answer": [r[3] for r in ROWS],
            "choice_a": [f"a{r[0]}" for r in ROWS],
            "choice_b": [f"b{r[0]}" for r in ROWS],
            "choice_c": [f"c{r[0]}" for r in ROWS],
            "choice_d": [f"d{r[0]}" for r in ROWS],
            "data_id": [f"{r[0]}.jpg" for r in ROWS],
            "data_type": ["image" if r[2] == 1 else "video" for r in ROWS],
            "question": [f"Question {r[0]}?" for r in ROWS],
            "question_id": [r[0] for r in ROWS],
            "question_type_id": [r[1] for r in ROWS],
            "image": [
                [{"bytes": _png(10 * i + f), "path": None} for f in range(r[2])] for i, r in enumerate(ROWS)
            ],
        },
        schema_overrides={"image": pl.List(pl.Struct({"bytes": pl.Binary, "path": pl.String}))},
    ).write_parquet(root / "data" / FILE)


def test_load_skips_video_rows(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["101669", "200", "300"]
    assert (
        items[0].prompt
        == f"Question 101669? Options:\nA. a101669\nB. b101669\nC. c101669\nD. d101669\n{SUFFIX}"
    )
    # question_id is the row's index in the whole split, the skipped video row included (as the original).
    assert [it.record for it in items] == [
        {"question_id": 0, "gt_answer": "A", "category": 1},
        {"question_id": 2, "gt_answer": "C", "category": 5},
        {"question_id": 3, "gt_answer": "D", "category": 9},
    ]
    assert items[1].images[0].open().size == (40, 30)  # the list's only image (seed 20)
    assert (BENCH.max_new_tokens, BENCH.expected_n) == (512, {"test": 14233})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("choice_c").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'choice_c'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("question_type_id", ["1", "10", "5", "9"])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 0: field 'question_type_id'"):
        BENCH.load(tmp_path, "test")
    frame.drop("image").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: field 'image'"):
        BENCH.load(tmp_path, "test")


def _records(rows):
    """(gt, category, output) -> our records."""
    return [
        {
            "question_id": i,
            "answer": out,
            "gt_answer": gt,
            "category": cat,
            "item_index": i,
            "item_key": str(i),
        }
        for i, (gt, cat, out) in enumerate(rows)
    ]


def test_x1_rule_and_dimensions():
    rows = [
        ("A", 1, "A"),
        ("A", 1, "(A) a dog"),
        ("B", 2, "The answer is B."),
        ("B", 2, "The answer is: B"),  # ":" (legacy pitfall)
        ("C", 3, "c."),
        ("C", 3, "Cat"),  # first character c: right by accident
        ("D", 9, "dog"),
        ("D", 9, ""),
    ]
    result = score_records(BENCH, _records(rows))
    assert (result["n"], result["correct"], result["headline"]) == (8, 6, 75.0)
    assert result["by_category"] == {
        "Instance Attribute": {"n": 2, "accuracy": 100.0},
        "Instance Identity": {"n": 2, "accuracy": 50.0},
        "Scene Understanding": {"n": 2, "accuracy": 100.0},
        "Text Recognition": {"n": 2, "accuracy": 50.0},
    }
    with pytest.raises(ScoreError, match="'category'"):
        score_records(BENCH, _records([("A", 10, "A")]))  # outside 1-9: the original crashes


def test_original_answers_file(tmp_path):
    # Exactly the fields seed_eval.py writes, no item_index.
    rows = [(0, "A", 1, "A"), (2, "C", 5, "B"), (3, "D", 9, "D.")]
    path = tmp_path / "seed_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": q, "answer": out, "gt_answer": gt, "prompt": "p", "category": cat,
                        "model_id": "m"}) + "\n"
            for q, gt, cat, out in rows
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["n"]) == ("original", 3)
    assert result["headline"] == pytest.approx(200 / 3)
