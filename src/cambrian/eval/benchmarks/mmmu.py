"""MMMU (validation): college-level multi-discipline questions on images (Knowledge category).

Data: ``lmms-lab/MMMU``, split ``validation`` (900), parquet ``data/validation-*.parquet`` with columns
``id`` (e.g. ``validation_Art_Theory_12``), ``question``, ``options`` (the *string* form of a Python
list), ``answer``, ``question_type`` (``multiple-choice``/``open``) and ``image_1`` .. ``image_7``. Items
are keyed by ``id``; only ``image_1`` is used (docs/eval-protocols.md s.5.8).
Prompt: multiple-choice: question + " Options:" + "\\nA. opt" ... + "\\n" + "Answer with the option's
letter from the given choices directly."; any other type: question + "\\n" + "Answer the question using
a single word or phrase.". Then every ``<image N>`` tag is deleted and the text stripped (as the
original, which strips after putting "<image>\\n" in front: with an image only the end is stripped).
Options are recovered as the original does, every single-quoted substring of ``options``
(``options_legacy``: an option holding an apostrophe breaks); ``options_parsed`` is the recommended
parser (``ast.literal_eval``), used when ``MMMU.option_rules == "recommended"``.
Record (as ``mmmu_eval.py``): ``question_id`` (row index), ``gt_answer``, ``category`` (second
"_"-separated token of ``id``), ``type`` (``question_type``).
Rule: ``type == "multiple-choice"`` -> X1 (R ``.:,``), anything else -> X6; then exact match with the
lower-cased GT, else both numeric within 5 % relative to the prediction (legacy, the original's
swapped call) or to the GT (recommended). Headline: accuracy (%) over all rows; sub-scores per category.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_LETTER,
    SUFFIX_WORD,
    AccuracyBenchmark,
    Item,
    field_of,
    lettered,
    register,
)
from cambrian.eval.data import DatasetFormatError, expect, read_split
from cambrian.eval.extract import PERIODS_COLONS_COMMAS, extract_x1, extract_x6
from cambrian.eval.scorers.relaxed import mathvista_mmmu_correct

COLUMNS = ("id", "question", "options", "answer", "question_type")
MULTIPLE_CHOICE = "multiple-choice"
_IMAGE_TAG = re.compile(r"<image \d+>")
_QUOTED = re.compile(r"'(.*?)'")


def options_legacy(text: str) -> list[str]:
    """The original's option recovery: every single-quoted substring of the list's string form."""
    return _QUOTED.findall(text)


def options_parsed(text: str, where: str = "options") -> list[str]:
    """Recommended: the list literal parsed properly (apostrophes and double quotes survive)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetFormatError(
            f"{where}: field 'options': expected a Python list of strings, got {text!r:.80}"
        )
    return value


@register
class MMMU(AccuracyBenchmark):
    name = "mmmu"
    title = "MMMU"
    category_field = "category"
    max_new_tokens = 512
    splits = ("validation",)
    expected_n: ClassVar[dict[str, int]] = {"validation": 900}
    option_rules: ClassVar[str] = "legacy"  # how options are read from the data ("recommended": parsed)

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image_1"]):
            items.append(self._item(row, refs, len(items), where))
        return items

    def _item(self, row: dict[str, Any], refs: dict[str, Any], index: int, where: str) -> Item:
        qid = expect(row["id"], str, where, "id")
        parts = qid.split("_")
        if len(parts) < 2:
            raise DatasetFormatError(f"{where}: field 'id': expected '<split>_<Subject>_...', got {qid!r}")
        qtype = expect(row["question_type"], str, where, "question_type")
        text = expect(row["question"], str, where, "question")
        if qtype == MULTIPLE_CHOICE:
            raw = expect(row["options"], str, where, "options")
            options = options_legacy(raw) if self.option_rules == "legacy" else options_parsed(raw, where)
            text += " Options:" + lettered(options) + f"\n{SUFFIX_LETTER}"
        else:
            text += f"\n{SUFFIX_WORD}"
        text = _IMAGE_TAG.sub("", text)
        text = text.rstrip() if "image_1" in refs else text.strip()
        record = {
            "question_id": index,
            "gt_answer": expect(row["answer"], str, where, "answer"),
            "category": parts[1],
            "type": qtype,
        }
        return Item(qid, text, list(refs.values()), record)

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        output = self.answer(record)
        if field_of(record, "type") == MULTIPLE_CHOICE:
            pred = extract_x1(output, PERIODS_COLONS_COMMAS)
        else:
            pred = extract_x6(output)
        return mathvista_mmmu_correct(pred, str(field_of(record, "gt_answer")).lower(), rules)
