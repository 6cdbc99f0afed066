"""BLINK (val): perception questions humans answer "in a blink"; the 6 single-image subtasks only.

Data: ``BLINK-Benchmark/BLINK``, split ``val``, one config directory per subtask holding
``<Subtask>/val-*.parquet`` with columns ``idx`` (e.g. ``val_Counting_1``), ``prompt`` (question,
"Select from the following choices." and ``(A) ...`` lines), ``choices`` (list), ``answer``
(``"(A)"``) and ``image_1`` .. ``image_4``. Subtasks, in the original's order: Counting, IQ_Test,
Object_Localization, Relative_Depth, Relative_Reflectance, Spatial_Relation; only ``image_1`` is fed.
Items are keyed by ``idx``.
Prompt: ``prompt`` + "\\n" + "Please answer directly with only the letter of the correct option and
nothing else."
Record (as ``blink_eval.py``): ``question_id`` (row index *within the subtask*), ``gt_answer``,
``category`` (the subtask), ``choices``.
Rule (legacy = recommended): X5 (text before the first ".", lower-cased, stripped, first
*space*-separated token, ``lstrip("(")``/``rstrip(")")``) == ``gt_answer.lower()[1]``. Headline:
micro accuracy (%) over all rows of the 6 subtasks (not the BLINK paper's per-task mean); sub-scores per
subtask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_LETTER_ONLY,
    AccuracyBenchmark,
    Item,
    ScoreError,
    field_of,
    register,
)
from cambrian.eval.data import expect, read_split
from cambrian.eval.extract import extract_x5

SUBTASKS = (
    "Counting",
    "IQ_Test",
    "Object_Localization",
    "Relative_Depth",
    "Relative_Reflectance",
    "Spatial_Relation",
)
COLUMNS = ("idx", "prompt", "choices", "answer")


@register
class BLINK(AccuracyBenchmark):
    name = "blink"
    title = "BLINK"
    category_field = "category"
    max_new_tokens = 32
    splits = ("val",)
    # BLINK val sizes of the 6 subtasks: 120 + 150 + 122 + 124 + 134 + 143.
    expected_n: ClassVar[dict[str, int]] = {"val": 793}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for subtask in SUBTASKS:
            index = 0  # the original's question_id restarts at 0 for every subtask
            for where, row, refs in read_split(root, split, COLUMNS, ["image_1"], config=subtask):
                record = {
                    "question_id": index,
                    "gt_answer": expect(row["answer"], str, where, "answer"),
                    "category": subtask,
                    "choices": expect(row["choices"], list, where, "choices"),
                }
                prompt = f"{expect(row['prompt'], str, where, 'prompt')}\n{SUFFIX_LETTER_ONLY}"
                images = list(refs.values())
                key = str(expect(row["idx"], (str, int), where, "idx"))
                items.append(Item(key, prompt, images, record))
                index += 1
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        gt = str(field_of(record, "gt_answer")).lower()
        if len(gt) < 2:
            raise ScoreError(
                f"record {record.get('question_id', '?')}: field 'gt_answer': expected '(X)', got {gt!r}"
            )
        return extract_x5(self.answer(record)) == gt[1]
