"""Reading local benchmark snapshots: parquet / JSON / JSONL / CSV / TSV tables and their images.

A snapshot is the benchmark's published dataset as downloaded (a Hugging Face dataset repo's files, or
the original json/csv + image folders) under ``ROOT/<bench>/``. Every reader checks what it reads and
raises ``DatasetFormatError`` naming the file, the row or field, and what was expected, so a wrong or
partial download fails in a second with a message a person can act on.

Images are not decoded while loading: an ``ImageRef`` points at a file or at one cell of a parquet image
column (the HF ``{"bytes", "path"}`` struct), and is opened when its item is generated. Parquet image
columns are read one file at a time and kept for the next items (the runner walks items in order).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".tsv")


class DatasetFormatError(ValueError):
    """A snapshot file is missing or not of the expected shape; the message says where and what."""


# ------------------------------------------------------------------------------------------ locating
def split_files(
    root: Path, split: str, suffixes: Sequence[str] = (".parquet",), config: str | None = None
) -> list[Path]:
    """The data files of ``split`` in an HF dataset snapshot, sorted.

    Accepts the layouts the hub uses: ``[config/]data/<split>-*.ext``, ``[config/]<split>-*.ext``,
    ``[config/]<split>/*.ext`` and ``[config/]<split>.ext``. Raises naming ``root``, the split and the
    files that *are* there when nothing matches.
    """
    if not root.is_dir():
        raise DatasetFormatError(f"benchmark data directory {root} does not exist")
    base = root / config if config else root
    found: list[Path] = []
    for suffix in suffixes:
        patterns = [f"data/{split}-*{suffix}", f"{split}-*{suffix}", f"{split}/*{suffix}", f"{split}{suffix}",
                    f"data/{split}{suffix}"]  # fmt: skip
        for pattern in patterns:
            found.extend(p for p in base.glob(pattern) if p.is_file())
    if not found:
        present = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in TABLE_SUFFIXES)
        listed = ", ".join(present[:8]) + (" ..." if len(present) > 8 else "") or "no data files"
        where = f"{base}" + ("" if not config else f" (config {config})")
        raise DatasetFormatError(
            f"no {'/'.join(suffixes)} files for split {split!r} under {where} "
            f"(looked for data/{split}-*, {split}-*, {split}/*, {split}.*); found: {listed}"
        )
    return sorted(dict.fromkeys(found))


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a ``DatasetFormatError`` saying which file of the snapshot is missing."""
    if not path.is_file():
        raise DatasetFormatError(f"{what}: {path} does not exist")
    return path


# ------------------------------------------------------------------------------------------- reading
def read_rows(path: Path, columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """All rows of one table file as dicts (parquet: only ``columns`` plus none of the image bytes).

    ``columns`` are required: a file without one of them raises naming the file, the missing column and
    the columns it has. For parquet, only these columns are read (image columns are left to ``ImageRef``).
    JSON may be an array of objects or an object holding one (``{"data": [...]}``/``{"annotations": ...}``).
    """
    suffix = path.suffix
    if suffix == ".parquet":
        import polars as pl

        try:
            schema = pl.read_parquet_schema(path)
        except Exception as e:  # polars raises its own error types for non-parquet bytes
            raise DatasetFormatError(f"{path}: not a readable parquet file ({e})") from None
        _check_columns(path, list(schema), columns)
        return pl.read_parquet(path, columns=list(columns) or None).to_dicts()
    if suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DatasetFormatError(f"{path}:{lineno}: invalid JSON ({e})") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{path}: invalid JSON ({e})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DatasetFormatError(f"{path}: expected a JSON array of rows (or an object holding one)")
            data = lists[0]
        if not isinstance(data, list):
            raise DatasetFormatError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
        rows = data
    elif suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    else:
        raise DatasetFormatError(
            f"{path}: unsupported table format {suffix!r} (valid: {', '.join(TABLE_SUFFIXES)})"
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetFormatError(f"{path}: row {i} is {type(row).__name__}, expected an object")
        _check_columns(path, list(row), columns, row=i)
    return rows


def read_split(
    root: Path,
    split: str,
    columns: Sequence[str],
    image_columns: Sequence[str] = (),
    config: str | None = None,
) -> list[tuple[str, dict[str, Any], dict[str, ImageRef]]]:
    """Every row of an HF parquet split as ``(where, fields, {image column: ImageRef})``, in file/row
    order; ``where`` ("FILE: row I") is what a loader's error messages name."""
    return [
        (f"{path}: row {i}", row, refs)
        for path in split_files(root, split, config=config)
        for i, (row, refs) in enumerate(read_parquet_rows(path, columns, image_columns))
    ]


def read_parquet_rows(
    path: Path, columns: Sequence[str], image_columns: Sequence[str] = ()
) -> list[tuple[dict[str, Any], dict[str, ImageRef]]]:
    """Rows of one parquet file: ``(fields, {image column: ImageRef})``.

    ``columns`` are read eagerly and must exist; each of ``image_columns`` must exist too and becomes an
    ``ImageRef`` per row (a null cell stays out of the dict); their bytes are read only when opened.
    """
    import polars as pl

    rows = read_rows(path, columns)
    _check_columns(path, list(pl.read_parquet_schema(path)), image_columns)
    # Which cells hold an image, without keeping the bytes (they are read again when generated).
    present = {
        c: pl.scan_parquet(path).select(pl.col(c).is_not_null()).collect().to_series().to_list()
        for c in image_columns
    }
    return [
        (row, {c: ImageRef(str(path), i, c) for c in image_columns if present[c][i]})
        for i, row in enumerate(rows)
    ]


def _check_columns(path: Path, have: Sequence[str], want: Sequence[str], row: int | None = None) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        where = f"{path}" + ("" if row is None else f": row {row}")
        raise DatasetFormatError(
            f"{where}: field {missing[0]!r} is missing (expected fields: {', '.join(want)}; "
            f"the file has: {', '.join(have) or 'none'})"
        )


def expect(value: Any, kind: type | tuple[type, ...], where: str, name: str) -> Any:
    """``value`` if it is an instance of ``kind``; else ``DatasetFormatError`` naming the field."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = " or ".join(k.__name__ for k in kinds)
        raise DatasetFormatError(
            f"{where}: field {name!r}: expected {expected}, got {type(value).__name__} {value!r:.80}"
        )
    return value


# -------------------------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageRef:
    """An image not yet decoded: a file path (``row`` is None), or row ``row`` of parquet column
    ``column`` in file ``source`` (an HF image struct ``{"bytes", "path"}``, raw bytes or a path); for a
    cell holding a list of images, ``index`` picks one."""

    source: str
    row: int | None = None
    column: str | None = None
    index: int | None = None

    def open(self) -> Image.Image:
        """The image as RGB (named by file, row and column when it cannot be read)."""
        if self.row is None:
            return open_image_file(Path(self.source))
        cell = parquet_column(self.source, self.column)[self.row]
        where = f"{self.source}: row {self.row}, field {self.column!r}"
        if self.index is not None:
            if not isinstance(cell, list) or not -len(cell) <= self.index < len(cell):
                raise DatasetFormatError(f"{where}: expected a list of images with an item {self.index}")
            cell, where = cell[self.index], f"{where}[{self.index}]"
        return decode_image(cell, where, base=Path(self.source).parent)


def open_image_file(path: Path) -> Image.Image:
    """An RGB image from a file (``cambrian.utils.images.to_rgb``: 16-bit and float scaled by value range)."""
    from cambrian.utils.images import ImageError, to_rgb

    if not path.is_file():
        raise DatasetFormatError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return to_rgb(im, str(path))
    except ImageError as e:
        raise DatasetFormatError(f"image {path}: {e.reason}") from None
    except (OSError, Image.DecompressionBombError) as e:
        raise DatasetFormatError(f"image {path}: cannot be read ({e})") from None


def decode_image(value: Any, where: str, base: Path | None = None) -> Image.Image:
    """An image from a dataset cell: HF struct ``{"bytes", "path"}``, bytes, a base64 string (MMBench's
    TSV), or a path relative to ``base``."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is None:
            raise DatasetFormatError(f"{where}: image struct has neither 'bytes' nor 'path'")
        value = data if data is not None else path
    if isinstance(value, str):
        candidate = (base / value) if base is not None else Path(value)
        if candidate.is_file():
            return open_image_file(candidate)
        try:
            value = base64.b64decode(value, validate=True)
        except ValueError:
            raise DatasetFormatError(f"{where}: {value!r:.80} is neither an image file nor base64") from None
    if not isinstance(value, (bytes, bytearray)):
        raise DatasetFormatError(
            f"{where}: expected image bytes, a path or an HF image struct, got {type(value).__name__}"
        )
    from cambrian.utils.images import ImageError, to_rgb

    try:
        with Image.open(io.BytesIO(value)) as im:
            return to_rgb(im, where)  # the conversion training and chat use (16-bit scaled, not clipped)
    except ImageError as e:
        raise DatasetFormatError(f"{where}: {e.reason}") from None
    except (OSError, Image.DecompressionBombError) as e:
        raise DatasetFormatError(f"{where}: not a readable image ({e})") from None


@lru_cache(maxsize=2)
def parquet_column(path: str, column: str) -> list[Any]:
    # One image column of one file at a time (HF shards are a few hundred MB): items are generated in
    # dataset order, so consecutive items hit the same file.
    import polars as pl

    return pl.read_parquet(path, columns=[column]).to_series().to_list()


def open_images(refs: Iterable[Any]) -> list[Image.Image]:
    """Decode a sequence of ``ImageRef`` / PIL images into RGB PIL images."""
    from cambrian.utils.images import to_rgb

    return [r.open() if isinstance(r, ImageRef) else to_rgb(r) for r in refs]
