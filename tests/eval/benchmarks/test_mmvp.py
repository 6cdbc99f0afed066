"""MMVP: Questions.csv + "MMVP Images" loading, the option rewrite, X2 matching, pair accuracy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmark import ScoreError
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.benchmarks.mmvp import options_block, text_options
from cambrian.eval.data import DatasetFormatError

SUFFIX = "Answer with the option's letter from the given choices directly."
MMVP = BENCHMARKS.get("mmvp")

# (Index, Question, Options, Correct Answer) as in the published CSV
ROWS = [
    ("1", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(a)"),
    ("2", "Are the butterfly's wings closer to being open or closed?", "(a) Open (b) Closed", "(b)"),
    ("3", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(a)"),
    ("4", "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(b)"),
    ("5", "Do you see any window in this image?", "(a) Yes (b) No", "(a)"),
    ("6", "Do you see any window in this image?", "(a) Yes (b) No", "(b)"),
]


def write_snapshot(root: Path) -> None:
    """``MMVP/MMVP`` layout: Questions.csv (header spelt ``lndex``) + ``MMVP Images/<Index>.jpg``."""
    (root / "MMVP Images").mkdir(parents=True, exist_ok=True)
    with (root / "Questions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lndex", "Question", "Options", "Correct Answer"])
        writer.writerows(ROWS)
    for index, *_ in ROWS:
        Image.new("RGB", (20 + int(index), 14), (int(index) * 30, 60, 90)).save(
            root / "MMVP Images" / f"{index}.jpg"
        )


def _ours(outputs, options=("Open", "Closed")):
    return [
        {"question_id": i, "gt_answer": r[3], "text_options": list(options), "answer": out, "item_index": i,
         "item_key": r[0]}
        for i, (r, out) in enumerate(zip(ROWS, outputs))
    ]  # fmt: skip


def test_option_parsing_as_the_original():
    assert text_options("(a) Open (b) Closed") == ["Open", "Closed"]
    assert options_block("(a) Open (b) Closed") == "\nA. Open\nB. Closed"
    assert options_block("(a) Yes") == "\nA. Yes"


def test_load_prompt_record_and_images(tmp_path):
    write_snapshot(tmp_path / "mmvp")
    items = MMVP.load(tmp_path / "mmvp", "test")
    assert len(items) == 6
    assert [it.key for it in items] == ["1", "2", "3", "4", "5", "6"]
    assert items[0].prompt == (
        "Are the butterfly's wings closer to being open or closed? Options:\nA. Open\nB. Closed\n" + SUFFIX
    )
    assert items[3].record == {"question_id": 3, "gt_answer": "(b)", "text_options": ["Left", "Right"]}
    assert items[2].images[0].open().size == (23, 14)


def test_broken_snapshot_names_file_and_field(tmp_path):
    root = tmp_path / "mmvp"
    write_snapshot(root)
    (root / "MMVP Images" / "4.jpg").unlink()
    with pytest.raises(DatasetFormatError, match=r"data row 3: image: .*MMVP Images/4\.jpg does not exist"):
        MMVP.load(root, "test")
    (root / "Questions.csv").write_text("lndex,Question,Options,Correct Answer\n1,Q?,(a Open (b Closed,(a)\n")
    with pytest.raises(DatasetFormatError, match=r"Questions\.csv: data row 0: field 'Options'"):
        MMVP.load(root, "test")
    (root / "Questions.csv").write_text("1,Q?,(a) A (b) B,(a)\n1,Q?,(a) A (b) B,(b)\n")
    with pytest.raises(DatasetFormatError, match=r"Questions\.csv: field 'Index': the values are not unique"):
        MMVP.load(root, "test")
    (root / "Questions.csv").write_text("x,Q?,(a) A (b) B,(a)\n")
    with pytest.raises(DatasetFormatError, match=r"Questions\.csv: data row 0: field 'Index'"):
        MMVP.load(root, "test")
    (root / "Questions.csv").unlink()
    with pytest.raises(DatasetFormatError, match=r"Questions\.csv does not exist"):
        MMVP.load(root, "test")


@pytest.mark.parametrize("rules", ["legacy", "recommended"])
def test_worked_example_7_4(rules):
    result = score_records(MMVP, _ours(["A", "b", "A", "A", "B", "Closed"]), rules)
    assert result["headline"] == pytest.approx(100 / 3)
    assert result["n"] == 6
    assert result["row_accuracy"] == pytest.approx(200 / 3)
    assert (result["pairs"], result["pairs_correct"]) == (3, 1)


def test_x2_letter_or_full_option_text():
    # all GT (a) "Open": letter forms and the option text are right; "(a) Open"/"A. Open" are wrong
    outputs = ["(a)", "Answer: A", "open.", "(a) Open", "A. Open", ""]
    records = _ours(outputs)
    for r in records:
        r["gt_answer"] = "(a)"
    assert [MMVP.correct(r) for r in records] == [True, True, True, False, False, False]


def _original_file(tmp_path, order, outputs):
    # mmvp_eval.py writes question_id (0-based row), prompt, answer, gt_answer, model_id, text_options
    lines = [
        json.dumps({"question_id": q, "prompt": "p", "answer": outputs[q], "gt_answer": ROWS[q][3], "model_id": "m",
                    "text_options": text_options(ROWS[q][2])})
        for q in order
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_original_answers_file_with_odd_row_count(tmp_path):
    # rows 0-1 right (credit 2), 2-3 half (0), unpaired line 4 right (credit 1) -> 3 / 5
    result = score_file(MMVP, _original_file(tmp_path, range(5), ["A", "Closed", "left", "Left", "yes"]))
    assert (result["format"], result["headline"], result["n"], result["credit"]) == ("original", 60.0, 5, 3)


def test_unordered_file_legacy_pairs_lines_recommended_pairs_ids(tmp_path):
    # by id: q0 right, q1 wrong, q2 wrong, q3 right -> no pair right; the file lists q0, q3, q1, q2
    outputs = ["A", "A", "B", "B"]
    path = _original_file(tmp_path, [0, 3, 1, 2], outputs)
    assert score_file(MMVP, path, "legacy")["headline"] == 50.0
    assert score_file(MMVP, path, "recommended")["headline"] == 0.0


def test_gt_without_option_is_a_score_error():
    records = _ours(["A"])
    records[0]["gt_answer"] = "(c)"
    with pytest.raises(ScoreError, match=r"'\(c\)'"):
        score_records(MMVP, records)
