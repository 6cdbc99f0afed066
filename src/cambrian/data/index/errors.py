"""The two ways a data file can fail the row index: one bad row (``RowError``) or the whole file
(``IndexFormatError``). Kept apart so the scanner, the store and ``RowIndex`` share them without
importing each other."""

from __future__ import annotations

import os


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
