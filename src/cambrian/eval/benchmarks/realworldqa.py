"""RealWorldQA (``lmms-lab/RealWorldQA``, split ``test``, 765 questions on real-world photos).

Snapshot: ``data/test-*.parquet`` with columns ``image``, ``question`` and ``answer``. The question
already contains the options and its own instruction, so nothing is appended and the prompt is the
question itself (docs/eval-protocols.md s.5.16). Record, as ``realworldqa_eval.py`` writes it:
``question_id`` (the running row index) and ``gt_answer``. A row is right iff the first whitespace
token of X6(answer) == the lower-cased gt, so ``B. Left`` gives ``b.``, which is wrong. Headline =
accuracy in percent over all rows, under both rule sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import AccuracyBenchmark, Item, field_of, register
from cambrian.eval.data import expect, read_split
from cambrian.eval.extract import extract_x6


@register
class RealWorldQA(AccuracyBenchmark):
    name = "realworldqa"
    title = "RealWorldQA"
    max_new_tokens = 512
    expected_n: ClassVar[dict[str, int]] = {"test": 765}

    def load(self, root: Path, split: str) -> list[Item]:
        items = []
        for i, (where, row, refs) in enumerate(read_split(root, split, ["question", "answer"], ["image"])):
            question = expect(row["question"], str, where, "question")
            record = {"question_id": i, "gt_answer": expect(row["answer"], str, where, "answer")}
            items.append(Item(str(i), question, list(refs.values()), record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x6(self.answer(record), first_token=True) == str(field_of(record, "gt_answer")).lower()
