"""MMBench-CN: the Chinese suffix, ``L2-category`` layout, X3 extraction, circular accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from cambrian.eval.answers import score_file, score_records
from cambrian.eval.benchmarks import BENCHMARKS
from cambrian.eval.data import DatasetFormatError
from tests.eval.benchmarks.test_mmbench_en import HASH, frame

SUFFIX = "请直接回答选项字母。"
BENCH = BENCHMARKS.get("mmbench_cn")

# (index, question, hint, A, B, C, D, answer, category, image value, source)
Q1 = "图中是什么动物？"
Q2 = "天空是蓝色的吗？"
ROWS = [
    (241, Q1, "仔细看。", "猫", "狗", "牛", "鸡", "A", "attribute_recognition", 1, "MMBench"),
    (1000241, Q1, "仔细看。", "鸡", "猫", "狗", "牛", "B", "attribute_recognition", 1, "MMBench"),
    (2000241, Q1, "仔细看。", "牛", "鸡", "猫", "狗", "C", "attribute_recognition", 1, "MMBench"),
    (3000241, Q1, "仔细看。", "狗", "牛", "鸡", "猫", "D", "attribute_recognition", 1, "MMBench"),
    (77, Q2, "nan", "是", "否", "nan", "nan", "A", "attribute_recognition", 5, "scienceqa"),
    (1000077, Q2, "nan", "否", "是", "nan", "nan", "B", "attribute_recognition", 5, "scienceqa"),
]


def write_snapshot(root: Path) -> None:
    """``lmms-lab/MMBench_CN`` (config default) layout: data/dev-00000-of-00001.parquet, HF image structs,
    second-level category column named ``L2-category``."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    frame(ROWS, l2_name="L2-category").write_parquet(root / "data" / "dev-00000-of-00001.parquet")


def _ours(outputs):
    return [
        {"index": r[0], "question": r[1], "gt_answer": r[7], **dict(zip("ABCD", r[3:7])),
         "source_id": f"{r[1]} {HASH[r[9]]} {r[10]}", "category": r[8], "prediction": out, "item_index": i,
         "item_key": str(r[0])}
        for i, (r, out) in enumerate(zip(ROWS, outputs))
    ]  # fmt: skip


def test_load_prompt_and_record(tmp_path):
    write_snapshot(tmp_path / "mmbench_cn")
    items = BENCH.load(tmp_path / "mmbench_cn", "dev")
    assert len(items) == 6
    assert items[0].prompt == "仔细看。\n图中是什么动物？ Options:\nA. 猫\nB. 狗\nC. 牛\nD. 鸡\n" + SUFFIX
    assert items[4].prompt == "天空是蓝色的吗？ Options:\nA. 是\nB. 否\n" + SUFFIX
    assert items[4].record["source_id"] == "天空是蓝色的吗？ 00d0ae5a scienceqa"
    assert items[4].record["gt_answer"] == "A"
    assert BENCH.max_new_tokens == 128 and BENCH.answer_field == "prediction"


def test_broken_snapshot_names_file_and_field(tmp_path):
    write_snapshot(tmp_path / "mmbench_cn")
    path = tmp_path / "mmbench_cn" / "data" / "dev-00000-of-00001.parquet"
    pl.read_parquet(path).drop("hint").write_parquet(path)
    with pytest.raises(DatasetFormatError, match=r"dev-00000-of-00001\.parquet.*'hint'"):
        BENCH.load(tmp_path / "mmbench_cn", "dev")


def test_worked_example_7_7_with_x3():
    # X3 takes the first whitespace token: "(C)" -> "(c)" and "The answer is D" -> "the" are wrong here
    result = score_records(BENCH, _ours(["A", "B.", "C:", "d", "A", "A"]))
    assert (result["headline"], result["n"]) == (50.0, 6)
    assert result["accuracy"] == pytest.approx(500 / 6)
    result = score_records(BENCH, _ours(["A", "B", "(C)", "The answer is D", "A", "B"]))
    assert (result["headline"], result["accuracy"]) == (50.0, pytest.approx(400 / 6))
    assert score_records(BENCH, _ours([""] * 6))["headline"] == 0.0


def test_original_answers_file(tmp_path):
    lines = [
        json.dumps({"index": r[0], "question": r[1], "prediction": out, "gt_answer": r[7],
                    **dict(zip("ABCD", r[3:7])), "source_id": f"{r[1]} {HASH[r[9]]} {r[10]}", "model_id": "m",
                    "category": r[8]})
        for r, out in zip(ROWS, ["A", "B", "C", "D", "A", "B"])
    ]  # fmt: skip
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = score_file(BENCH, path)
    assert (result["format"], result["headline"], result["n"], result["accuracy"]) == (
        "original",
        100.0,
        6,
        100.0,
    )
