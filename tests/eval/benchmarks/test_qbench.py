"""Q-Bench (LLVisionQA dev): json + images folder, lettered candidates, X4 matching, per-type scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError

SUFFIX = "Please answer directly with only the letter of the correct option and nothing else."
BENCH = BENCHMARKS.get("qbench")

QUESTIONS = [
    {"img_path": "00079.jpg", "question": "Is the image clear?", "candidates": ["Yes", "No"],
     "correct_ans": "No", "type": 0, "concern": 0},
    {"img_path": "00160.jpg", "question": "What is the most severe distortion in this image?",
     "candidates": ["Noise", "Motion blur", "Overexposure", "Compression artifacts"],
     "correct_ans": "Motion blur", "type": 1, "concern": 0},
    {"img_path": "00205.jpg", "question": "How is the lighting of the image?",
     "candidates": ["Bright", "Dim", "Normal"], "correct_ans": "Normal", "type": 2, "concern": 1},
]  # fmt: skip


def write_snapshot(root: Path) -> None:
    """``teowu/LLVisionQA-QBench`` layout: llvisionqa_dev.json + images/ (images_llvisionqa.tar extracted)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "llvisionqa_dev.json").write_text(json.dumps(QUESTIONS, indent=2))
    for i, q in enumerate(QUESTIONS):
        Image.new("RGB", (24 + i, 18), (i * 70, 120, 30)).save(root / "images" / q["img_path"])


def _ours(outputs):
    gts = ["B", "B", "C"]
    return [
        {"question_id": i, "gt_answer": g, "type": q["type"], "answer": out, "item_index": i, "item_key": str(i)}
        for i, (q, g, out) in enumerate(zip(QUESTIONS, gts, outputs))
    ]  # fmt: skip


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "qbench")
    items = BENCH.load(tmp_path / "qbench", "dev")
    assert len(items) == 3
    assert items[1].prompt == (
        "What is the most severe distortion in this image? Options:\nA. Noise\nB. Motion blur\n"
        "C. Overexposure\nD. Compression artifacts\n" + SUFFIX
    )
    assert [it.record for it in items] == [
        {"question_id": 0, "gt_answer": "B", "type": 0},
        {"question_id": 1, "gt_answer": "B", "type": 1},
        {"question_id": 2, "gt_answer": "C", "type": 2},
    ]
    assert items[2].images[0].open().size == (26, 18)
    assert BENCH.splits == ("dev",) and BENCH.max_new_tokens == 32


def test_broken_snapshot_names_file_and_field(tmp_path):
    root = tmp_path / "qbench"
    write_snapshot(root)
    (root / "images" / "00160.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"row 1: image .*images/00160\.jpg does not exist"):
        BENCH.load(root, "dev")
    broken = [dict(QUESTIONS[0], correct_ans="Maybe")]
    (root / "llvisionqa_dev.json").write_text(json.dumps(broken))
    with pytest.raises(DatasetFormatError, match=r"llvisionqa_dev\.json: row 0: field 'correct_ans'"):
        BENCH.load(root, "dev")
    (root / "llvisionqa_dev.json").write_text(
        json.dumps([{k: v for k, v in QUESTIONS[0].items() if k != "type"}])
    )
    with pytest.raises(DatasetFormatError, match=r"llvisionqa_dev\.json: row 0: field 'type' is missing"):
        BENCH.load(root, "dev")
    (root / "llvisionqa_dev.json").write_text(json.dumps([dict(QUESTIONS[0], candidates="Yes/No")]))
    with pytest.raises(DatasetFormatError, match=r"field 'candidates': expected list"):
        BENCH.load(root, "dev")


def test_x4_matching_and_question_types():
    # "B. No" -> "b" right; "B. Motion blur" right; "(C)" -> "(c)" wrong
    result = score_records(BENCH, _ours(["B. No", "b. motion blur", "(C)"]))
    assert result["headline"] == pytest.approx(200 / 3)
    assert result["n"] == 3
    assert result["by_category"] == {"How": {"n": 1, "accuracy": 0.0}, "What": {"n": 1, "accuracy": 100.0},
                                     "Yes/No": {"n": 1, "accuracy": 100.0}}  # fmt: skip
    assert score_records(BENCH, _ours(["", "B blurry", "c"]), "recommended")["headline"] == pytest.approx(
        100 / 3
    )


def test_original_answers_file(tmp_path):
    # qbench_eval.py writes question_id, prompt, answer, gt_answer, type, model_id
    lines = [
        json.dumps(
            {"question_id": i, "prompt": "p", "answer": out, "gt_answer": g, "type": t, "model_id": "m"}
        )
        for i, (out, g, t) in enumerate([("B", "B", 0), ("A", "B", 1), ("C.", "C", 2), ("a", "A", "0")])
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
    assert result["by_category"]["Yes/No"] == {"n": 2, "accuracy": 100.0}
    path.write_text(json.dumps({"question_id": 0, "answer": "A", "gt_answer": "A", "type": None}) + "\n")
    with pytest.raises(ScoreError, match="type None"):
        score_file(BENCH, path)
