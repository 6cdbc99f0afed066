"""The engine's on-disk memory: one JSON file per finished unit of work, named by a hash of everything
that determines the unit (for LLM units: the model and the exact messages), written atomically so a
rerun skips finished units and a killed run loses only the units in flight."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any


def unit_key(*parts: Any) -> str:
    """A stable file name for a unit of work: sha1 of its defining inputs as canonical JSON."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, then rename it over ``path``: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Cache:
    """One JSON file per finished unit: ``<root>/<stage>/<key[:2]>/<key>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / f"{key}.json"

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        path = self.path(stage, key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:  # only a hand-edited file can be torn; redo that unit
            return None
        return value if isinstance(value, dict) else None

    def put(self, stage: str, key: str, value: dict[str, Any]) -> None:
        atomic_write(self.path(stage, key), json.dumps(value, ensure_ascii=False, indent=1).encode("utf-8"))
