"""MMStar: the single-parquet layout, prompt, record, X3 accuracy by category."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

SUFFIX = "Please answer directly with only the letter of the correct option and nothing else."
BENCH = BENCHMARKS.get("mmstar")

# (index, question, answer, category)
ROWS = [
    (0, "Which option describe the object relationship in the image correctly?\nOptions: A: The cup is on "
        "the table., B: The cup is under the table., C: There is no cup., D: The table is on the cup.", "A",
     "coarse perception"),
    (1, "What is the main color of the car?\nOptions: A: red, B: blue, C: green, D: white", "B",
     "fine-grained perception"),
    (2, "How many dogs are there?\nOptions: A: 1, B: 2, C: 3, D: 4", "C", "instance reasoning"),
    (3, "What is 2+2 as shown?\nOptions: A: 3, B: 4, C: 5, D: 6", "B", "math"),
]  # fmt: skip


def _png(seed: int) -> bytes:
    return png((10 + seed, 9), (seed * 60, 10, 10))


def write_snapshot(root: Path) -> None:
    """``Lin-Chen/MMStar`` layout: one mmstar.parquet at the root, image as HF structs."""
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "index": [r[0] for r in ROWS],
            "question": [r[1] for r in ROWS],
            "image": [{"bytes": _png(r[0]), "path": None} for r in ROWS],
            "answer": [r[2] for r in ROWS],
            "category": [r[3] for r in ROWS],
            "l2_category": ["x"] * len(ROWS),
            "meta_info": [
                {"source": "MMBench", "split": "val", "image_path": f"images/{r[0]}.jpg"} for r in ROWS
            ],
        }
    ).write_parquet(root / "mmstar.parquet")


def _ours(outputs):
    return [
        {"question_id": i, "gt_answer": r[2], "category": r[3], "answer": out, "item_index": i, "item_key": str(i)}
        for i, (r, out) in enumerate(zip(ROWS, outputs))
    ]  # fmt: skip


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "mmstar")
    items = BENCH.load(tmp_path / "mmstar", "val")
    assert len(items) == 4
    assert [it.key for it in items] == ["0", "1", "2", "3"]
    assert items[2].prompt == "How many dogs are there?\nOptions: A: 1, B: 2, C: 3, D: 4\n" + SUFFIX
    assert items[1].record == {"question_id": 1, "gt_answer": "B", "category": "fine-grained perception"}
    assert items[3].images[0].open().size == (13, 9)
    assert BENCH.splits == ("val",) and BENCH.max_new_tokens == 128


def test_parquet_converter_layout(tmp_path):
    write_snapshot(tmp_path / "src")
    (tmp_path / "mmstar" / "val").mkdir(parents=True)
    (tmp_path / "src" / "mmstar.parquet").rename(tmp_path / "mmstar" / "val" / "0000.parquet")
    assert len(BENCH.load(tmp_path / "mmstar", "val")) == 4


def test_broken_snapshot_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "mmstar")
    path = tmp_path / "mmstar" / "mmstar.parquet"
    table = pl.read_parquet(path)
    table.drop("answer").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"mmstar\.parquet.*'answer'"):
        BENCH.load(tmp_path / "mmstar", "val")
    table.with_columns(pl.lit(None, dtype=pl.String).alias("category")).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"mmstar\.parquet: row 0: field 'category': expected str"):
        BENCH.load(tmp_path / "mmstar", "val")


def test_x3_accuracy_and_categories():
    # "A." -> a right; "(B)" -> "(b)" wrong (the original's "(A)" test never fires); "C, three" right;
    # "The answer is B" -> "the" wrong
    result = score_records(BENCH, _ours(["A.", "(B)", "C, three", "The answer is B"]))
    assert (result["headline"], result["n"]) == (50.0, 4)
    assert result["by_category"]["instance reasoning"] == {"n": 1, "accuracy": 100.0}
    assert score_records(BENCH, _ours(["", " ", "c", "b"]), "recommended")["headline"] == 50.0


def test_original_answers_file(tmp_path):
    # mmstar_eval.py writes question_id, answer, prompt, gt_answer, model_id, category
    lines = [
        json.dumps({"question_id": i, "answer": out, "prompt": "p", "gt_answer": r[2], "model_id": "m",
                    "category": r[3]})
        for i, (r, out) in enumerate(zip(ROWS, ["A", "B", "D", "b"]))
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
