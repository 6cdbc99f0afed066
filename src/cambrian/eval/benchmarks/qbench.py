"""Q-Bench A1 (``teowu/LLVisionQA-QBench``: ``llvisionqa_dev.json`` + the ``images_llvisionqa.tar`` images).

Snapshot layout: ``llvisionqa_dev.json``, a JSON array of objects with ``img_path``, ``question``,
``candidates`` (a list of strings), ``correct_ans`` (one of them), ``type`` (0, 1 or 2) and
``concern``. The tar is extracted next to it, which gives ``images/<img_path>``. Only the dev json is
used, as in the original; the test json is commented out there.

Prompt: question + " Options:" + "\\nA. <candidate 1>" ..., then "\\n" + "Please answer directly with
only the letter of the correct option and nothing else." Record, as ``qbench_eval.py`` writes it:
``question_id`` (the row index), ``gt_answer`` (the letter of ``correct_ans`` in ``candidates``) and
``type``. A row is right iff X4(answer), the text before the first ``.`` lower-cased and stripped,
== the lower-cased gt. Headline = accuracy in percent over all rows, under both rule sets. It is also
reported by question type: 0 is Yes/No, 1 is What, anything else is How.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    LETTERS,
    SUFFIX_LETTER_ONLY,
    AccuracyBenchmark,
    Item,
    ScoreError,
    field_of,
    lettered,
    register,
)
from cambrian.eval.data import DatasetFormatError, ImageRef, expect, read_rows, require_file
from cambrian.eval.extract import extract_x4


def question_type(value: Any) -> str:
    """The original's category of a ``type`` value (``int(type)``: 0 Yes/No, 1 What, else How)."""
    try:
        kind = int(value)
    except (TypeError, ValueError):
        raise ScoreError(f"type {value!r} is not an integer") from None
    return {0: "Yes/No", 1: "What"}.get(kind, "How")


@register
class QBench(AccuracyBenchmark):
    name = "qbench"
    title = "Q-Bench"
    category_field = "type"
    max_new_tokens = 32
    splits: ClassVar[tuple[str, ...]] = ("dev",)
    expected_n: ClassVar[dict[str, int]] = {"dev": 1495}

    def load(self, root: Path, split: str) -> list[Item]:
        path = require_file(root / f"llvisionqa_{split}.json", "Q-Bench questions")
        items = []
        for i, row in enumerate(
            read_rows(path, ["img_path", "question", "candidates", "correct_ans", "type"])
        ):
            where = f"{path}: row {i}"
            candidates = expect(row["candidates"], list, where, "candidates")
            letters = {text: LETTERS[k] for k, text in enumerate(candidates)}  # a repeated text: last wins
            if row["correct_ans"] not in letters:
                raise DatasetFormatError(f"{where}: field 'correct_ans': {row['correct_ans']!r} is not one "
                                         f"of the candidates {candidates}")  # fmt: skip
            image = root / "images" / expect(row["img_path"], str, where, "img_path")
            require_file(image, f"{where}: image (extract images_llvisionqa.tar into {root})")
            prompt = expect(row["question"], str, where, "question") + " Options:" + lettered(candidates)
            record = {"question_id": i, "gt_answer": letters[row["correct_ans"]], "type": row["type"]}
            items.append(Item(str(i), prompt + "\n" + SUFFIX_LETTER_ONLY, [ImageRef(str(image))], record))
        return items

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x4(self.answer(record)) == str(field_of(record, "gt_answer")).lower()

    def category(self, record: dict[str, Any]) -> str:
        return question_type(field_of(record, "type"))
