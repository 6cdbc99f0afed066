"""The one streaming pass over a data file that yields the index arrays: where each row starts, its line,
and whether it seems to have images (``build_arrays``); also which format a file name means.

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

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cambrian.data.index.errors import IndexFormatError

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


def build_arrays(
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


def format_of(path: Path) -> str:
    """``"jsonl"`` or ``"json"`` from the file's extension: the two formats need different scanners."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise IndexFormatError(
            f"{path}: cannot tell the data format from the extension {path.suffix!r}; "
            f"valid: {', '.join(FORMATS)} (one JSON object per line, or one JSON array of objects)"
        )
    return fmt
