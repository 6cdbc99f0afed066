"""``RowIndex``: random access to the rows of one data file through its index (built by
``cambrian.data.index.scan``, stored and trusted by ``cambrian.data.index.store``).

Row ``i`` is ``data[offsets[i]:offsets[i + 1]]`` minus trailing whitespace (blank lines in JSONL) and, in
a ``.json`` array, the ``,`` separating it from the next element. Rows are read with ``pread`` on demand
and parsed only when asked for, so a 10M-row file costs no more memory than its mapped arrays.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cambrian.data.index.errors import IndexFormatError, RowError
from cambrian.data.index.scan import DEFAULT_CHUNK_SIZE, build_arrays, format_of
from cambrian.data.index.store import (
    cache_name,
    content_fingerprint,
    default_cache_dir,
    fingerprint_fd,
    read_meta,
    write_index,
)


def _json_type(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(v), "number")


class RowIndex:
    """Lazy random access to the rows of one ``.jsonl`` / ``.json`` data file. Build with ``open``.

    Cheap to pickle (workers reload the memory-mapped arrays) and safe across ``fork``: the data file
    handle is reopened in a process that did not open it.
    """

    path: Path  # the data file, as given
    index_dir: Path  # where the index arrays live
    format: str  # "jsonl" or "json"
    built: bool  # True when this open (re)built the index instead of loading it

    def __init__(self, path: Path, index_dir: Path, meta: dict[str, Any], built: bool):
        self.path, self.index_dir, self.meta, self.built = path, index_dir, meta, built
        self.format = meta["format"]
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._load_arrays()

    # ---- construction

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        rebuild: bool = False,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: bool | None = None,
    ) -> RowIndex:
        """Load the index of ``path`` if one matches the file (size, mtime, content fingerprint, version),
        else build it.

        The index lives in ``<path>.idx/``, or under ``cache_dir`` (default ``default_cache_dir()``)
        when ``cache_dir`` is given or the data directory is not writable. ``progress``: show a bar
        while building (default: when stderr is a terminal or the file exceeds 256 MiB).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such data file")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        fmt = format_of(path)
        if cache_dir is not None:
            candidates = [Path(cache_dir) / cache_name(path)]
        else:
            candidates = [path.with_name(path.name + ".idx"), default_cache_dir() / cache_name(path)]
        st = path.stat()
        fingerprint = content_fingerprint(path)
        if not rebuild:
            for d in candidates:
                meta = read_meta(d, st, fmt, fingerprint)
                if meta is not None:
                    try:
                        return cls(path, d, meta, built=False)
                    except (OSError, ValueError):  # arrays missing or damaged: rebuild below
                        pass
        offsets, lines, has_image = build_arrays(path, fmt, chunk_size, progress)
        st2 = path.stat()
        same_stat = (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        if not same_stat or content_fingerprint(path) != fingerprint:
            raise IndexFormatError(f"{path}: the file changed while it was being indexed; try again")
        errors = []
        for d in candidates:
            try:
                meta = write_index(d, path, st, fmt, fingerprint, offsets, lines, has_image)
            except OSError as e:  # read-only place: try the next one
                errors.append(f"{d}: {e}")
                continue
            return cls(path, d, meta, built=True)
        raise OSError(f"{path}: could not write its index anywhere: " + "; ".join(errors))

    def _load_arrays(self) -> None:
        files, rows = self.meta["files"], self.meta["rows"]
        mode = "r" if rows else None  # nothing to map in an empty index
        self._offsets = np.load(self.index_dir / files["offsets"], mmap_mode=mode)
        self._lines = np.load(self.index_dir / files["lines"], mmap_mode=mode)
        self._has_image = np.load(self.index_dir / files["has_image"], mmap_mode=mode)
        if (
            self._offsets.shape != (rows + 1,)
            or self._lines.shape != (rows,)
            or self._has_image.shape != (rows,)
        ):
            raise ValueError(f"{self.index_dir}: index arrays do not match meta.json")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "index_dir": self.index_dir, "meta": self.meta, "built": self.built}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["index_dir"], state["meta"], state["built"])

    # ---- access

    def __len__(self) -> int:
        return int(self._offsets.shape[0]) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.row(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self.row(i)

    def __repr__(self) -> str:
        return f"RowIndex({str(self.path)!r}, rows={len(self)}, format={self.format!r})"

    @property
    def lengths(self) -> np.ndarray:
        """int64 (N,) byte length of each row (separators included): a proxy for its token length.

        Computed from the offsets on every access; keep the result if you need it repeatedly.
        """
        return np.diff(self._offsets).astype(np.int64)

    @property
    def has_image(self) -> np.ndarray:
        """bool (N,), memory-mapped: whether each row seems to have images (byte heuristic, see ``scan``)."""
        return self._has_image

    @property
    def lines(self) -> np.ndarray:
        """(N,) 1-based line number where each row starts, memory-mapped."""
        return self._lines

    def _norm(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {i} out of range for {self.path} ({n} rows)")
        return j

    def line(self, i: int) -> int:
        """1-based line number of the start of row ``i``."""
        return int(self._lines[self._norm(i)])

    def _file(self, line: int) -> int:
        """The data file's descriptor for this process; ``line`` is for the error message only."""
        pid = os.getpid()
        if self._fd is None or self._fd_pid != pid:
            # A new process (fork) gets its own descriptor; the inherited one stays for the parent.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            st = os.fstat(fd)
            same_stat = (st.st_size, st.st_mtime_ns) == (self.meta["size"], self.meta["mtime_ns"])
            if not same_stat or fingerprint_fd(fd) != self.meta.get("fingerprint"):
                os.close(fd)
                raise RowError(
                    self.path,
                    line,
                    "the file changed since it was indexed; open it again",
                    kind="file changed",
                )
            if self._fd is not None and self._fd_pid == pid:  # another thread got there first
                os.close(fd)
            else:
                self._fd, self._fd_pid = fd, pid
        return self._fd

    def raw(self, i: int) -> bytes:
        """The bytes of row ``i`` (one ``pread``), without trailing whitespace or separator."""
        j = self._norm(i)
        start, stop = int(self._offsets[j]), int(self._offsets[j + 1])
        data = os.pread(self._file(int(self._lines[j])), stop - start, start)
        if len(data) != stop - start:
            raise RowError(
                self.path,
                self.line(j),
                "the file is shorter than its index; open it again",
                kind="file changed",
            )
        data = data.rstrip(b" \t\r\n")
        if self.format == "json" and data.endswith(b","):
            data = data[:-1].rstrip(b" \t\r\n")
        return data

    def raw_range(self, start: int, stop: int) -> list[bytes]:
        """The bytes of rows ``start .. stop - 1`` (as ``raw``) with one read: for passes over many rows."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows {start}:{stop} out of range for {self.path} ({len(self)} rows)")
        if start == stop:
            return []
        offs = np.asarray(self._offsets[start : stop + 1], dtype=np.int64)
        base = int(offs[0])
        data = os.pread(self._file(int(self._lines[start])), int(offs[-1]) - base, base)
        if len(data) != int(offs[-1]) - base:
            raise RowError(self.path, self.line(start), "the file is shorter than its index; open it again",
                           kind="file changed")  # fmt: skip
        cut = (offs - base).tolist()
        out = [data[a:b].rstrip(b" \t\r\n") for a, b in itertools.pairwise(cut)]
        if self.format == "json":
            out = [r[:-1].rstrip(b" \t\r\n") if r.endswith(b",") else r for r in out]
        return out

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` parsed; raises ``RowError`` (file:line: reason) on bad JSON or a non-object row."""
        j = self._norm(i)
        data = self.raw(j)
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as e:
            line = self.line(j) + e.lineno - 1
            col = e.colno + (self._start_column(j) if e.lineno == 1 else 0)
            raise RowError(self.path, line, f"bad JSON: {e.msg} (column {col})") from None
        except UnicodeDecodeError as e:
            raise RowError(
                self.path, self.line(j), f"bad UTF-8: {e.reason} at byte {e.start} of the row"
            ) from None
        if not isinstance(obj, dict):
            raise RowError(
                self.path, self.line(j), f"not a JSON object (got {_json_type(obj)})", kind="not an object"
            )
        return obj

    def _start_column(self, j: int) -> int:
        """0-based column where row ``j`` starts (JSONL rows start their line; array elements may not)."""
        if self.format == "jsonl":
            return 0
        start = int(self._offsets[j])
        lo = max(0, start - 4096)
        before = os.pread(self._file(int(self._lines[j])), start - lo, lo)
        return len(before) - before.rfind(b"\n") - 1

    def close(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)
        self._fd = self._fd_pid = None

    def __enter__(self) -> RowIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
