"""ChartQA: questions about charts, answered with a number or a short phrase (OCR & Chart category).

Data: ``lmms-lab/ChartQA``, split ``test`` (2,500 = human + augmented questions), parquet
``data/test-*.parquet`` with columns ``type`` (``human_test``/``augmented_test``), ``question``,
``answer`` (str) and ``image``. Items are keyed by row index (the data set has no id).
Prompt: question + "\\n" + "Answer the question using a single number or phrase."
Record (as ``chartqa_eval.py``): ``question_id`` (row index), ``gt_answer``, ``category`` (= ``type``).
Rule: relaxed accuracy (``cambrian.eval.scorers.relaxed.chartqa_correct``): the lower-cased output and
GT compared as numbers within 5 % of the GT when both parse with ``float()``, else as strings; the
recommended rules also drop a trailing ``%`` and thousands commas before parsing. Headline: accuracy
(%) pooled over both subsets, n = rows; sub-scores per ``category`` (the subset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_NUMBER,
    AccuracyBenchmark,
    Item,
    field_of,
    register,
)
from cambrian.eval.data import expect, read_split
from cambrian.eval.scorers.relaxed import chartqa_correct

COLUMNS = ("type", "question", "answer")


@register
class ChartQA(AccuracyBenchmark):
    name = "chartqa"
    title = "ChartQA"
    category_field = "category"
    max_new_tokens = 128
    splits = ("test",)
    expected_n: ClassVar[dict[str, int]] = {"test": 2500}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"]):
            question = expect(row["question"], str, where, "question")
            record = {
                "question_id": len(items),
                "gt_answer": expect(row["answer"], str, where, "answer"),
                "category": expect(row["type"], str, where, "type"),
            }
            images = list(refs.values())
            items.append(Item(str(len(items)), f"{question}\n{SUFFIX_NUMBER}", images, record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return chartqa_correct(self.answer(record), str(field_of(record, "gt_answer")), rules)
