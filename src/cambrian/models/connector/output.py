"""What every connector returns, and how query and newline tokens are packed into it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class ConnectorOutput:
    embeds: torch.Tensor  # (Ntok, H): image tokens of all images, packed in sequence order
    is_query: torch.Tensor  # (Ntok,) bool: latent-query tokens (False for newline tokens)
    vision_state: Any | None  # per-call state for the in-LLM SVA layers


def pack_image_tokens(
    queries: torch.Tensor, is_query: torch.Tensor, newline: torch.Tensor | None
) -> torch.Tensor:
    """Kept queries (Nq, H) + newline vector (H,) -> packed image tokens (Ntok, H) laid out by ``is_query``."""
    embeds = queries.new_empty(is_query.numel(), queries.shape[-1])
    embeds[is_query] = queries
    if newline is not None:
        embeds[~is_query] = newline.to(queries.dtype)
    return embeds
