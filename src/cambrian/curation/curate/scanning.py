"""Step 1 of curation: parse every row of every input once into compact columns (one Polars frame).

Work is split into blocks of ``block_rows`` rows, scanned by worker processes that share the inputs
through ``RowIndex``; each block's columns go to an ``.npz`` under ``<work>/scan/`` named by the file's
identity and the settings the scan depends on, written atomically, so a crash loses at most the blocks in
flight and a rerun with other caps or ratios skips the scan entirely. Bad rows become records with their
``file:line`` instead of stopping the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cambrian.curation.curate.config import CurateConfig
from cambrian.utils.config import ConfigError

_SCAN_VERSION = 1  # bump when the scan columns change: old block caches are then ignored


@dataclass(frozen=True)
class _ScanJob:
    path: str
    file_id: int
    start: int
    stop: int
    source: str | None  # the file's source from the map, or None: read it from each row
    categories: dict[str, str | None]  # source -> category from the map
    valid: tuple[str, ...] | None  # target categories (None: any)
    images: str | None
    cache: str  # the block's cache file


_COLUMNS = ("row", "line", "source", "category", "key", "words", "has_system", "images_ok")


def _first_question(conv: list[dict[str, Any]]) -> str:
    for turn in conv:
        if turn.get("from") == "human":
            return " ".join(turn["value"].replace("<image>", " ").split())
    return ""


def _parse_block(idx: Any, start: int, stop: int) -> list[Any]:
    """Rows ``start .. stop - 1`` parsed: all at once as one JSON array (one C-level parse), or, when
    that fails, one by one so each bad row becomes a ``RowError`` with its own file:line."""
    from cambrian.data.index import RowError

    raws = idx.raw_range(start, stop)
    try:
        rows = json.loads(b"[" + b",".join(raws) + b"]")
        if len(rows) == len(raws):  # an empty line or a row holding "1, 2" would shift the rows
            return rows
    except (ValueError, UnicodeDecodeError):
        pass
    out: list[Any] = []
    for i in range(start, stop):
        try:
            out.append(idx.row(i))
        except RowError as e:
            out.append(e)
    return out


def _scan_block(job: _ScanJob) -> str:
    """Scan rows ``[start, stop)`` of one file into a compact ``.npz`` (written atomically); returns its path."""
    from cambrian.data.index import RowError, RowIndex
    from cambrian.data.records import check_row, row_images

    idx = RowIndex.open(job.path, progress=False)
    lines = np.asarray(idx.lines[job.start : job.stop], dtype=np.uint64)
    keep, src, cat, keys, words, has_sys, img_ok = [], [], [], [], [], [], []
    names: dict[str, int] = {}  # source / category string -> local code
    bad: list[dict[str, Any]] = []
    valid = {c.lower(): c for c in job.valid} if job.valid is not None else None
    root = Path(job.images) if job.images else None
    blake = hashlib.blake2b

    for k, row in enumerate(_parse_block(idx, job.start, job.stop)):
        if isinstance(row, RowError):
            bad.append({"line": row.line, "id": None, "reason": row.reason})
            continue
        problems = check_row(row, None, check_images=False)
        source = job.source if job.source is not None else row.get("source")
        if not problems and not (isinstance(source, str) and source):
            problems.append("no source: the row has no 'source' field and its file is not under `sources:`")
        category = None
        if not problems:
            category = job.categories.get(source) or row.get("category")
            if not isinstance(category, str) or not category:
                problems.append(
                    f"no category for source {source!r}: add `sources.{source}.category` to the map "
                    "or a 'category' field to the row"
                    + (f" (valid: {', '.join(job.valid)})" if job.valid is not None else "")
                )
            elif valid is not None and category.lower() not in valid:
                problems.append(f"unknown category {category!r}; valid: {', '.join(job.valid or ())}")
            elif valid is not None:
                category = valid[category.lower()]
        if problems:
            rid = row.get("id") if isinstance(row, dict) else None
            bad.append({"line": int(lines[k]), "id": rid if isinstance(rid, (str, int)) else None,
                        "reason": "; ".join(problems)})  # fmt: skip
            continue
        images = row_images(row)
        conv = row["conversations"]
        key = "\x00".join(images) + "\x01" + _first_question(conv)
        keep.append(k)
        keys.append(int.from_bytes(blake(key.encode(), digest_size=8).digest(), "little"))
        src.append(names.setdefault(source, len(names)))
        cat.append(names.setdefault(category, len(names)))
        words.append(max((len(t["value"].split()) for t in conv if t.get("from") == "gpt"), default=0))
        has_sys.append(isinstance(row.get("system"), str) or any(t.get("from") == "system" for t in conv))
        img_ok.append(root is None or all((root / rel).is_file() for rel in images))
    kept = np.asarray(keep, np.int64)
    out = {
        "row": (job.start + kept).astype(np.uint32),
        "line": lines[kept],
        "source": np.asarray(src, np.int32),
        "category": np.asarray(cat, np.int32),
        "key": np.asarray(keys, np.uint64),
        "words": np.asarray(words, np.uint32),
        "has_system": np.asarray(has_sys, bool),
        "images_ok": np.asarray(img_ok, bool),
        "names": np.array(list(names) or [""], dtype=object),
        "bad": np.array([json.dumps(b, ensure_ascii=False) for b in bad] or [""], dtype=object),
        "n_bad": np.array(len(bad)),
    }
    tmp = job.cache + f".{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **out)
    os.replace(tmp, job.cache)
    return job.cache


def _file_token(path: str, extra: Any) -> str:
    st = os.stat(path)
    ident = json.dumps([_SCAN_VERSION, os.path.abspath(path), st.st_size, st.st_mtime_ns, extra])
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


@dataclass
class Scan:
    """The scan of all inputs: one Polars frame of good rows plus the bad-row records."""

    frame: Any  # polars.DataFrame: file, row, line, source, category, key, words, has_system, images_ok
    files: list[str]
    n_rows: int
    bad: list[dict[str, Any]]  # {"file", "line", "id", "reason"}


def scan(
    cfg: CurateConfig,
    work_dir: Path,
    base: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Scan:
    """Scan every input (cached per block under ``work_dir/scan``); ``progress(done_rows, total_rows)``."""
    import polars as pl

    from cambrian.data.index import RowIndex

    files = cfg.files(base)
    categories = {name: spec.category for name, spec in cfg.sources.items()}
    if cfg.ratios is not None:
        categories = {k: (v and cfg.category_of(v, f"sources.{k}.category")) for k, v in categories.items()}
    valid = tuple(cfg.ratios) if cfg.ratios is not None else None
    jobs: list[_ScanJob] = []
    (work_dir / "scan").mkdir(parents=True, exist_ok=True)
    sizes = []
    for file_id, (path, source) in enumerate(files):
        n = len(RowIndex.open(path, progress=False))
        if n == 0:
            where = f"sources.{source}.files" if source is not None else "inputs"
            raise ConfigError(f"{where}: data file {path} holds no rows")
        sizes.append(n)
        token = _file_token(path, [source, categories, valid, cfg.images and os.path.abspath(cfg.images)])
        for start in range(0, n, cfg.block_rows):
            stop = min(n, start + cfg.block_rows)
            cache = work_dir / "scan" / f"{token}-{start:012d}-{stop:012d}.npz"
            jobs.append(
                _ScanJob(path, file_id, start, stop, source, categories, valid, cfg.images, str(cache))
            )
    total = sum(sizes)
    done = sum(j.stop - j.start for j in jobs if Path(j.cache).is_file())
    todo = [j for j in jobs if not Path(j.cache).is_file()]
    if progress:
        progress(done, total)
    if todo:
        if cfg.workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=mp.get_context("fork")) as ex:
                for job, _ in zip(todo, ex.map(_scan_block, todo)):
                    done += job.stop - job.start
                    if progress:
                        progress(done, total)
        else:
            for job in todo:
                _scan_block(job)
                done += job.stop - job.start
                if progress:
                    progress(done, total)

    # Merge the blocks: local string codes -> global ones (sources and categories share one table).
    frames, bad = [], []
    global_names: dict[str, int] = {}
    for job in jobs:
        with np.load(job.cache, allow_pickle=True) as z:
            names = [str(s) for s in z["names"]]
            remap = np.array([global_names.setdefault(s, len(global_names)) for s in names], np.int32)
            cols = {c: z[c] for c in _COLUMNS}
            cols["source"], cols["category"] = remap[cols["source"]], remap[cols["category"]]
            frames.append(pl.DataFrame({"file": np.full(len(cols["row"]), job.file_id, np.uint16), **cols}))
            if int(z["n_bad"]):
                bad += [{"file": job.path, **json.loads(str(b))} for b in z["bad"]]
    frame = pl.concat(frames) if frames else pl.DataFrame({c: [] for c in ("file", *_COLUMNS)})
    lookup = pl.Series(list(global_names) or [""], dtype=pl.String)
    frame = frame.with_columns(
        pl.col("source")
        .replace_strict(range(len(lookup)), lookup, return_dtype=pl.String)
        .cast(pl.Categorical),
        pl.col("category")
        .replace_strict(range(len(lookup)), lookup, return_dtype=pl.String)
        .cast(pl.Categorical),
    )
    return Scan(frame=frame, files=[p for p, _ in files], n_rows=total, bad=bad)
