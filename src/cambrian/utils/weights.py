"""Finding and reading weight files in a model directory (safetensors or .bin, single or sharded).

One implementation for every loader (released checkpoints, tower directories): ``.bin`` files are read
with ``weights_only=True`` and memory-mapped, so listing their keys does not read the tensors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

HF_WEIGHT_FILES = (
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "model.safetensors",
    "pytorch_model.bin",
)


def weight_files(path: str | Path, names: Sequence[str] = HF_WEIGHT_FILES) -> list[Path]:
    """The weight files of the first of ``names`` present in ``path`` (an ``.index.json`` lists shards)."""
    path = Path(path)
    for name in names:
        file = path / name
        if not file.is_file():
            continue
        if name.endswith(".index.json"):
            weight_map = json.loads(file.read_text(encoding="utf-8"))["weight_map"]
            return [path / shard for shard in sorted(set(weight_map.values()))]
        return [file]
    raise FileNotFoundError(f"no weights in {path}; looked for {', '.join(names)}")


def read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def weight_keys(files: Sequence[Path]) -> set[str]:
    """All tensor names in ``files`` without reading the tensors."""
    keys: set[str] = set()
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), "pt") as handle:
                keys.update(handle.keys())
        else:
            keys.update(read_weight_file(file))  # memory-mapped: no tensor data is read
    return keys


def read_state_dict(path: str | Path, names: Sequence[str] = HF_WEIGHT_FILES) -> dict[str, torch.Tensor]:
    """The whole state dict of a directory (all shards merged)."""
    return {k: v for file in weight_files(path, names) for k, v in read_weight_file(file).items()}
