"""Where a data file's index lives on disk, and when it may be trusted: the fingerprint, ``meta.json``
and the atomic write of the arrays.

Index layout: a directory ``<data>.idx/`` next to the data file (or ``<cache>/<hash>-<name>.idx/`` when
the data directory is not writable or ``cache_dir`` is given) holding

- ``offsets-<token>.npy``  uint64 (N+1,): start byte of each row, then the end of the last row;
- ``lines-<token>.npy``    uint32 (N,) (uint64 past 4G lines): 1-based line number of each row's start;
- ``has_image-<token>.npy`` bool (N,): a byte-level guess whether the row has images
  (``cambrian.data.index.scan``);
- ``meta.json``: format version, data size, mtime_ns and content fingerprint, row count and the token
  of the arrays.

An index is trusted only while the file has the size, mtime and fingerprint it was built from. The
fingerprint (``content_fingerprint``) is a hash of the first, middle and last 64 KiB of the file, so a
file rewritten in place with the same size whose mtime was kept or restored (``cp -p``, ``rsync -t``,
``os.utime``) is re-indexed too; three small reads keep opening a 10 GB file instant. A rewrite that
changes only bytes outside those blocks, with size and mtime kept, is not noticed (``rebuild=True``).

``meta.json`` is written last through a temporary file and ``os.replace``, so it is the commit point: a
build that dies half-way leaves unreferenced array files (removed by the next build) but never an index
that is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

INDEX_VERSION = 2  # 2: meta.json carries the content fingerprint
FINGERPRINT_BLOCK = 64 << 10  # bytes hashed at the head, the middle and the tail of the data file


def content_fingerprint(path: str | os.PathLike, block: int = FINGERPRINT_BLOCK) -> str:
    """A cheap content check of a data file: sha256 of its size and its first, middle and last ``block``
    bytes (the whole file when it is at most three blocks)."""
    with open(path, "rb", buffering=0) as f:
        return fingerprint_fd(f.fileno(), block)


def fingerprint_fd(fd: int, block: int = FINGERPRINT_BLOCK) -> str:
    """``content_fingerprint`` of an open descriptor: ``RowIndex`` checks the very file it reads from."""
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


def cache_name(path: Path) -> str:
    """The index directory's name in a shared cache: the path hash keeps same-named files apart."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return f"{digest}-{path.name}.idx"


def read_meta(d: Path, st: os.stat_result, fmt: str, fingerprint: str) -> dict[str, Any] | None:
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


def write_index(
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
