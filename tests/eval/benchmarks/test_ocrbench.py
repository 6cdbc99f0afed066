"""OCRBench: snapshot loading, the prompt, the records, the containment rule (HME rule included)."""

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

BENCH = BENCHMARKS.get("ocrbench")
SUFFIX = "Give the short answer directly."
FILE = "test-00000-of-00001.parquet"
REGULAR = "Regular Text Recognition"
HME = "Handwritten Mathematical Expression Recognition"
# (dataset, question, question_type, answer)
ROWS = [
    ("IIIT5K", "what is written in the image?", REGULAR, ["Hello World"]),
    ("HME100k", "Please write out the expression of the formula in the image using LaTeX format.", HME,
     ["\\frac{1}{2}"]),
    ("textVQA", "what number is on the jersey?", "Scene Text-centric VQA", ["42", "forty two"]),
]  # fmt: skip


def _png(seed: int) -> bytes:
    return png((40, 10 + seed), (250, 250, seed * 60))


def write_snapshot(root: Path) -> None:
    """echo840/OCRBench layout: data/test-*.parquet (dataset, question, question_type, answer list, image)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "dataset": [r[0] for r in ROWS],
            "question": [r[1] for r in ROWS],
            "question_type": [r[2] for r in ROWS],
            "answer": [r[3] for r in ROWS],
            "image": [{"bytes": _png(i), "path": None} for i in range(len(ROWS))],
        }
    ).write_parquet(root / "data" / FILE)


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["0", "1", "2"]
    assert items[2].prompt == "what number is on the jersey?\n" + SUFFIX
    assert items[1].record == {"question_id": 1, "gt_answer": ["\\frac{1}{2}"], "category": HME}
    assert items[0].images[0].open().size == (40, 10)
    assert all(it.generate for it in items)
    assert (BENCH.splits, BENCH.max_new_tokens, BENCH.expected_n) == (("test",), 512, {"test": 1000})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("question_type").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'question_type'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("answer", ["a", "b", "c"])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 0: field 'answer': expected list"):
        BENCH.load(tmp_path, "test")


def _records(rows):
    return [
        {
            "question_id": i,
            "answer": pred,
            "gt_answer": gts,
            "category": cat,
            "item_index": i,
            "item_key": str(i),
        }
        for i, (cat, gts, pred) in enumerate(rows)
    ]


# docs/eval-protocols.md s.7.10: category, GT, output -> 3 of 4 correct.
GOLDEN_7_10 = [
    (REGULAR, ["Hello World"], "The text says hello world."),  # correct
    (REGULAR, ["42"], "420"),  # correct: substring quirk
    (HME, ["\\frac{1}{2}"], "\\frac { 1 } { 2 }"),  # correct: spaces removed
    (HME, ["X^2"], "x^2"),  # wrong: HME is case-sensitive
]


def test_golden_containment_and_per_category():
    result = score_records(BENCH, _records(GOLDEN_7_10))
    assert (result["headline"], result["n"], result["correct"]) == (75.0, 4, 3)
    assert result["total_accuracy"] == {"accuracy": 75.0, "total": 4}
    assert result["by_category"] == {
        REGULAR: {"accuracy": 100.0, "total": 2},
        HME: {"accuracy": 50.0, "total": 2},
    }
    assert list(result["by_category"]) == [REGULAR, HME]  # first-seen order, as the original's CSV row
    assert score_records(BENCH, _records(GOLDEN_7_10), "recommended")["headline"] == 75.0


@pytest.mark.parametrize(
    "category,gts,pred,ok",
    [
        (REGULAR, ["hello world"], "Hello\nWorld", True),  # newline -> space on the output
        (REGULAR, ["new\nyork"], "NEW YORK city", True),  # ... and on the GT
        (REGULAR, ["hello  world"], "hello world", False),  # inner spaces are kept outside HME
        (REGULAR, ["cat", "dog"], "a dog", True),  # any GT of the list
        (REGULAR, [""], "anything", True),  # an empty GT is in every output
        (REGULAR, ["x"], "", False),  # an empty output is wrong
        (REGULAR, [], "x", False),
        (HME, ["a + b"], " a\n+b ", True),  # every space (and former newline) dropped
        (HME, ["A"], "a", False),
        ("Handwritten mathematical expression recognition", ["A"], "a", True),  # only the exact name is HME
    ],
)
def test_processing_rules(category, gts, pred, ok):
    assert score_records(BENCH, _records([(category, gts, pred)]))["correct"] == int(ok)


def test_bad_records_raise():
    with pytest.raises(ScoreError, match="field 'category' is missing"):
        score_records(BENCH, [{"question_id": 0, "answer": "a", "gt_answer": ["a"]}])
    with pytest.raises(ScoreError, match="'gt_answer' must be a list of strings"):
        score_records(BENCH, [{"question_id": 0, "answer": "a", "gt_answer": "a", "category": REGULAR}])


def test_original_answers_file(tmp_path):
    # Exactly the fields ocrbench_eval.py writes, in its order, no item_index ("prompt" is its first
    # character there: the original indexes the prompt string by mistake).
    rows = [
        (REGULAR, ["Hello World"], "HELLO WORLD"),
        ("Scene Text-centric VQA", ["42", "forty two"], "Forty two"),
        (HME, ["x^{2}"], "x ^ { 2 }"),
        (HME, ["y"], "Y"),
        ("Key Information Extraction", ["$5.00"], "5.00"),
    ]
    path = tmp_path / "ocrbench_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "answer": pred, "prompt": "A", "gt_answer": gts, "model_id": "cambrian-8b",
                        "category": cat}) + "\n"
            for i, (cat, gts, pred) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 60.0, 5)
    assert result["by_category"][HME] == {"accuracy": 50.0, "total": 2}
