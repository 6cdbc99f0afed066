"""ChartQA: snapshot loading, the prompt, the records, relaxed accuracy (legacy and recommended)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("chartqa")
SUFFIX = "Answer the question using a single number or phrase."
# (type, question, answer)
ROWS = [
    ("human_test", "What is the highest value?", "25"),
    ("augmented_test", "Which year had the lowest sales?", "2019"),
    ("human_test", "Is the line increasing?", "Yes"),
    ("augmented_test", "What share is red?", "12%"),
]


def _png(seed: int) -> bytes:
    return png((24 + seed, 18), (seed * 50 % 255, 80, 140))


def write_snapshot(root: Path) -> None:
    """lmms-lab/ChartQA layout: data/test-00000-of-00001.parquet (type, question, answer, image struct)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "type": [r[0] for r in ROWS],
            "question": [r[1] for r in ROWS],
            "answer": [r[2] for r in ROWS],
            "image": [{"bytes": _png(i), "path": f"chart_{i}.png"} for i in range(len(ROWS))],
        }
    ).write_parquet(root / "data" / "test-00000-of-00001.parquet")


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["0", "1", "2", "3"]
    assert items[1].prompt == "Which year had the lowest sales?\n" + SUFFIX
    assert items[3].record == {"question_id": 3, "gt_answer": "12%", "category": "augmented_test"}
    assert items[2].images[0].open().size == (26, 18)
    assert all(it.generate for it in items)
    assert (BENCH.splits[0], BENCH.max_new_tokens, BENCH.expected_n) == ("test", 128, {"test": 2500})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / "test-00000-of-00001.parquet"
    frame = pl.read_parquet(path)
    frame.drop("question").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00000-of-00001\.parquet.*'question'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("answer", [1, 2, 3, 4])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00000-of-00001\.parquet: row 0: field 'answer'"):
        BENCH.load(tmp_path, "test")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        BENCH.load(tmp_path / "missing", "test")


# docs/eval-protocols.md s.7.3 (GT, prediction) rows; ChartQA column 1,0,1,1,1,1,0,1,1,0,0.
GOLDEN = [("25", "26"), ("25", "27"), ("100", "105"), ("100", "95"), ("40", "38"), ("0", "0.0"),
          ("0", "0.01"), ("-10", "-10.4"), ("Yes", "yes"), ("12%", "12"), ("1,000", "1000")]  # fmt: skip


def _records(pairs, categories=None):
    categories = categories or ["human_test"] * len(pairs)
    return [
        {
            "question_id": i,
            "answer": pred,
            "gt_answer": gt,
            "category": cat,
            "item_index": i,
            "item_key": str(i),
        }
        for i, ((gt, pred), cat) in enumerate(zip(pairs, categories))
    ]


def test_golden_relaxed_accuracy_legacy_and_recommended():
    legacy = score_records(BENCH, _records(GOLDEN))
    assert (legacy["headline"], legacy["n"], legacy["correct"]) == (pytest.approx(700 / 11), 11, 7)
    recommended = score_records(BENCH, _records(GOLDEN), "recommended")
    assert recommended["headline"] == pytest.approx(900 / 11)  # "12%" and "1,000" now match


def test_float_quirks_and_empty_outputs():
    pairs = [("12", "12.6"), ("1000", "1_000"), ("100", "1e2"), ("12", "١٢"), ("nan", "nan"), ("5", ""),
             ("5", "   "), ("yes", "")]  # fmt: skip
    result = score_records(BENCH, _records(pairs))
    assert result["correct"] == 4  # the first four; nan never passes; empty/whitespace outputs are wrong


def test_by_category_breakdown():
    result = score_records(BENCH, _records(GOLDEN[:4], ["human_test", "augmented_test"] * 2))
    assert result["by_category"] == {
        "augmented_test": {"n": 2, "accuracy": 50.0},
        "human_test": {"n": 2, "accuracy": 100.0},
    }


def test_original_answers_file(tmp_path):
    # Exactly the fields chartqa_eval.py writes, in its order, no item_index.
    rows = [("25", "26", "human_test"), ("100", "95", "augmented_test"), ("12%", "12", "human_test"),
            ("Yes", "No", "augmented_test")]  # fmt: skip
    path = tmp_path / "chartqa_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "prompt": "p", "answer": pred, "gt_answer": gt, "category": cat,
                        "model_id": "cambrian-8b"}) + "\n"
            for i, (gt, pred, cat) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 4)
    assert score_file(BENCH, path, "recommended")["headline"] == 75.0
