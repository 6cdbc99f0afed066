"""Tests of each benchmark module; each test file's ``write_snapshot(root)`` writes its tiny fixture."""

from __future__ import annotations

import io

from PIL import Image


def png(size: tuple[int, int], colour, mode: str = "RGB") -> bytes:
    """A small solid image as PNG bytes (what the fixtures put into HF image structs or files)."""
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()
