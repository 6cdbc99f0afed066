"""What every connector returns, how query and newline tokens are packed into it, and how the encoded
images of a batch are re-selected per sample (``generate`` repeats each sample's images per beam)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def segment_index(counts: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Flat indices that gather whole segments of a packed sequence, in a new order.

    Args:
        counts: (n,) long, the lengths of the n consecutive segments of the packed sequence.
        order: (m,) long in [0, n), the segments to take (repeats allowed).
    Returns:
        (counts[order].sum(),) long: the elements of segment ``order[0]``, then of ``order[1]``, ...
    """
    starts = counts.cumsum(0) - counts  # (n,) first element of each segment
    lens = counts[order]  # (m,)
    out_starts = lens.cumsum(0) - lens  # (m,) where each taken segment begins in the output
    offset = (starts[order] - out_starts).repeat_interleave(lens)  # (total,)
    return offset + torch.arange(offset.numel(), device=counts.device)


@dataclass
class ConnectorOutput:
    embeds: torch.Tensor  # (Ntok, H): image tokens of all images, packed in sequence order
    is_query: torch.Tensor  # (Ntok,) bool: latent-query tokens (False for newline tokens)
    tokens_per_image: torch.Tensor  # (B_img,) long: how many of the Ntok tokens each image owns
    vision_state: Any | None  # per-call state for the in-LLM SVA layers; has ``select_images(order)``

    def select_images(self, order: torch.Tensor) -> ConnectorOutput:
        """The output of encoding images ``order`` (M,) of this batch, in that order (repeats allowed).

        Every image is encoded independently of its batch mates, so this equals re-encoding those images
        without running the towers again (``generate`` uses it to give each beam its sample's images).
        """
        order = order.to(self.tokens_per_image.device)
        tokens = segment_index(self.tokens_per_image, order)  # (Ntok',) into the packed tokens
        state = None if self.vision_state is None else self.vision_state.select_images(order)
        return ConnectorOutput(
            embeds=self.embeds[tokens],
            is_query=self.is_query[tokens],
            tokens_per_image=self.tokens_per_image[order],
            vision_state=state,
        )


def pack_image_tokens(
    queries: torch.Tensor, is_query: torch.Tensor, newline: torch.Tensor | None
) -> torch.Tensor:
    """Kept queries (Nq, H) + newline vector (H,) -> packed image tokens (Ntok, H) laid out by ``is_query``."""
    embeds = queries.new_empty(is_query.numel(), queries.shape[-1])
    embeds[is_query] = queries
    if newline is not None:
        embeds[~is_query] = newline.to(queries.dtype)
    return embeds
