"""MathVista (testmini): mathematical reasoning over figures, charts and diagrams (Knowledge category).

Data: ``AI4Math/MathVista``, split ``testmini`` (1,000), parquet ``data/testmini-*.parquet`` with
columns ``pid``, ``query`` (question with its hint and choices already written in), ``decoded_image``,
``choices`` (list or null), ``answer`` (str), ``question_type`` (``multi_choice``/``free_form``) and
``metadata`` (struct with ``category``). Items are keyed by ``pid``.
Prompt: ``query`` + "\\n" + "First show your reasoning process and then give the final answer." for
``multi_choice``, else + "\\n" + "Answer the question using a single word or phrase.".
Record (as ``mathvista_eval.py``): ``question_id`` (row index), ``gt_answer`` (for multi_choice the
letter of the answer's position in ``choices``; the last position wins for a repeated choice),
``category`` (``metadata.category``), ``type`` (``question_type``).
Rule (legacy, exactly the original): p = output lower-cased and stripped (cut at its first "." only when
``type == "multiple-choice"``, which the eval never writes: a dead branch), g = GT lower-cased; correct
iff p == g, or both parse as floats and |g - p| <= 5 % of |p| (tolerance relative to the prediction, so
``inf`` passes every numeric GT). An MC item only scores if the output is exactly its letter. Recommended:
the tolerance relative to the GT. Headline: accuracy (%) over all rows; sub-scores per category.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    LETTERS,
    SUFFIX_WORD,
    AccuracyBenchmark,
    Item,
    field_of,
    register,
)
from cambrian.eval.data import DatasetFormatError, expect, read_split
from cambrian.eval.scorers.relaxed import mathvista_mmmu_correct

SUFFIX_REASONING = "First show your reasoning process and then give the final answer."
COLUMNS = ("pid", "query", "choices", "answer", "question_type", "metadata")


def gt_letter(answer: str, choices: Sequence[str], where: str) -> str:
    """The letter of ``answer``'s position in ``choices`` (a repeated choice maps to its last position)."""
    letters = {choice: LETTERS[i] for i, choice in enumerate(choices)}
    if answer not in letters:
        raise DatasetFormatError(f"{where}: field 'answer': {answer!r} is not one of the choices {choices!r}")
    return letters[answer]


@register
class MathVista(AccuracyBenchmark):
    name = "mathvista"
    title = "MathVista"
    category_field = "category"
    max_new_tokens = 512
    splits = ("testmini",)
    expected_n: ClassVar[dict[str, int]] = {"testmini": 1000}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["decoded_image"]):
            items.append(self._item(row, refs, len(items), where))
        return items

    def _item(self, row: dict[str, Any], refs: dict[str, Any], index: int, where: str) -> Item:
        query = expect(row["query"], str, where, "query")
        qtype = expect(row["question_type"], str, where, "question_type")
        gt = expect(row["answer"], str, where, "answer")
        if qtype == "multi_choice":
            gt = gt_letter(gt, expect(row["choices"], list, where, "choices"), where)
        metadata = expect(row["metadata"], dict, where, "metadata")
        record = {
            "question_id": index,
            "gt_answer": gt,
            "category": expect(metadata.get("category"), str, where, "metadata.category"),
            "type": qtype,
        }
        suffix = SUFFIX_REASONING if qtype == "multi_choice" else SUFFIX_WORD
        images = list(refs.values())
        return Item(str(expect(row["pid"], str, where, "pid")), f"{query}\n{suffix}", images, record)

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        pred = self.answer(record).lower().strip()
        if record.get("type") == "multiple-choice":  # the original's dead branch (eval writes multi_choice)
            pred = pred.split(".")[0]
        return mathvista_mmmu_correct(pred, str(field_of(record, "gt_answer")).lower(), rules)
