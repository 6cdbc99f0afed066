"""AI2D: snapshot loading (two shards), the lettered prompt, the records, and the legacy letter->index rule."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("ai2d")
SUFFIX = "Answer with the option's letter from the given choices directly."
# Two shards as on the hub: (file, [(question, options, answer)]).
SHARDS = [
    ("test-00000-of-00002.parquet", [("Which part is the leaf?", ["root", "stem", "leaf", "flower"], "2"),
                                     ("What eats grass?", ["cow", "lion", "hawk"], "0")]),
    ("test-00001-of-00002.parquet", [("Which stage comes first?", ["egg", "larva", "pupa", "adult"], "3")]),
]  # fmt: skip


def _png(seed: int) -> bytes:
    return png((32 + seed, 24), (seed * 80 % 255, 200, 10))


def write_snapshot(root: Path) -> None:
    """lmms-lab/ai2d layout: data/test-0000k-of-00002.parquet (question, options list, answer str, image)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for k, (name, rows) in enumerate(SHARDS):
        pl.DataFrame(
            {
                "question": [r[0] for r in rows],
                "options": [r[1] for r in rows],
                "answer": [r[2] for r in rows],
                "image": [{"bytes": _png(3 * k + i), "path": None} for i in range(len(rows))],
            }
        ).write_parquet(root / "data" / name)


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["0", "1", "2"]
    assert items[0].prompt == f"Which part is the leaf?\nA. root\nB. stem\nC. leaf\nD. flower\n{SUFFIX}"
    assert items[1].prompt == f"What eats grass?\nA. cow\nB. lion\nC. hawk\n{SUFFIX}"  # only 3 options
    assert items[2].record == {"question_id": 2, "gt_answer": "3", "text_answer": "adult"}
    assert items[2].images[0].open().size == (35, 24)
    assert (BENCH.max_new_tokens, BENCH.expected_n) == (512, {"test": 3088})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / SHARDS[1][0]
    frame = pl.read_parquet(path)
    frame.drop("options").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00001-of-00002\.parquet.*'options'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("answer", ["4"])).write_parquet(path)  # not an option index
    with pytest.raises(DatasetFormatError, match=r"test-00001-of-00002\.parquet: row 0: field 'answer'"):
        BENCH.load(tmp_path, "test")
    frame.with_columns(pl.Series("answer", [3])).write_parquet(path)  # an int, not a string
    with pytest.raises(DatasetFormatError, match=r"row 0: field 'answer': expected str"):
        BENCH.load(tmp_path, "test")


# GT "2" (option C); docs/eval-legacy-scorers.md: X1 (R ".:,"), a-d -> "0"-"3", anything else kept as is.
CASES = [
    ("C", True),
    ("c.", True),
    ("(C) leaf", True),
    ("The answer is C", True),
    ("Answer: c,", True),
    ("2", True),  # the quirk: a digit is kept and compared with the index string
    ("2 apples", True),
    ("(2)", True),
    ("20", True),  # X1 keeps one character
    ("The answer is: C", False),  # ":" is left
    ("leaf", False),  # "l"
    ("B", False),
    ("", False),
    ("   ", False),
]


def test_legacy_letter_to_index_quirk():
    records = [
        {
            "question_id": i,
            "answer": out,
            "gt_answer": "2",
            "text_answer": "leaf",
            "item_index": i,
            "item_key": str(i),
        }
        for i, (out, _) in enumerate(CASES)
    ]
    marks = [BENCH.correct(r, "legacy") for r in records]
    assert marks == [ok for _, ok in CASES]
    result = score_records(BENCH, records)
    assert (result["n"], result["correct"]) == (14, 9)
    assert result["headline"] == pytest.approx(900 / 14)
    assert score_records(BENCH, records, "recommended")["headline"] == result["headline"]


def test_original_answers_file(tmp_path):
    # Exactly the fields ai2d_eval.py writes, no item_index.
    rows = [("2", "leaf", "C"), ("0", "cow", "B"), ("3", "adult", "The answer is D."), ("1", "stem", "b")]
    path = tmp_path / "ai2d_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "prompt": "p", "answer": out, "gt_answer": gt, "text_answer": text,
                        "model_id": "m"}) + "\n"
            for i, (gt, text, out) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
