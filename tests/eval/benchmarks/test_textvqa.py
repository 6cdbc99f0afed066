"""TextVQA: snapshot loading, the OCR-token prompt, the records, 10-annotator VQA accuracy."""

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

BENCH = BENCHMARKS.get("textvqa")
SUFFIX = "Answer the question using a single word or phrase."
FILE = "validation-00000-of-00001.parquet"
# (question_id, question, ocr_tokens, answers)
ROWS = [
    (
        34602,
        "what is the brand of this camera?",
        ["dakota", "digital"],
        ["dakota digital"] * 7 + ["dakota"] * 3,
    ),
    (34603, "what does the small white text spell?", [], ["copenhagen"] * 9 + ["thursday"]),
    (34604, "what kind of beer is this?", ["stone"], ["ale"] * 4 + ["stone"] * 6),
]


def _png(seed: int) -> bytes:
    return png((20 + seed, 16), (seed * 70 % 255, 30, 200))


def write_snapshot(root: Path) -> None:
    """lmms-lab/textvqa layout: data/validation-*.parquet with the dataset's columns and dtypes."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    n = len(ROWS)
    pl.DataFrame(
        {
            "image_id": [f"{i:016x}" for i in range(n)],
            "question_id": [r[0] for r in ROWS],
            "question": [r[1] for r in ROWS],
            "question_tokens": [r[1].rstrip("?").split() for r in ROWS],
            "image": [{"bytes": _png(i), "path": f"{i}.jpg"} for i in range(n)],
            "image_width": [20 + i for i in range(n)],
            "image_height": [16] * n,
            "flickr_original_url": [f"https://farm.example/{i}_o.jpg" for i in range(n)],
            "flickr_300k_url": [f"https://farm.example/{i}_z.jpg" for i in range(n)],
            "answers": [r[3] for r in ROWS],
            "image_classes": [["Camera"], ["Poster"], ["Beer"]],
            "set_name": ["val"] * n,
            "ocr_tokens": [r[2] for r in ROWS],
        },
        schema_overrides={"question_id": pl.Int32, "image_width": pl.Int32, "image_height": pl.Int32,
                          "ocr_tokens": pl.List(pl.String)},
    ).write_parquet(root / "data" / FILE)  # fmt: skip


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "validation")
    assert [it.key for it in items] == ["34602", "34603", "34604"]
    assert items[0].prompt == (
        "what is the brand of this camera?\nReference OCR tokens: dakota, digital\n" + SUFFIX
    )
    assert items[1].prompt == "what does the small white text spell?\nReference OCR tokens:\n" + SUFFIX
    assert items[2].prompt == "what kind of beer is this?\nReference OCR tokens: stone\n" + SUFFIX
    assert items[2].record == {"question_id": 2, "gt_answer": ["ale"] * 4 + ["stone"] * 6}
    assert items[1].images[0].open().size == (21, 16)
    assert all(it.generate for it in items)
    assert (BENCH.splits, BENCH.max_new_tokens, BENCH.expected_n) == (
        ("validation",),
        512,
        {"validation": 5000},
    )


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("ocr_tokens").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'ocr_tokens'"):
        BENCH.load(tmp_path, "validation")
    frame.with_columns(pl.Series("question", [1, 2, 3])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 0: field 'question'"):
        BENCH.load(tmp_path, "validation")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        BENCH.load(tmp_path / "missing", "validation")


def _records(rows):
    return [
        {"question_id": i, "answer": pred, "gt_answer": gts, "item_index": i, "item_key": str(i)}
        for i, (pred, gts) in enumerate(rows)
    ]


def test_golden_dataset_of_section_7_1():
    # The first question (10 x cat) and the "1 x cat" one: mean (1.0 + 0.3) / 2 -> 65.0.
    result = score_records(BENCH, _records([("cat", ["cat"] * 10), ("cat", ["cat"] + ["dog"] * 9)]))
    assert (result["headline"], result["n"]) == (pytest.approx(65.0), 2)
    assert result["correct"] == pytest.approx(1.3)


def test_period_cap_differs_between_rules():
    records = _records([("x." * 40, ["x" * 40] * 10), ("The Cat.", ["cat"] * 3 + ["dog"] * 7)])
    assert score_records(BENCH, records)["headline"] == pytest.approx(45.0)  # (0 + 0.9) / 2
    assert score_records(BENCH, records, "recommended")["headline"] == pytest.approx(95.0)  # (1 + 0.9) / 2


def test_empty_output_scores_zero():
    result = score_records(
        BENCH, _records([("", ["cat"] * 10), ("  \n", ["cat"] * 10), ("cat", ["cat"] * 10)])
    )
    assert (result["headline"], result["n"]) == (pytest.approx(100 / 3), 3)


def test_gt_list_must_have_ten_answers():
    with pytest.raises(
        ScoreError, match=r"record 1 \(question_id 1\): field 'gt_answer' must be a list of 10"
    ):
        score_records(BENCH, _records([("cat", ["cat"] * 10), ("cat", ["cat"] * 9)]))
    with pytest.raises(ScoreError, match="field 'gt_answer' is missing"):
        score_records(BENCH, [{"question_id": 0, "answer": "cat"}])


def test_original_answers_file(tmp_path):
    # Exactly the fields textvqa_eval.py writes, in its order, no item_index.
    rows = [
        ("Dakota.", ROWS[0][3]),
        ("copenhagen.", ROWS[1][3]),
        ("stone", ROWS[2][3]),
        ("nikon", ["canon"] * 10),
    ]
    path = tmp_path / "textvqa_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"question_id": i, "prompt": "p", "answer": pred, "model_id": "cambrian-8b", "gt_answer": gts}
            )
            + "\n"
            for i, (pred, gts) in enumerate(rows)
        )
    )
    result = score_file(BENCH, path)
    # 0.9 (3 x "dakota") + 1.0 (9 x "copenhagen") + 1.0 (6 x "stone") + 0 -> 2.9 / 4
    assert (result["format"], result["headline"], result["n"]) == ("original", pytest.approx(72.5), 4)
