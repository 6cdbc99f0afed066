"""GQA: questions and images from two configs joined on imageId, the prompt, the records, exact match."""

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

BENCH = BENCHMARKS.get("gqa")
SUFFIX = "Answer the question using a single word or phrase."
QUESTIONS = "testdev_balanced_instructions/testdev-00000-of-00001.parquet"
IMAGES = "testdev_balanced_images/testdev-00000-of-00001.parquet"
# (id, imageId, question, answer, fullAnswer, (structural, semantic, detailed))
ROWS = [
    ("201307251", "n7768", "Is it an outdoors scene?", "no", "No, it is indoors.", ("verify", "global", "place")),
    ("20968379", "n161313", "Who is wearing a shirt?", "girl", "The girl is wearing a shirt.",
     ("query", "rel", "relS")),
    ("20968380", "n7768", "What is the table made of?", "wood", "The table is made of wood.",
     ("query", "attr", "materialVerify")),
]  # fmt: skip
IMAGE_IDS = ["n161313", "n7768"]


def _png(seed: int) -> bytes:
    return png((32 + seed, 24), (seed * 90 % 255, 120, 60))


def write_snapshot(root: Path) -> None:
    """lmms-lab/GQA layout: configs testdev_balanced_instructions (questions) and testdev_balanced_images."""
    for config in ("testdev_balanced_instructions", "testdev_balanced_images"):
        (root / config).mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "id": [r[0] for r in ROWS],
            "imageId": [r[1] for r in ROWS],
            "question": [r[2] for r in ROWS],
            "answer": [r[3] for r in ROWS],
            "fullAnswer": [r[4] for r in ROWS],
            "isBalanced": [True] * len(ROWS),
            "groups": [{"global": None, "local": f"10q-{r[1]}"} for r in ROWS],
            "types": [{"structural": r[5][0], "semantic": r[5][1], "detailed": r[5][2]} for r in ROWS],
            "semanticStr": ["select: scene->verify place: outdoors"] * len(ROWS),
        },
        schema_overrides={"groups": pl.Struct({"global": pl.String, "local": pl.String})},
    ).write_parquet(root / QUESTIONS)
    pl.DataFrame(
        {"id": IMAGE_IDS, "image": [{"bytes": _png(i), "path": None} for i in range(len(IMAGE_IDS))]}
    ).write_parquet(root / IMAGES)


def test_load_joins_questions_and_images(tmp_path):
    write_snapshot(tmp_path)
    assert BENCH.splits == ("testdev_balanced",)
    items = BENCH.load(tmp_path, "testdev_balanced")
    assert [it.key for it in items] == ["201307251", "20968379", "20968380"]
    assert items[1].prompt == "Who is wearing a shirt?\n" + SUFFIX
    assert items[2].record == {
        "question_id": 2,
        "gt_answer": "wood",
        "category": {"structural": "query", "semantic": "attr", "detailed": "materialVerify"},
        "gt_full_answer": "The table is made of wood.",
    }
    assert items[0].images == items[2].images  # both ask about n7768
    assert items[0].images[0].open().size == (33, 24)
    assert items[1].images[0].open().size == (32, 24)
    assert (BENCH.max_new_tokens, BENCH.expected_n) == (128, {"testdev_balanced": 12578})


def test_broken_files_name_file_and_field(tmp_path):
    write_snapshot(tmp_path)
    path = tmp_path / QUESTIONS
    frame = pl.read_parquet(path)
    frame.drop("fullAnswer").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"testdev-00000-of-00001\.parquet.*'fullAnswer'"):
        BENCH.load(tmp_path, "testdev_balanced")
    frame.with_columns(pl.Series("imageId", ["n7768", "n999", "n7768"])).write_parquet(path)
    with pytest.raises(
        DatasetFormatError, match=r"instructions.*row 1: field 'imageId': 'n999' is not an image"
    ):
        BENCH.load(tmp_path, "testdev_balanced")
    (tmp_path / IMAGES).unlink()
    with pytest.raises(DatasetFormatError, match="config testdev_balanced_images"):
        BENCH.load(tmp_path, "testdev_balanced")


def _records(pairs, types=None):
    types = types or [{"structural": "query", "semantic": "attr", "detailed": "x"}] * len(pairs)
    return [
        {
            "question_id": i,
            "answer": pred,
            "gt_answer": gt,
            "category": t,
            "item_index": i,
            "item_key": str(i),
        }
        for i, ((gt, pred), t) in enumerate(zip(pairs, types))
    ]


@pytest.mark.parametrize(
    "gt,pred,ok",
    [
        ("yes", "Yes", True),
        ("yes", "Yes.", True),
        ("table", "TABLE...", True),  # every trailing period goes
        ("yes", "yes!", False),
        ("table", "The table", False),  # no article removal, no VQA normaliser
        ("table", "table ", False),  # no strip
        ("t-shirt", "T-Shirt", True),
        ("no", "", False),
        ("no", "   ", False),
    ],
)
def test_exact_match_rule(gt, pred, ok):
    assert score_records(BENCH, _records([(gt, pred)]))["correct"] == int(ok)


def test_headline_and_type_breakdown():
    types = [
        {"structural": s, "semantic": "obj", "detailed": "d"} for s in ("verify", "verify", "query", "query")
    ]
    result = score_records(
        BENCH, _records([("no", "No"), ("yes", "no"), ("wood", "wood."), ("girl", "boy")], types)
    )
    assert (result["headline"], result["n"], result["correct"]) == (50.0, 4, 2)
    assert result["by_structural"] == {
        "query": {"n": 2, "accuracy": 50.0},
        "verify": {"n": 2, "accuracy": 50.0},
    }
    assert result["by_semantic"] == {"obj": {"n": 4, "accuracy": 50.0}}
    assert score_records(BENCH, _records([("no", "No")]), "recommended")["headline"] == 100.0


def test_bad_records_raise():
    with pytest.raises(ScoreError, match="field 'gt_answer' is missing"):
        score_records(BENCH, [{"question_id": 0, "answer": "a"}])
    with pytest.raises(ScoreError, match="'gt_answer' must be a string"):
        score_records(BENCH, [{"question_id": 0, "answer": "a", "gt_answer": None}])


def test_original_answers_file(tmp_path):
    # Exactly the fields gqa_eval.py writes, in its order, no item_index.
    rows = [(r[3], r[4], r[5]) for r in ROWS] + [("yes", "Yes, it is.", ("verify", "attr", "x"))]
    preds = ["No", "The girl", "Wood.", "Yes"]
    path = tmp_path / "gqa_answers.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question_id": i, "prompt": "p", "answer": pred, "gt_answer": gt,
                        "category": dict(zip(("structural", "semantic", "detailed"), t)), "model_id": "cambrian-8b",
                        "gt_full_answer": full}) + "\n"
            for i, ((gt, full, t), pred) in enumerate(zip(rows, preds))
        )
    )  # fmt: skip
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"]) == ("original", 75.0, 4)
    assert result["by_structural"] == {
        "query": {"n": 2, "accuracy": 50.0},
        "verify": {"n": 2, "accuracy": 100.0},
    }
