"""Benchmark evaluation: one runner, one scoring path, one small registered module per benchmark.

Layout: ``benchmark.py`` (the contract: ``Item``, ``Benchmark``, paper categories), ``benchmarks/`` (one
file per benchmark: load, prompt, parse, score), ``scorers/`` (VQA accuracy, ANLS, relaxed accuracy,
grouped scores), ``extract.py`` (the original's answer extractors), ``data.py`` (snapshot readers),
``runner.py`` (batched, resumable, sharded generation), ``answers.py`` (answer files, ours and the
original release's), ``report.py`` (Table 4), ``cvbench.py`` (CV-Bench items and the official formula,
used by the quickstart), ``lmms_eval.py`` (an lmms-eval model adapter).

``BENCHMARKS`` (every registered benchmark) is imported on first use, so ``import cambrian.eval`` stays light.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "BENCHMARKS":
        from cambrian.eval.benchmarks import BENCHMARKS

        return BENCHMARKS
    raise AttributeError(f"module 'cambrian.eval' has no attribute {name!r}")


__all__ = ["BENCHMARKS"]
