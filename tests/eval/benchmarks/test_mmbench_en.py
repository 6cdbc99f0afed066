"""MMBench-EN: hint/"nan" prompt rules, source_id with the image hash, circular accuracy with X1."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError

SUFFIX = "Answer with the option's letter from the given choices directly."
BENCH = BENCHMARKS.get("mmbench_en")

# Q1: 4 circular variants (same image, options rotated); Q2: 2 variants with C/D "nan" and no hint.
# (index, question, hint, A, B, C, D, answer, category, image value, source)
Q1 = "Which animal is shown?"
Q2 = "Is the sky blue?"
ROWS = [
    (241, Q1, "Look closely.", "cat", "dog", "cow", "hen", "A", "attribute_recognition", 1, "MMBench"),
    (1000241, Q1, "Look closely.", "hen", "cat", "dog", "cow", "B", "attribute_recognition", 1, "MMBench"),
    (2000241, Q1, "Look closely.", "cow", "hen", "cat", "dog", "C", "attribute_recognition", 1, "MMBench"),
    (3000241, Q1, "Look closely.", "dog", "cow", "hen", "cat", "D", "attribute_recognition", 1, "MMBench"),
    (77, Q2, "nan", "yes", "no", "nan", "nan", "A", "attribute_recognition", 5, "scienceqa"),
    (1000077, Q2, "nan", "no", "yes", "nan", "nan", "B", "attribute_recognition", 5, "scienceqa"),
]
HASH = {1: "-e4ed991", 5: "00d0ae5a"}  # MurmurHash3 of these flat 256x256 images (see test_grouped)


def flat_png(value: int) -> bytes:
    arr = np.full((256, 256, 3), value, dtype=np.uint8)
    arr[..., 1] = 255 - value
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def frame(rows, l2_name: str = "l2-category", image_as_base64: bool = False) -> pl.DataFrame:
    images = [flat_png(r[9]) for r in rows]
    return pl.DataFrame(
        {
            "index": [r[0] for r in rows],
            "question": [r[1] for r in rows],
            "hint": [r[2] for r in rows],
            **{k: [r[3 + j] for r in rows] for j, k in enumerate("ABCD")},
            "answer": [r[7] for r in rows],
            "category": [r[8] for r in rows],
            "image": [base64.b64encode(b).decode() for b in images]
            if image_as_base64
            else [{"bytes": b, "path": None} for b in images],
            "source": [r[10] for r in rows],
            l2_name: ["finegrained_perception (instance-level)"] * len(rows),
            "comment": ["nan"] * len(rows),
            "split": ["dev"] * len(rows),
        }
    )


def write_snapshot(root: Path) -> None:
    """``lmms-lab/MMBench_EN`` layout: data/dev-00000-of-00001.parquet, image as HF structs."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    frame(ROWS).write_parquet(root / "data" / "dev-00000-of-00001.parquet")


def _ours(outputs, answers=None):
    answers = answers or [r[7] for r in ROWS]
    return [
        {"index": r[0], "question": r[1], "gt_answer": g, **dict(zip("ABCD", r[3:7])),
         "source_id": f"{r[1]} {HASH[r[9]]} {r[10]}", "category": r[8], "prediction": out, "item_index": i,
         "item_key": str(r[0])}
        for i, (r, g, out) in enumerate(zip(ROWS, answers, outputs))
    ]  # fmt: skip


def test_load_prompts_records_and_source_ids(tmp_path):
    write_snapshot(tmp_path / "mmbench_en")
    items = BENCH.load(tmp_path / "mmbench_en", "dev")
    assert len(items) == 6
    assert items[1].key == "1000241"
    assert items[1].prompt == (
        "Look closely.\nWhich animal is shown? Options:\nA. hen\nB. cat\nC. dog\nD. cow\n" + SUFFIX
    )
    assert (
        items[4].prompt == "Is the sky blue? Options:\nA. yes\nB. no\n" + SUFFIX
    )  # "nan" hint/options left out
    assert items[5].record == {
        "index": 1000077, "question": Q2, "gt_answer": "B", "A": "no", "B": "yes", "C": "nan", "D": "nan",
        "source_id": "Is the sky blue? 00d0ae5a scienceqa", "category": "attribute_recognition",
    }  # fmt: skip
    assert {it.record["source_id"] for it in items[:4]} == {"Which animal is shown? -e4ed991 MMBench"}
    assert items[0].images[0].open().size == (256, 256)
    assert BENCH.answer_field == "prediction" and BENCH.splits[0] == "dev"


def test_base64_image_column_and_missing_image(tmp_path):
    root = tmp_path / "mmbench_en"
    (root / "data").mkdir(parents=True)
    table = frame(ROWS[4:], image_as_base64=True)
    table.write_parquet(root / "data" / "dev-00000-of-00001.parquet")
    items = BENCH.load(root, "dev")
    assert items[0].record["source_id"] == "Is the sky blue? 00d0ae5a scienceqa"
    assert items[0].images[0].open().size == (256, 256)
    table.with_columns(pl.lit(None, dtype=pl.String).alias("image")).write_parquet(
        root / "data" / "dev-00000-of-00001.parquet"
    )
    items = BENCH.load(root, "dev")
    assert (items[0].images, items[0].record["source_id"]) == ([], "Is the sky blue?  scienceqa")


def test_broken_snapshot_names_file_and_field(tmp_path):
    root = tmp_path / "mmbench_en"
    write_snapshot(root)
    path = root / "data" / "dev-00000-of-00001.parquet"
    table = pl.read_parquet(path)
    table.drop("source").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"dev-00000-of-00001\.parquet.*'source'"):
        BENCH.load(root, "dev")
    table.with_columns(pl.lit(3).alias("question")).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"row 0: field 'question': expected str"):
        BENCH.load(root, "dev")


def test_worked_example_7_7():
    result = score_records(BENCH, _ours(["A", "B", "(C)", "The answer is D", "A", "A"]))
    assert (result["headline"], result["n"], result["groups"]) == (50.0, 6, 2)
    assert result["accuracy"] == pytest.approx(500 / 6)
    assert result["by_category"]["attribute_recognition"]["circular_accuracy"] == 50.0
    assert score_records(BENCH, _ours(["A", "B", "(C)", "The answer is D", "A", "A"]), "recommended") == {
        **result, "rules": "recommended"}  # fmt: skip


def test_rows_without_gt_are_skipped_and_x1_rules():
    # rows 4-5 have no GT (test-style rows): not counted; X1 keeps the first character after stripping
    answers = ["A", "B", "C", "D", "", None]
    result = score_records(BENCH, _ours(["a.", "B) dog", "Answer: c", "The answer is: D", "x", "y"], answers))
    assert (result["n"], result["groups"], result["correct"]) == (4, 1, 3)  # "The answer is: D" -> ":"
    assert (result["headline"], result["accuracy"]) == (0.0, 75.0)
    assert score_records(BENCH, _ours([""] * 6))["headline"] == 0.0


def test_original_answers_file(tmp_path):
    # mmbench_en_eval.py writes index, question, prediction, gt_answer, A-D, source_id, model_id, category
    outputs = ["A", "B", "C", "D", "B", "B"]
    lines = [
        json.dumps({"index": r[0], "question": r[1], "prediction": out, "gt_answer": r[7],
                    **dict(zip("ABCD", r[3:7])), "source_id": f"{r[1]} {HASH[r[9]]} {r[10]}", "model_id": "m",
                    "category": r[8]})
        for r, out in zip(ROWS, outputs)
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(reversed(lines)) + "\n")  # order is irrelevant
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 6)
    assert result["accuracy"] == pytest.approx(500 / 6)
