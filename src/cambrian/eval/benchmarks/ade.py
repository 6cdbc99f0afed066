"""ADE (CV-Bench 2D, source ADE20K): the original release's ``ade`` benchmark.

The original read a pre-release set (``SaiCharithaAkula21/benchmark_ade_manual``); here the items are
the public CV-Bench snapshot's ``source == "ADE20K"`` rows (``ROOT/ade/`` holds the CV-Bench files).
Records are the original's (``questionId``, ``answer``, ``gt_answer`` "(A)", ``category``, ``options``);
legacy rule: X1 with trailing periods stripped == the GT letter; headline = accuracy x 100 over all rows.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cambrian.eval import cvbench as cv
from cambrian.eval.benchmark import AccuracyBenchmark, field_of, paren_letter, register
from cambrian.eval.benchmarks.cvbench import CVBenchSource
from cambrian.eval.extract import PERIODS, extract_x1


@register
class ADE(CVBenchSource, AccuracyBenchmark):
    name = "ade"
    title = "CV-Bench ADE20K"
    sources: ClassVar[tuple[str, ...]] = ("ADE20K",)
    category_field = "category"
    strip_chars: ClassVar[str] = PERIODS

    def record(self, it: cv.CVBenchItem) -> dict[str, Any]:
        return {"questionId": it.idx, "image": it.filename, "gt_answer": it.answer, "category": it.task,
                "options": list(it.choices)}  # fmt: skip

    def correct(self, record: dict[str, Any], rules: str) -> bool:
        return extract_x1(self.answer(record), self.strip_chars) == paren_letter(
            field_of(record, "gt_answer")
        )
