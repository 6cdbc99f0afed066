"""AI2D: multiple-choice questions about grade-school science diagrams (Knowledge category).

Data: ``lmms-lab/ai2d``, split ``test`` (3,088), parquet ``data/test-*.parquet`` with columns
``question``, ``options`` (list of up to 4 strings), ``answer`` (the correct option's index as a string,
``"0"``-``"3"``) and ``image``. Items are keyed by row index (the data set has no id).
Prompt: question + "\\nA. opt" ... (one line per option, A-D) + "\\n" + "Answer with the option's
letter from the given choices directly."
Record (as ``ai2d_eval.py``): ``question_id`` (row index), ``gt_answer`` (index string),
``text_answer`` (the correct option's text).
Rule (legacy = recommended): X1 (R ``.:,``), then ``a``/``b``/``c``/``d`` -> ``"0"``-``"3"``, **any other
result kept as is** (so ``2``, ``2 apples``, ``(2)`` and ``20`` are all correct for GT ``"2"``, since X1
keeps one character); correct iff it equals the lower-cased GT. Headline: accuracy (%), n = rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import SUFFIX_LETTER, AccuracyBenchmark, Item, field_of, lettered, register
from cambrian.eval.data import DatasetFormatError, expect, read_split
from cambrian.eval.extract import PERIODS_COLONS_COMMAS, extract_x1

COLUMNS = ("question", "options", "answer")
LETTER_TO_INDEX = {"a": "0", "b": "1", "c": "2", "d": "3"}


@register
class AI2D(AccuracyBenchmark):
    name = "ai2d"
    title = "AI2D"
    max_new_tokens = 512
    splits = ("test",)
    expected_n: ClassVar[dict[str, int]] = {"test": 3088}

    def load(self, root: Path, split: str) -> list[Item]:
        items: list[Item] = []
        for where, row, refs in read_split(root, split, COLUMNS, ["image"]):
            question = expect(row["question"], str, where, "question")
            options = expect(row["options"], list, where, "options")
            answer = expect(row["answer"], str, where, "answer")
            if len(options) > 4 or answer not in [str(k) for k in range(len(options))]:
                raise DatasetFormatError(
                    f"{where}: field 'answer': expected the index of one of at most 4 options "
                    f"(0-{len(options) - 1}), got {answer!r} with {len(options)} options"
                )
            record = {"question_id": len(items), "gt_answer": answer, "text_answer": options[int(answer)]}
            prompt = f"{question}{lettered(options)}\n{SUFFIX_LETTER}"
            images = list(refs.values())
            items.append(Item(str(len(items)), prompt, images, record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        pred = extract_x1(self.answer(record), PERIODS_COLONS_COMMAS)
        pred = LETTER_TO_INDEX.get(pred, pred)  # anything but a-d is kept as is (legacy quirk)
        return pred == str(field_of(record, "gt_answer")).lower()
