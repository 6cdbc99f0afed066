"""ScienceQA (SQA-I): snapshot loading, hint + question + choices, text-only rows not generated, the
legacy rule (docs/eval-protocols.md s.7.11) and the headline over rows with a truthy ``type``."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("scienceqa")
SUFFIX = "Please answer directly with only the letter of the correct option and nothing else."
FILE = "test-00000-of-00001-f0e719df791966ff.parquet"
# (has image, hint, question, choices, answer index, grade)
ROWS = [
    (True, "The diagram shows the sky.", "Which object is hot?", ["The moon", "The sun"], 1, "grade3"),
    (False, "", "Which word is a noun?", ["run", "table", "quickly"], 1, "grade2"),
    (True, "", "What is shown?", ["a map", "a chart", "a photo"], 0, "grade3"),
    (True, "", "Is it raining?", ["yes", "no"], 1, "grade5"),
]


def _png(seed: int) -> bytes:
    return png((26 + seed, 26), (seed * 90 % 255, 10, 90))


def write_snapshot(root: Path) -> None:
    """derek-thomas/ScienceQA layout: data/test-*.parquet; image null for text-only questions."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    n = len(ROWS)
    pl.DataFrame(
        {
            "image": [{"bytes": _png(i), "path": None} if r[0] else None for i, r in enumerate(ROWS)],
            "question": [r[2] for r in ROWS],
            "choices": [r[3] for r in ROWS],
            "answer": [r[4] for r in ROWS],
            "hint": [r[1] for r in ROWS],
            "task": ["closed choice"] * n,
            "grade": [r[5] for r in ROWS],
            "subject": ["natural science"] * n,
            "topic": ["physics"] * n,
            "category": ["Heat"] * n,
            "skill": ["x"] * n,
            "lecture": [""] * n,
            "solution": [""] * n,
        },
        schema_overrides={"answer": pl.Int8, "image": pl.Struct({"bytes": pl.Binary, "path": pl.String})},
    ).write_parquet(root / "data" / FILE)


def test_load_prompts_records_generate_flags(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["0", "1", "2", "3"]
    assert (
        items[0].prompt
        == f"The diagram shows the sky. Which object is hot?\nA. The moon\nB. The sun\n{SUFFIX}"
    )
    assert items[2].prompt == f"What is shown?\nA. a map\nB. a chart\nC. a photo\n{SUFFIX}"  # no hint
    assert items[0].record == {"question_id": 0, "gt_answer": "B", "has_img": True, "text_answer": "The sun",
                               "type": True, "category": "grade3"}  # fmt: skip
    assert items[1].record["type"] is False and items[1].record["has_img"] is False
    assert [it.generate for it in items] == [True, False, True, True]
    assert items[1].images == [] and items[0].images[0].open().size == (26, 26)
    assert (BENCH.headline_name, BENCH.max_new_tokens, BENCH.expected_n) == (
        "multimodal_acc",
        512,
        {"test": 4241},
    )


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("hint").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'hint'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("answer", [1, 1, 5, 1])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 2: field 'answer'"):
        BENCH.load(tmp_path, "test")


def _record(i, out, gt="B", text="The sun", type_=True, grade="grade3"):
    return {"question_id": i, "answer": out, "gt_answer": gt, "has_img": type_, "text_answer": text,
            "type": type_, "category": grade, "item_index": i, "item_key": str(i)}  # fmt: skip


# docs/eval-protocols.md s.7.11: GT letter B, GT text "The sun".
GOLDEN = [("B", True), ("B. The sun", True), ("The sun.", True), ("The answer is B.", True),
          ("the sun!", True), ("(B)", False), ("b) the sun", False), ("", False), ("  ", False)]  # fmt: skip


def test_golden_examples():
    records = [_record(i, out) for i, (out, _) in enumerate(GOLDEN)]
    assert [BENCH.correct(r, "legacy") for r in records] == [ok for _, ok in GOLDEN]
    result = score_records(BENCH, records)
    assert (result["n"], result["correct"]) == (9, 5)
    assert result["headline"] == pytest.approx(500 / 9)
    assert score_records(BENCH, records, "recommended")["headline"] == result["headline"]


def test_headline_and_n_over_truthy_type_only():
    records = [
        _record(0, "B"),
        _record(1, "", type_=False),  # a text-only row: not counted (the original writes answer "")
        _record(2, "A", type_=False, gt="A", text="x"),  # correct, but not counted either
        _record(3, "A", grade="grade5"),
    ]
    result = score_records(BENCH, records)
    assert (result["headline"], result["n"]) == (50.0, 2)
    assert result["by_category"] == {
        "grade3": {"n": 1, "accuracy": 100.0},
        "grade5": {"n": 1, "accuracy": 0.0},
    }


def test_original_answers_file(tmp_path):
    # Exactly the fields scienceqa_eval.py writes, in its order, no item_index; text-only rows with "".
    rows = [("B", "The sun", True, "grade3", "B"), ("B", "table", False, "grade2", ""),
            ("A", "a map", True, "grade3", "a map."), ("B", "no", True, "grade5", "(B)")]  # fmt: skip
    path = tmp_path / "scienceqa_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "answer": out, "gt_answer": gt, "prompt": "p", "has_img": img,
                        "model_id": "m", "text_answer": text, "type": img, "category": grade}) + "\n"
            for i, (gt, text, img, grade, out) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline_name"], result["n"]) == ("original", "multimodal_acc", 3)
    assert result["headline"] == pytest.approx(200 / 3)
