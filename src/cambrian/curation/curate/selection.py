"""Steps 2-6 of curation over the scanned columns, all in Polars: missing images, dedup, the per-source
cap, rebalancing toward the category ratios (``allocate``) and the system-prompt flag, then the output
order. Every random choice is keyed by ``priority`` of (seed, file, row), so it does not depend on the
worker count or the machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cambrian.curation.curate.config import CurateConfig
from cambrian.curation.curate.scanning import Scan

_MASK = (1 << 64) - 1


def priority(seed: int, salt: int, file: np.ndarray, row: np.ndarray) -> np.ndarray:
    """A uint64 pseudo-random priority per (file, row) from ``seed`` and ``salt``: splitmix64 of the
    position, so the sample of a row does not depend on the worker count or on other rows."""
    mix = np.uint64((seed * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & _MASK)
    x = (file.astype(np.uint64) << np.uint64(40)) ^ row.astype(np.uint64) ^ mix
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def allocate(available: dict[str, int], ratios: dict[str, float], budget: int | None) -> dict[str, int]:
    """Rows to take per category for target ``ratios`` (any positive scale).

    No budget: the largest mixture with exactly the target ratios (the scarcest category, relative to its
    share, decides the size). With a budget: water-filling, so categories short of their share give all
    they have and the remaining budget is shared out by the ratios among the others; totals are exact
    (largest remainders). Categories with a zero ratio get nothing; those absent from the data are ignored.
    """
    present = {c: available.get(c, 0) for c, r in ratios.items() if r > 0 and available.get(c, 0) > 0}
    if not present:
        return {c: 0 for c in available}
    share = {c: ratios[c] / sum(ratios[c] for c in present) for c in present}
    if budget is None:
        scale = min(present[c] / share[c] for c in present)
        want = {c: share[c] * scale for c in present}
        total = min(sum(present.values()), round(sum(want.values())))
    else:
        total = min(budget, sum(present.values()))
        # Water-filling on the level L: take min(available, share * L) with sum == total.
        capped: dict[str, float] = {}
        rest = dict(share)
        remaining = float(total)
        while rest:
            level = remaining / sum(rest.values())
            short = {c for c in rest if present[c] <= rest[c] * level}
            if not short:
                capped.update({c: rest[c] * level for c in rest})
                break
            for c in short:
                capped[c] = float(present[c])
                remaining -= present[c]
                del rest[c]
        want = capped
    floor = {c: min(present[c], int(want[c])) for c in present}
    left = total - sum(floor.values())
    for c in sorted(present, key=lambda c: (-(want[c] - int(want[c])), c)):
        if left <= 0:
            break
        if floor[c] < present[c]:
            floor[c] += 1
            left -= 1
    return {c: floor.get(c, 0) for c in available}


@dataclass
class Step:
    """One curation step as reported: rows in and out, per source and per category after it."""

    name: str
    detail: str
    rows_in: int
    rows_out: int
    by_source: dict[str, int]
    by_category: dict[str, int]


def _counts(df: Any, col: str) -> dict[str, int]:
    import polars as pl

    g = df.group_by(col).agg(pl.len().alias("n")).sort(col)
    return {str(k): int(v) for k, v in zip(g[col].to_list(), g["n"].to_list())}


def select(cfg: CurateConfig, sc: Scan) -> tuple[Any, list[Step]]:
    """Apply images -> dedup -> cap -> rebalance -> system prompt -> order to the scanned rows.

    Returns the kept rows (file, row, add_system) in output order and the steps for the report.
    """
    import polars as pl

    df = sc.frame
    steps: list[Step] = []

    def record(name: str, detail: str, before: int) -> None:
        steps.append(Step(name, detail, before, df.height, _counts(df, "source"), _counts(df, "category")))

    record("scan", f"{sc.n_rows:,} rows read, {len(sc.bad):,} bad rows skipped", sc.n_rows)
    if cfg.images is not None:
        before = df.height
        df = df.filter(pl.col("images_ok"))
        record("images", f"dropped rows whose images are missing under {cfg.images}", before)
    if cfg.dedup:
        before = df.height
        df = df.sort("file", "row").filter(pl.col("key").is_first_distinct())
        record("dedup", "exact duplicates by (images, first question); first occurrence kept", before)
    if cfg.cap is not None:
        before = df.height
        prio = priority(cfg.seed, 1, df["file"].to_numpy(), df["row"].to_numpy())
        df = (
            df.with_columns(pl.Series("p", prio))
            .filter(pl.col("p").rank("ordinal").over("source") <= cfg.cap)
            .drop("p")
        )
        record("cap", f"at most {cfg.cap:,} rows per source (seed {cfg.seed})", before)
    if cfg.ratios is not None:
        before = df.height
        quota = allocate(_counts(df, "category"), cfg.ratios, cfg.budget)
        prio = priority(cfg.seed, 2, df["file"].to_numpy(), df["row"].to_numpy())
        q = pl.DataFrame({"category": list(quota), "quota": list(quota.values())}).with_columns(
            pl.col("category").cast(pl.Categorical), pl.col("quota").cast(pl.UInt32)
        )
        df = (
            df.with_columns(pl.Series("p", prio))
            .join(q, on="category", how="left")
            .filter(pl.col("p").rank("ordinal").over("category") <= pl.col("quota"))
            .drop("p", "quota")
        )
        how = f"budget {cfg.budget:,} rows" if cfg.budget else "largest mixture with the exact ratios"
        record("rebalance", f"toward the target category ratios ({how})", before)
    add = pl.lit(False)
    if cfg.system_prompt is not None:
        add = (pl.col("words") <= cfg.short_max_words) & ~pl.col("has_system")
    df = df.with_columns(add.alias("add_system"))
    prio = priority(cfg.seed, 3, df["file"].to_numpy(), df["row"].to_numpy())
    df = df.with_columns(pl.Series("p", prio)).sort("p").drop("p")
    return df, steps
