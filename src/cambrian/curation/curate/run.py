"""Step 7 and the whole run: stream the selected rows to the output JSONL (``write_rows``) and tie scan,
select, write and the report together (``curate``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cambrian.curation.curate.config import CurateConfig
from cambrian.curation.curate.scanning import scan
from cambrian.curation.curate.selection import Step, select
from cambrian.curation.outputs import check_curate_outputs


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
