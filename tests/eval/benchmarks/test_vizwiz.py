"""VizWiz: val + test loading, the prompt, the records, VQA accuracy on val rows, the test submission."""

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

BENCH = BENCHMARKS.get("vizwiz")
INSTRUCTION = (
    "When the provided information is insufficient, respond with 'Unanswerable'.\n"
    "Answer the question using a single word or phrase."
)
VAL = [
    ("VizWiz_val_00000000", "What is this?", ["bottle"] * 6 + ["water bottle"] * 4),
    ("VizWiz_val_00000001", "What color is this shirt?", ["blue"] * 3 + ["navy"] * 7),
    ("VizWiz_val_00000002", "Can you read this label?", ["unanswerable"] * 10),
]
TEST = [("VizWiz_test_00000000", "What is on the screen?"), ("VizWiz_test_00000001", "What flavor is this?")]


def _png(seed: int) -> bytes:
    return png((16, 12 + seed), (90, seed * 40 % 255, 10))


def _frame(rows, answers, seed):
    return pl.DataFrame(
        {
            "question_id": [r[0] for r in rows],
            "image": [{"bytes": _png(seed + i), "path": f"{r[0]}.jpg"} for i, r in enumerate(rows)],
            "question": [r[1] for r in rows],
            "answers": answers,
            "category": ["other"] * len(rows),
        },
        schema_overrides={"answers": pl.List(pl.String)},
    )


def write_snapshot(root: Path) -> None:
    """lmms-lab/VizWiz-VQA layout: data/val-*.parquet and data/test-*.parquet (test without answers)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    _frame(VAL, [r[2] for r in VAL], 0).write_parquet(root / "data" / "val-00000-of-00001.parquet")
    _frame(TEST, [[], []], 10).write_parquet(root / "data" / "test-00000-of-00001.parquet")


def test_default_split_loads_val_then_test_like_the_original(tmp_path):
    write_snapshot(tmp_path)
    assert BENCH.splits[0] == "val+test"
    items = BENCH.load(tmp_path, "val+test")
    assert [it.key for it in items] == [r[0] for r in VAL] + [r[0] for r in TEST]
    assert items[1].prompt == "What color is this shirt?\n" + INSTRUCTION
    assert items[1].record == {
        "idx": 1,
        "image_id": "VizWiz_val_00000001.jpg",
        "gt_answer": VAL[1][2],
        "category": "val",
    }
    assert items[4].record == {
        "idx": 4,
        "image_id": "VizWiz_test_00000001.jpg",
        "gt_answer": [],
        "category": "test",
    }
    assert items[3].images[0].open().size == (16, 22)
    assert all(it.generate for it in items)
    assert [len(BENCH.load(tmp_path, s)) for s in ("val", "test")] == [3, 2]
    assert (BENCH.max_new_tokens, BENCH.expected_n["val+test"]) == (128, 12319)


def test_null_test_answers_are_kept_as_null(tmp_path):
    write_snapshot(tmp_path)
    _frame(TEST, [None, None], 10).write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet")
    assert [it.record["gt_answer"] for it in BENCH.load(tmp_path, "test")] == [None, None]


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / "data" / "val-00000-of-00001.parquet"
    frame = pl.read_parquet(path)
    frame.drop("question").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"val-00000-of-00001\.parquet.*'question'"):
        BENCH.load(tmp_path, "val+test")
    frame.with_columns(pl.Series("answers", ["a", "b", "c"])).write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"val-00000-of-00001\.parquet: row 0: field 'answers'"):
        BENCH.load(tmp_path, "val")
    (tmp_path / "data" / "test-00000-of-00001.parquet").unlink()
    with pytest.raises(DatasetFormatError, match="split 'test'"):
        BENCH.load(tmp_path, "test")


def _record(i, pred, gts, category, qid=None):
    qid = qid or f"VizWiz_{category}_{i:08d}"
    return {"idx": i, "image_id": qid + ".jpg", "answer": pred, "gt_answer": gts, "category": category,
            "item_index": i, "item_key": qid}  # fmt: skip


def test_only_val_rows_are_scored_and_test_rows_go_to_the_submission():
    records = [
        _record(0, "Bottle.", VAL[0][2], "val"),  # 6 x bottle -> 1.0
        _record(1, "blue", VAL[1][2], "val"),  # 3 x blue -> 0.9
        _record(2, "Unanswerable", VAL[2][2], "val"),  # 1.0
        _record(3, "A TV Screen", [], "test"),
        _record(4, "Cherry", None, "test"),  # no GT at all: never read
    ]
    result = score_records(BENCH, records)
    assert (result["headline"], result["n"], result["test_rows"]) == (pytest.approx(290 / 3), 3, 2)
    assert BENCH.submission(records) == {
        "vizwiz_submission.json": [
            {"image": "VizWiz_test_00000003.jpg", "answer": "a tv screen"},
            {"image": "VizWiz_test_00000004.jpg", "answer": "cherry"},
        ]
    }
    assert BENCH.submission(records[:3]) == {}


def test_test_split_alone_has_no_local_score():
    result = score_records(BENCH, [_record(0, "cat", [], "test")])
    assert (result["headline"], result["n"]) == (None, 0)


def test_period_cap_and_ten_answer_rule_on_val_rows():
    records = [_record(0, "x." * 40, ["x" * 40] * 10, "val")]
    assert score_records(BENCH, records)["headline"] == 0.0
    assert score_records(BENCH, records, "recommended")["headline"] == 100.0
    with pytest.raises(ScoreError, match=r"VizWiz_val_00000000\.jpg.*must be a list of 10"):
        score_records(BENCH, [_record(0, "cat", ["cat"] * 5, "val")])
    with pytest.raises(ScoreError, match="field 'category' is missing"):
        score_records(BENCH, [{"idx": 0, "answer": "cat", "gt_answer": ["cat"] * 10}])


def test_original_answers_file(tmp_path):
    # Exactly the fields vizwiz_eval.py writes, in its order, no item_index; val rows then test rows.
    rows = [
        ("VizWiz_val_00000000", "water bottle", VAL[0][2], "val"),  # 4 matches -> 1.0
        ("VizWiz_val_00000001", "Navy blue", VAL[1][2], "val"),  # 0
        ("VizWiz_test_00000000", "Netflix", [], "test"),
    ]
    path = tmp_path / "vizwiz_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"idx": i, "image_id": qid + ".jpg", "prompt": "p", "answer": pred, "gt_answer": gts,
                        "model_id": "cambrian-8b", "category": cat}) + "\n"
            for i, (qid, pred, gts, cat) in enumerate(rows)
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 50.0, 2)
