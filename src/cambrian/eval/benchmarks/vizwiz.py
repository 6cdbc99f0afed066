"""VizWiz-VQA: questions from blind users about their own photos, scored by VQA accuracy on val.

Data: ``lmms-lab/VizWiz-VQA``, parquet ``data/val-*.parquet`` (4,319) and ``data/test-*.parquet``
(8,000) with ``question_id`` (``VizWiz_val_00000000``), ``question``, ``image``, ``answers``. The
original generates val **and** test in one run (val first), so the default split ``val+test`` does the
same; ``val`` or ``test`` alone can be chosen.
Prompt: the question, then ``When the provided information is insufficient, respond with
'Unanswerable'.`` and ``SUFFIX_WORD`` on their own lines.
Record, as the original writes it: ``idx`` (position in the loaded sequence), ``image_id``
(question_id + ``.jpg``), ``gt_answer`` (the dataset's ``answers``), ``category`` (``"val"`` when the
question_id contains ``val``, else ``"test"``).
Score: VQA accuracy (``scorers.vqa``, exactly 10 GT answers) x 100 over the ``category == "val"`` rows
only; none -> headline None. The other rows go to ``submission()``: ``vizwiz_submission.json``, a list
of ``{"image": image_id, "answer": lower-cased output}`` for the VizWiz evaluation server.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_WORD, Benchmark, Item, field_of, register
from cambrian.eval.benchmarks.textvqa import vqa_score
from cambrian.eval.data import expect, read_split

UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
SUBMISSION = "vizwiz_submission.json"
COLUMNS = ("question_id", "question", "answers")


@register
class VizWiz(Benchmark):
    name = "vizwiz"
    title = "VizWiz"
    max_new_tokens = 128
    splits = ("val+test", "val", "test")
    expected_n: ClassVar[dict[str, int]] = {"val+test": 12319, "val": 4319, "test": 8000}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for part in split.split("+"):  # "val+test": val first, as the original concatenates them
            for where, row, refs in read_split(root, part, COLUMNS, ["image"]):
                qid = expect(row["question_id"], str, where, "question_id")
                question = expect(row["question"], str, where, "question")
                if row["answers"] is not None:  # the test split may hold no answers at all
                    expect(row["answers"], list, where, "answers")
                record = {
                    "idx": len(items),
                    "image_id": qid + ".jpg",
                    "gt_answer": row["answers"],
                    "category": "val" if "val" in qid else "test",
                }
                prompt = f"{question}\n{UNANSWERABLE}\n{SUFFIX_WORD}"
                items.append(Item(qid, prompt, list(refs.values()), record))
        return items

    def _is_val(self, record: dict[str, Any], i: int) -> bool:
        return field_of(record, "category", f"record {i}") == "val"

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        val = [(i, r) for i, r in enumerate(records) if self._is_val(r, i)]
        return {**vqa_score(self, val, rules), "test_rows": len(records) - len(val)}

    def submission(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        test = [
            {"image": field_of(r, "image_id", f"record {i}"), "answer": self.answer(r).lower()}
            for i, r in enumerate(records)
            if not self._is_val(r, i)
        ]
        return {SUBMISSION: test} if test else {}
