"""Answer files: reading ours and the original release's, and scoring them through one path.

Ours (``OUT/<bench>/predictions.jsonl``, written by the runner) holds one JSON record per item with the
same fields the original ``<bench>_eval.py`` wrote, plus ``item_index`` (position in the dataset) and
``item_key`` (the resume key). The original's answers JSONL has no ``item_index``; that is how the format
is detected. Legacy scorers that depend on line order (MME acc+, MMVP pairs) need the dataset order:
ours is sorted by ``item_index`` (runs may be resumed or sharded), the original's is used in file order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cambrian.eval.benchmark import RULES, Benchmark, ScoreError

OURS = "cambrian"
ORIGINAL = "original"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSONL file (blank lines skipped); a bad line raises naming file:line."""
    if not path.is_file():
        raise ScoreError(f"answers file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ScoreError(f"{path}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(record, dict):
                raise ScoreError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def repaired_lines(path: Path) -> list[bytes]:
    """The lines of an append-only JSONL file, after repairing its end for further appending.

    A last line cut short by a kill (no newline, not valid JSON) was never a complete record: it is
    truncated away. A complete last record that only lacks its newline gets one.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            with path.open("r+b") as f:
                f.truncate(len(data) - len(lines[-1]))
            return lines[:-1]
        with path.open("ab") as f:
            f.write(b"\n")
    return lines


def detect_format(records: Sequence[dict[str, Any]]) -> str:
    """``"cambrian"`` when every record carries ``item_index`` (ours), else ``"original"``."""
    return OURS if records and all("item_index" in r for r in records) else ORIGINAL


def canonical_order(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours sorted by ``item_index`` (dataset order, one record per item); the original's as they are."""
    if detect_format(records) == ORIGINAL:
        return list(records)
    by_index: dict[int, dict[str, Any]] = {}
    for r in records:  # a later record of the same item wins (a rerun appends)
        by_index[int(r["item_index"])] = r
    return [by_index[i] for i in sorted(by_index)]


def score_records(
    bench: Benchmark, records: Sequence[dict[str, Any]], rules: str = "legacy"
) -> dict[str, Any]:
    """The benchmark's score dict of ``records`` (any order of ours; the original's in file order), with
    ``benchmark``, ``rules``, ``headline_name`` and ``format`` added first."""
    if rules not in RULES:
        raise ValueError(f"rules {rules!r} is not one of {', '.join(RULES)}")
    fmt = detect_format(records)
    result = bench.score(canonical_order(records), rules)
    head = {"benchmark": bench.name, "rules": rules, "format": fmt, "headline_name": bench.headline_name}
    return {**head, **result}


def score_file(bench: Benchmark, path: Path, rules: str = "legacy") -> dict[str, Any]:
    """Score an answers JSONL file (ours or the original release's, auto-detected)."""
    records = read_jsonl(path)
    if not records:
        raise ScoreError(f"answers file {path} holds no records")
    try:
        return score_records(bench, records, rules)
    except ScoreError as e:
        raise ScoreError(f"{path}: {e}") from None
