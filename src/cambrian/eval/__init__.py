"""Benchmark evaluation: one small module per benchmark, all reachable through the ``BENCHMARKS`` registry.

A benchmark entry bundles ``load_items(path)``, ``evaluate(model, processor, items, image_root, ...)``
(returns ``(predictions, score)``), ``score(items, predictions, rule=...)`` and ``table(score)``. Adding a
benchmark = one file plus one ``BENCHMARKS.register`` line here. Answer extractors shared across
benchmarks live in ``cambrian.eval.extract``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cambrian.eval import cvbench
from cambrian.registry import Registry


@dataclass(frozen=True)
class Benchmark:
    """What a runner needs from one benchmark (functions of its module)."""

    name: str
    load_items: Callable[..., list[Any]]
    evaluate: Callable[..., tuple[dict[Any, str], Any]]
    score: Callable[..., Any]
    table: Callable[..., Any]
    rules: tuple[str, ...]  # answer-matching rules ``score``/``evaluate`` accept; the first is the default


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")
BENCHMARKS.register(
    "cvbench",
    Benchmark(
        "cvbench",
        cvbench.load_items,
        cvbench.evaluate,
        cvbench.score,
        cvbench.table,
        ("cambrian", "lmms-eval"),
    ),
)

__all__ = ["BENCHMARKS", "Benchmark"]
