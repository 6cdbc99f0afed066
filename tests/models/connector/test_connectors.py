"""Contract tests over every registered connector, and the SVA's work-saving paths against full computation."""

from __future__ import annotations

import pytest
import torch

from cambrian import preset_config
from cambrian.models.connector import CONNECTORS, build_connector
from cambrian.models.connector.geometry import image_token_counts, keep_mask

SIZES = torch.tensor([[64, 64], [96, 40], [30, 90], [200, 20]])
DIMS, GRIDS = [24, 20, 28], [4, 4, 8]


def _feats(b: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n * n, c, generator=g) for n, c in zip(GRIDS, DIMS)]


def _config(connector: str, **kw):
    cfg = preset_config("tiny-mlp" if connector == "mlp2x_gelu" else "tiny")
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("name", CONNECTORS.names())
@pytest.mark.parametrize(("unpad", "newline"), [(True, True), (False, False), (True, False)])
def test_every_connector_output_contract(name, unpad, newline):
    cfg = _config(name, unpad=unpad, image_newline=newline)
    torch.manual_seed(0)
    conn = build_connector(cfg, DIMS, GRIDS)
    out = conn(_feats(len(SIZES)), SIZES)
    counts = image_token_counts(SIZES, cfg.query_side, unpad, newline)
    assert out.embeds.shape == (int(counts.sum()), cfg.llm_hidden_size)
    assert out.is_query.shape == (int(counts.sum()),)
    assert int((~out.is_query).sum()) == (
        int(keep_mask(SIZES, cfg.query_side).any(-1).sum())
        if newline and unpad
        else (len(SIZES) * cfg.query_side if newline else 0)
    )
    out.embeds.square().mean().backward()
    trainable = [p for p in conn.parameters() if p.requires_grad and p.grad is None]
    # the in-LLM layers are only used inside the LLM
    assert all(any(p is q for q in conn.llm_layers.parameters()) for p in trainable)


def test_sva_kept_only_equals_full_grid_then_unpad():
    # The connector skips queries whose window is pure padding; the result must equal computing every
    # query (unpad=False) and dropping them afterwards, as the original did.
    cfg = _config("sva", image_newline=False)
    torch.manual_seed(0)
    conn = build_connector(cfg, DIMS, GRIDS)
    feats = _feats(len(SIZES))
    kept = conn(feats, SIZES).embeds
    conn.unpad = False
    full = conn(feats, SIZES).embeds.view(len(SIZES), -1, cfg.llm_hidden_size)
    torch.testing.assert_close(kept, full[keep_mask(SIZES, cfg.query_side).flatten(1)], atol=1e-6, rtol=1e-5)


def test_sva_group_on_other_grid_is_interpolated():
    cfg = _config("sva", num_query_group=2, query_num_list=[4, 16])
    conn = build_connector(cfg, DIMS, GRIDS)
    out = conn(_feats(2), SIZES[:2])
    assert out.embeds.shape[0] == int(image_token_counts(SIZES[:2], 4, True, True).sum())
    assert conn.projector[0].in_features == 2 * cfg.vision_hidden_size


def test_sva_batch_independence():
    cfg = _config("sva")
    torch.manual_seed(0)
    conn = build_connector(cfg, DIMS, GRIDS)
    feats = _feats(len(SIZES))
    together = conn(feats, SIZES).embeds
    alone = torch.cat(
        [conn([f[i : i + 1] for f in feats], SIZES[i : i + 1]).embeds for i in range(len(SIZES))]
    )
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
