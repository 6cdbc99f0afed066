"""Supervised fine-tuning data: rows of LLaVA-style JSON -> training examples -> padded batches.

``SupervisedDataset`` turns row ``i`` of a row source (anything with ``len``, ``row(i)`` and ``line(i)``,
e.g. ``cambrian.data.index.RowIndex`` over a JSON/JSONL file, or ``ListRows`` over in-memory dicts) into
``CambrianProcessor.training_example`` output, loading the row's images from disk. A bad row (bad JSON,
anything ``records.check_row`` reports -- the check ``cambrian data validate`` runs --, a missing or
corrupt image, too long) never raises: it comes back as a ``Skipped`` record saying which row and why,
so one broken sample cannot stop a run. Images are read by ``records.load_image`` (16-bit and float
images scaled by value range to 8-bit RGB, see ``cambrian.utils.images``).

``collate`` / ``Collator`` pad a list of examples to the longest one in the batch and concatenate their
images in sample order, which is the placeholder order ``CambrianForCausalLM.forward`` expects.

Row fields: ``id``; ``image`` (a path, a list of paths, or absent/None; relative paths are resolved
against ``image_root``); ``conversations`` (``{"from", "value"}`` turns, optionally starting with a
``system`` turn); ``system`` (optional per-row system prompt).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.utils.rnn import pad_sequence

from cambrian.data.records import check_row, load_image, row_images
from cambrian.models.conversation import get_template
from cambrian.models.tokenization import IGNORE_INDEX, IMAGE_TOKEN
from cambrian.utils.images import ImageError

# Keys of a collated batch that ``CambrianForCausalLM.forward`` accepts; the rest is bookkeeping.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_sizes")
PADDING_SIDES = ("left", "right")


class Rows(Protocol):
    """What ``SupervisedDataset`` needs from a row source."""

    def __len__(self) -> int: ...

    def row(self, i: int) -> Any: ...

    def line(self, i: int) -> int | None: ...


class ListRows:
    """In-memory rows: ``row(i)`` is the i-th dict, ``line(i)`` is ``i + 1`` (as if one row per line)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self._rows = list(rows)

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, i: int) -> Mapping[str, Any]:
        return self._rows[i]

    def line(self, i: int) -> int:
        if not -len(self._rows) <= i < len(self._rows):
            raise IndexError(f"row {i} out of range for {len(self._rows)} rows")
        return i % len(self._rows) + 1


@dataclass
class Skipped:
    """A row that produced no example: ``index`` is its row number, ``line`` its line in the file."""

    id: Any
    index: int
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.index}" + (f" (line {self.line})" if self.line is not None else "")
        return f"{where}{f' id {self.id!r}' if self.id is not None else ''} skipped: {self.reason}"


def _row_system(row: Mapping[str, Any], conversations: Sequence[Any], default: str | None) -> str | None:
    """Per-row ``system`` field > a leading system turn of the row > the dataset's ``system``.

    The row has passed ``check_row``, so ``system`` is a string or null."""
    if row.get("system") is not None:
        return row["system"]
    first = conversations[0] if conversations else None
    if isinstance(first, Mapping):
        role = first.get("from", first.get("role"))
        if isinstance(role, str) and role.lower() == "system":
            return None  # build_prompt_segments takes it from the turn; an explicit system would override it
    return default


class SupervisedDataset(torch.utils.data.Dataset):
    """Rows -> ``training_example`` dicts (plus ``id`` and ``index``) or ``Skipped`` records.

    Args:
        rows: row source with ``len``, ``row(i)`` (may raise on a bad row) and ``line(i)``.
        processor: the model's ``CambrianProcessor`` (same preprocessing as inference).
        image_root: directory that relative image paths are resolved against (default: as given).
        template: conversation template id; defaults to ``processor.conv_mode``.
        max_length: longest example in tokens (None: no limit); longer rows are truncated from the end
            when that cuts no image, and skipped otherwise.
        system: system prompt for rows that bring none (None: the template's default).
    """

    def __init__(
        self,
        rows: Rows,
        processor: Any,
        image_root: str | Path | None = None,
        template: str | None = None,
        max_length: int | None = None,
        system: str | None = None,
    ):
        self.rows = rows
        self.processor = processor
        self.image_root = Path(image_root) if image_root is not None else None
        self.template = template or processor.conv_mode
        if self.template is None:
            raise ValueError("no conversation template: pass template= or use a processor with conv_mode")
        get_template(self.template)  # an unknown id is a configuration error, not a bad row: raise now
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
        self.max_length = max_length
        self.system = system
        self.image_token = getattr(processor, "image_token", None) or IMAGE_TOKEN

    def __len__(self) -> int:
        return len(self.rows)

    def _line(self, i: int) -> int | None:
        try:
            return self.rows.line(i)
        except Exception:  # the line number only decorates the report; never fail on it
            return None

    def _path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or self.image_root is None else self.image_root / path

    def __getitem__(self, i: int) -> dict[str, Any] | Skipped:
        line = self._line(i)
        try:
            row = self.rows.row(i)
        except Exception as e:  # bad JSON, undecodable bytes, ...: whatever the row source raises
            return Skipped(None, i, line, f"unreadable row: {e}")
        if not isinstance(row, Mapping):
            return Skipped(None, i, line, f"row is a JSON {type(row).__name__}, expected an object")
        row_id = row.get("id")

        def skip(reason: str) -> Skipped:
            return Skipped(row_id, i, line, reason)

        # The same row check as `cambrian data validate` (records.check_row), so both accept the same rows.
        problems = check_row(dict(row), None, self.image_token, check_images=False)
        if problems:
            return skip("; ".join(problems))
        conversations = row["conversations"]
        system = _row_system(row, conversations, self.system)
        images = []
        for path in (self._path(p) for p in row_images(row)):
            if not path.is_file():
                return skip(f"image file not found: {path}")
            try:
                images.append(load_image(path))  # full decode; 16-bit/float modes scaled to 8-bit RGB
            except ImageError as e:
                return skip(f"cannot read image {e}")
        try:
            example = self.processor.training_example(
                conversations, images, system=system, template=self.template, max_length=self.max_length
            )
        except (ValueError, TypeError, KeyError) as e:
            return skip(str(e))
        example["id"] = row_id
        example["index"] = i
        return example


def collate(
    examples: Sequence[dict[str, Any] | Skipped], pad_token_id: int, padding_side: str = "right"
) -> dict[str, Any]:
    """Pad examples to the longest in the batch; ``Skipped`` items go to ``batch["skipped"]``.

    Returns ``input_ids``, ``attention_mask`` and ``labels`` (B, T) long (labels -100 on padding),
    ``pixel_values`` (one (sum n_img, 3, R_i, R_i) tensor per tower) and ``image_sizes`` (sum n_img, 2)
    when any example has images (in sample order = placeholder order), ``num_label_tokens`` (positions
    t >= 1 with a label, i.e. the tokens the shifted causal-LM loss averages over), ``ids`` and
    ``skipped``. If every example was skipped, only ``skipped`` and ``num_label_tokens`` (0).
    """
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side {padding_side!r} is not one of {', '.join(PADDING_SIDES)}")
    skipped = [e for e in examples if isinstance(e, Skipped)]
    kept = [e for e in examples if not isinstance(e, Skipped)]
    if not kept:
        return {"skipped": skipped, "num_label_tokens": 0}

    def pad(seqs: list[torch.Tensor], value: int) -> torch.Tensor:
        # Left padding = right-pad the reversed sequences, then reverse back (works on every torch version).
        if padding_side == "left":
            return pad_sequence([s.flip(0) for s in seqs], batch_first=True, padding_value=value).flip(1)
        return pad_sequence(seqs, batch_first=True, padding_value=value)

    ids = [e["input_ids"] for e in kept]
    input_ids = pad(ids, pad_token_id)  # (B, T)
    attention_mask = pad([torch.ones_like(x) for x in ids], 0)  # (B, T)
    labels = pad([e["labels"] for e in kept], IGNORE_INDEX)  # (B, T)
    # A sample's first token is predicted from nothing of its own (with left padding: from a pad), so it
    # never carries a loss; this keeps the batch loss equal to the per-sample one on either side.
    lengths = torch.tensor([len(x) for x in ids])
    first = input_ids.shape[1] - lengths if padding_side == "left" else torch.zeros_like(lengths)
    labels[torch.arange(len(kept)), first] = IGNORE_INDEX
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "num_label_tokens": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        "ids": [e.get("id") for e in kept],
        "skipped": skipped,
    }
    with_images = [e for e in kept if e.get("pixel_values")]
    if with_images:
        towers = len(with_images[0]["pixel_values"])
        batch["pixel_values"] = [
            torch.cat([e["pixel_values"][t] for e in with_images]) for t in range(towers)
        ]
        batch["image_sizes"] = torch.cat([e["image_sizes"] for e in with_images])  # (sum n_img, 2)
    return batch


@dataclass
class Collator:
    """``collate`` with fixed settings, for ``DataLoader(collate_fn=Collator(pad_token_id))``."""

    pad_token_id: int
    padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side {self.padding_side!r} is not one of {', '.join(PADDING_SIDES)}")

    def __call__(self, examples: Sequence[dict[str, Any] | Skipped]) -> dict[str, Any]:
        return collate(examples, self.pad_token_id, self.padding_side)


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a collated batch that ``CambrianForCausalLM(**...)`` takes (drops ids/skipped/counts)."""
    return {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
