"""Omni (CV-Bench 3D, source Omni3D): the original release's ``omni`` benchmark.

The original read a local ``3D_VQA.json``; here the public CV-Bench snapshot's ``source == "Omni3D"``
rows. Legacy rule (docs/eval-legacy-scorers.md): X1 with ``.:,`` stripped == the GT letter, **or** == the GT
option text taken raw from ``options`` (fires for one-character option texts, and for an empty output
when that option is ""). Records: ``questionId``, ``answer``, ``gt_answer``, ``category``, ``options``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cambrian.eval import cvbench as cv
from cambrian.eval.benchmark import field_of, paren_letter, register
from cambrian.eval.benchmarks.ade import ADE
from cambrian.eval.extract import PERIODS_COLONS_COMMAS, extract_x1


@register
class Omni(ADE):
    name = "omni"
    title = "CV-Bench Omni3D"
    sources: ClassVar[tuple[str, ...]] = ("Omni3D",)
    strip_chars: ClassVar[str] = PERIODS_COLONS_COMMAS

    def record(self, it: cv.CVBenchItem) -> dict[str, Any]:
        return {
            "questionId": it.idx,
            "gt_answer": it.answer,
            "category": it.task,
            "options": list(it.choices),
        }

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        letter = paren_letter(field_of(record, "gt_answer"))
        pred = extract_x1(self.answer(record), self.strip_chars)
        options = field_of(record, "options")
        index = ord(letter) - ord("a")  # "(B)" -> options[1]
        return pred == letter or (0 <= index < len(options) and pred == options[index])
