"""RealWorldQA: prompt = the question as given (no suffix), X6 + first-token matching."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("realworldqa")
LETTER = "Please answer directly with only the letter of the correct option and nothing else."
NUMBER = "Please answer directly with a single word or number."

# (question, answer)
ROWS = [
    (
        f"In which direction is the front wheel of the car turned?\nA. Left\nB. Straight\nC. Right\n{LETTER}",
        "C",
    ),
    (f"How many lanes are there on the road?\n{NUMBER}", "3"),
    (f"Is the traffic light green?\nA. Yes\nB. No\n{LETTER}", "B"),
    (f"What is the speed limit on the sign?\n{NUMBER}", "Forty"),
]


def _png(seed: int) -> bytes:
    return png((30 + seed, 20), (20, 20, seed * 50))


def write_snapshot(root: Path) -> None:
    """``lmms-lab/RealWorldQA`` layout: data/test-0000k-of-00002.parquet (image, question, answer)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for k, part in enumerate((ROWS[:2], ROWS[2:])):
        pl.DataFrame(
            {
                "image": [{"bytes": _png(2 * k + i), "path": None} for i in range(len(part))],
                "question": [r[0] for r in part],
                "answer": [r[1] for r in part],
            }
        ).write_parquet(root / "data" / f"test-0000{k}-of-00002.parquet")


def _ours(outputs):
    return [
        {"question_id": i, "gt_answer": r[1], "answer": out, "item_index": i, "item_key": str(i)}
        for i, (r, out) in enumerate(zip(ROWS, outputs))
    ]


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "realworldqa")
    items = BENCH.load(tmp_path / "realworldqa", "test")
    assert len(items) == 4
    assert [it.key for it in items] == ["0", "1", "2", "3"]
    assert items[0].prompt == ROWS[0][0]  # nothing appended
    assert items[3].record == {"question_id": 3, "gt_answer": "Forty"}
    assert items[3].images[0].open().size == (33, 20)  # rows of the second file follow the first's


def test_broken_snapshot_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "realworldqa")
    path = tmp_path / "realworldqa" / "data" / "test-00001-of-00002.parquet"
    pl.read_parquet(path).drop("image").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00001-of-00002\.parquet.*'image'"):
        BENCH.load(tmp_path / "realworldqa", "test")


def test_x6_first_token_matching():
    # "C." -> "c" right; "3 lanes" -> "3" right; "B. No" -> "b." wrong; "The answer is forty." -> right
    result = score_records(BENCH, _ours(["C.", "3 lanes", "B. No", "The answer is forty."]))
    assert (result["headline"], result["n"]) == (75.0, 4)
    assert score_records(BENCH, _ours(["", "  ", "(c)", "Forty"]), "recommended")["headline"] == 25.0


def test_original_answers_file(tmp_path):
    # realworldqa_eval.py writes question_id, prompt, answer, gt_answer, model_id
    lines = [
        json.dumps({"question_id": i, "prompt": "p", "answer": out, "gt_answer": r[1], "model_id": "m"})
        for i, (r, out) in enumerate(zip(ROWS, ["c", "three", "B", "forty"]))
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
