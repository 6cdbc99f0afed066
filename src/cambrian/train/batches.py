"""Batches and loss of the training step: the zero-image padding row, device transfer, the token loss sum."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cambrian.models.tokenization import IGNORE_INDEX

ZERO_IMAGE_ID = "__zero_image__"


class ZeroImageCollate:
    """The dataset's collator, plus a label-free zero image when a micro-batch has none.

    DDP and FSDP2 need every process to run the same modules, so a text-only micro-batch of a
    multi-process run gets a zero-image row with no labels (``dummy``; None in a single process).
    """

    def __init__(self, collator, dummy: dict[str, Any] | None):
        self.collator, self.dummy = collator, dummy

    def __call__(self, examples: list[Any]) -> dict[str, Any]:
        # Skipped rows are not dicts; text-only examples carry no "image_sizes".
        if self.dummy is not None and not any(isinstance(e, dict) and "image_sizes" in e for e in examples):
            examples = [*examples, self.dummy]
        return self.collator(examples)


def zero_image_example(processor) -> dict[str, Any]:
    """A one-image training example of a black image, with no supervised token."""
    from PIL import Image

    ex = processor.training_example(
        [{"from": "human", "value": processor.image_token}, {"from": "gpt", "value": "."}],
        images=[Image.new("RGB", (64, 64))],  # every tower resizes it to its own resolution
    )
    ex["labels"] = torch.full_like(ex["labels"], IGNORE_INDEX)
    ex["id"], ex["index"] = ZERO_IMAGE_ID, -1
    return ex


def to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Model inputs on ``device`` (``pixel_values`` is a list with one tensor per tower)."""
    return {
        k: [p.to(device, non_blocking=True) for p in v]
        if isinstance(v, list)
        else v.to(device, non_blocking=True)
        for k, v in inputs.items()
    }


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of next-token cross-entropy over supervised positions; logits (B, T, V), labels (B, T)."""
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        labels[:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
