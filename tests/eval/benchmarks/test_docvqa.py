"""DocVQA: snapshot loading (config DocVQA), the prompt, the records, ANLS on validation, the RRC submission."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import read_jsonl, score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("docvqa")
SUFFIX = "Give the short answer directly."
# (questionId, question, answers)
VALIDATION = [
    ("49153", "What is the date mentioned in this letter?", ["1/8/93"]),
    ("24580", "What is the title of the document?", ["Nutrition Facts", "nutrition facts"]),
    ("57349", "Who is the sender?", ["Dr. Lobo", "Dear Dr. Lobo"]),
]
TEST = [("57344", "What is the page number?"), ("57345", "Which company is named?")]


def _png(seed: int) -> bytes:
    return png((30, 40 + seed), 200 - seed * 10, "L")


def _frame(rows, answers, split):
    n = len(rows)
    return pl.DataFrame(
        {
            "questionId": [r[0] for r in rows],
            "question": [r[1] for r in rows],
            "question_types": [["handwritten", "form"]] * n,
            "image": [{"bytes": _png(i), "path": None} for i in range(n)],
            "docId": [1000 + i for i in range(n)],
            "ucsf_document_id": [f"txpp{i:04d}" for i in range(n)],
            "ucsf_document_page_no": ["1"] * n,
            "answers": answers,
            "data_split": [split] * n,
        },
        schema_overrides={"answers": pl.List(pl.String), "question_types": pl.List(pl.String)},
    )


def write_snapshot(root: Path) -> None:
    """lmms-lab/DocVQA layout: DocVQA/validation-*.parquet and DocVQA/test-*.parquet (null answers)."""
    (root / "DocVQA").mkdir(parents=True, exist_ok=True)
    _frame(VALIDATION, [r[2] for r in VALIDATION], "val").write_parquet(
        root / "DocVQA" / "validation-00000-of-00001.parquet"
    )
    _frame(TEST, [None, None], "test").write_parquet(root / "DocVQA" / "test-00000-of-00001.parquet")


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    assert BENCH.splits == ("validation", "test")  # validation first: the split that can be scored
    items = BENCH.load(tmp_path, "validation")
    assert [it.key for it in items] == ["49153", "24580", "57349"]
    assert items[0].prompt == "What is the date mentioned in this letter?\n" + SUFFIX
    assert items[1].record == {"questionId": "24580", "gt_answer": ["Nutrition Facts", "nutrition facts"]}
    assert items[2].images[0].open().size == (30, 42)
    test = BENCH.load(tmp_path, "test")
    assert [it.record for it in test] == [
        {"questionId": "57344", "gt_answer": []},
        {"questionId": "57345", "gt_answer": []},
    ]
    assert (BENCH.max_new_tokens, BENCH.expected_n) == (128, {"validation": 5349, "test": 5188})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "DocVQA" / "validation-00000-of-00001.parquet"
    frame = pl.read_parquet(path)
    frame.drop("answers").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"validation-00000-of-00001\.parquet.*'answers'"):
        BENCH.load(tmp_path, "validation")
    frame.with_columns(pl.Series("questionId", [1, 2, 3])).write_parquet(path)
    with pytest.raises(
        DatasetFormatError, match=r"validation-00000-of-00001\.parquet: row 0: field 'questionId'"
    ):
        BENCH.load(tmp_path, "validation")
    with pytest.raises(DatasetFormatError, match="config DocVQA"):
        BENCH.load(tmp_path, "train")


def _records(rows):
    return [
        {"questionId": str(i), "answer": pred, "gt_answer": gts, "item_index": i, "item_key": str(i)}
        for i, (pred, gts) in enumerate(rows)
    ]


# docs/eval-protocols.md s.7.2 (prediction, GT answers).
GOLDEN_7_2 = [
    ("hello", ["hello"]),
    ("Hello ", ["hello"]),
    ("hallo", ["hello"]),
    ("abxy", ["abcd"]),
    ("axyz", ["abcd"]),
    ("1995.", ["1995", "in 1995"]),
    ("Jan 5", ["january 5", "jan. 5"]),
    ("", ["abc"]),
]


def test_golden_anls_dataset():
    result = score_records(BENCH, _records(GOLDEN_7_2[:4]))  # (1 + 1 + 0.8 + 0.5) / 4
    assert (result["headline"], result["n"], result["anls"]) == (pytest.approx(82.5), 4, pytest.approx(0.825))
    full = score_records(BENCH, _records(GOLDEN_7_2))  # + 0 + 0.8 + 5/6 + 0
    assert full["headline"] == pytest.approx(100 * (3.3 + 0.8 + 5 / 6) / 8)


def test_legacy_raw_lengths_versus_recommended_normalised_lengths():
    records = _records([("  hallo  ", ["hello"])])
    assert score_records(BENCH, records)["headline"] == pytest.approx(100 * (1 - 1 / 9))
    assert score_records(BENCH, records, "recommended")["headline"] == pytest.approx(80.0)


def test_rows_without_gt_are_not_scored_but_submitted():
    records = _records([("1/8/93", ["1/8/93"]), ("page 3", [])])
    records[1]["questionId"] = "57344"
    result = score_records(BENCH, records)
    assert (result["headline"], result["n"], result["unscored"]) == (100.0, 1, 1)
    assert BENCH.submission(records) == {
        "docvqa_submission.json": [{"questionId": 57344, "answer": "page 3"}]
    }
    assert BENCH.submission(records[:1]) == {}


def test_test_split_has_no_headline(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    records = [
        {**it.record, "answer": f"Answer {i}", "item_index": i, "item_key": it.key}
        for i, it in enumerate(items)
    ]
    result = score_records(BENCH, records)
    assert (result["headline"], result["n"]) == (None, 0)
    assert BENCH.submission(records) == {
        "docvqa_submission.json": [
            {"questionId": 57344, "answer": "Answer 0"},  # the raw output, not lower-cased
            {"questionId": 57345, "answer": "Answer 1"},
        ]
    }


def test_bad_records_raise():
    with pytest.raises(ScoreError, match="field 'answer' is missing"):
        score_records(BENCH, [{"questionId": "1", "gt_answer": ["a"]}])
    with pytest.raises(ScoreError, match="'gt_answer' must be a list of strings"):
        score_records(BENCH, [{"questionId": "1", "answer": "a", "gt_answer": "a"}])
    with pytest.raises(ScoreError, match="'questionId' is not an integer id"):
        BENCH.submission([{"questionId": "q1", "answer": "a"}])


def test_original_answers_file(tmp_path):
    # Exactly the fields docvqa_eval.py writes (test split, no GT), in its order, no item_index.
    path = tmp_path / "docvqa_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"questionId": qid, "prompt": "p", "answer": ans, "model_id": "cambrian-8b"}) + "\n"
            for qid, ans in [("57344", "3"), ("57345", "ITC Limited")]
        )
    )
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"], result["unscored"]) == ("original", None, 0, 2)
    assert BENCH.submission(read_jsonl(path)) == {
        "docvqa_submission.json": [
            {"questionId": 57344, "answer": "3"},
            {"questionId": 57345, "answer": "ITC Limited"},
        ]
    }
