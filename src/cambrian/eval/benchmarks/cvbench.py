"""CV-Bench (``nyu-visionx/CV-Bench``, split ``test``, 2,638 items): 2D Count/Relation, 3D Depth/Distance.

Snapshot: the hub repo's ``test_2d.parquet`` / ``test_3d.parquet`` (image column as HF structs), or its
``test_2d.jsonl`` / ``test_3d.jsonl`` with the ``img/`` folder. Prompt: the item's ``prompt`` + "\\n" +
"Answer with the option's letter from the given choices directly." (docs/eval-protocols.md s.2.2). Matching:
legacy X1 (s.2.3), the same in both rule sets. Score: the official formula (s.2.4): CV-Bench-2D = mean
of the ADE20K and COCO accuracies, CV-Bench-3D = Omni3D accuracy, overall = their mean; headline =
overall (percent), with ``CV-Bench-2D``/``CV-Bench-3D`` as the paper's Table 4 columns.

``CVBenchSource`` is also the base of ``ade``, ``coco`` and ``omni``: the original release's three
pre-release parts, here read from the public CV-Bench snapshot and filtered by ``source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from cambrian.eval import cvbench as cv
from cambrian.eval.benchmark import Benchmark, Item, field_of, grouped_percent, register
from cambrian.eval.data import DatasetFormatError, ImageRef, read_rows
from cambrian.eval.extract import extract_x1, gt_letter


def load_cvbench(root: Path, sources: Sequence[str] = ()) -> list[tuple[cv.CVBenchItem, Any]]:
    """``(item, image)`` pairs of a CV-Bench snapshot (parquet preferred, else JSONL + ``img/``), in
    file order, optionally only the given ``source`` values; the image is an ``ImageRef``."""
    if not root.is_dir():
        raise DatasetFormatError(f"benchmark data directory {root} does not exist")
    files = sorted(root.glob("test*.parquet")) or sorted(root.glob("test*.jsonl"))
    if not files:
        raise DatasetFormatError(f"{root}: no test*.parquet or test*.jsonl files (the CV-Bench hub layout)")
    out = []
    columns = list(cv.REQUIRED_FIELDS)
    for path in files:
        for i, row in enumerate(read_rows(path, columns)):
            item = cv._item_from_row(row, f"{path}: row {i}")
            if sources and item.source not in sources:
                continue
            image = (
                ImageRef(str(path), i, "image")
                if path.suffix == ".parquet"
                else ImageRef(str(root / item.filename))
            )
            out.append((item, image))
    return out


class CVBenchSource(Benchmark):
    """Items of a CV-Bench snapshot; subclasses choose the sources and the record/score layout."""

    max_new_tokens = 512
    sources: ClassVar[tuple[str, ...]] = ()

    def load(self, root: Path, split: str) -> list[Item]:
        return [
            Item(str(it.idx), cv.model_prompt(it), [image], self.record(it))
            for it, image in load_cvbench(root, self.sources)
        ]

    def record(self, it: cv.CVBenchItem) -> dict[str, Any]:
        return {"question_id": it.idx, "type": it.type, "task": it.task, "source": it.source,
                "gt_answer": it.answer, "options": list(it.choices)}  # fmt: skip


@register
class CVBench(CVBenchSource):
    name = "cvbench"
    title = "CV-Bench"
    headline_name = "CV-Bench"
    expected_n: ClassVar[dict[str, int]] = {"test": 2638}

    def score(self, records: Sequence[dict[str, Any]], rules: str) -> dict[str, Any]:
        hits = [extract_x1(self.answer(r)) == gt_letter(str(field_of(r, "gt_answer"))) for r in records]
        chances = [1.0 / len(field_of(r, "options")) for r in records]
        by_ts = cv.groups([(field_of(r, "type"), field_of(r, "source")) for r in records], hits, chances)
        official, chance = cv.official_scores(by_ts) if records else ({}, {})
        out: dict[str, Any] = {"headline": 100.0 * official.get("CV-Bench", 0.0), "n": len(records)}
        out.update({k: 100.0 * v for k, v in official.items() if k != "CV-Bench"})
        out["chance"] = {k: 100.0 * v for k, v in chance.items()}
        out["by_source"] = grouped_percent((r["source"] for r in records), hits)
        out["by_task"] = grouped_percent((r["task"] for r in records), hits)
        return out
