"""Never write an output over an input: the path checks `data curate` and `data engine` run before writing.

``check_curate_outputs`` and ``check_engine_outputs`` list what each command writes and reads and call
``check_outputs``, which raises ``OutputOverlapError`` (a ``ValueError``) with one line naming both paths.

Paths are compared after ``Path.resolve()`` (symlinks followed, ``./x``, ``x`` and ``/abs/x`` alike) and,
where both exist, with ``os.path.samefile`` (hard links). An output *file* conflicts with an
input that is the same file or lies beneath it; an output *directory* conflicts with any input inside it
(it would be written into) and with an input directory that contains it or is it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class OutputOverlapError(ValueError):
    """An output path would replace or write into an input; the message names both."""


@dataclass(frozen=True)
class Place:
    """A path the run reads (input) or writes (output); ``what`` names it in messages."""

    what: str  # e.g. "output file", "input data file"
    path: Path
    is_dir: bool = False
    choose: str | None = None  # what the user should change, when not ``what`` ("report directory")


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(child: Path, parent: Path) -> bool:
    """``child`` lies strictly below ``parent`` (both resolved)."""
    c, p = child.resolve(), parent.resolve()
    return c != p and c.is_relative_to(p)


def conflict(out: Place, inp: Place) -> str | None:
    """How writing ``out`` would damage ``inp`` (a phrase), or None when it would not."""
    if _same(out.path, inp.path):
        return "is the same file as" if not (out.is_dir or inp.is_dir) else "is the same path as"
    if out.is_dir and _inside(inp.path, out.path):
        return "is a directory holding"
    if inp.is_dir and _inside(out.path, inp.path):
        return "lies inside"
    return None


def check_outputs(outputs: Sequence[Place], inputs: Sequence[Place]) -> None:
    """Raise ``OutputOverlapError`` for the first output that would overwrite or write into an input.

    The message reads ``refusing to write output file mix.jsonl: it is the same file as input data file
    ./mix.jsonl (/abs/mix.jsonl); choose another output file``.
    """
    for out in outputs:
        for inp in inputs:
            how = conflict(out, inp)
            if how is not None:
                raise OutputOverlapError(
                    f"refusing to write {out.what} {out.path}: it {how} {inp.what} {inp.path} "
                    f"({inp.path.resolve()}); choose another {out.choose or out.what}"
                )


# What `data curate` writes into its report directory (cambrian.curation.curate / report).
CURATE_REPORT_FILES = ("curate.yaml", "bad_rows.jsonl", "report.json", "report.md", "sources.png",
                       "categories.png", "answer_lengths.png")  # fmt: skip
# What `data engine` writes into its output directory (cambrian.curation.engine.pipeline).
ENGINE_OUTPUT_FILES = ("engine.jsonl", "stats.json", "config.yaml")
ENGINE_OUTPUT_DIRS = ("images", "cache")


def check_curate_outputs(out: Path, report_dir: Path, work_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Refuse before ``curate`` writes anything when an output would overwrite an input data file.

    Outputs: the JSONL ``out`` and its temporary file, the report files in ``report_dir`` and the scan
    cache ``work_dir/scan/``. An input that is one of them (same path after resolving symlinks and
    relative parts, or a hard link) or lies in the scan cache is refused; so is an ``out`` that is an
    existing directory.
    """
    if out.is_dir():
        raise OutputOverlapError(
            f"output file {out} is an existing directory; give a file path, e.g. {out / 'mix.jsonl'}"
        )
    outputs = [
        Place("output file", out),
        Place("temporary output file", out.with_name(out.name + ".tmp"), choose="output file"),
        *(Place("report file", report_dir / name, choose="report directory") for name in CURATE_REPORT_FILES),
        Place("scan cache directory", work_dir / "scan", is_dir=True, choose="work directory"),
    ]
    check_outputs(outputs, [Place("input data file", Path(p)) for p in inputs])


def check_engine_outputs(
    out: Path, config_path: str | Path | None = None, dump: str | Path | None = None
) -> None:
    """Refuse before the engine writes anything when an output (``ENGINE_OUTPUT_FILES`` and
    ``ENGINE_OUTPUT_DIRS`` under ``out``) would overwrite or write into an input: the config file it was
    read from, or a local wiki dump's ``pages.jsonl`` and ``images/``; or when ``out`` exists and is not
    a directory."""
    if out.exists() and not out.is_dir():
        raise OutputOverlapError(f"output directory {out} exists and is not a directory; choose another")
    outputs = [Place("output file", out / name, choose="output directory") for name in ENGINE_OUTPUT_FILES]
    outputs += [Place("output directory", out / name, is_dir=True) for name in ENGINE_OUTPUT_DIRS]
    inputs = [Place("engine config file", Path(config_path))] if config_path is not None else []
    if dump is not None:
        inputs += [
            Place("wiki dump file", Path(dump) / "pages.jsonl"),
            Place("wiki dump directory", Path(dump) / "images", is_dir=True),
        ]
    check_outputs(outputs, inputs)
