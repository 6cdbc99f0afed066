"""Random access to the rows of a LLaVA/Cambrian data file through an on-disk index of byte offsets.

Training data comes as ``.jsonl`` (one JSON object per line) or ``.json`` (one top-level array of
objects) and can hold 10M rows in many GB. Parsing it all with ``json.load`` costs minutes and tens of
GB of Python objects in every process; instead ``RowIndex.open`` scans the file once, streaming, and
stores where each row starts. Later opens (any process, any run) only check that the file is unchanged
and memory-map the arrays, so dataloader workers share their pages.

Index layout: a directory ``<data>.idx/`` next to the data file (or ``<cache>/<hash>-<name>.idx/`` when
the data directory is not writable or ``cache_dir`` is given) holding

- ``offsets-<token>.npy``  uint64 (N+1,): start byte of each row, then the end of the last row;
- ``lines-<token>.npy``    uint32 (N,) (uint64 past 4G lines): 1-based line number of each row's start;
- ``has_image-<token>.npy`` bool (N,): a byte-level guess whether the row has images (below);
- ``meta.json``: format version, data size, mtime_ns and content fingerprint, row count and the token
  of the arrays.

An index is trusted only while the file has the size, mtime and fingerprint it was built from. The
fingerprint (``content_fingerprint``) is a hash of the first, middle and last 64 KiB of the file, so a
file rewritten in place with the same size whose mtime was kept or restored (``cp -p``, ``rsync -t``,
``os.utime``) is re-indexed too; three small reads keep opening a 10 GB file instant. A rewrite that
changes only bytes outside those blocks, with size and mtime kept, is not noticed (``rebuild=True``).

``meta.json`` is written last through a temporary file and ``os.replace``, so it is the commit point: a
build that dies half-way leaves unreferenced array files (removed by the next build) but never an index
that is trusted. Row ``i`` is ``data[offsets[i]:offsets[i + 1]]`` minus trailing whitespace (blank lines
in JSONL) and, in a ``.json`` array, the ``,`` separating it from the next element.

``has_image`` heuristic: a row counts as having images when its bytes contain the key ``"image"``
(at any nesting depth) followed by ``:`` and a value other than ``null``, ``""`` or ``[]``. It reads
bytes only (no parsing), so it is cheap, and it is exact for well-formed LLaVA rows; a key written with
``\\u`` escapes or an ``"image"`` key inside some nested object can fool it. Use it for grouping and
statistics, and ``cambrian.data.records.row_images`` on the parsed row for the truth.

Scanning is vectorised with numpy over large chunks (``chunk_size``, 32 MiB by default): JSONL rows start
after each ``\\n`` (blank lines skipped); for ``.json`` the scanner finds the structural bytes outside
strings (a quote is escaped when an odd run of backslashes precedes it), tracks the bracket depth with a
cumulative sum, and takes each element of the top-level array to start at the first non-blank byte after
the ``[`` or a ``,`` at depth 1. Each chunk is processed up to the start of its last incomplete row and
the rest is carried into the next read, so every scan starts outside any string at a known depth.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INDEX_VERSION = 2  # 2: meta.json carries the content fingerprint
FINGERPRINT_BLOCK = 64 << 10  # bytes hashed at the head, the middle and the tail of the data file
DEFAULT_CHUNK_SIZE = 32 << 20
LARGE_FILE = 256 << 20  # files bigger than this get a progress bar even without a terminal
FORMATS = {".jsonl": "jsonl", ".json": "json"}

_WS = np.zeros(256, dtype=bool)
_WS[[9, 10, 13, 32]] = True  # JSON whitespace: tab, newline, carriage return, space

_LBRACE, _LBRACK, _RBRACE, _RBRACK, _COMMA, _BSLASH = b"{[}],\\"


def _flags(chars: bytes) -> bytes:
    """A ``bytes.translate`` table mapping ``chars`` to 1 and every other byte to 0 (a bool mask)."""
    table = bytearray(256)
    for b in chars:
        table[b] = 1
    return bytes(table)


_JSON_BYTES = _flags(b'"\\{}[],\n')  # what the .json scanner needs: strings, structure, lines
_JSONL_BYTES = _flags(b'"\n')  # JSONL: lines, and quotes for the has_image test
_NONWS_RE = re.compile(rb"[^ \t\r\n]")
_BOM = b"\xef\xbb\xbf"


class RowError(ValueError):
    """One row of a data file is unusable: ``str(e)`` reads ``data.jsonl:17: bad JSON: ...``.

    ``kind`` names the category (``"bad JSON"``, ``"not an object"``, ``"file changed"``) for summaries.
    """

    def __init__(self, path: str | os.PathLike, line: int, reason: str, *, kind: str = "bad JSON"):
        self.path, self.line, self.reason, self.kind = str(path), int(line), reason, kind
        super().__init__(f"{self.path}:{self.line}: {reason}")

    def __reduce__(self):  # keep it picklable (multiprocessing) despite the custom __init__
        return (_make_row_error, (self.path, self.line, self.reason, self.kind))


def _make_row_error(path: str, line: int, reason: str, kind: str) -> RowError:
    return RowError(path, line, reason, kind=kind)


class IndexFormatError(ValueError):
    """The file as a whole cannot be indexed (unknown extension, not a top-level array, unbalanced...)."""


# ----------------------------------------------------------------------------------------------------
# Vectorised helpers (arr: uint8 view of one buffer; positions are int64 offsets into it)


def _at(arr: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``arr[p]`` with 0 for positions past the end (no real JSON structure byte is 0)."""
    n = arr.size
    if n == 0:
        return np.zeros(p.shape, np.uint8)
    return np.where(p < n, arr[np.minimum(p, n - 1)], 0)


def _skip_ws(arr: np.ndarray, p: np.ndarray, max_steps: int) -> np.ndarray:
    """Advance each position over JSON whitespace, at most ``max_steps`` bytes (enough for a heuristic)."""
    for _ in range(max_steps):
        m = _WS[_at(arr, p)]
        if not m.any():
            break
        p = p + m
    return p


def _first_nonws(buf: bytes, arr: np.ndarray, p: np.ndarray) -> np.ndarray:
    """First non-whitespace position at or after each of ``p`` (``len(buf)`` when there is none)."""
    p = p.copy()
    todo = np.arange(p.size)
    for _ in range(32):  # pretty-printed JSON needs a handful of steps; long runs fall to the regex
        if not todo.size:
            return p
        m = _WS[_at(arr, p[todo])]
        todo = todo[m]
        p[todo] += 1
    for k in todo:  # rare: long whitespace runs
        hit = _NONWS_RE.search(buf, int(p[k]))
        p[k] = hit.start() if hit else len(buf)
    return p


def _image_hits(arr: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """Positions of ``"image"`` keys whose value is not null, ``""`` or ``[]`` (see the module docstring)."""
    q = quotes[quotes + 7 < arr.size]  # room for 'image"' after the quote: plain indexing below
    for k, ch in enumerate(b'image"', start=1):
        q = q[arr[q + k] == ch]
    p = _skip_ws(arr, q + 7, 16)
    colon = _at(arr, p) == ord(":")
    q, p = q[colon], _skip_ws(arr, p[colon] + 1, 16)
    v, v1 = _at(arr, p), _at(arr, p + 1)
    empty_str = (v == ord('"')) & (v1 == ord('"'))
    empty_list = (v == ord("[")) & (_at(arr, _skip_ws(arr, p + 1, 16)) == ord("]"))
    keep = (v != 0) & (v != ord("n")) & ~empty_str & ~empty_list
    return q[keep]


def _mark(starts: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Bool per row (rows start at ``starts``, sorted) that contains at least one of ``hits``."""
    flag = np.zeros(starts.size, dtype=bool)
    if hits.size and starts.size:
        row = np.searchsorted(starts, hits, side="right") - 1
        flag[row[row >= 0]] = True
    return flag


def _line_of(buf: bytes, pos: int, line_base: int) -> int:
    return line_base + buf.count(b"\n", 0, pos) + 1


# ----------------------------------------------------------------------------------------------------
# Per-buffer scanners. Each returns (starts, lines, has_image, cut, state): rows that are complete in
# buf[:cut] (positions local to buf), and buf[cut:] is carried into the next buffer.


@dataclass
class _Scan:
    starts: np.ndarray  # int64 (k,) row starts in the buffer
    lines: np.ndarray  # int64 (k,) 1-based line of each start
    has_image: np.ndarray  # bool (k,)
    cut: int  # bytes consumed; buf[cut:] is carried over
    newlines: int  # newlines in buf[:cut]
    end: int | None = None  # .json: position of the closing ']' of the top-level array
    depth_next: int = 0  # .json: bracket depth at buf[cut] (0 before the top-level '[', else 1)


def _scan_jsonl(buf: bytes, line_base: int, final: bool) -> _Scan:
    arr = np.frombuffer(buf, dtype=np.uint8)
    pos = np.flatnonzero(np.frombuffer(buf.translate(_JSONL_BYTES), dtype=bool))
    is_nl = arr[pos] == 10
    nl, quotes = pos[is_nl], pos[~is_nl]
    cut = len(buf) if final else (int(nl[-1]) + 1 if nl.size else 0)
    if cut == 0:
        e = np.zeros(0, np.int64)
        return _Scan(e, e, np.zeros(0, bool), 0, 0)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))  # end of each line (its \n, exclusive)
    keep = starts < cut
    starts, ends = starts[keep], ends[keep]
    lines = line_base + 1 + np.arange(starts.size, dtype=np.int64)
    # A line is a row unless it is blank; the first byte decides almost always ('{'), so only lines that
    # open with whitespace get a Python look.
    first_ws = np.flatnonzero(_WS[arr[np.minimum(starts, len(buf) - 1)]])
    nonblank = np.ones(starts.size, dtype=bool)
    for k in first_ws:
        nonblank[k] = bool(buf[starts[k] : ends[k]].strip())
    starts, lines = starts[nonblank], lines[nonblank]
    hits = _image_hits(arr[:cut], quotes[quotes < cut])
    n_nl = int(np.searchsorted(nl, cut))
    return _Scan(starts.astype(np.int64), lines, _mark(starts, hits), cut, n_nl)


def _scan_json(buf: bytes, depth0: int, line_base: int, final: bool, path: str) -> _Scan:
    """Scan a buffer that starts outside any string at bracket depth ``depth0`` (0 or 1)."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    # One C pass (bytes.translate to 0/1) and one flatnonzero find every byte the scanner looks at;
    # that is ~2x faster than a numpy lookup-table gather or a comparison per character.
    pos = np.flatnonzero(np.frombuffer(buf.translate(_JSON_BYTES), dtype=bool))
    c = arr[pos]
    is_q, is_bs = c == ord('"'), c == _BSLASH
    nl = pos[c == ord("\n")]
    # Adjacent bytes that are both interesting sit at adjacent entries of pos, so backslash runs are
    # runs of entries. A quote is escaped when the run of backslashes right before it has odd length.
    glued = np.zeros(pos.size, dtype=bool)  # entry k directly follows entry k-1 in the file
    glued[1:] = pos[1:] == pos[:-1] + 1
    after_bs = np.zeros(pos.size, dtype=bool)
    after_bs[1:] = is_bs[:-1] & glued[1:]
    cand = np.flatnonzero(is_q & after_bs)  # quotes right after a backslash (few)
    if cand.size:
        idx = np.arange(pos.size)
        run_head = np.maximum.accumulate(np.where(is_bs & ~after_bs, idx, 0))  # latest run start <= k
        escaped = ((cand - run_head[cand - 1]) & 1) == 1  # run length = cand - its first index
        is_q[cand[escaped]] = False
    quotes = pos[is_q]
    # Inside a string iff an odd number of real quotes came before (the buffer starts outside).
    outside = ~np.logical_xor.accumulate(is_q)
    sel = outside & ~is_q & ~is_bs & (c != ord("\n"))
    sp, sc = pos[sel], c[sel]
    delta = np.zeros(sp.size, dtype=np.int64)
    delta[(sc == _LBRACE) | (sc == _LBRACK)] = 1
    delta[(sc == _RBRACE) | (sc == _RBRACK)] = -1
    depth_before = depth0 + np.cumsum(delta) - delta

    def fail(p: int, what: str) -> IndexFormatError:
        return IndexFormatError(f"{path}:{_line_of(buf, p, line_base)}: {what}")

    closing = np.flatnonzero((depth_before == 1) & (delta < 0))
    end = None
    if closing.size:
        k = int(closing[0])
        end = int(sp[k])
        if sc[k] != _RBRACK:
            raise fail(end, "'}' closes the top-level array; brackets are unbalanced")
        rest = np.flatnonzero(~_WS[arr[end + 1 :]])
        if rest.size:
            raise fail(end + 1 + int(rest[0]), "extra data after the top-level JSON array")
        keep = np.arange(sp.size) < k
        sp, sc, depth_before = sp[keep], sc[keep], depth_before[keep]
    seps = sp[((sc == _LBRACK) & (depth_before == 0)) | ((sc == _COMMA) & (depth_before == 1))]
    sep_depth = np.where(_at(arr, seps) == ord("["), 0, 1)
    if end is None:
        if final:
            at = int(_first_nonws(buf, arr, seps[-1:] + 1)[0]) if seps.size else 0  # the last row's start
            raise fail(
                at,
                "unexpected end of file: the top-level JSON array is not closed "
                "(an unterminated string, object or array in the row starting here?)",
            )
        # The element after the last separator may be incomplete: carry from that separator on.
        cut = int(seps[-1]) if seps.size else 0
        depth_next = int(sep_depth[-1]) if seps.size else depth0
        seps = seps[:-1]
    else:
        cut, depth_next = len(buf), 0
    starts = _first_nonws(buf, arr, seps + 1)
    first = _at(arr, starts)
    if end is not None and starts.size and starts[-1] == end:  # nothing between the last separator and ']'
        if sep_depth[-1] == 1:
            raise fail(int(seps[-1]), "trailing ',' before the closing ']' of the top-level array")
        starts = starts[:-1]  # '[]': an empty array
        first = first[:-1]
    bad = np.flatnonzero((first == ord(",")) | (first == ord("]")))
    if bad.size:
        raise fail(int(starts[bad[0]]), "empty element in the top-level array (two ',' in a row?)")
    lines = line_base + 1 + np.searchsorted(nl, starts).astype(np.int64)
    limit = end if end is not None else cut
    hits = _image_hits(arr[:limit], quotes[quotes < limit])
    n_nl = int(np.searchsorted(nl, cut))
    return _Scan(starts.astype(np.int64), lines, _mark(starts, hits), cut, n_nl, end, depth_next)


def _progress(total: int, show: bool | None, description: str):
    """A rich progress bar on stderr, or None when quiet (no terminal and a small file)."""
    if show is None:
        show = sys.stderr.isatty() or total > LARGE_FILE
    if not show:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    prog = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    prog.start()
    prog.add_task(description, total=total)
    return prog


def _check_json_start(path: Path) -> None:
    """A ``.json`` data file must be one top-level array; say so early and suggest ``.jsonl``."""
    line, head = 1, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                raise IndexFormatError(f"{path}: empty file; a .json data file holds one JSON array of rows")
            if not head and block.startswith(_BOM):
                block = block[len(_BOM) :]
            head = block
            hit = _NONWS_RE.search(block)
            if hit is None:
                line += block.count(b"\n")
                continue
            line += block.count(b"\n", 0, hit.start())
            ch = block[hit.start() : hit.start() + 1]
            if ch != b"[":
                raise IndexFormatError(
                    f"{path}:{line}: a .json data file must hold one top-level JSON array ('[' first), "
                    f"found {ch.decode('latin-1')!r}; if it holds one JSON object per line, name it .jsonl"
                )
            return


def _build_arrays(
    path: Path, fmt: str, chunk_size: int, progress: bool | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan the file once; returns offsets uint64 (N+1,), lines int64 (N,), has_image bool (N,)."""
    if fmt == "json":
        _check_json_start(path)
    size = path.stat().st_size
    starts, lines, flags = [], [], []
    carry, base, line_base, depth, closed = b"", 0, 0, 0, False
    end_offset = size
    bar = _progress(size, progress, f"indexing {path.name}")
    try:
        with open(path, "rb", buffering=0) as f:
            while True:
                # Read at least as much as we carry, so a row longer than chunk_size costs linear time.
                data = f.read(max(chunk_size, len(carry)))
                if bar is not None:
                    bar.advance(bar.task_ids[0], len(data))
                if closed:
                    if not data:
                        break
                    junk = _NONWS_RE.search(data)
                    if junk:
                        raise IndexFormatError(f"{path}: extra data after the top-level JSON array")
                    continue
                final = not data
                buf = carry + data
                if final and not buf:
                    break
                if fmt == "jsonl":
                    scan = _scan_jsonl(buf, line_base, final)
                else:
                    scan = _scan_json(buf, depth, line_base, final, str(path))
                    depth = scan.depth_next
                    if scan.end is not None:
                        closed, end_offset = True, base + scan.end
                starts.append(scan.starts + base)
                lines.append(scan.lines)
                flags.append(scan.has_image)
                carry = buf[scan.cut :]
                base += scan.cut
                line_base += scan.newlines
                if final:
                    break
    finally:
        if bar is not None:
            bar.stop()
    if fmt == "json" and not closed:
        raise IndexFormatError(f"{path}: unexpected end of file: the top-level JSON array is not closed")
    offsets = np.concatenate([*starts, [end_offset]]).astype(np.uint64)
    return (
        offsets,
        np.concatenate(lines or [np.zeros(0, np.int64)]),
        np.concatenate(flags or [np.zeros(0, bool)]),
    )


# ----------------------------------------------------------------------------------------------------


def content_fingerprint(path: str | os.PathLike, block: int = FINGERPRINT_BLOCK) -> str:
    """A cheap content check of a data file: sha256 of its size and its first, middle and last ``block``
    bytes (the whole file when it is at most three blocks)."""
    with open(path, "rb", buffering=0) as f:
        return _fingerprint_fd(f.fileno(), block)


def _fingerprint_fd(fd: int, block: int = FINGERPRINT_BLOCK) -> str:
    h = hashlib.sha256()
    size = os.fstat(fd).st_size
    h.update(size.to_bytes(8, "little"))
    if size <= 3 * block:
        h.update(os.pread(fd, size, 0))
    else:
        for start in (0, (size - block) // 2, size - block):
            h.update(os.pread(fd, block, start))
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Where indexes go when the data directory is read-only: ``$CAMBRIAN_CACHE`` or ``~/.cache/cambrian``."""
    root = os.environ.get("CAMBRIAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cambrian"
    )
    return Path(root) / "row-index"


def _cache_name(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return f"{digest}-{path.name}.idx"


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IndexFormatError(
            f"{path}: cannot tell the data format from the extension {path.suffix!r}; "
            f"valid: {', '.join(FORMATS)} (one JSON object per line, or one JSON array of objects)"
        )
    return fmt


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
        fmt = _format_of(path)
        if cache_dir is not None:
            candidates = [Path(cache_dir) / _cache_name(path)]
        else:
            candidates = [path.with_name(path.name + ".idx"), default_cache_dir() / _cache_name(path)]
        st = path.stat()
        fingerprint = content_fingerprint(path)
        if not rebuild:
            for d in candidates:
                meta = _read_meta(d, st, fmt, fingerprint)
                if meta is not None:
                    try:
                        return cls(path, d, meta, built=False)
                    except (OSError, ValueError):  # arrays missing or damaged: rebuild below
                        pass
        offsets, lines, has_image = _build_arrays(path, fmt, chunk_size, progress)
        st2 = path.stat()
        same_stat = (st2.st_size, st2.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        if not same_stat or content_fingerprint(path) != fingerprint:
            raise IndexFormatError(f"{path}: the file changed while it was being indexed; try again")
        errors = []
        for d in candidates:
            try:
                meta = _write_index(d, path, st, fmt, fingerprint, offsets, lines, has_image)
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
        """bool (N,), memory-mapped: whether each row seems to have images (byte heuristic, see module)."""
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
            if not same_stat or _fingerprint_fd(fd) != self.meta.get("fingerprint"):
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


def _read_meta(d: Path, st: os.stat_result, fmt: str, fingerprint: str) -> dict[str, Any] | None:
    """meta.json of index dir ``d`` when it describes this exact file version, else None."""
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    want = {
        "version": INDEX_VERSION,
        "format": fmt,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "fingerprint": fingerprint,
    }
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in want.items()):
        return None
    return meta


def _save(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr)
        fh.flush()
        os.fsync(fh.fileno())


def _write_index(
    d: Path,
    data_path: Path,
    st: os.stat_result,
    fmt: str,
    fingerprint: str,
    offsets: np.ndarray,
    lines: np.ndarray,
    has_image: np.ndarray,
) -> dict[str, Any]:
    """Write the arrays under fresh names, then commit by replacing meta.json; drop older arrays."""
    d.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    line_dtype = np.uint32 if (lines.size == 0 or int(lines.max()) < 2**32) else np.uint64
    files = {
        "offsets": f"offsets-{token}.npy",
        "lines": f"lines-{token}.npy",
        "has_image": f"has_image-{token}.npy",
    }
    _save(d / files["offsets"], offsets.astype(np.uint64))
    _save(d / files["lines"], lines.astype(line_dtype))
    _save(d / files["has_image"], has_image.astype(bool))
    meta = {
        "version": INDEX_VERSION,
        "format": fmt,
        "data": str(data_path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "fingerprint": fingerprint,
        "rows": int(offsets.size - 1),
        "image_rows": int(has_image.sum()),
        "files": files,
    }
    tmp = d / f".meta-{token}.json.tmp"
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, d / "meta.json")
    # Leftovers of earlier builds (or of a crashed one). A concurrent builder's files may go too; its
    # meta.json then points at missing arrays and the next open rebuilds.
    keep = set(files.values()) | {"meta.json"}
    for p in d.iterdir():
        if p.name not in keep and re.fullmatch(r"(offsets|lines|has_image)-.*\.npy|\.meta-.*\.tmp", p.name):
            try:
                p.unlink()
            except OSError:
                pass
    return meta
