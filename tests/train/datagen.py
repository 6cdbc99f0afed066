"""Small LLaVA-format datasets with real image files, for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


def write_dataset(
    root: Path, n: int = 8, text_only: int = 0, bad_images: int = 0, name: str = "data.jsonl", seed: int = 0
) -> Path:
    """``n`` image rows (a coloured image and its colour as the answer), ``text_only`` rows without an
    image, ``bad_images`` rows pointing at a missing file; returns the JSONL path (images next to it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        colour = names[(i + seed) % len(names)]
        size = (40 + 8 * (i % 3), 40 + 8 * ((i + 1) % 3))  # mixed aspect ratios
        Image.new("RGB", size, COLOURS[colour]).save(root / "images" / f"{i}.png")
        rows.append({
            "id": f"img-{i}",
            "image": f"images/{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is this picture?"},
                {"from": "gpt", "value": f"It is {colour}."},
            ],
        })  # fmt: skip
    for i in range(text_only):
        rows.append({
            "id": f"txt-{i}",
            "conversations": [
                {"from": "human", "value": f"Say the number {i}."},
                {"from": "gpt", "value": f"{i}"},
            ],
        })  # fmt: skip
    for i in range(bad_images):
        rows.append({
            "id": f"bad-{i}",
            "image": f"images/missing-{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is this picture?"},
                {"from": "gpt", "value": "red"},
            ],
        })  # fmt: skip
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
