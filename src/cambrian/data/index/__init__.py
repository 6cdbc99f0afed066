"""Random access to the rows of a LLaVA/Cambrian data file through an on-disk index of byte offsets.

Training data comes as ``.jsonl`` (one JSON object per line) or ``.json`` (one top-level array of
objects) and can hold 10M rows in many GB. Parsing it all with ``json.load`` costs minutes and tens of
GB of Python objects in every process; instead ``RowIndex.open`` scans the file once, streaming, and
stores where each row starts. Later opens (any process, any run) only check that the file is unchanged
and memory-map the arrays, so dataloader workers share their pages.

The parts: ``scan`` (the vectorised one-pass scanner and the ``has_image`` heuristic), ``store`` (the
index directory, ``meta.json``, the content fingerprint that decides whether an index is still valid),
``rows`` (``RowIndex``, reading and parsing rows) and ``errors``.
"""

from __future__ import annotations

from cambrian.data.index.errors import IndexFormatError, RowError
from cambrian.data.index.rows import RowIndex
from cambrian.data.index.scan import DEFAULT_CHUNK_SIZE, FORMATS, LARGE_FILE
from cambrian.data.index.store import (
    FINGERPRINT_BLOCK,
    INDEX_VERSION,
    content_fingerprint,
    default_cache_dir,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "FINGERPRINT_BLOCK",
    "FORMATS",
    "INDEX_VERSION",
    "LARGE_FILE",
    "IndexFormatError",
    "RowError",
    "RowIndex",
    "content_fingerprint",
    "default_cache_dir",
]
