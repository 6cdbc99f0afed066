"""V*Bench: small-detail questions on high-resolution images (direct attributes, relative position).

Data: ``craigwu/vstar_bench`` as downloaded: ``test_questions.jsonl`` (191 lines = 115
``direct_attributes`` + 76 ``relative_position``) with fields ``image`` (path relative to the snapshot,
e.g. ``direct_attributes/sa_4690.jpg``), ``text`` (question, ``(A) ...`` options and the letter
instruction), ``category``, ``question_id`` and ``label`` (letter), plus the image folders. Items are
keyed by ``question_id``.
Prompt: ``text`` as it is (it already ends with its instruction; nothing is appended).
Record (as ``vstar_eval.py``): ``question_id`` (line index), ``gt_answer`` (``label``).
Rule (legacy = recommended): X1 (R ``.``) == lower-cased GT. Headline: accuracy (%) over all 191
(the V* paper reports the two subsets separately; the original's records carry no subset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import AccuracyBenchmark, Item, field_of, register
from cambrian.eval.data import ImageRef, expect, read_rows, require_file
from cambrian.eval.extract import PERIODS, extract_x1

COLUMNS = ("image", "text", "question_id", "label")


@register
class VStar(AccuracyBenchmark):
    name = "vstar"
    title = "V*Bench"
    max_new_tokens = 32
    splits = ("test",)
    expected_n: ClassVar[dict[str, int]] = {"test": 191}

    def load(self, root: Path, split: str) -> list[Item]:
        path = require_file(root / f"{split}_questions.jsonl", f"V*Bench {split} questions")
        items: list[Item] = []
        for i, row in enumerate(read_rows(path, COLUMNS)):
            where = f"{path}: row {i}"
            image = require_file(root / expect(row["image"], str, where, "image"), f"{where}: field 'image'")
            record = {"question_id": i, "gt_answer": expect(row["label"], str, where, "label")}
            key = str(expect(row["question_id"], (int, str), where, "question_id"))
            items.append(Item(key, expect(row["text"], str, where, "text"), [ImageRef(str(image))], record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x1(self.answer(record), PERIODS) == str(field_of(record, "gt_answer")).lower()
