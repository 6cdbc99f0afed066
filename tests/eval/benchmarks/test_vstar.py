"""V*Bench: test_questions.jsonl + image folders, the prompt as it is, the records, and X1 scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError

BENCH = BENCHMARKS.get("vstar")
INSTRUCTION = "Answer with the option's letter from the given choices directly."
# (image, category, question, options, label)
ROWS = [
    ("direct_attributes/sa_4690.jpg", "direct_attributes", "What is the material of the glove?",
     ["rubber", "cotton", "kevlar", "leather"], "A"),
    ("direct_attributes/sa_17.jpg", "direct_attributes", "What is the color of the cup?",
     ["red", "blue", "white", "black"], "C"),
    ("relative_position/sa_79958.jpg", "relative_position", "Is the ladder on the left or right of the wagon?",
     ["left", "right"], "B"),
]  # fmt: skip


def _text(question: str, options: list[str]) -> str:
    return question + "".join(f"\n({'ABCD'[i]}) {o}" for i, o in enumerate(options)) + "\n" + INSTRUCTION


def write_snapshot(root: Path) -> None:
    """craigwu/vstar_bench layout: test_questions.jsonl and the direct_attributes/relative_position folders."""
    for i, (image, *_) in enumerate(ROWS):
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40 + i, 30), (i * 70, 20, 220)).save(root / image, format="JPEG")
    lines = [
        {
            "image": image,
            "text": _text(question, options),
            "category": category,
            "question_id": i,
            "label": label,
        }
        for i, (image, category, question, options, label) in enumerate(ROWS)
    ]
    (root / "test_questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_load_prompt_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "test")
    assert [it.key for it in items] == ["0", "1", "2"]
    # The text already holds the options and the instruction: nothing is appended.
    assert items[2].prompt == (
        "Is the ladder on the left or right of the wagon?\n(A) left\n(B) right\n" + INSTRUCTION
    )
    assert [it.record for it in items] == [
        {"question_id": 0, "gt_answer": "A"},
        {"question_id": 1, "gt_answer": "C"},
        {"question_id": 2, "gt_answer": "B"},
    ]
    assert items[1].images[0].open().size == (41, 30)
    assert (BENCH.max_new_tokens, BENCH.expected_n) == (32, {"test": 191})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "test_questions.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "label"}) + "\n" for x in lines))
    with pytest.raises(DatasetFormatError, match=r"test_questions\.jsonl: row 0: field 'label'"):
        BENCH.load(tmp_path, "test")
    path.write_text("".join(json.dumps({**x, "text": 5}) + "\n" for x in lines))
    with pytest.raises(DatasetFormatError, match=r"test_questions\.jsonl: row 0: field 'text'"):
        BENCH.load(tmp_path, "test")
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / ROWS[1][0]).unlink()
    with pytest.raises(DatasetFormatError, match=r"row 1: field 'image'.*sa_17\.jpg does not exist"):
        BENCH.load(tmp_path, "test")
    with pytest.raises(DatasetFormatError, match=r"test_questions\.jsonl does not exist"):
        BENCH.load(tmp_path / "elsewhere", "test")


def test_x1_rule():
    outputs = ["A", "(C) white", "The answer is B.", "Answer: A", "b", "The answer is: A", "", "  "]
    gts = ["A", "C", "B", "A", "B", "A", "A", "B"]
    records = [{"question_id": i, "answer": o, "gt_answer": g, "item_index": i, "item_key": str(i)}
               for i, (o, g) in enumerate(zip(outputs, gts))]  # fmt: skip
    result = score_records(BENCH, records)
    assert (result["n"], result["correct"], result["headline"]) == (8, 5, 62.5)
    assert score_records(BENCH, records, "recommended")["headline"] == 62.5


def test_original_answers_file(tmp_path):
    # Exactly the fields vstar_eval.py writes, no item_index.
    rows = [("A", "A"), ("C", "B"), ("B", "(B) right"), ("A", "a.")]
    path = tmp_path / "vstar_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "prompt": "p", "answer": out, "gt_answer": gt, "model_id": "m"})
            + "\n"
            for i, (gt, out) in enumerate(rows)
        )
    )
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
