"""MMMU validation: snapshot loading, MC/open prompts, option recovery (legacy and parsed), image tags,
the category, and the legacy rule (X1/X6 + tolerance relative to the prediction)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.benchmarks.mmmu import MMMU, options_legacy, options_parsed
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks import png

BENCH = BENCHMARKS.get("mmmu")
LETTER = "Answer with the option's letter from the given choices directly."
WORD = "Answer the question using a single word or phrase."
FILE = "validation-00000-of-00001.parquet"
IMAGE = pl.Struct({"bytes": pl.Binary, "path": pl.String})
# (id, question, options, answer, question_type, has image_1, has image_2)
ROWS = [
    ("validation_Accounting_1", "Look at <image 1> and <image 2>. Which animal?", "['A cat', 'A dog']", "B",
     "multiple-choice", True, True),
    ("validation_Art_Theory_12", " <image 1> How many apples?", "[]", "42", "open", True, False),
    ("validation_Biology_3", "Which colour?", "[\"It's red\", 'blue']", "A", "multiple-choice", True, False),
    ("validation_Math_7", "  What is 2+2? ", "[]", "4", "open", False, False),
]  # fmt: skip


def _png(seed: int) -> bytes:
    return png((28 + seed, 22), (seed * 70 % 255, 30, 200))


def write_snapshot(root: Path) -> None:
    """lmms-lab/MMMU layout: data/validation-*.parquet; options is the string form of a list."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    n = len(ROWS)
    images = {f"image_{k}": [None] * n for k in range(1, 8)}
    images["image_1"] = [
        {"bytes": _png(i), "path": f"{i}_1.png"} if r[5] else None for i, r in enumerate(ROWS)
    ]
    images["image_2"] = [
        {"bytes": _png(9), "path": f"{i}_2.png"} if r[6] else None for i, r in enumerate(ROWS)
    ]
    pl.DataFrame(
        {
            "id": [r[0] for r in ROWS],
            "question": [r[1] for r in ROWS],
            "options": [r[2] for r in ROWS],
            "explanation": [""] * n,
            **images,
            "img_type": ["['Diagrams']"] * n,
            "answer": [r[3] for r in ROWS],
            "topic_difficulty": ["Medium"] * n,
            "question_type": [r[4] for r in ROWS],
            "subfield": ["x"] * n,
        },
        schema_overrides={f"image_{k}": IMAGE for k in range(1, 8)},
    ).write_parquet(root / "data" / FILE)


def test_load_prompts_records_images(tmp_path):
    write_snapshot(tmp_path)
    items = BENCH.load(tmp_path, "validation")
    assert [it.key for it in items] == [r[0] for r in ROWS]
    # MC: " Options:" + lettered options + suffix; every <image N> tag removed (only image_1 is fed).
    assert items[0].prompt == f"Look at  and . Which animal? Options:\nA. A cat\nB. A dog\n{LETTER}"
    assert len(items[0].images) == 1 and items[0].images[0].open().size == (28, 22)
    # Open, with an image: the original strips "<image>\n" + text, so only the end goes.
    assert items[1].prompt == f"  How many apples?\n{WORD}"
    # Legacy option recovery: single-quoted substrings (an apostrophe breaks the list).
    assert items[2].prompt == f'Which colour? Options:\nA. s red", \n{LETTER}'
    # No image: the whole text is stripped.
    assert items[3].prompt == f"What is 2+2? \n{WORD}" and items[3].images == []
    assert items[1].record == {"question_id": 1, "gt_answer": "42", "category": "Art", "type": "open"}
    assert items[0].record["category"] == "Accounting"
    assert (BENCH.max_new_tokens, BENCH.splits, BENCH.expected_n) == (
        512,
        ("validation",),
        {"validation": 900},
    )


def test_recommended_option_parsing(tmp_path, monkeypatch):
    assert options_legacy("['A cat', 'A dog']") == ["A cat", "A dog"]
    assert options_legacy("[\"It's red\", 'blue']") == ['s red", ']
    assert options_parsed("[\"It's red\", 'blue']") == ["It's red", "blue"]
    with pytest.raises(DatasetFormatError, match="'options'"):
        options_parsed("not a list")
    write_snapshot(tmp_path)
    monkeypatch.setattr(MMMU, "option_rules", "recommended")
    items = BENCH.load(tmp_path, "validation")
    assert items[2].prompt == f"Which colour? Options:\nA. It's red\nB. blue\n{LETTER}"


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / FILE
    frame = pl.read_parquet(path)
    frame.drop("question_type").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}.*'question_type'"):
        BENCH.load(tmp_path, "validation")
    frame.with_columns(pl.Series("answer", [1, 2, 3, 4])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=rf"{FILE}: row 0: field 'answer'"):
        BENCH.load(tmp_path, "validation")


def _records(rows):
    """(gt_answer, type, output) -> our records."""
    return [
        {"question_id": i, "answer": out, "gt_answer": gt, "category": "Art", "type": t, "item_index": i,
         "item_key": str(i)}
        for i, (gt, t, out) in enumerate(rows)
    ]  # fmt: skip


def test_legacy_rule_mc_x1_open_x6_swapped_tolerance():
    rows = [
        ("B", "multiple-choice", "The answer is B."),  # X1 -> b
        ("B", "multiple-choice", "(B) A dog"),  # X1 -> b
        ("B", "multiple-choice", "The answer is: B"),  # X1 -> ":" (legacy pitfall): wrong
        ("B", "multiple-choice", "Dog"),  # X1 -> d: wrong
        ("42", "open", "The answer is 42."),  # X6 -> 42
        ("42", "open", "42 apples"),  # X6 keeps the whole text: wrong
        ("100", "open", "105"),  # 5 <= 0.05 * 105
        ("100", "open", "95"),  # 5 > 0.05 * 95 = 4.75: wrong (right when relative to the GT)
        ("42", "open", "inf"),  # tolerance relative to the prediction: infinite
        ("Paris", "open", "paris."),  # lower-cased GT, trailing period dropped
        ("4", "open", ""),
        ("B", "multiple-choice", "  "),
    ]
    legacy = score_records(BENCH, _records(rows))
    assert (legacy["correct"], legacy["n"]) == (6, 12)
    assert legacy["headline"] == pytest.approx(50.0)
    recommended = score_records(BENCH, _records(rows), "recommended")
    assert recommended["correct"] == 6  # 100/95 now right, inf now wrong


def test_type_is_required_and_anything_but_multiple_choice_is_open():
    assert score_records(BENCH, _records([("b", "multi_choice", "b) yes")]))["correct"] == 0  # X6: "b) yes"
    with pytest.raises(ScoreError, match="'type'"):
        BENCH.score([{"answer": "B", "gt_answer": "B"}], "legacy")


def test_original_answers_file(tmp_path):
    # Exactly the fields mmmu_eval.py writes, no item_index.
    rows = [("B", "multiple-choice", "B", "Accounting"), ("42", "open", "41", "Art"),
            ("A", "multiple-choice", "The answer is: A", "Biology"), ("7", "open", "seven", "Math")]  # fmt: skip
    path = tmp_path / "mmmu_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"model_id": "m", "question_id": i, "prompt": "p", "answer": out, "gt_answer": gt,
                        "category": cat, "type": t}) + "\n"
            for i, (gt, t, out, cat) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    # B -> b ✓; 41 vs 42: 1 <= 2.05 ✓; ":" ✗; "seven" ✗
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 4)
    assert result["by_category"]["Art"] == {"n": 1, "accuracy": 100.0}
