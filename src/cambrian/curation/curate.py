"""`cambrian data curate`: turn a Cambrian-10M-style pile of JSONL sources into a Cambrian-7M-style mixture.

The paper's recipe, each step optional and reported (``CurateConfig`` says which run):

1. **scan**: every row of every input is parsed once (``RowIndex`` gives random access, worker processes
   share the blocks); bad rows (broken JSON, wrong fields, no resolvable source or category) are written
   to ``bad_rows.jsonl`` with ``file:line`` and skipped. What curation needs of a row is kept in compact
   columns: file, row, line, source, category, a 64-bit key of (images, first question), the longest
   assistant turn in words, whether it already has a system prompt, whether its images exist.
2. **images** (``images``): drop rows whose image files are missing under that directory;
3. **dedup** (``dedup``): exact duplicates by (images, first question); the first occurrence wins;
4. **cap** (``cap``, default 350k): at most ``t`` rows per source, seeded sampling without replacement;
5. **rebalance** (``ratios``, ``budget``): sample each category toward the target ratios (default: the
   paper's), either the largest mixture with exactly those ratios or, with a budget, water-filling: a
   category short of its share gives all it has and the rest is shared out by the ratios;
6. **system prompt** (``system_prompt``): rows whose every assistant turn has at most
   ``short_max_words`` words get ``"system": "Answer the question using a single word or phrase."``
   (Cambrian-7M *with* system prompt), unless they bring a system prompt of their own;
7. **write**: the kept rows in a seeded order, streamed to the output JSONL (byte-identical rows except
   the added system prompt), plus a report (``cambrian.curation.report``).

Scale: a row costs ~20 bytes of column data, so 10M rows fit in a few hundred MB; the counting, ranking
and sampling run in Polars (multi-threaded, vectorised), never in Python dicts. Scan results are cached
per block in a work directory (atomic writes), so a crash loses at most the blocks in flight and a rerun
with other caps or ratios skips the scan entirely. Sampling is keyed by a hash of (seed, file, row), so
the same inputs and seed give the same output on any machine, whatever the worker count.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cambrian.curation.outputs import check_curate_outputs
from cambrian.utils.config import ConfigError

PAPER_RATIOS = {
    "Language": 21.00,
    "General": 34.52,
    "OCR": 27.22,
    "Counting": 8.71,
    "Math": 7.20,
    "Code": 0.87,
    "Science": 0.88,
}  # percent, Cambrian-1 README "Data Curation"
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
_SCAN_VERSION = 1  # bump when the scan columns change: old block caches are then ignored


@dataclass
class SourceSpec:
    """One source of the mixture: its category and (optionally) the files that hold only its rows."""

    category: str | None = None
    files: list[str] = field(default_factory=list)


@dataclass
class CurateConfig:
    """What to curate and how. Files listed under ``sources`` take that source for all their rows; files
    in ``inputs`` must carry a ``source`` field per row (and a ``category`` unless the map gives one)."""

    inputs: list[str] = field(default_factory=list)
    sources: dict[str, SourceSpec] = field(default_factory=dict)
    cap: int | None = 350_000  # per-source cap t; null: no cap
    ratios: dict[str, float] | None = field(
        default_factory=lambda: dict(PAPER_RATIOS)
    )  # null: no rebalancing
    budget: int | None = None  # total rows after rebalancing; null: the largest mixture with exact ratios
    dedup: bool = True
    system_prompt: str | None = SHORT_ANSWER_PROMPT  # null: add none
    short_max_words: int = 3  # "short answer": every assistant turn at most this many words
    images: str | None = None  # image root: drop rows whose images are missing there
    seed: int = 0
    workers: int = 2  # scan processes
    block_rows: int = 200_000  # rows per scan block (the unit of caching and of parallel work)

    def validate(self, base: Path | None = None) -> None:
        if not self.inputs and not any(s.files for s in self.sources.values()):
            raise ConfigError("no input files: list them under `inputs:` or under `sources.<name>.files`")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"cap: must be >= 1 (or null for no cap), got {self.cap}")
        if self.budget is not None and self.budget < 1:
            raise ConfigError(f"budget: must be >= 1 (or null), got {self.budget}")
        if self.ratios is not None:
            if not self.ratios or any(v < 0 for v in self.ratios.values()) or sum(self.ratios.values()) <= 0:
                raise ConfigError(f"ratios: need non-negative numbers with a positive sum, got {self.ratios}")
        for name, spec in self.sources.items():
            if spec.category is not None and self.ratios is not None:
                self.category_of(spec.category, f"sources.{name}.category")
        if self.short_max_words < 0:
            raise ConfigError(f"short_max_words: must be >= 0, got {self.short_max_words}")
        if self.workers < 1 or self.block_rows < 1:
            raise ConfigError("workers and block_rows must be >= 1")
        seen: dict[str, str] = {}
        for path, src in self.files(base):
            where = f"sources.{src}.files" if src is not None else "inputs"
            if not Path(path).is_file():
                raise ConfigError(f"{where}: data file {path} does not exist")
            if Path(path).stat().st_size == 0:
                raise ConfigError(f"{where}: data file {path} is empty (no rows)")
            if path in seen:
                raise ConfigError(f"data file {path} is listed twice ({seen[path]} and {src or 'inputs'})")
            seen[path] = src or "inputs"
        if self.images is not None and not Path(self.images).is_dir():
            raise ConfigError(f"images: directory {self.images} does not exist")

    def category_of(self, name: str, where: str) -> str:
        """``name`` as one of the target categories (case-insensitive); raises naming the valid ones."""
        if self.ratios is None:
            return name
        canon = {k.lower(): k for k in self.ratios}
        if name.lower() not in canon:
            raise ConfigError(f"{where}: unknown category {name!r}; valid: {', '.join(self.ratios)}")
        return canon[name.lower()]

    def files(self, base: Path | None = None) -> list[tuple[str, str | None]]:
        """(path, source or None) for every input file, in config order: ``sources`` first."""
        root = base or Path(".")
        out = [(str(root / f), name) for name, spec in self.sources.items() for f in spec.files]
        return out + [(str(root / f), None) for f in self.inputs]


# ------------------------------------------------------------------------------------------------ scan
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


# --------------------------------------------------------------------------------------------- select
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


# ---------------------------------------------------------------------------------------------- write
def write_rows(
    df: Any,
    files: Sequence[str],
    out: Path,
    system_prompt: str | None,
    progress: Callable[[int], None] | None = None,
    chunk: int = 100_000,
) -> int:
    """Stream the selected rows, in ``df`` order, from their files to ``out`` (atomically). Returns rows."""
    from cambrian.data.index import RowIndex

    idx = [RowIndex.open(p, progress=False) for p in files]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    sys_json = json.dumps(system_prompt, ensure_ascii=False).encode()
    with open(tmp, "wb", buffering=1 << 22) as f:
        for start in range(0, df.height, chunk):
            part = df.slice(start, chunk)
            for fi, ri, add in zip(
                part["file"].to_numpy(), part["row"].to_numpy(), part["add_system"].to_numpy()
            ):
                raw = idx[fi].raw(int(ri))
                if b"\n" in raw:  # a pretty-printed element of a .json array: one line for JSONL
                    raw = json.dumps(json.loads(raw), ensure_ascii=False).encode()
                if add:  # append the key before the closing brace: every other byte of the row stays
                    raw = raw[:-1].rstrip() + b', "system": ' + sys_json + b"}"
                f.write(raw)
                f.write(b"\n")
            n += part.height
            if progress:
                progress(n)
    os.replace(tmp, out)
    for i in idx:
        i.close()
    return n


# ---------------------------------------------------------------------------------------------- run
@dataclass
class CurateResult:
    out: Path
    report_dir: Path
    rows: int
    steps: list[Step]
    report: dict[str, Any]


def curate(
    cfg: CurateConfig,
    out: str | Path,
    report_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    base: Path | None = None,
    console: Any = None,
) -> CurateResult:
    """Run the whole curation: scan (cached, resumable), select, write the JSONL, write the report.

    Raises ``ConfigError`` for a bad config or an empty input and ``OutputOverlapError`` (both
    ``ValueError``) when an output would overwrite an input (``check_curate_outputs``), before writing
    anything.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cambrian.curation.report import build_report, write_report
    from cambrian.utils.config import save_yaml

    console = console or Console()
    cfg.validate(base)
    out = Path(out)
    stem = out.name.removesuffix(".jsonl")
    report_dir = Path(report_dir) if report_dir is not None else out.with_name(stem + ".report")
    work_dir = Path(work_dir) if work_dir is not None else out.with_name(stem + ".work")
    check_curate_outputs(out, report_dir, work_dir, [p for p, _ in cfg.files(base)])
    report_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, report_dir / "curate.yaml")  # the resolved config, next to the report

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:  # fmt: skip
        t_scan = bar.add_task("scan", total=None)
        sc = scan(cfg, work_dir, base, lambda d, t: bar.update(t_scan, completed=d, total=t))
        df, steps = select(cfg, sc)
        t_write = bar.add_task("write", total=df.height)
        n = write_rows(df, sc.files, out, cfg.system_prompt, lambda d: bar.update(t_write, completed=d))
    with open(report_dir / "bad_rows.jsonl", "w") as f:
        for b in sc.bad:
            f.write(json.dumps(b, ensure_ascii=False) + "\n")
    report = build_report(cfg, sc, df, steps, out)
    write_report(report, report_dir)
    return CurateResult(out=out, report_dir=report_dir, rows=n, steps=steps, report=report)
