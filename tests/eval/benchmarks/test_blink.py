"""BLINK val: the 6 single-image subtask directories, image_1 only, the records, and the X5 rule."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.benchmarks.blink import SUBTASKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("blink")
SUFFIX = "Please answer directly with only the letter of the correct option and nothing else."
FILE = "val-00000-of-00001.parquet"
IMAGE = pl.Struct({"bytes": pl.Binary, "path": pl.String})


def _png(seed: int) -> bytes:
    return png((16 + seed, 12), (seed * 20 % 255, 150, 150))


def _prompt(question: str, choices: list[str]) -> str:
    return f"{question}\nSelect from the following choices.\n" + "\n".join(
        f"({'ABCD'[i]}) {c}" for i, c in enumerate(choices)
    )


def write_snapshot(root: Path) -> None:
    """BLINK-Benchmark/BLINK layout: one directory per subtask with val-*.parquet (plus an unused subtask)."""
    for t, subtask in enumerate((*SUBTASKS, "Jigsaw")):
        n = 2 if subtask == "Counting" else 1
        choices = [["0", "1", "2", "3"], ["yes", "no"]][t % 2]
        (root / subtask).mkdir(parents=True, exist_ok=True)
        pl.DataFrame(
            {
                "idx": [f"val_{subtask}_{i + 1}" for i in range(n)],
                "question": [f"{subtask} question {i}?" for i in range(n)],
                "sub_task": [subtask] * n,
                "image_1": [{"bytes": _png(t), "path": None} for _ in range(n)],
                "image_2": [
                    {"bytes": _png(30), "path": None} if subtask == "Jigsaw" else None for _ in range(n)
                ],
                "image_3": [None] * n,
                "image_4": [None] * n,
                "choices": [choices] * n,
                "answer": ["(B)"] * n,
                "prompt": [_prompt(f"{subtask} question {i}?", choices) for i in range(n)],
                "explanation": [""] * n,
            },
            schema_overrides={f"image_{k}": IMAGE for k in range(1, 5)},
        ).write_parquet(root / subtask / FILE)


def test_load_six_subtasks_in_order(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "val")
    assert [it.key for it in items] == [
        "val_Counting_1", "val_Counting_2", "val_IQ_Test_1", "val_Object_Localization_1",
        "val_Relative_Depth_1", "val_Relative_Reflectance_1", "val_Spatial_Relation_1",
    ]  # fmt: skip
    assert items[1].prompt == _prompt("Counting question 1?", ["0", "1", "2", "3"]) + "\n" + SUFFIX
    # question_id restarts in every subtask, as in the original.
    assert items[1].record == {"question_id": 1, "gt_answer": "(B)", "category": "Counting",
                               "choices": ["0", "1", "2", "3"]}  # fmt: skip
    assert items[2].record == {"question_id": 0, "gt_answer": "(B)", "category": "IQ_Test",
                               "choices": ["yes", "no"]}  # fmt: skip
    assert len(items[2].images) == 1 and items[2].images[0].open().size == (17, 12)
    assert (BENCH.max_new_tokens, BENCH.splits, BENCH.expected_n) == (32, ("val",), {"val": 793})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "Relative_Depth" / FILE
    frame = pl.read_parquet(path)
    frame.drop("prompt").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"Relative_Depth/val-00000-of-00001\.parquet.*'prompt'"):
        BENCH.load(tmp_path, "val")
    frame.with_columns(pl.Series("answer", [2])).write_parquet(path)
    with pytest.raises(
        DatasetFormatError, match=r"Relative_Depth/val-00000-of-00001\.parquet: row 0: field 'answer'"
    ):
        BENCH.load(tmp_path, "val")
    path.unlink()
    with pytest.raises(DatasetFormatError, match="Relative_Depth"):
        BENCH.load(tmp_path, "val")


def _records(rows):
    """(gt, category, output) -> our records."""
    return [
        {"question_id": i, "answer": out, "gt_answer": gt, "category": cat, "choices": ["x", "y"],
         "item_index": i, "item_key": str(i)}
        for i, (gt, cat, out) in enumerate(rows)
    ]  # fmt: skip


def test_x5_rule():
    rows = [
        ("(A)", "Counting", "A"),
        ("(A)", "Counting", "(A) yes"),
        ("(A)", "Counting", "A. three"),
        ("(A)", "IQ_Test", "The answer is A"),  # "the": wrong
        ("(A)", "IQ_Test", "A\nB"),  # one-space split keeps "a\nb": wrong
        ("(B)", "IQ_Test", "(b)."),
        ("(B)", "Spatial_Relation", ""),
        ("(B)", "Spatial_Relation", " "),
    ]
    result = score_records(BENCH, _records(rows))
    assert (result["n"], result["correct"], result["headline"]) == (8, 4, 50.0)
    assert result["by_category"]["Counting"] == {"n": 3, "accuracy": 100.0}
    assert score_records(BENCH, _records(rows), "recommended")["headline"] == 50.0
    with pytest.raises(ScoreError, match="'gt_answer'"):
        score_records(BENCH, _records([("A", "Counting", "A")]))


def test_original_answers_file(tmp_path):
    # Exactly the fields blink_eval.py writes, no item_index; question_id restarts per subtask.
    rows = [(0, "Counting", "(A)", "A"), (1, "Counting", "(C)", "B"), (0, "IQ_Test", "(B)", "(B)"),
            (0, "Spatial_Relation", "(A)", "a")]  # fmt: skip
    path = tmp_path / "blink_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": q, "prompt": "p", "answer": out, "gt_answer": gt, "category": cat,
                        "model_id": "m", "choices": ["x", "y", "z"]}) + "\n"
            for q, cat, gt, out in rows
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
