"""ScienceQA (SQA-I): multiple-choice science questions; the image questions count (Knowledge category).

Data: ``derek-thomas/ScienceQA``, split ``test`` (4,241 rows, 2,017 with an image), parquet
``data/test-*.parquet`` with columns ``image`` (null for text-only questions), ``question``,
``choices`` (list), ``answer`` (int index), ``hint`` (``""`` when none) and ``grade``. Items are keyed
by row index (the data set has no id).
Prompt: [hint + " "] + question + "\\nA. choice" ... + "\\n" + "Please answer directly with only the
letter of the correct option and nothing else.". Text-only rows are not sent to the model
(``generate=False``: written with answer ``""``, as the original).
Record (as ``scienceqa_eval.py``): ``question_id`` (row index), ``gt_answer`` (letter), ``has_img``,
``text_answer`` (the correct choice), ``type`` (True iff the row has an image), ``category`` (``grade``).
Rule (legacy = recommended): a = X6(output); N(x) = x without ASCII punctuation, lower-cased, stripped;
correct iff N(a) == N(text_answer.lower().strip()) or a.split(".")[0] == str(gt_answer).lower().strip().
Headline (``multimodal_acc``): accuracy (%) over rows with a truthy ``type``, n = those rows;
sub-scores per category over the same rows.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    LETTERS,
    SUFFIX_LETTER_ONLY,
    AccuracyBenchmark,
    Item,
    field_of,
    lettered,
    register,
)
from cambrian.eval.data import DatasetFormatError, expect, read_split
from cambrian.eval.extract import extract_x6

COLUMNS = ("question", "choices", "answer", "hint", "grade")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """ASCII punctuation removed, then lower-cased and stripped (inner spaces kept)."""
    return text.translate(_NO_PUNCTUATION).lower().strip()


@register
class ScienceQA(AccuracyBenchmark):
    name = "scienceqa"
    title = "ScienceQA-IMG"
    category_field = "category"
    headline_name = "multimodal_acc"
    max_new_tokens = 512
    splits = ("test",)
    expected_n: ClassVar[dict[str, int]] = {"test": 4241}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"]):
            items.append(self._item(row, refs, len(items), where))
        return items

    def _item(self, row: dict[str, Any], refs: dict[str, Any], index: int, where: str) -> Item:
        question = expect(row["question"], str, where, "question")
        hint = expect(row["hint"], str, where, "hint")
        choices = expect(row["choices"], list, where, "choices")
        answer = expect(row["answer"], int, where, "answer")
        if not 0 <= answer < min(len(choices), len(LETTERS)):
            raise DatasetFormatError(
                f"{where}: field 'answer': {answer} is not an index of {len(choices)} choices"
            )
        has_image = "image" in refs
        text = (f"{hint} {question}" if hint != "" else question) + lettered(choices)
        record = {
            "question_id": index,
            "gt_answer": LETTERS[answer],
            "has_img": has_image,
            "text_answer": choices[answer],
            "type": has_image,
            "category": expect(row["grade"], str, where, "grade"),
        }
        images = [refs["image"]] if has_image else []
        return Item(str(index), f"{text}\n{SUFFIX_LETTER_ONLY}", images, record, generate=has_image)

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        pred = extract_x6(self.answer(record))
        text_answer = str(field_of(record, "text_answer")).lower().strip()
        gt = str(field_of(record, "gt_answer")).lower().strip()
        return normalize(pred) == normalize(text_answer) or pred.split(".")[0] == gt

    def counted(self, record: dict[str, Any], rules: str) -> bool:
        return bool(field_of(record, "type"))
