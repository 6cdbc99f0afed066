"""CV-Bench and the original's ade/coco/omni parts: snapshot loading, prompts, legacy scoring, the formula."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

SUFFIX = "Answer with the option's letter from the given choices directly."

# (idx, type, task, source, choices, answer)
ROWS = [
    (0, "2D", "Count", "ADE20K", ["3", "2", "1", "0"], "(C)"),
    (1, "2D", "Relation", "ADE20K", ["left", "right"], "(A)"),
    (2, "2D", "Count", "COCO", ["1", "2", "3", "4"], "(B)"),
    (3, "2D", "Relation", "COCO", ["above", "below"], "(B)"),
    (4, "3D", "Depth", "Omni3D", ["lamp", "chair"], "(A)"),
    (5, "3D", "Distance", "Omni3D", ["x", "sofa"], "(B)"),
]


def _png(seed: int) -> bytes:
    return png((20 + seed, 16), (seed * 40 % 255, 90, 160))


def _prompt(question: str, choices: list[str]) -> str:
    letters = "ABCDEF"
    return (
        question
        + " Select from the following choices."
        + "".join(f"\n({letters[i]}) {c}" for i, c in enumerate(choices))
    )


def write_snapshot(root: Path) -> None:
    """The hub layout of nyu-visionx/CV-Bench: test_2d.parquet and test_3d.parquet (image as HF structs)."""
    for kind in ("2D", "3D"):
        rows = [r for r in ROWS if r[1] == kind]
        frame = pl.DataFrame(
            {
                "idx": [r[0] for r in rows],
                "type": [r[1] for r in rows],
                "task": [r[2] for r in rows],
                "image": [{"bytes": _png(r[0]), "path": f"img_{r[0]}.png"} for r in rows],
                "question": [f"Question {r[0]}?" for r in rows],
                "choices": [r[4] for r in rows],
                "answer": [r[5] for r in rows],
                "prompt": [_prompt(f"Question {r[0]}?", r[4]) for r in rows],
                "filename": [f"img/{kind}/{r[2].lower()}/{r[0]}.png" for r in rows],
                "source": [r[3] for r in rows],
                "source_dataset": ["x"] * len(rows),
                "source_filename": ["y"] * len(rows),
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(root / f"test_{kind.lower()}.parquet")


def test_load_prompts_records_and_images(tmp_path):
    write_snapshot(tmp_path / "cvbench")
    items = BENCHMARKS.get("cvbench").load(tmp_path / "cvbench", "test")
    assert [it.key for it in items] == ["0", "1", "2", "3", "4", "5"]
    assert items[0].prompt == (
        "Question 0? Select from the following choices.\n(A) 3\n(B) 2\n(C) 1\n(D) 0\n" + SUFFIX
    )
    assert items[4].record == {"question_id": 4, "type": "3D", "task": "Depth", "source": "Omni3D",
                               "gt_answer": "(A)", "options": ["lamp", "chair"]}  # fmt: skip
    assert items[1].images[0].open().size == (21, 16)
    parts = {
        b: [it.key for it in BENCHMARKS.get(b).load(tmp_path / "cvbench", "test")]
        for b in ("ade", "coco", "omni")
    }
    assert parts == {"ade": ["0", "1"], "coco": ["2", "3"], "omni": ["4", "5"]}


def test_missing_column_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "cvbench")
    path = tmp_path / "cvbench" / "test_3d.parquet"
    pl.read_parquet(path).drop("answer").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"test_3d\.parquet.*'answer'"):
        BENCHMARKS.get("cvbench").load(tmp_path / "cvbench", "test")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        BENCHMARKS.get("cvbench").load(tmp_path / "nothing", "test")


def _records(outputs):
    return [
        {"question_id": r[0], "type": r[1], "task": r[2], "source": r[3], "gt_answer": r[5], "options": r[4],
         "answer": out, "item_index": i, "item_key": str(r[0])}
        for i, (r, out) in enumerate(zip(ROWS, outputs))
    ]  # fmt: skip


def test_official_formula_worked_example():
    # docs/eval-protocols.md 7.8 shape: ADE 1/2, COCO 2/2, Omni 0/2 (+ legacy X1 letter matching).
    outputs = ["The answer is C.", "B", "(B) 2", "b.", "The answer is: A", ""]
    result = score_records(BENCHMARKS.get("cvbench"), _records(outputs))
    assert result["CV-Bench-2D"] == pytest.approx(75.0)  # (50 + 100) / 2
    assert result["CV-Bench-3D"] == pytest.approx(0.0)
    assert result["headline"] == pytest.approx(37.5)
    assert result["n"] == 6
    assert result["by_task"]["Count"] == {"n": 2, "accuracy": 100.0}
    # pooled accuracy would be 50%; the official formula must not be pooled
    assert result["headline"] != pytest.approx(50.0)


def test_original_answer_files_of_ade_and_omni(tmp_path):
    # Records exactly as the original ade_eval.py / omni_eval.py write them (no item_index): file order.
    ade = [
        {"questionId": 0, "image": "a.png", "prompt": "p", "answer": "C", "gt_answer": "(C)", "category": "Count",
         "options": ["3", "2", "1", "0"], "model_id": "m"},
        {"questionId": 1, "image": "b.png", "prompt": "p", "answer": "Answer: (c)", "gt_answer": "(A)",
         "category": "Relation", "options": ["left", "right"], "model_id": "m"},
    ]  # fmt: skip
    path = tmp_path / "ade.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ade))
    result = score_file(BENCHMARKS.get("ade"), path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 2)
    # omni: the raw option text also counts; it fires for one-character option texts only.
    omni = [
        {"questionId": 0, "prompt": "p", "answer": "x", "gt_answer": "(B)", "category": "Distance",
         "options": ["sofa", "x"], "model_id": "m"},
        {"questionId": 1, "prompt": "p", "answer": "chair", "gt_answer": "(B)", "category": "Depth",
         "options": ["lamp", "chair"], "model_id": "m"},
        {"questionId": 2, "prompt": "p", "answer": ",", "gt_answer": "(A)", "category": "Depth",
         "options": ["", "chair"], "model_id": "m"},
    ]  # fmt: skip
    path = tmp_path / "omni.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in omni))
    result = score_file(BENCHMARKS.get("omni"), path)
    # row 0: X1 -> "x" == options[1]; row 1: "c" is neither b nor "chair"; row 2: "," -> "" == options[0]
    assert result["headline"] == pytest.approx(200 / 3)
    assert result["n"] == 3
