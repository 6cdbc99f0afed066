"""POPE: snapshot loading, X3 accuracy (legacy) and the LLaVA per-subset F1 (recommended)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.benchmarks.pope import llava_says_yes
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

SUFFIX = "Answer the question using a single word or phrase."
POPE = BENCHMARKS.get("pope")

# (id, question_id, question, answer, category)
ROWS = [
    ("0", "1", "Is there a snowboard in the image?", "yes", "adversarial"),
    ("1", "2", "Is there a dining table in the image?", "no", "adversarial"),
    ("2", "3", "Is there a person in the image?", "yes", "popular"),
    ("3", "4", "Is there a chair in the image?", "no", "popular"),
    ("4", "5", "Is there a car in the image?", "yes", "random"),
    ("5", "6", "Is there a kite in the image?", "no", "random"),
]
# docs/eval-protocols.md 7.6
LABELS_7_6 = ["yes", "yes", "no", "no", "no"]
OUTPUTS_7_6 = ["Yes", "No", "No, there isn't.", "There is not a dog.", "Yes, there is"]


def _png(seed: int) -> bytes:
    return png((12 + seed, 10), (40, seed * 30, 200))


def write_snapshot(root: Path) -> None:
    """``lmms-lab/POPE`` layout: data/test-00000-of-00001.parquet (id, question_id, question, answer,
    image_source, image, category), image as HF structs."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "id": [r[0] for r in ROWS],
            "question_id": [r[1] for r in ROWS],
            "question": [r[2] for r in ROWS],
            "answer": [r[3] for r in ROWS],
            "image_source": [f"COCO_val2014_{i:012d}" for i in range(len(ROWS))],
            "image": [{"bytes": _png(i), "path": None} for i in range(len(ROWS))],
            "category": [r[4] for r in ROWS],
        }
    ).write_parquet(root / "data" / "test-00000-of-00001.parquet")


def _ours(labels, outputs, categories):
    return [
        {"question_id": str(i), "gt_answer": g, "category": c, "answer": out, "item_index": i, "item_key": str(i)}
        for i, (g, out, c) in enumerate(zip(labels, outputs, categories))
    ]  # fmt: skip


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "pope")
    items = POPE.load(tmp_path / "pope", "test")
    assert len(items) == 6
    assert [it.key for it in items] == ["1", "2", "3", "4", "5", "6"]
    assert items[1].prompt == "Is there a dining table in the image?\n" + SUFFIX
    assert items[3].record == {"question_id": "4", "gt_answer": "no", "category": "popular"}
    assert items[5].images[0].open().size == (17, 10)


def test_broken_snapshot_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "pope")
    path = tmp_path / "pope" / "data" / "test-00000-of-00001.parquet"
    frame = pl.read_parquet(path)
    frame.drop("question").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test-00000-of-00001\.parquet.*'question'"):
        POPE.load(tmp_path / "pope", "test")
    frame.with_columns(pl.Series("category", [1, 2, 3, 1, 2, 3])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"row 0: field 'category': expected str"):
        POPE.load(tmp_path / "pope", "test")


def test_worked_example_7_6_legacy_accuracy():
    result = score_records(POPE, _ours(LABELS_7_6, OUTPUTS_7_6, ["random"] * 5))
    assert (result["headline"], result["n"], result["headline_name"]) == (40.0, 5, "accuracy")
    assert result["by_category"] == {"random": {"n": 5, "accuracy": 40.0}}
    assert "llava" not in result


def test_worked_example_7_6_recommended_llava_metrics():
    result = score_records(POPE, _ours(LABELS_7_6, OUTPUTS_7_6, ["random"] * 5), "recommended")
    m = result["llava"]["random"]
    assert (m["tp"], m["fn"], m["tn"], m["fp"]) == (1, 1, 2, 1)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"], m["yes_ratio"]) == (
        50.0,
        50.0,
        50.0,
        60.0,
        40.0,
    )
    assert (result["headline"], result["headline_name"], result["accuracy"]) == (50.0, "f1", 40.0)


def test_recommended_headline_is_f1_averaged_over_subsets():
    labels = [*LABELS_7_6, "yes", "no"]
    outputs = [*OUTPUTS_7_6, "Yes", "No"]
    result = score_records(POPE, _ours(labels, outputs, ["random"] * 5 + ["popular"] * 2), "recommended")
    assert result["llava"]["popular"]["f1"] == 100.0
    assert result["headline"] == 75.0  # (50 + 100) / 2, not the pooled F1
    assert result["accuracy"] == pytest.approx(400 / 7)


def test_llava_rule_is_case_sensitive_and_reads_the_first_sentence():
    assert [llava_says_yes(t) for t in ["No", "no.", "NO", "Not really", "not here", "Yes. No.", "", "No,"]] == [
        False, False, True, True, False, True, True, False]  # fmt: skip


def test_x3_first_token():
    outputs = ["no, there is not", "(no)", "Yes.", "", "There is no cat."]
    result = score_records(POPE, _ours(["no", "no", "yes", "no", "no"], outputs, ["random"] * 5))
    assert result["headline"] == 40.0  # rows 0 and 2


def test_original_answers_file(tmp_path):
    # pope_eval.py writes question_id, answer, prompt (its first character only), gt_answer, model_id, category
    lines = [
        json.dumps({"question_id": str(i + 1), "answer": out, "prompt": "<", "gt_answer": g, "model_id": "m",
                    "category": "adversarial"})
        for i, (g, out) in enumerate(zip(LABELS_7_6, OUTPUTS_7_6))
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = score_file(POPE, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 40.0, 5)
    assert score_file(POPE, path, "recommended")["headline"] == 50.0
