"""MathVista testmini: snapshot loading, prompts by question type, the MC GT letter, the legacy rule."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("mathvista")
MC_SUFFIX = "First show your reasoning process and then give the final answer."
WORD_SUFFIX = "Answer the question using a single word or phrase."
FILE = "testmini-00000-of-00001-725687bf7a18d64b.parquet"
# (pid, question_type, choices, answer, category)
ROWS = [
    ("1", "multi_choice", ["3", "5", "7"], "5", "math-targeted-vqa"),
    ("2", "free_form", None, "1000", "general-vqa"),
    ("3", "free_form", None, "1.2", "math-targeted-vqa"),
    ("4", "multi_choice", ["a", "b", "a"], "a", "general-vqa"),  # a repeated choice: its last letter
]


def _png(seed: int) -> bytes:
    return png((30 + seed, 20), (seed * 60 % 255, 120, 40))


def _query(pid: str, choices) -> str:
    hint = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    if choices is None:
        hint = "Hint: Please answer the question requiring an integer answer and provide the final value."
        return f"{hint}\nQuestion: Question {pid}?"
    lines = "".join(f"\n({'ABCDEFG'[i]}) {c}" for i, c in enumerate(choices))
    return f"{hint}\nQuestion: Question {pid}?\nChoices:{lines}"


def write_snapshot(root: Path) -> None:
    """AI4Math/MathVista layout: data/testmini-*.parquet with every column of the hub's schema."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    meta = [{"category": r[4], "context": "x", "grade": "y", "img_height": 20, "img_width": 30, "language": "english",
             "skills": ["arithmetic reasoning"], "source": "s", "split": "testmini", "task": "t"} for r in ROWS]  # fmt: skip
    pl.DataFrame(
        {
            "pid": [r[0] for r in ROWS],
            "question": [f"Question {r[0]}?" for r in ROWS],
            "image": [f"images/{r[0]}.jpg" for r in ROWS],
            "decoded_image": [{"bytes": _png(i), "path": f"{r[0]}.jpg"} for i, r in enumerate(ROWS)],
            "choices": [r[2] for r in ROWS],
            "unit": [None] * len(ROWS),
            "precision": [None, None, 1.0, None],
            "answer": [r[3] for r in ROWS],
            "question_type": [r[1] for r in ROWS],
            "answer_type": ["text", "integer", "float", "text"],
            "metadata": meta,
            "query": [_query(r[0], r[2]) for r in ROWS],
        },
        schema_overrides={"unit": pl.String},
    ).write_parquet(root / "data" / FILE)


def test_load_prompts_gt_letters_records(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "testmini")
    assert [it.key for it in items] == ["1", "2", "3", "4"]
    assert items[0].prompt == _query("1", ["3", "5", "7"]) + "\n" + MC_SUFFIX
    assert items[1].prompt == _query("2", None) + "\n" + WORD_SUFFIX
    assert items[0].record == {"question_id": 0, "gt_answer": "B", "category": "math-targeted-vqa",
                               "type": "multi_choice"}  # fmt: skip
    assert items[2].record == {"question_id": 2, "gt_answer": "1.2", "category": "math-targeted-vqa",
                               "type": "free_form"}  # fmt: skip
    assert items[3].record["gt_answer"] == "C"
    assert items[1].images[0].open().size == (31, 20)
    assert (BENCH.max_new_tokens, BENCH.splits, BENCH.expected_n) == (512, ("testmini",), {"testmini": 1000})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("query").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'query'"):
        BENCH.load(tmp_path, "testmini")
    frame.with_columns(pl.Series("answer", ["9", "1000", "1.2", "a"])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 0: field 'answer': '9' is not one of"):
        BENCH.load(tmp_path, "testmini")


def _records(rows):
    """(gt_answer, type, output) -> our records."""
    return [
        {"question_id": i, "answer": out, "gt_answer": gt, "category": "c", "type": t, "item_index": i,
         "item_key": str(i)}
        for i, (gt, t, out) in enumerate(rows)
    ]  # fmt: skip


# docs/eval-protocols.md s.7.3 (GT, prediction): MathVista legacy column 1,0,1,0,0,1,0,1,1,0,0.
GOLDEN = [("25", "26"), ("25", "27"), ("100", "105"), ("100", "95"), ("40", "38"), ("0", "0.0"),
          ("0", "0.01"), ("-10", "-10.4"), ("Yes", "yes"), ("12%", "12"), ("1,000", "1000")]  # fmt: skip


def test_golden_swapped_tolerance_legacy_and_recommended():
    records = _records([(gt, "free_form", pred) for gt, pred in GOLDEN])
    legacy = score_records(BENCH, records)
    assert (legacy["headline"], legacy["n"], legacy["correct"]) == (pytest.approx(500 / 11), 11, 5)
    # Recommended: tolerance relative to the GT, so 100/95 and 40/38 pass too.
    assert score_records(BENCH, records, "recommended")["correct"] == 7


def test_legacy_quirks_mc_letters_inf_dead_branch():
    rows = [
        ("B", "multi_choice", "B"),  # exact letter
        ("B", "multi_choice", " b "),  # lower + strip
        ("B", "multi_choice", "B."),  # the "." cut is only for type "multiple-choice": wrong
        ("B", "multi_choice", "The answer is B"),  # no extraction at all: wrong
        ("B", "multiple-choice", "B. five"),  # the dead branch, when a record does say "multiple-choice"
        ("42", "free_form", "inf"),  # tolerance relative to the prediction: infinite
        ("42", "free_form", "-Infinity"),
        ("42", "free_form", "nan"),
        ("42", "free_form", ""),
        ("42", "free_form", "  "),
    ]
    result = score_records(BENCH, _records(rows))
    assert result["correct"] == 5  # rows 0, 1, 4, 5, 6
    assert score_records(BENCH, _records(rows), "recommended")["correct"] == 3  # inf no longer passes


def test_original_answers_file(tmp_path):
    # Exactly the fields mathvista_eval.py writes (no prompt), no item_index.
    rows = [("B", "multi_choice", "B", "math-targeted-vqa"), ("B", "multi_choice", "(B) 5", "general-vqa"),
            ("1000", "free_form", "1020", "general-vqa"), ("1.2", "free_form", "1.3", "math-targeted-vqa")]  # fmt: skip
    path = tmp_path / "mathvista_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"model_id": "m", "question_id": i, "answer": out, "gt_answer": gt, "category": cat,
                        "type": t}) + "\n"
            for i, (gt, t, out, cat) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 4)
    assert result["by_category"] == {"general-vqa": {"n": 2, "accuracy": 50.0},
                                     "math-targeted-vqa": {"n": 2, "accuracy": 50.0}}  # fmt: skip
