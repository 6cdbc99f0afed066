"""Every registered benchmark: one small module each (load, prompt, parse, score), imported here.

Adding a benchmark = one file in this folder with an ``@register`` class + its name in ``MODULES``.
Import ``BENCHMARKS`` from here (not from ``cambrian.eval.benchmark``) so that all are registered.
"""

from __future__ import annotations

import importlib

from cambrian.eval.benchmark import BENCHMARKS, PAPER, Benchmark, resolve_names

MODULES = (
    # CV-Bench and the original's three pre-release parts
    "cvbench", "ade", "coco", "omni",
    # General
    "mme", "mmbench_en", "mmbench_cn", "seed", "gqa", "pope", "mmstar", "qbench",
    # Knowledge
    "scienceqa", "mmmu", "mathvista", "ai2d",
    # OCR & Chart
    "chartqa", "ocrbench", "textvqa", "docvqa", "vizwiz",
    # Vision-centric
    "mmvp", "realworldqa", "blink", "vstar",
)  # fmt: skip

for _name in MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["BENCHMARKS", "MODULES", "PAPER", "Benchmark", "resolve_names"]
