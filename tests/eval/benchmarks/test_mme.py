"""MME: snapshot loading, prompts and records, acc/acc+ under legacy and recommended rules."""

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

SUFFIX = "Answer the question using a single word or phrase."
MME = BENCHMARKS.get("mme")

# (dataset question_id = image file, question, answer, category): docs/eval-protocols.md 7.5's layout
ROWS = [
    ("existence/1.png", "Is there a dog in this image? Please answer yes or no.", "Yes", "existence"),
    ("existence/1.png", "Is there a cat in this image? Please answer yes or no.", "No", "existence"),
    ("existence/2.png", "Is there a car in this image? Please answer yes or no.", "Yes", "existence"),
    ("existence/2.png", "Is there a bus in this image? Please answer yes or no.", "No", "existence"),
    ("commonsense_reasoning/3.png", "Should I wear a coat? Please answer yes or no.", "Yes",
     "commonsense_reasoning"),
    ("commonsense_reasoning/3.png", "Is it summer? Please answer yes or no.", "No", "commonsense_reasoning"),
]  # fmt: skip
OUTPUTS_7_5 = ["Yes", "no.", "yes", "yes", "yes", "No"]


def _png(seed: int) -> bytes:
    return png((16 + seed, 12), (seed * 50 % 255, 80, 120))


def write_snapshot(root: Path) -> None:
    """``lmms-lab/MME`` layout: data/test-00000-of-00001.parquet, image as HF structs."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "question_id": [r[0] for r in ROWS],
            "image": [{"bytes": _png(i // 2), "path": r[0].split("/")[1]} for i, r in enumerate(ROWS)],
            "question": [r[1] for r in ROWS],
            "answer": [r[2] for r in ROWS],
            "category": [r[3] for r in ROWS],
        }
    ).write_parquet(root / "data" / "test-00000-of-00001.parquet")


def _ours(outputs, rows=ROWS):
    return [
        {"question_id": i, "gt_answer": r[2], "category": r[3], "answer": out, "prompt": "p", "model_id": "m",
         "item_index": i, "item_key": str(i)}
        for i, (r, out) in enumerate(zip(rows, outputs))
    ]  # fmt: skip


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "mme")
    items = MME.load(tmp_path / "mme", "test")
    assert len(items) == 6
    assert [it.key for it in items] == ["0", "1", "2", "3", "4", "5"]
    assert items[1].prompt == "Is there a cat in this image? Please answer yes or no.\n" + SUFFIX
    assert items[4].record == {"question_id": 4, "gt_answer": "Yes", "category": "commonsense_reasoning"}
    assert items[2].images[0].open().size == (17, 12)
    assert MME.splits[0] == "test" and MME.max_new_tokens == 32 and MME.headline_name == "Perception"


def test_broken_snapshot_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "mme")
    path = tmp_path / "mme" / "data" / "test-00000-of-00001.parquet"
    frame = pl.read_parquet(path)
    frame.drop("category").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00000-of-00001\.parquet.*'category'"):
        MME.load(tmp_path / "mme", "test")
    frame.with_columns(pl.Series("answer", [1, 0, 1, 0, 1, 0])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"row 0: field 'answer': expected str"):
        MME.load(tmp_path / "mme", "test")
    frame.with_columns(pl.lit("Existence").alias("category")).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"'Existence' is not one of the 14"):
        MME.load(tmp_path / "mme", "test")


@pytest.mark.parametrize("rules", ["legacy", "recommended"])
def test_worked_example_7_5(rules):
    result = score_records(MME, _ours(OUTPUTS_7_5), rules)
    assert (result["headline"], result["n"]) == (125.0, 6)
    assert (result["Perception"], result["Cognition"], result["total_score"]) == (125.0, 200.0, 325.0)
    assert result["accuracy"] == pytest.approx(500 / 6)
    assert result["by_subtask"]["existence"] == {"n": 4, "acc": 75.0, "acc_plus": 50.0, "score": 125.0}


def test_answer_matching_lowercases_and_strips_trailing_periods_only():
    outputs = ["YES...", "No, it is not", "", "  ", "yes", "no"]
    result = score_records(MME, _ours(outputs))
    # right: rows 0, 4, 5; "No, it is not" and the empty outputs are wrong
    assert result["by_subtask"]["existence"]["acc"] == 25.0
    assert result["by_subtask"]["commonsense_reasoning"]["score"] == 200.0


def _original_file(tmp_path, order, outputs):
    # mme_eval.py writes question_id = running index, prompt, answer, gt_answer, category, model_id
    lines = [
        json.dumps({"question_id": q, "prompt": "p", "answer": outputs[q], "gt_answer": ROWS[q][2],
                    "category": ROWS[q][3], "model_id": "m"})
        for q in order
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_original_answers_file(tmp_path):
    path = _original_file(tmp_path, range(6), OUTPUTS_7_5)
    result = score_file(MME, path)
    assert (result["format"], result["headline"], result["n"], result["Cognition"]) == (
        "original",
        125.0,
        6,
        200.0,
    )


def test_unordered_file_legacy_follows_lines_recommended_follows_question_ids(tmp_path):
    # existence by question_id: q0 right, q1 wrong, q2 wrong, q3 right -> no image has both right.
    outputs = ["yes", "yes", "no", "no", "yes", "no"]
    in_order = score_file(MME, _original_file(tmp_path, [0, 1, 2, 3, 4, 5], outputs))
    assert in_order["by_subtask"]["existence"]["acc_plus"] == 0.0
    # Lines q0, q3 sit on lines 0-1: the legacy state machine closes a "pair" of two different images.
    shuffled = _original_file(tmp_path, [0, 3, 1, 2, 4, 5], outputs)
    legacy = score_file(MME, shuffled, "legacy")
    assert legacy["by_subtask"]["existence"]["acc_plus"] == 50.0
    assert legacy["headline"] == 100.0
    recommended = score_file(MME, shuffled, "recommended")
    assert recommended["by_subtask"]["existence"]["acc_plus"] == 0.0
    assert recommended["headline"] == 50.0 == in_order["headline"]


def test_unknown_category_and_missing_fields_are_score_errors():
    records = _ours(OUTPUTS_7_5)
    records[0]["category"] = "Existence"
    with pytest.raises(ScoreError, match=r"'Existence'.*existence, count"):
        score_records(MME, records)
    records = _ours(OUTPUTS_7_5)
    del records[2]["gt_answer"]
    with pytest.raises(ScoreError, match="'gt_answer'"):
        score_records(MME, records)
