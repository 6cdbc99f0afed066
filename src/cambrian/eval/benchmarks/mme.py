"""MME (``lmms-lab/MME``, split ``test``, 2,374 yes/no questions, two per image, 14 subtasks).

Snapshot: ``data/test-*.parquet`` with columns ``question_id`` (the image file, e.g.
``code_reasoning/0020.png``), ``image``, ``question``, ``answer`` (``Yes``/``No``) and ``category``.
Prompt: the question, which already ends with "Please answer yes or no.", then "\\n" + "Answer the
question using a single word or phrase." A row is right iff ``answer.lower().rstrip('.') ==
gt_answer.lower()``.

The record is what ``mme_eval.py`` writes: ``question_id`` (the running row index, not the dataset's
id), ``gt_answer`` and ``category``. The original record has no image id.

Score per subtask: acc + acc+. Headline = Perception, the sum over the 10 perception subtasks
(0-2000). Cognition, the total and the per-subtask numbers are also reported.

* legacy: acc+ is the original's state machine over file line numbers (``scorers.grouped.mme_legacy``).
* recommended: acc+ = % of images with both questions right (``mme_grouped``). The records have no
  image id, so images are rebuilt from order. Rows are sorted by ``question_id``, which is the dataset
  row index. Within each category, consecutive rows form the images: rows (0, 1), (2, 3) and so on.
  This matches how the data set lays out each image's two questions. The result equals legacy on the
  data set's order, and it stays right on a file whose lines were shuffled or whose chunks were
  concatenated out of order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_WORD, Benchmark, Item, ScoreError, field_of, register
from cambrian.eval.data import DatasetFormatError, expect, read_split
from cambrian.eval.scorers.grouped import MME_SUBTASKS, mme_grouped, mme_legacy, mme_summary


def mme_correct(answer: str, gt: Any) -> bool:
    return answer.lower().rstrip(".") == str(gt).lower()


@register
class MME(Benchmark):
    name = "mme"
    title = "MME"
    headline_name = "Perception"
    max_new_tokens = 32
    expected_n: ClassVar[dict[str, int]] = {"test": 2374}

    def load(self, root: Path, split: str) -> list[Item]:
        items = []
        rows = read_split(root, split, ["question", "answer", "category"], ["image"])
        for i, (where, row, refs) in enumerate(rows):
            question = expect(row["question"], str, where, "question")
            category = expect(row["category"], str, where, "category")
            if category not in MME_SUBTASKS:
                raise DatasetFormatError(f"{where}: field 'category': {category!r} is not one of the 14 "
                                         f"MME subtasks ({', '.join(MME_SUBTASKS)})")  # fmt: skip
            record = {"question_id": i, "gt_answer": expect(row["answer"], str, where, "answer"),
                      "category": category}  # fmt: skip
            images = list(refs.values())
            items.append(Item(str(i), question + "\n" + SUFFIX_WORD, images, record))
        return items

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        rows = [
            (field_of(r, "category"), mme_correct(self.answer(r), field_of(r, "gt_answer"))) for r in records
        ]
        if rules == "legacy":
            tallies = mme_legacy(rows)
        else:
            ids = [field_of(r, "question_id") for r in records]
            if not all(isinstance(q, int) and not isinstance(q, bool) for q in ids):
                raise ScoreError("MME recommended rules order rows by the integer question_id (row index)")
            seen: dict[str, int] = {}
            grouped = []
            for pos in sorted(range(len(rows)), key=ids.__getitem__):
                category, ok = rows[pos]
                nth = seen[category] = seen.get(category, -1) + 1
                grouped.append((category, nth // 2, ok))
            tallies = mme_grouped(grouped)
        summary = mme_summary(tallies)
        return {"headline": summary["Perception"], "n": len(records), **summary}
