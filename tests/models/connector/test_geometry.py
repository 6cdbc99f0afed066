"""Unpadding, window regrouping and token layout against the original's documented numbers and loops."""

from __future__ import annotations

import pytest
import torch

from cambrian.models.connector.geometry import (
    image_token_counts,
    keep_mask,
    regroup_windows,
    token_layout,
    window_masks,
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((336, 336), 600), ((640, 480), 450), ((480, 640), 456), ((1920, 1080), 350)],
)
def test_released_token_counts(size, expected):
    # docs/checkpoint-format.md 3.7: 24x25, 18x25, 24x19, 14x25
    counts = image_token_counts(torch.tensor([size]), 24, unpad=True, newline=True)
    assert counts.tolist() == [expected]


def test_1920x1080_rows_and_convnext_mask():
    sizes = torch.tensor([[1920, 1080]])
    rows = keep_mask(sizes, 24)[0].any(dim=1).nonzero().flatten().tolist()
    assert rows == list(range(5, 19))  # window rows 5..18
    m96 = keep_mask(sizes, 96)[0]
    masked_rows = (~m96.any(dim=1)).nonzero().flatten().tolist()
    assert masked_rows == list(range(0, 21)) + list(range(75, 96))
    # windows in rows 5 and 18 straddle the boundary: partly masked
    wm = window_masks(sizes, 96, 24)[0].view(24, 24, 16)
    assert 0 < int(wm[5, 0].sum()) < 16 and 0 < int(wm[18, 0].sum()) < 16
    assert bool(wm[10, 0].all())
    assert bool(wm[0, 0].all())  # fully padded window falls back to all-True


def _loop_regroup(x, side):
    b, n, c = x.shape
    a = int(n**0.5)
    r = a // side
    out = torch.empty(b, side * side, r * r, c)
    for i in range(b):
        for y in range(a):
            for xx in range(a):
                out[i, (y // r) * side + xx // r, (y % r) * r + xx % r] = x[i, y * a + xx]
    return out


@pytest.mark.parametrize(("a", "side"), [(8, 4), (8, 8), (6, 2)])
def test_regroup_matches_loop(a, side):
    x = torch.randn(2, a * a, 3)
    assert torch.equal(regroup_windows(x, side), _loop_regroup(x, side))


def test_regroup_rejects_bad_windows():
    with pytest.raises(ValueError, match="cannot be split"):
        regroup_windows(torch.randn(1, 36, 2), 4)


@pytest.mark.parametrize("size", [(40, 40), (64, 30), (30, 64), (100, 3), (3, 100), (41, 40)])
def test_token_layout_row_major_with_newlines(size):
    side = 4
    sizes = torch.tensor([size, (50, 50)])
    q_idx, is_query = token_layout(sizes, side, unpad=True, newline=True)
    counts = image_token_counts(sizes, side, unpad=True, newline=True)
    assert is_query.numel() == int(counts.sum())
    assert int(is_query.sum()) == q_idx.numel()
    # per image: each kept row is (kept cols) queries followed by one newline
    keep = keep_mask(sizes, side)
    pos = 0
    for b in range(2):
        for y in range(side):
            ncols = int(keep[b, y].sum())
            if ncols == 0:
                continue
            assert is_query[pos : pos + ncols].all() and not is_query[pos + ncols]
            pos += ncols + 1
    assert pos == is_query.numel()
    # query indices are sample-major, row-major, inside the kept region
    assert torch.equal(q_idx, keep.flatten().nonzero().flatten())


def test_no_unpad_no_newline():
    sizes = torch.tensor([[100, 20]])
    q_idx, is_query = token_layout(sizes, 4, unpad=False, newline=False)
    assert q_idx.tolist() == list(range(16)) and bool(is_query.all())
