"""Spatial Vision Aggregator (SVA): learned query grid, windowed cross-attention over all towers.

Each query of an S x S grid attends only to its own window of every tower (a tower with a g x g grid
gives each query an (g/S)^2 window), with per-tower key/value projections, per-tower position
embeddings for windows larger than one token, and a global context (mean of tower 0) mixed into the
query. D layers run in the connector; optionally K more run inside the LLM, refining the LLM's own
hidden states at the image-query positions (see ``cambrian.models.llm_hooks``).

Numerics follow the original release (docs/checkpoint-format.md 3.3-3.9) while doing less work:
- queries whose window lies entirely in pad-to-square padding are never computed (the original
  computed them and threw them away during unpadding);
- the global context is projected once per image, not once per query;
- the first connector layer's query path (``proj_in`` on the shared learned query, ``q_proj``) runs
  once per image, since every query starts from the same learned vector.
Parameter names keep the released structure (``proj_context``, ``proj_in``, ``cross_attn.k_proj.{i}``...)
so released checkpoints map onto them with a simple renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cambrian.models.connector.geometry import (
    image_token_counts,
    regroup_windows,
    token_layout,
    window_masks,
)
from cambrian.models.connector.output import ConnectorOutput, pack_image_tokens, segment_index


@dataclass
class WindowedKV:
    """Key/value inputs of the SVA layers for a set of queries.

    ``features[i]``: (Nq, r_i^2, V) projected tokens of tower i in each query's window.
    ``masks[i]``: (Nq, r_i^2) bool, True where the token may be attended.
    ``image_index``: (Nq,) long, the image each query belongs to (rows of ``context``).
    ``context``: (B_img, V) global context per image.
    """

    features: list[torch.Tensor]
    masks: list[torch.Tensor]
    image_index: torch.Tensor
    context: torch.Tensor

    @property
    def attn_mask(self) -> torch.Tensor:
        """(Nq, sum r_i^2) bool, towers concatenated in order."""
        return torch.cat(self.masks, dim=1)

    def select_images(self, order: torch.Tensor) -> WindowedKV:
        """The key/values of images ``order`` (M,) in that order (repeats allowed); queries are grouped
        by image in ``image_index`` order, as the connector builds them."""
        n_img = self.context.shape[0]
        per_image = torch.bincount(self.image_index, minlength=n_img)  # (B_img,) queries of each image
        rows = segment_index(per_image, order)  # (Nq',)
        new_index = torch.arange(order.numel(), device=order.device).repeat_interleave(per_image[order])
        return WindowedKV(
            features=[x[rows] for x in self.features],
            masks=[m[rows] for m in self.masks],
            image_index=new_index,
            context=self.context[order],
        )


class MultiKVCrossAttention(nn.Module):
    """One query token per window attending to the concatenated windows of every tower.

    Same parameters and result as projecting every window token to keys and values, with less work:
    for a tower whose window holds L > 1 tokens the key and value projections (no bias) are moved to
    the query side per head, h = heads, d = V / h:
        score_hj = (W_k,h^T q_h) . LN_k(x_j)          instead of  q_h . (W_k,h LN_k(x_j))
        out_h    = W_v,h (sum_j a_hj LN_v(x_j))        instead of  sum_j a_hj (W_v,h LN_v(x_j))
    which costs V^2 + 2hLV per query rather than 2LV^2 (L = 16 for ConvNeXt at the released sizes).
    Single-token windows keep the direct path, which is cheaper there.
    """

    def __init__(self, dim: int, num_towers: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False))
        self.k_proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False)) for _ in range(num_towers)
        )
        self.v_proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False)) for _ in range(num_towers)
        )
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, q: torch.Tensor, kv: list[torch.Tensor], attn_mask: torch.Tensor) -> torch.Tensor:
        """q (Nq, V) already projected by ``q_proj``; kv[i] (Nq, L_i, V); attn_mask (Nq, sum L_i) -> (Nq, V)."""
        n, dim = q.shape
        h = self.num_heads
        d = dim // h
        qh = q.view(n, h, d) * d**-0.5
        scores, values = [], []
        for (k_norm, k_lin), (v_norm, v_lin), x in zip(self.k_proj, self.v_proj, kv):
            if x.shape[1] > 1:
                # k_norm and v_norm see the same input (same eps): normalise once without affine and
                # fold each LayerNorm's scale and shift into its projection, LN(x) = y * g + b.
                y = F.layer_norm(x, (dim,), eps=k_norm.eps)  # (Nq, L, V)
                w_k = (k_lin.weight * k_norm.weight).view(h, d, dim)  # W_k diag(g_k)
                b_k = (k_lin.weight @ k_norm.bias).view(h, d)  # W_k b_k
                q_abs = torch.einsum("nhd,hdv->nhv", qh, w_k)  # (Nq, h, V)
                scores.append(torch.baddbmm((qh * b_k).sum(-1, keepdim=True), q_abs, y.transpose(1, 2)))
                values.append(y)  # projected after the weighted sum
            else:
                keys = k_lin(k_norm(x)).view(n, -1, h, d)  # (Nq, L, h, d)
                scores.append(torch.einsum("nhd,nlhd->nhl", qh, keys))
                values.append(v_lin(v_norm(x)).view(n, -1, h, d))
        scores = torch.cat(scores, dim=-1).masked_fill(~attn_mask[:, None, :], float("-inf"))
        probs = scores.float().softmax(dim=-1).to(q.dtype)  # (Nq, h, sum L); no row is fully masked
        out = 0
        for (v_norm, v_lin), a, x in zip(self.v_proj, probs.split([x.shape[1] for x in kv], dim=-1), values):
            if x.dim() == 3:  # absorbed: x is the normalised window y (Nq, L, V)
                w_v = (v_lin.weight * v_norm.weight).view(h, d, dim)
                b_v = (v_lin.weight @ v_norm.bias).view(h, d)
                mixed = torch.bmm(a, x)  # (Nq, h, V)
                out = out + torch.einsum("nhv,hdv->nhd", mixed, w_v) + a.sum(-1, keepdim=True) * b_v
            else:
                out = out + torch.einsum("nhl,nlhd->nhd", a, x)
        return self.o_proj(out.reshape(n, dim))


class ProjOut(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim, bias=False)
        self.linear_2 = nn.Linear(dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))


class SVALayer(nn.Module):
    """One SVA layer (the original ``VisionCrossAttentionLayer``) with query width ``query_dim``.

    ``query_dim`` is V in the connector and the LLM hidden size H inside the LLM; attention, context
    and key/values are always V wide. ``kv_sizes[i]`` is the window side r_i of tower i; towers with
    r_i > 1 get a learned position embedding over their r_i^2 window positions.
    """

    def __init__(self, query_dim: int, dim: int, kv_sizes: list[int], num_heads: int):
        super().__init__()
        self.query_dim = query_dim
        self.proj_context = nn.Linear(dim, dim, bias=False)
        self.proj_in = nn.Linear(query_dim + dim, dim, bias=False)  # acts on [query || context]
        self.proj_out = ProjOut(dim, query_dim)
        self.norm = nn.LayerNorm(dim)
        self.cross_attn = MultiKVCrossAttention(dim, len(kv_sizes), num_heads)
        self.pos_embed = nn.ParameterDict(
            {str(i): nn.Parameter(torch.randn(r * r, dim)) for i, r in enumerate(kv_sizes) if r > 1}
        )

    def forward(self, query: torch.Tensor, kv: WindowedKV, shared_query: bool = False) -> torch.Tensor:
        """Refine queries.

        Args:
            query: (Nq, Qdim) one query per window, or with ``shared_query`` a single (Qdim,) vector that
                every window starts from (the connector's first layer).
            kv: windowed key/value inputs and the per-image global context.
        Returns:
            (Nq, Qdim) refined queries (residual included).
        """
        w_query, w_ctx = self.proj_in.weight.split([self.query_dim, self.proj_context.in_features], dim=1)
        ctx = F.linear(self.proj_context(kv.context), w_ctx)  # (B_img, V): once per image
        if shared_query:
            # Every window starts from the same vector: the query path is per image, then gathered.
            u_img = F.linear(query, w_query) + ctx  # (B_img, V)
            q_img = self.cross_attn.q_proj(u_img)
            u, q = u_img[kv.image_index], q_img[kv.image_index]  # (Nq, V)
        else:
            u = F.linear(query, w_query) + ctx[kv.image_index]  # (Nq, V)
            q = self.cross_attn.q_proj(u)
        feats = [
            x + self.pos_embed[str(i)].to(x.dtype) if str(i) in self.pos_embed else x
            for i, x in enumerate(kv.features)
        ]
        u = u + self.cross_attn(q, feats, kv.attn_mask)
        return self.proj_out(self.norm(u)) + query  # (Qdim,) broadcasts in the shared case


class SVAStack(nn.Module):
    """The D connector layers of one query group."""

    def __init__(self, depth: int, dim: int, kv_sizes: list[int], num_heads: int):
        super().__init__()
        self.layers = nn.ModuleList(SVALayer(dim, dim, kv_sizes, num_heads) for _ in range(depth))

    def forward(self, query: torch.Tensor, kv: WindowedKV) -> torch.Tensor:
        x = self.layers[0](query, kv, shared_query=True)
        for layer in self.layers[1:]:
            x = layer(x, kv)
        return x


@dataclass
class SVAVisionState:
    """What the in-LLM SVA layers need for one forward call: key/values of every kept query."""

    kv: WindowedKV

    def select_images(self, order: torch.Tensor) -> SVAVisionState:
        """The state of images ``order`` (M,) in that order (see ``ConnectorOutput.select_images``)."""
        return SVAVisionState(self.kv.select_images(order))


class SVAConnector(nn.Module):
    """Towers -> per-tower projectors -> G query groups of D SVA layers -> LLM width, plus K in-LLM layers."""

    def __init__(
        self,
        tower_dims: list[int],
        tower_grids: list[int],
        llm_hidden_size: int,
        dim: int,
        image_token_len: int,
        query_num_list: list[int],
        depth: int,
        num_heads: int,
        num_llm_layers: int,
        image_newline: bool = True,
        unpad: bool = True,
    ):
        super().__init__()
        self.dim, self.tower_grids = dim, tower_grids
        self.side = round(image_token_len**0.5)
        self.group_sides = [round(q**0.5) for q in query_num_list]
        self.use_newline, self.unpad = image_newline, unpad
        self.tower_projectors = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim))
            for c in tower_dims
        )
        self.vision_query = nn.Parameter(torch.randn(len(query_num_list), dim) / dim**0.5)
        self.samplers = nn.ModuleList(
            SVAStack(depth, dim, [g // s for g in tower_grids], num_heads) for s in self.group_sides
        )
        self.projector = nn.Sequential(
            nn.Linear(dim * len(query_num_list), llm_hidden_size),
            nn.GELU(),
            nn.Linear(llm_hidden_size, llm_hidden_size),
        )
        self.image_newline = (
            nn.Parameter(torch.randn(llm_hidden_size) / llm_hidden_size**0.5) if image_newline else None
        )
        self.llm_layers = nn.ModuleList(
            SVALayer(llm_hidden_size, dim, [g // self.side for g in tower_grids], num_heads)
            for _ in range(num_llm_layers)
        )

    def _windows(
        self,
        feats: list[torch.Tensor | None],
        image_sizes: torch.Tensor,
        side: int,
        select: torch.Tensor | None,
        windowed: dict[int, torch.Tensor],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Regroup projected tower tokens into ``side`` windows; keep only rows ``select`` of B*side^2.

        ``feats[i]`` is (B, N_i, V) with all tokens projected, or None when ``windowed[i]`` already holds
        that tower's selected windows (Nq, r_i^2, V) (see ``_project_kept``).
        """
        xs, ms = [], []
        for i, (x, grid) in enumerate(zip(feats, self.tower_grids)):
            mw = window_masks(image_sizes, grid, side).flatten(0, 1)  # (B*side^2, r^2)
            if select is not None:
                mw = mw[select]
            if i in windowed:
                x = windowed[i]
            else:
                xw = regroup_windows(x, side).flatten(0, 1)  # (B*side^2, r^2, V)
                x = xw if select is None else xw[select]
            xs.append(x)
            ms.append(mw)
        return xs, ms

    def _project_kept(self, i: int, x: torch.Tensor, query_index: torch.Tensor) -> torch.Tensor:
        """Project only the tokens of tower i that lie in kept windows: (B, N, C) -> (Nq, r^2, V).

        Padding-only windows are never attended, so their tokens need no projection. Tokens are
        gathered in chunks so the raw copy stays small for wide towers (ConvNeXt: 5760 channels).
        """
        b, n, c = x.shape
        index = torch.arange(b * n, device=x.device).view(b, n)
        index = regroup_windows(index, self.side).flatten(0, 1)[query_index]  # (Nq, r^2)
        flat = x.reshape(b * n, c)
        chunk = max(1, (1 << 24) // c)
        out = [self.tower_projectors[i](flat[ix]) for ix in index.flatten().split(chunk)]
        return torch.cat(out).view(*index.shape, -1)

    def forward(self, tower_feats: list[torch.Tensor], image_sizes: torch.Tensor):
        """tower_feats[i] (B, N_i, C_i), image_sizes (B, 2) as (w, h) -> ``ConnectorOutput``."""

        b, S = image_sizes.shape[0], self.side
        query_index, is_query = token_layout(image_sizes, S, self.unpad, self.use_newline)  # (Nq,), (Ntok,)
        image_index = query_index // (S * S)
        # Tower 0 is projected in full: the global context averages all its tokens (B, V). When every
        # group sits on the S grid only kept windows are read, so the other towers project just those.
        kept_only = all(side == S for side in self.group_sides)
        windowed = {
            i: self._project_kept(i, x, query_index) for i, x in enumerate(tower_feats) if i and kept_only
        }
        feats = [
            None if i in windowed else proj(x)
            for i, (proj, x) in enumerate(zip(self.tower_projectors, tower_feats))
        ]
        context = feats[0].mean(dim=1)  # (B, V)
        kv_S = None
        groups = []
        for g, (side, sampler) in enumerate(zip(self.group_sides, self.samplers)):
            if side == S:
                # Only the queries that survive unpadding are computed: windows are independent.
                if kv_S is None:
                    xs, ms = self._windows(feats, image_sizes, S, query_index, windowed)
                    kv_S = WindowedKV(xs, ms, image_index, context)
                groups.append(sampler(self.vision_query[g], kv_S))
                continue
            # A group on another grid is bilinearly resized to S x S, which needs every window.
            xs, ms = self._windows(feats, image_sizes, side, None, windowed)
            idx = torch.arange(b, device=image_sizes.device).repeat_interleave(side * side)
            out = sampler(self.vision_query[g], WindowedKV(xs, ms, idx, context))  # (B*side^2, V)
            grid = out.view(b, side, side, -1).permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=(S, S), mode="bilinear", align_corners=False).to(out.dtype)
            groups.append(grid.permute(0, 2, 3, 1).reshape(b * S * S, -1)[query_index])
        queries = self.projector(torch.cat(groups, dim=-1))  # (Nq, H)
        embeds = pack_image_tokens(queries, is_query, self.image_newline)
        state = None
        if len(self.llm_layers):
            if kv_S is None:
                xs, ms = self._windows(feats, image_sizes, S, query_index, windowed)
                kv_S = WindowedKV(xs, ms, image_index, context)
            state = SVAVisionState(kv_S)
        return ConnectorOutput(
            embeds=embeds,
            is_query=is_query,
            tokens_per_image=image_token_counts(image_sizes, S, self.unpad, self.use_newline),
            vision_state=state,
        )
