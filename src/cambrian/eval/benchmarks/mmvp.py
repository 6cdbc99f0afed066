"""MMVP (``MMVP/MMVP``: ``Questions.csv`` + ``MMVP Images/<n>.jpg``, 300 questions = 150 image pairs).

Snapshot layout, the hub repo as downloaded: ``Questions.csv`` has the columns ``Index`` (spelt
``lndex`` in the published file), ``Question``, ``Options`` (``(a) Open (b) Closed``) and
``Correct Answer`` (``(a)``). They are read by position, as the original does, and a header row is
skipped. The image of row ``Index`` is ``MMVP Images/<Index>.jpg``.

Prompt: question + " Options:", then the options rewritten one per line as ``A. Open`` and
``B. Closed``, then "\\n" + "Answer with the option's letter from the given choices directly."
(docs/eval-protocols.md s.5.12). Record, as ``mmvp_eval.py`` writes it: ``question_id`` (the 0-based row
index), ``gt_answer`` (``"(a)"``) and ``text_options`` (``["Open", "Closed"]``).

A row is right iff X2(answer) equals the GT letter or the lower-cased GT option text.

* legacy: pairs are lines (2k, 2k+1) of the file, and accuracy = 100 x credit / rows
  (``scorers.grouped.mmvp_pairs_by_line``).
* recommended: pairs by ``question_id``. Ids 0-1, 2-3 and so on are CSV ``Index`` 1-2, 3-4. Line
  order does not matter.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval.benchmark import (
    SUFFIX_LETTER,
    Benchmark,
    Item,
    ScoreError,
    field_of,
    paren_letter,
    register,
)
from cambrian.eval.data import DatasetFormatError, ImageRef, require_file
from cambrian.eval.extract import extract_x2
from cambrian.eval.scorers.grouped import mmvp_pairs_by_id, mmvp_pairs_by_line

HEADER_FIRST_CELLS = ("lndex", "Index")


def text_options(options: str) -> list[str]:
    """The option texts of ``(a) Open (b) Closed``: what follows each ``)`` up to the next ``(``, stripped
    (the original's parse; an option text holding ``(`` breaks it, as there)."""
    return [part.split(")")[1].strip() for part in options.split("(")[1:]]


def options_block(options: str) -> str:
    """``"\\nA. Open\\nB. Closed"``: the original splits on ``(b)``, renames ``(a)``/``(b)`` and prefixes
    the second part with ``B. ``."""
    parts = [p.strip().replace("(a)", "A.").replace("(b)", "B.") for p in options.split("(b)")]
    if len(parts) > 1:
        parts[1] = "B. " + parts[1]
    return "".join("\n" + p for p in parts)


@register
class MMVP(Benchmark):
    name = "mmvp"
    title = "MMVP"
    max_new_tokens = 512
    expected_n: ClassVar[dict[str, int]] = {"test": 300}

    def load(self, root: Path, split: str) -> list[Item]:
        path = require_file(root / "Questions.csv", "MMVP questions")
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = [r for r in csv.reader(f) if r and r[0] not in HEADER_FIRST_CELLS]
        items = []
        for i, row in enumerate(rows):
            where = f"{path}: data row {i}"
            if len(row) < 4:
                raise DatasetFormatError(f"{where}: expected 4 columns (Index, Question, Options, Correct "
                                         f"Answer), got {len(row)}")  # fmt: skip
            index, question, options, answer = row[:4]
            if not index.strip().isdigit():
                raise DatasetFormatError(f"{where}: field 'Index': expected an integer, got {index!r}")
            try:
                texts = text_options(options)
            except IndexError:
                raise DatasetFormatError(
                    f"{where}: field 'Options': {options!r} is not '(a) ... (b) ...'"
                ) from None
            prompt = question + " Options:" + options_block(options) + "\n" + SUFFIX_LETTER
            image_path = require_file(root / "MMVP Images" / f"{int(index)}.jpg", f"{where}: image")
            image = ImageRef(str(image_path))
            record = {"question_id": i, "gt_answer": answer, "text_options": texts}
            items.append(Item(str(int(index)), prompt, [image], record))
        if len({it.key for it in items}) != len(items):
            raise DatasetFormatError(f"{path}: field 'Index': the values are not unique")
        return items

    def correct(self, record: dict[str, Any]) -> bool:
        letter = paren_letter(field_of(record, "gt_answer"))
        options = [str(t).lower() for t in field_of(record, "text_options")]
        try:
            text = options[ord(letter) - ord("a")]
        except IndexError:
            raise ScoreError(f"gt_answer {record['gt_answer']!r} has no option in {options}") from None
        answer = extract_x2(self.answer(record))
        return answer == letter or answer == text

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        hits = [self.correct(r) for r in records]
        if rules == "legacy":
            pairs = mmvp_pairs_by_line(hits)
        else:
            pairs = mmvp_pairs_by_id((field_of(r, "question_id"), ok) for r, ok in zip(records, hits))
        row_accuracy = 100.0 * sum(hits) / len(hits) if hits else 0.0
        return {"headline": pairs.pop("accuracy"), "n": len(records), **pairs, "row_accuracy": row_accuracy}
