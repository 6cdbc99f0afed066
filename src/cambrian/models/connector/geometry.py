"""Vectorised image-grid geometry shared by the connectors, the processor and the in-LLM SVA layers.

Everything here works on whole batches of images at once (no Python loops over images, windows or
tokens): unpadding extents, keep masks, window regrouping of token grids, and the layout of the final
image tokens (kept query rows/columns plus a newline token after each row). The rules reproduce the
original release bit for bit (docs/checkpoint-format.md 3.4 and 3.7), including its quirks: the padding
size is computed with Python float arithmetic and truncation, and an odd amount of padding keeps one
extra row or column.
"""

from __future__ import annotations

import math

import torch


def unpad_extent(image_sizes: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows/columns of a ``side`` x ``side`` grid covered by the original (unpadded) image.

    Args:
        image_sizes: (B, 2) original image sizes as (width, height).
        side: grid side a.
    Returns:
        ``wide`` (B,) bool, ``lo`` (B,) and ``hi`` (B,) long: for wide images rows [lo, hi) are kept,
        otherwise columns [lo, hi); the other axis keeps everything.
    """
    sizes = image_sizes.to(device="cpu", dtype=torch.float64)
    w, h = sizes[:, 0], sizes[:, 1]
    wide = (w / h) > 1
    # int(h * (a / w)) in float64, exactly as the original's Python arithmetic.
    n = torch.where(wide, h * (side / w), w * (side / h)).floor().long()
    # Extreme aspect ratios would keep nothing (the original fails there); keep at least one row/column.
    p = ((side - n) // 2).clamp(min=0, max=(side - 1) // 2)
    dev = image_sizes.device
    return wide.to(dev), p.to(dev), (side - p).to(dev)


def keep_mask(image_sizes: torch.Tensor, side: int) -> torch.Tensor:
    """(B, side, side) bool: True on grid cells that cover the image, False on padding."""
    wide, lo, hi = unpad_extent(image_sizes, side)
    idx = torch.arange(side, device=image_sizes.device)
    in_band = (idx[None, :] >= lo[:, None]) & (idx[None, :] < hi[:, None])  # (B, side)
    rows = torch.where(wide[:, None], in_band, torch.ones_like(in_band))
    cols = torch.where(wide[:, None], torch.ones_like(in_band), in_band)
    return rows[:, :, None] & cols[:, None, :]


def kept_shape(image_sizes: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 2) long: (rows, cols) of the kept grid per image."""
    wide, lo, hi = unpad_extent(image_sizes, side)
    kept = hi - lo
    full = torch.full_like(kept, side)
    return torch.stack([torch.where(wide, kept, full), torch.where(wide, full, kept)], dim=-1)


def image_token_counts(image_sizes: torch.Tensor, side: int, unpad: bool, newline: bool) -> torch.Tensor:
    """(B,) number of LLM tokens each image occupies: kept rows x (kept cols + newline)."""
    if unpad:
        rc = kept_shape(image_sizes, side)
    else:
        rc = torch.full((image_sizes.shape[0], 2), side, dtype=torch.long, device=image_sizes.device)
    return rc[:, 0] * (rc[:, 1] + int(newline))


def regroup_windows(x: torch.Tensor, side: int) -> torch.Tensor:
    """Split a row-major token grid into ``side`` x ``side`` windows.

    (B, a*a, ...) -> (B, side*side, r*r, ...) with r = a // side; windows row-major over (y//r, x//r),
    positions inside a window row-major over (y%r, x%r).
    """
    b, n = x.shape[:2]
    rest = x.shape[2:]
    a = math.isqrt(n)
    r = a // side
    if r * side != a or a * a != n:
        raise ValueError(f"a {a}x{a} grid cannot be split into {side}x{side} windows")
    x = x.reshape(b, side, r, side, r, *rest)
    x = x.transpose(2, 3)  # (B, side, side, r, r, ...)
    return x.reshape(b, side * side, r * r, *rest)


def window_masks(image_sizes: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """(B, side*side, r*r) attention masks of a tower with a ``grid`` x ``grid`` token grid.

    Computed at full tower resolution, regrouped like the features; windows that cover only padding
    are set all-True so no attention row is empty (the original's fallback).
    """
    m = regroup_windows(keep_mask(image_sizes, grid).flatten(1), side)  # (B, s*s, r*r)
    return m | ~m.any(dim=-1, keepdim=True)


def token_layout(
    image_sizes: torch.Tensor, side: int, unpad: bool, newline: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the kept queries and newline tokens go in the packed image-token sequence.

    Returns:
        ``query_index`` (Nq,) long: flat indices into (B*side*side) of the kept queries, sample-major
        and row-major, the order in which they appear in the LLM sequence.
        ``is_query`` (Ntok,) bool: for each packed image token (all images, in order), True for a query
        token and False for a newline token. ``Ntok = image_token_counts(...).sum()``.
    """
    b = image_sizes.shape[0]
    dev = image_sizes.device
    keep = keep_mask(image_sizes, side) if unpad else torch.ones(b, side, side, dtype=torch.bool, device=dev)
    query_index = keep.flatten().nonzero().squeeze(-1)
    if not newline:
        return query_index, torch.ones(query_index.numel(), dtype=torch.bool, device=dev)
    # A newline column after the last column, kept wherever its row keeps anything.
    row_kept = keep.any(dim=-1, keepdim=True)  # (B, side, 1)
    grid = torch.cat([keep, row_kept], dim=-1)  # (B, side, side+1)
    kinds = torch.zeros(b, side, side + 1, dtype=torch.bool, device=dev)
    kinds[..., :side] = True  # True = query column
    return query_index, kinds[grid]
