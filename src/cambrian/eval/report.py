"""The paper's Table 4 from evaluation runs: Markdown, JSON and a PNG chart, with published rows beside.

Columns and averaging follow docs/eval-protocols.md section 6: four categories of four benchmarks each
(General, Knowledge, OCR & Chart, Vision-Centric), every score on a 0-100 scale with MME Perception
divided by 20, category average = unweighted mean of its four, overall = mean of the 16. A category
average is only given when all four of its scores are there (a partial mean would not be comparable).
CV-Bench-2D/3D come from a ``cvbench`` run, or from the original's ``ade``+``coco`` (2D = their mean)
and ``omni`` (3D) when there is no ``cvbench`` run. Benchmarks outside Table 4 are listed separately.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cambrian.eval.benchmark import CATEGORIES, PAPER, Column

# Paper Table 4 (docs/eval-protocols.md section 8.2): the 16 columns in CATEGORIES order; MME-P raw (0-2000).
PUBLISHED_COLUMNS = [c.label for cols in CATEGORIES.values() for c in cols]
PUBLISHED: dict[str, dict[str, Any]] = {
    "gpt-4v": {"label": "GPT-4V", "scores": [1409.4, 75.8, 69.1, 36.8, 75.7, 56.8, 49.9, 78.2, 78.5, 64.5, 78.0,
                                             88.4, 50.0, 61.4, 64.3, 73.8],
               "averages": {"General": 63.0, "Knowledge": 65.2, "OCR & Chart": 77.4, "Vision-Centric": 62.4}},
    "cambrian-8b": {"label": "Cambrian-1-8B", "scores": [1547.1, 75.9, 74.7, 64.6, 80.4, 42.7, 49.0, 73.0, 73.3,
                                                         62.4, 71.7, 77.8, 51.3, 64.2, 72.3, 72.0],
                    "averages": {"General": 73.1, "Knowledge": 61.3, "OCR & Chart": 71.3, "Vision-Centric": 65.0}},
    "cambrian-13b": {"label": "Cambrian-1-13B", "scores": [1610.4, 75.7, 74.4, 64.3, 79.3, 40.0, 48.0, 73.6, 73.8,
                                                           61.9, 72.8, 76.8, 41.3, 63.0, 72.5, 71.8],
                     "averages": {"General": 73.7, "Knowledge": 60.2, "OCR & Chart": 71.3, "Vision-Centric": 62.2}},
    "cambrian-34b": {"label": "Cambrian-1-34B", "scores": [1689.3, 81.4, 75.3, 65.8, 85.6, 49.7, 53.2, 79.7, 75.6,
                                                           60.0, 76.7, 75.5, 52.7, 67.8, 74.0, 79.7],
                     "averages": {"General": 76.8, "Knowledge": 67.0, "OCR & Chart": 71.9, "Vision-Centric": 68.5}},
}  # fmt: skip


class ReportError(ValueError):
    """A run directory cannot be read (missing, no score.json files, bad JSON); the message says which."""


@dataclass
class Row:
    """One line of the table: raw column values (MME-P on 0-2000), averages, and extra benchmarks."""

    label: str
    values: dict[str, float | None]
    averages: dict[str, float | None] = field(default_factory=dict)
    overall: float | None = None
    extras: dict[str, float] = field(default_factory=dict)
    printed_averages: dict[str, float] | None = None  # the published row's own (rounded) averages

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "scores": self.values, "averages": self.averages, "overall": self.overall,
                "other_benchmarks": self.extras, "printed_averages": self.printed_averages}  # fmt: skip


def _averaged(column: Column, value: float | None) -> float | None:
    return None if value is None else value / column.divisor


def complete_row(label: str, values: dict[str, float | None], extras: dict[str, float] | None = None) -> Row:
    """A row with its category averages (all four present) and overall (all 16 present) computed."""
    averages: dict[str, float | None] = {}
    for cat, cols in CATEGORIES.items():
        scaled = [_averaged(c, values.get(c.label)) for c in cols]
        averages[cat] = None if any(v is None for v in scaled) else sum(scaled) / len(scaled)  # type: ignore[arg-type]
    cats = list(averages.values())
    overall = None if any(v is None for v in cats) else sum(cats) / len(cats)  # type: ignore[arg-type]
    return Row(label, values, averages, overall, dict(extras or {}))


def published_row(name: str) -> Row:
    """A published Table 4 row by id (``cambrian-8b``, ...); averages recomputed from its numbers."""
    if name not in PUBLISHED:
        raise ReportError(f"unknown published row {name!r}; valid: {', '.join(PUBLISHED)}")
    entry = PUBLISHED[name]
    row = complete_row(entry["label"], dict(zip(PUBLISHED_COLUMNS, entry["scores"])))
    row.printed_averages = dict(entry["averages"])
    return row


def read_run(run_dir: Path) -> dict[str, dict[str, Any]]:
    """``{benchmark: score dict}`` of every ``<bench>/score.json`` under a run directory."""
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist")
    scores = {}
    for path in sorted(run_dir.glob("*/score.json")):
        try:
            scores[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: invalid JSON ({e})") from None
    if not scores:
        raise ReportError(
            f"{run_dir} holds no <benchmark>/score.json (run `cambrian eval run ... --out {run_dir}`)"
        )
    return scores


def run_row(run_dir: Path, label: str | None = None) -> Row:
    """The table row of one run directory (label: its summary's model id and the directory name)."""
    scores = read_run(run_dir)
    values: dict[str, float | None] = {}
    for cols in CATEGORIES.values():
        for c in cols:
            score = scores.get(c.benchmark, {})
            values[c.label] = score.get(c.key) if score.get(c.key) is not None else None
    # The original's separate CV-Bench parts, when there is no cvbench run.
    if "cvbench" not in scores:
        parts = {b: scores[b].get("headline") for b in ("ade", "coco", "omni") if b in scores}
        if parts.get("ade") is not None and parts.get("coco") is not None:
            values["CV-Bench-2D"] = (parts["ade"] + parts["coco"]) / 2
        if parts.get("omni") is not None:
            values["CV-Bench-3D"] = parts["omni"]
    extras = {b: s["headline"] for b, s in scores.items() if b not in PAPER and s.get("headline") is not None}
    summary = run_dir / "summary.json"
    model = json.loads(summary.read_text(encoding="utf-8")).get("model_id") if summary.is_file() else None
    return complete_row(label or (f"{run_dir.name} ({model})" if model and model != run_dir.name else run_dir.name),
                        values, extras)  # fmt: skip


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[Row]) -> str:
    """Table 4 as Markdown (per category: its average, then its four columns; overall last)."""
    header = ["Model"]
    for cat, cols in CATEGORIES.items():
        header += [f"{cat} avg", *(c.label for c in cols)]
    header.append("Overall (16)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        for cat, cols in CATEGORIES.items():
            cells.append(_fmt(row.averages.get(cat), 2))
            cells += [_fmt(row.values.get(c.label)) for c in cols]
        cells.append(_fmt(row.overall, 2))
        lines.append("| " + " | ".join(cells) + " |")
    extra_names = sorted({b for r in rows for b in r.extras})
    if extra_names:
        lines += ["", "Other benchmarks (headline as the original's tabulate reports it):", "",
                  "| Model | " + " | ".join(extra_names) + " |", "|" + "---|" * (len(extra_names) + 1)]  # fmt: skip
        for row in rows:
            lines.append(
                f"| {row.label} | " + " | ".join(_fmt(row.extras.get(b)) for b in extra_names) + " |"
            )
    lines += ["", "Category average = mean of its four scores (MME-P / 20); given only when all four exist."]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[Row], path: Path) -> None:
    """Grouped bars: the 16 scores (MME-P / 20) and the 4 category averages, one colour per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = [c for cols in CATEGORIES.values() for c in cols]
    labels = [c.label for c in columns] + [f"{cat} avg" for cat in CATEGORIES]
    x = np.arange(len(labels))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(12, 0.7 * len(labels) * max(1, len(rows) / 2)), 5))
    for i, row in enumerate(rows):
        vals = [_averaged(c, row.values.get(c.label)) for c in columns] + [
            row.averages.get(c) for c in CATEGORIES
        ]
        heights = [np.nan if v is None else v for v in vals]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, heights, width, label=row.label)
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylabel("score (MME-P / 20)")
    ax.set_ylim(0, 100)
    ax.axvline(len(columns) - 0.5, color="grey", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title("Cambrian-1 Table 4 layout")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(run_dirs: Sequence[Path], published: Sequence[str], out_dir: Path) -> list[Row]:
    """Rows for the runs and the published models; writes ``report.md``, ``report.json``, ``report.png``."""
    rows = [run_row(d) for d in run_dirs] + [published_row(p) for p in published]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(rows), encoding="utf-8")
    doc = {"categories": {cat: [c.label for c in cols] for cat, cols in CATEGORIES.items()},
           "rows": [r.to_dict() for r in rows]}  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    plot(rows, out_dir / "report.png")
    return rows
