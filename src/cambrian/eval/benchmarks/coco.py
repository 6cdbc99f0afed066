"""COCO (CV-Bench 2D, source COCO): the original release's ``coco`` benchmark.

Same as ``ade`` (legacy X1 with periods stripped against the GT letter, accuracy x 100) on the public
CV-Bench snapshot's ``source == "COCO"`` rows; the original read ``SaiCharithaAkula21/benchmark_coco_filtered``.
"""

from __future__ import annotations

from typing import ClassVar

from cambrian.eval.benchmark import register
from cambrian.eval.benchmarks.ade import ADE


@register
class COCO(ADE):
    name = "coco"
    title = "CV-Bench COCO"
    sources: ClassVar[tuple[str, ...]] = ("COCO",)
