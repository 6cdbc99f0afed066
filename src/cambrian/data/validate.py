"""Check a whole LLaVA/Cambrian data file before training: every row, every image, one report.

``validate_file`` streams the rows through a ``RowIndex`` (so a 10M-row file never sits in memory and
the index is ready for training afterwards), runs ``records.check_row`` on each and collects the bad
ones as ``(line, id, reason)`` plus counts per problem kind. Bad JSON is a bad row with its file:line,
never a crash. Image files can be checked by a thread pool (``workers``): PIL releases the GIL while
reading and decoding. ``cambrian data validate`` is the command-line face of this module.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cambrian.data.index import LARGE_FILE, RowError, RowIndex
from cambrian.data.records import Problem, check_row, row_images
from cambrian.models.tokenization import IMAGE_TOKEN


@dataclass(frozen=True)
class BadRow:
    """One bad row: where it starts (or where its JSON breaks), its id when readable, what is wrong."""

    line: int
    id: str | int | None
    reason: str  # all problems of the row, joined by "; "
    kinds: tuple[str, ...]


@dataclass
class ValidationReport:
    """Outcome of ``validate_file``. ``bad`` holds at most ``max_report`` rows; the counts cover all."""

    path: str
    rows: int = 0
    n_bad: int = 0
    text_only: int = 0  # good or bad rows whose image field is absent/empty
    image_rows: int = 0
    images: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)  # problem kind -> occurrences
    bad: list[BadRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.n_bad == 0

    @property
    def n_ok(self) -> int:
        return self.rows - self.n_bad

    @property
    def unreported(self) -> int:
        """Bad rows counted but not kept in ``bad`` (past ``max_report``)."""
        return self.n_bad - len(self.bad)

    def format_bad(self, b: BadRow) -> str:
        rid = "?" if b.id is None else b.id
        return f"{self.path}:{b.line}: id={rid}: {b.reason}"

    def summary(self) -> list[tuple[str, str]]:
        rows = [
            ("rows", f"{self.rows:,}"),
            ("ok", f"{self.n_ok:,}"),
            ("bad", f"{self.n_bad:,}"),
            ("text-only rows", f"{self.text_only:,}"),
            ("image rows", f"{self.image_rows:,}"),
            ("images", f"{self.images:,}"),
        ]
        rows += [(f"  {kind}", f"{n:,}") for kind, n in sorted(self.by_kind.items(), key=lambda kv: -kv[1])]
        return rows

    def format(self, limit: int | None = 50) -> str:
        """Plain text: one ``FILE:LINE: id=...: reason`` line per bad row (up to ``limit``), then counts."""
        shown = self.bad if limit is None else self.bad[:limit]
        lines = [self.format_bad(b) for b in shown]
        if self.n_bad > len(shown):
            lines.append(f"... and {self.n_bad - len(shown):,} more bad rows")
        lines += [f"{k}: {v}" for k, v in self.summary()]
        return "\n".join(lines)

    def print(self, console: Any = None, limit: int | None = 50) -> None:
        """Bad rows (up to ``limit``) then a rich summary table on ``console`` (default: stdout)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        shown = self.bad if limit is None else self.bad[:limit]
        for b in shown:
            console.print(self.format_bad(b), markup=False, highlight=False, soft_wrap=True)
        if self.n_bad > len(shown):
            console.print(f"... and {self.n_bad - len(shown):,} more bad rows", markup=False, soft_wrap=True)
        table = Table("", "count", title=f"{self.path}: {'OK' if self.ok else 'problems found'}")
        for k, v in self.summary():
            table.add_row(k, v)
        console.print(table)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "ok": self.ok,
            "rows": self.rows,
            "n_ok": self.n_ok,
            "n_bad": self.n_bad,
            "text_only": self.text_only,
            "image_rows": self.image_rows,
            "images": self.images,
            "by_kind": dict(self.by_kind),
            "bad": [
                {"line": b.line, "id": b.id, "reason": b.reason, "kinds": list(b.kinds)} for b in self.bad
            ],
        }


@dataclass(frozen=True)
class _Checked:
    line: int
    id: str | int | None
    problems: list[Problem]
    n_images: int | None  # None: unknown (bad JSON or bad image field)


def _check_one(
    idx: RowIndex, i: int, root: Path | None, image_token: str, check_images: bool, decode: bool
) -> _Checked:
    try:
        row = idx.row(i)
    except RowError as e:
        return _Checked(e.line, None, [Problem(e.kind, e.reason)], None)
    rid = row.get("id")
    rid = rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None
    problems = check_row(row, root, image_token, check_images, decode=decode)
    try:
        n = len(row_images(row))
    except ValueError:
        n = None
    return _Checked(idx.line(i), rid, problems, n)


def validate_file(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    max_report: int | None = None,
    workers: int = 1,
    *,
    image_token: str = IMAGE_TOKEN,
    decode: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> ValidationReport:
    """Check every row of ``path``; image paths resolve under ``image_root`` (default: the file's directory).

    ``max_report`` caps the bad rows kept in the report (None: all); ``workers`` > 1 checks rows in a
    thread pool (worth it for image checks). ``decode`` fully decodes images instead of ``verify()``.
    ``progress``: a rich bar over rows (default: when stderr is a terminal or the file exceeds 256 MiB).
    Raises ``FileNotFoundError`` / ``IndexFormatError`` for a missing or unindexable file.
    """
    path = Path(path)
    idx = RowIndex.open(path, cache_dir=cache_dir, progress=progress)
    root = Path(image_root) if image_root is not None else path.parent
    report = ValidationReport(str(path))

    def one(i: int) -> _Checked:
        return _check_one(idx, i, root, image_token, check_images, decode)

    def add(c: _Checked) -> None:
        report.rows += 1
        if c.n_images is not None:
            report.images += c.n_images
            if c.n_images:
                report.image_rows += 1
            else:
                report.text_only += 1
        if c.problems:
            report.n_bad += 1
            report.by_kind.update(p.kind for p in c.problems)
            if max_report is None or len(report.bad) < max_report:
                kinds = tuple(dict.fromkeys(p.kind for p in c.problems))
                report.bad.append(BadRow(c.line, c.id, "; ".join(c.problems), kinds))

    n = len(idx)
    show = progress if progress is not None else (sys.stderr.isatty() or path.stat().st_size > LARGE_FILE)
    bar = _row_progress(n, path.name) if show else None
    advance: Callable[[int], None] = (lambda k: bar.advance(bar.task_ids[0], k)) if bar else (lambda k: None)
    try:
        if workers <= 1:
            for i in range(n):
                add(one(i))
                if i % 4096 == 4095:
                    advance(4096)
        else:
            batch = 256 * workers  # bounded number of futures in flight, results kept in row order
            with ThreadPoolExecutor(workers) as pool:
                for lo in range(0, n, batch):
                    for c in pool.map(one, range(lo, min(n, lo + batch))):
                        add(c)
                    advance(min(n, lo + batch) - lo)
    finally:
        if bar is not None:
            bar.update(bar.task_ids[0], completed=n)
            bar.stop()
        idx.close()
    return report


def _row_progress(total: int, name: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    bar.start()
    bar.add_task(f"checking {name}", total=total)
    return bar
