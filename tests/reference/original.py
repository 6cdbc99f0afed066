"""A deliberately literal re-implementation of the ORIGINAL Cambrian-1 inference forward pass.

This file mirrors the original release (cambrian-mllm/cambrian @539ffc3: ``cambrian_arch.py``,
``vision_sampler.py`` and the decoder loop of ``cambrian_llama.py``), following
docs/checkpoint-format.md sections 2.2-2.4, 3.3-3.9 and 6. It is the numerical ground truth
for parity tests and the "original" baseline of benchmarks. It is NOT used by the ``cambrian`` library.

It keeps the original's structure on purpose, warts included:

- per-sample Python loops for window regrouping, masks, unpadding, splicing and the in-LLM gather/scatter;
- string-named submodules (``mm_projector_aux_{i}``, ``vision_sampler_{g}``, ``k_proj_{i}``,
  ``pos_embed_{i}``) so that ``state_dict()`` keys are exactly the released parameter names;
- the known bugs of section 6: the in-LLM SVA reads/writes the hidden states at the constant
  ``cfg["image_position"]`` (not where -200 actually was), the odd-padding asymmetry of unpadding,
  the all-False -> all-True window-mask fallback, and the global context averaged over padded tokens.

Vision towers are not part of the checkpoint (section 2.1): ``forward`` takes the tower features
``(B, N_i, C_i)`` directly, already interpolated to ``N_i`` tokens.

State-dict layout. ``OriginalCambrian.model`` plays the role of the original ``CambrianLlamaModel``
(a ``LlamaModel`` subclass with the connector added): it registers the HF LLM backbone's own children
(``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``; the same module objects, not copies) next to the
connector modules, and ``OriginalCambrian.lm_head`` is the LLM's head. ``state_dict()`` therefore yields
the released names (``model.vision_query``, ``model.mm_projector.0.weight``, ``model.layers.0...``,
``lm_head.weight``, ...) and ``load_state_dict`` of a released checkpoint works strictly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


# === Grid helpers (cambrian_arch.py) ===


def unpad_image(tensor: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Crop the pad-to-square padding off a square grid ``(1, side, side, ...)`` (section 3.4 / 3.7).

    ``original_size`` is ``(w, h)`` of the image before padding. Wide images keep rows [p, side - p),
    tall and square ones keep columns. ``n = int(h * (side / w))`` (or the transpose), ``p = (side - n) // 2``;
    when ``side - n`` is odd this keeps n + 1 rows/columns (the original's asymmetry, section 6.4).
    Pure function: returns a view, never modifies ``tensor``.
    """
    original_width, original_height = original_size
    current_height, current_width = tensor.shape[1:3]
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(original_height * scale_factor)
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    scale_factor = current_height / original_height
    new_width = int(original_width * scale_factor)
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


def unmask_attention_mask(mask: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """Set the padded rows (wide images) or columns (tall/square) of a ``(1, a, a)`` bool mask to False.

    In place, like the original; the padding is rounded at the full token-grid side ``a``.
    """
    original_width, original_height = original_size
    current_height, current_width = mask.shape[1:3]
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(original_height * scale_factor)
        padding = (current_height - new_height) // 2
        if padding > 0:
            mask[:, :padding, :] = False
            mask[:, -padding:, :] = False
        return mask
    scale_factor = current_height / original_height
    new_width = int(original_width * scale_factor)
    padding = (current_width - new_width) // 2
    if padding > 0:
        mask[:, :, :padding] = False
        mask[:, :, -padding:] = False
    return mask


def rearrange_vision_tower_features_inference(
    vision_tower_aux_feature_list: list[torch.Tensor],
    query_side_len: int,
    image_sizes: list[tuple[int, int]],
    unpad: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Regroup each tower's tokens into per-query windows and build their masks (section 3.4).

    Each feature is ``(B, a*a, V)``. Returns, per tower, features ``(sum_b windows_b, r*r, V)`` and bool
    masks ``(sum_b windows_b, r*r)``, concatenated sample-major. ``windows_b = s*s`` without unpadding,
    the unpadded window count with ``unpad=True``.
    """
    vision_tower_aux_feature_rearranged_list = []
    vision_tower_aux_attention_masks_rearranged_list = []
    bs = vision_tower_aux_feature_list[0].shape[0]
    for vision_tower_aux_feature in vision_tower_aux_feature_list:
        aux_height = aux_width = int(vision_tower_aux_feature.shape[1] ** 0.5)
        assert (aux_height // query_side_len) * query_side_len == aux_height
        reduce_factor = aux_height // query_side_len

        vision_tower_aux_feature_rearranged = []
        vision_tower_aux_attention_masks_rearranged = []
        for batch_i in range(bs):
            image_size = image_sizes[batch_i]
            cur_vision_tower_aux_feature = vision_tower_aux_feature[batch_i]  # (a*a, V)

            # features: (a*a, V) -> (1, s, r, s, r, V) -> (1, s, s, r, r, V) -> (windows, r*r, V)
            cur_vision_tower_aux_feature_rearranged = cur_vision_tower_aux_feature.view(
                1, query_side_len, reduce_factor, query_side_len, reduce_factor, -1
            )
            cur_vision_tower_aux_feature_rearranged = cur_vision_tower_aux_feature_rearranged.permute(
                0, 1, 3, 2, 4, 5
            ).contiguous()
            if unpad:
                cur_vision_tower_aux_feature_rearranged = unpad_image(
                    cur_vision_tower_aux_feature_rearranged, image_size
                )
            cur_vision_tower_aux_feature_rearranged = cur_vision_tower_aux_feature_rearranged.flatten(
                0, 2
            ).flatten(1, 2)

            # mask: computed on the full a x a grid, then regrouped (and unpadded) like the features
            cur_vision_tower_aux_attention_masks_rearranged = torch.ones(
                (1, aux_height, aux_width), dtype=torch.bool, device=cur_vision_tower_aux_feature.device
            )
            cur_vision_tower_aux_attention_masks_rearranged = unmask_attention_mask(
                cur_vision_tower_aux_attention_masks_rearranged, image_size
            )
            cur_vision_tower_aux_attention_masks_rearranged = (
                cur_vision_tower_aux_attention_masks_rearranged.view(
                    1, query_side_len, reduce_factor, query_side_len, reduce_factor
                )
            )
            cur_vision_tower_aux_attention_masks_rearranged = (
                cur_vision_tower_aux_attention_masks_rearranged.permute(0, 1, 3, 2, 4).contiguous()
            )
            if unpad:
                cur_vision_tower_aux_attention_masks_rearranged = unpad_image(
                    cur_vision_tower_aux_attention_masks_rearranged, image_size
                )
            cur_vision_tower_aux_attention_masks_rearranged = (
                cur_vision_tower_aux_attention_masks_rearranged.flatten(0, 2).flatten(1, 2)
            )
            # every fully masked window attends to everything instead (section 6.5)
            cur_vision_tower_aux_attention_masks_rearranged[
                cur_vision_tower_aux_attention_masks_rearranged.sum(-1) == 0
            ] = True

            vision_tower_aux_feature_rearranged.append(cur_vision_tower_aux_feature_rearranged)
            vision_tower_aux_attention_masks_rearranged.append(
                cur_vision_tower_aux_attention_masks_rearranged
            )

        vision_tower_aux_feature_rearranged_list.append(torch.cat(vision_tower_aux_feature_rearranged, 0))
        vision_tower_aux_attention_masks_rearranged_list.append(
            torch.cat(vision_tower_aux_attention_masks_rearranged, 0)
        )
    return vision_tower_aux_feature_rearranged_list, vision_tower_aux_attention_masks_rearranged_list


# === SVA modules (vision_sampler.py) ===


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=False)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class MultiKVCrossAttention(nn.Module):
    """Cross-attention of the queries over the concatenated keys/values of every tower."""

    def __init__(self, q_dim: int, kv_dim_list: list[int], hidden_dim: int, num_heads: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = self.hidden_dim // self.num_heads
        if (self.head_dim * self.num_heads) != self.hidden_dim:
            raise ValueError(
                f"hidden_dim must be divisible by num_heads (got hidden_dim {hidden_dim}, num_heads {num_heads})"
            )
        self.q_proj = nn.Sequential(
            nn.LayerNorm(q_dim), nn.Linear(q_dim, self.num_heads * self.head_dim, bias=False)
        )
        self.num_of_kvs = len(kv_dim_list)
        for i, kv_dim in enumerate(kv_dim_list):
            setattr(
                self,
                f"k_proj_{i}",
                nn.Sequential(
                    nn.LayerNorm(kv_dim), nn.Linear(kv_dim, self.num_heads * self.head_dim, bias=False)
                ),
            )
            setattr(
                self,
                f"v_proj_{i}",
                nn.Sequential(
                    nn.LayerNorm(kv_dim), nn.Linear(kv_dim, self.num_heads * self.head_dim, bias=False)
                ),
            )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, q_dim, bias=False)

    def forward(
        self, queries: torch.Tensor, *vision_latents_attention_mask_list: torch.Tensor
    ) -> torch.Tensor:
        vision_latents_list = vision_latents_attention_mask_list[: self.num_of_kvs]
        attention_mask_list = vision_latents_attention_mask_list[self.num_of_kvs :]

        bsz, q_len, _ = queries.size()

        query_states = self.q_proj(queries)
        key_states = torch.cat(
            [getattr(self, f"k_proj_{i}")(vision_latents_list[i]) for i in range(self.num_of_kvs)], dim=1
        )
        value_states = torch.cat(
            [getattr(self, f"v_proj_{i}")(vision_latents_list[i]) for i in range(self.num_of_kvs)], dim=1
        )
        v_len = key_states.shape[1]

        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, v_len, self.num_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, v_len, self.num_heads, self.head_dim).transpose(1, 2)

        attention_mask = torch.cat(attention_mask_list, dim=-1)  # bool, True = may attend
        if attention_mask.size() != (bsz, 1, q_len, v_len):
            raise ValueError(
                f"Attention mask should be of size {(bsz, 1, q_len, v_len)}, but is {attention_mask.size()}"
            )

        attn_output = F.scaled_dot_product_attention(
            query_states, key_states, value_states, attn_mask=attention_mask
        )  # (bsz, heads, q_len, head_dim)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.hidden_dim)
        attn_output = self.o_proj(attn_output)
        return attn_output


class VisionCrossAttentionLayer(nn.Module):
    """One SVA layer (section 2.3 / 3.5 steps 1-9). ``q_dim`` is V in the connector, H inside the LLM."""

    def __init__(
        self,
        q_dim: int,
        context_dim: int,
        kv_dim_list: list[int],
        kv_size_list: list[int],
        hidden_dim: int = 1024,
        layer_idx: int = 0,
        num_heads: int = 16,
    ):
        super().__init__()
        self.num_of_kvs = len(kv_dim_list)

        self.proj_context = nn.Linear(context_dim, hidden_dim, bias=False)
        self.proj_in = nn.Linear(q_dim + hidden_dim, hidden_dim, bias=False)
        self.proj_out = MLP(hidden_dim, hidden_dim, q_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        # the attention block is built with query width hidden_dim, so o_proj is (V, V)
        self.cross_attn = MultiKVCrossAttention(hidden_dim, kv_dim_list, hidden_dim, num_heads)

        self.kv_size_list = kv_size_list
        for i, kv_size in enumerate(kv_size_list):
            if kv_size > 1:
                setattr(self, f"pos_embed_{i}", nn.Parameter(torch.randn(kv_size**2, hidden_dim)))

    def forward(
        self,
        queries: torch.Tensor,
        context_feature: torch.Tensor,
        *vision_latents_attention_mask_list: torch.Tensor,
    ) -> torch.Tensor:
        residual = queries  # 1.
        context_feature = self.proj_context(context_feature)  # 2.
        queries = torch.cat([queries, context_feature], -1)
        queries = self.proj_in(queries)  # 3. (n, 1, V)

        vision_latents_list = vision_latents_attention_mask_list[: self.num_of_kvs]
        attention_mask_list = vision_latents_attention_mask_list[self.num_of_kvs :]

        attention_mask_list_reshaped = []
        for attention_mask in attention_mask_list:
            attention_mask = attention_mask.view(attention_mask.shape[0], 1, 1, -1)
            attention_mask = attention_mask.expand(-1, -1, queries.shape[1], -1)
            attention_mask_list_reshaped.append(attention_mask)

        vision_latents_pos_list = []  # 4.
        for i, vision_latents in enumerate(vision_latents_list):
            if vision_latents.shape[1] > 1:
                vision_latents_pos_list.append(
                    vision_latents + getattr(self, f"pos_embed_{i}")[None, :, :].to(vision_latents.dtype)
                )
            else:
                vision_latents_pos_list.append(vision_latents)

        attention_output = self.cross_attn(
            queries, *vision_latents_pos_list, *attention_mask_list_reshaped
        )  # 5.
        queries = queries + attention_output  # 6.
        queries = self.norm(queries)  # 7.
        queries = self.proj_out(queries)  # 8. back to q_dim
        queries = queries + residual  # 9.
        return queries


class VisionTokenSampler(nn.Module):
    """A stack of SVA layers sharing the same context and key/value inputs."""

    def __init__(
        self,
        q_dim: int,
        context_dim: int,
        kv_dim_list: list[int],
        kv_size_list: list[int],
        vision_hidden_size: int,
        num_of_layers: int = 1,
        num_heads: int = 16,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                VisionCrossAttentionLayer(
                    q_dim, context_dim, kv_dim_list, kv_size_list, vision_hidden_size, idx, num_heads
                )
                for idx in range(num_of_layers)
            ]
        )

    def forward(
        self,
        queries: torch.Tensor,
        context_feature: torch.Tensor,
        *vision_latents_attention_mask_list: torch.Tensor,
    ) -> torch.Tensor:
        for layer in self.layers:
            queries = layer(queries, context_feature, *vision_latents_attention_mask_list)
        return queries


# === The meta-model (CambrianMetaModel / CambrianLlamaModel) ===


class CambrianMetaModel(nn.Module):
    """``model.*`` of the released layout: the LLM backbone's children plus the connector.

    ``backbone`` is the HF LLM's inner model (``llm.model``); its children are registered here under
    their own names so the keys come out as ``model.embed_tokens.weight``, ``model.layers.{n}...``,
    ``model.norm.weight``. With ``backbone=None`` only the connector is built (used for parameter
    counting on the meta device with the released dimensions).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        tower_dims: list[int],
        backbone: nn.Module | None = None,
        num_heads: int = 16,
    ):
        super().__init__()
        if backbone is not None:
            for name, child in backbone.named_children():
                self.add_module(name, child)

        assert cfg.get("mm_projector_type", "sva") == "sva", (
            "only the SVA connector of the release is mirrored"
        )
        hidden_size = cfg["hidden_size"]
        vision_hidden_size = cfg["vision_hidden_size"]
        num_query_group = cfg["num_query_group"]
        query_num_list = cfg["query_num_list"]
        connector_only = cfg["connector_only"]
        connector_depth = cfg["connector_depth"]
        image_token_len = cfg["image_token_len"]
        vision_tower_aux_token_len_list = cfg["mm_vision_tower_aux_token_len_list"]
        num_towers = len(vision_tower_aux_token_len_list)
        assert len(tower_dims) == num_towers, "one channel width per tower"

        self.mm_projector = nn.Sequential(
            nn.Linear(vision_hidden_size * num_query_group, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size),
        )

        for aux_i, tower_dim in enumerate(tower_dims):
            setattr(
                self,
                f"mm_projector_aux_{aux_i}",
                nn.Sequential(
                    nn.Linear(tower_dim, vision_hidden_size),
                    nn.GELU(),
                    nn.Linear(vision_hidden_size, vision_hidden_size),
                    nn.LayerNorm(vision_hidden_size),
                ),
            )

        for query_group_i in range(num_query_group):
            cross_att_token_len_list = [
                int(token_len**0.5) // int(query_num_list[query_group_i] ** 0.5)
                for token_len in vision_tower_aux_token_len_list
            ]
            setattr(
                self,
                f"vision_sampler_{query_group_i}",
                VisionTokenSampler(
                    vision_hidden_size,
                    vision_hidden_size,
                    [vision_hidden_size] * num_towers,
                    cross_att_token_len_list,
                    vision_hidden_size,
                    connector_depth,
                    num_heads,
                ),
            )

        if not connector_only:
            num_of_vision_sampler_layers = cfg["num_of_vision_sampler_layers"]
            cross_att_token_len_list = [
                int(token_len**0.5) // int(image_token_len**0.5)
                for token_len in vision_tower_aux_token_len_list
            ]
            self.vision_sampler_layers = nn.ModuleList(
                [
                    VisionTokenSampler(
                        hidden_size,
                        vision_hidden_size,
                        [vision_hidden_size] * num_towers,
                        cross_att_token_len_list,
                        vision_hidden_size,
                        1,
                        num_heads,
                    )
                    for _ in range(num_of_vision_sampler_layers)
                ]
            )

        # section 2.4
        self.vision_query = nn.Parameter(
            torch.randn((num_query_group, vision_hidden_size)) / math.sqrt(vision_hidden_size)
        )
        self.image_newline = nn.Parameter(torch.randn(hidden_size) / math.sqrt(hidden_size))


# === The causal LM (CambrianMetaForCausalLM + CambrianLlamaForCausalLM) ===


def _causal_padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """4-D additive mask (B, 1, T, T): 0 where query t may see key j (j <= t and j is real), else dtype min.

    Same values as transformers 4.37's ``_prepare_4d_causal_attention_mask``; works for eager and sdpa.
    """
    bsz, seq_len = attention_mask.shape
    device = attention_mask.device
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
    allowed = causal[None, None, :, :] & attention_mask.bool()[:, None, None, :]
    mask = torch.zeros(bsz, 1, seq_len, seq_len, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class OriginalCambrian(nn.Module):
    """The original Cambrian-1 inference forward pass (prefill only) over an HF Llama-style causal LM.

    Args:
        cfg: released-layout config dict (section 1): ``hidden_size``, ``mm_projector_type`` ("sva"),
            ``vision_hidden_size``, ``num_query_group``, ``query_num_list``, ``connector_depth``,
            ``image_token_len``, ``mm_vision_tower_aux_token_len_list``, ``num_of_vision_sampler_layers``,
            ``start_of_vision_sampler_layers``, ``stride_of_vision_sampler_layers``, ``connector_only``,
            ``image_position``; optional ``tokenizer_model_max_length``, ``tokenizer_padding_side``.
        llm: an HF causal LM with the Llama layout (``llm.model.{embed_tokens,layers,norm,rotary_emb}``,
            ``llm.lm_head``). Its modules are shared, not copied.
        tower_dims: channel width ``C_i`` of each tower's features.
        num_heads: SVA attention heads (16 in the release, hard-coded there).
    """

    def __init__(self, cfg: dict[str, Any], llm: nn.Module, tower_dims: list[int], num_heads: int = 16):
        super().__init__()
        self.cfg = dict(cfg)
        self.llm_config = llm.config
        self.tower_dims = list(tower_dims)
        self.num_heads = num_heads
        self.model = CambrianMetaModel(self.cfg, self.tower_dims, backbone=llm.model, num_heads=num_heads)
        self.lm_head = llm.lm_head

    def released_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict under the released names (identical to ``state_dict()``, kept for clarity)."""
        return self.state_dict()

    # --- vision side: sections 3.3-3.7 ---

    def encode_images(
        self, tower_features: list[torch.Tensor], image_sizes: list[tuple[int, int]]
    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
        """Connector + final projection + unpadding/newlines.

        Returns the per-sample image tokens ``(h_b*(w_b+1), H)`` and the vision state for the in-LLM SVA:
        ``final_size`` [(h_b, w_b)], ``global_context_feature`` ``(sum h_b*w_b, 1, V)`` and the unpadded
        per-tower windows ``feature_list`` ``(sum h_b*w_b, r_i^2, V)`` / ``mask_list`` ``(sum h_b*w_b, r_i^2)``.
        """
        model = self.model
        cfg = self.cfg
        dtype = tower_features[0].dtype
        bs = tower_features[0].shape[0]
        query_num_list = cfg["query_num_list"]
        image_token_len = cfg["image_token_len"]
        final_height = final_width = int(image_token_len**0.5)

        # 3.3: per-tower projection; global context = mean of ALL tokens of tower 0 (padding included)
        vision_tower_aux_feature_list = []
        global_context_feature = None
        for aux_i, image_aux_features in enumerate(tower_features):
            image_aux_features = getattr(model, f"mm_projector_aux_{aux_i}")(image_aux_features).to(dtype)
            if aux_i == 0:
                global_context_feature = image_aux_features.mean(1).view(bs, 1, 1, -1)  # (B, 1, 1, V)
            vision_tower_aux_feature_list.append(image_aux_features)

        # 3.5: the connector, per query group
        final_image_features_list = []
        for query_group_i, query_num in enumerate(query_num_list):
            query_features_i = (
                model.vision_query[query_group_i, :].view(1, 1, 1, -1).expand(bs, query_num, -1, -1)
            )
            global_context_feature_i = global_context_feature.expand(-1, query_num, 1, -1).flatten(0, 1)
            query_side_len = int(query_num**0.5)
            vision_tower_aux_feature_list_i, vision_tower_aux_attention_masks_list_i = (
                rearrange_vision_tower_features_inference(
                    vision_tower_aux_feature_list, query_side_len, image_sizes
                )
            )
            query_features_i = getattr(model, f"vision_sampler_{query_group_i}")(
                query_features_i.flatten(0, 1),  # (B*Q, 1, V)
                global_context_feature_i,  # (B*Q, 1, V)
                *vision_tower_aux_feature_list_i,
                *vision_tower_aux_attention_masks_list_i,
            )
            query_features_i = query_features_i.view(bs, query_num, -1)
            # interpolate the group's grid to the final S x S grid
            if query_side_len != final_height:
                query_features_i = (
                    query_features_i.permute(0, 2, 1)
                    .contiguous()
                    .view(bs, -1, query_side_len, query_side_len)
                )
                query_features_i = F.interpolate(
                    query_features_i.float(),
                    size=(final_height, final_width),
                    mode="bilinear",
                    align_corners=False,
                ).to(dtype=query_features_i.dtype)
                query_features_i = query_features_i.permute(0, 2, 3, 1).contiguous().flatten(1, 2)
            final_image_features_list.append(query_features_i)

        # 3.7 (in-LLM inputs): windows at s = S, unpadded
        vision_tower_aux_feature_list_final = None
        vision_tower_aux_attention_masks_list_final = None
        if not cfg["connector_only"]:
            vision_tower_aux_feature_list_final, vision_tower_aux_attention_masks_list_final = (
                rearrange_vision_tower_features_inference(
                    vision_tower_aux_feature_list, final_height, image_sizes, unpad=True
                )
            )

        # 3.6: final projection
        image_features = torch.cat(final_image_features_list, -1)  # (B, L, V*G)
        image_features = model.mm_projector(image_features).to(dtype)  # (B, L, H)

        # 3.7: unpad + a newline column at the end of every kept row
        image_features = image_features.view(bs, final_height, final_width, -1)
        image_features_unpadded = []
        final_size = []
        global_context_feature_final = []
        for batch_i in range(bs):
            cur_image_feature = image_features[batch_i]
            image_size = image_sizes[batch_i]
            cur_image_feature = unpad_image(cur_image_feature.unsqueeze(0), image_size)
            cur_h, cur_w = cur_image_feature.shape[1:3]
            if cur_h * cur_w == 0:
                # aspect ratio >= S: nothing left after unpadding. Not covered by the spec; fail loudly.
                raise ValueError(
                    f"image size {image_size} leaves no image tokens after unpadding at side {final_height}"
                )
            cur_image_feature = cur_image_feature.view(1, cur_h, cur_w, -1)
            final_size.append((cur_h, cur_w))
            cur_image_feature = torch.cat(
                (
                    cur_image_feature,
                    model.image_newline.view(1, 1, 1, -1).expand(1, cur_h, 1, -1).to(cur_image_feature.dtype),
                ),
                dim=2,
            )
            cur_image_feature = cur_image_feature.flatten(1, 2)
            image_features_unpadded.append(cur_image_feature.squeeze(0))
            global_context_feature_final.append(global_context_feature[batch_i].expand(cur_h * cur_w, 1, -1))
        global_context_feature_final = torch.cat(global_context_feature_final, 0)

        vision_state = {
            "final_size": final_size,
            "global_context_feature": global_context_feature_final,
            "feature_list": vision_tower_aux_feature_list_final,
            "mask_list": vision_tower_aux_attention_masks_list_final,
        }
        return image_features_unpadded, vision_state

    # --- splice: section 3.8 ---

    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_features: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replace each sample's -200 by its image tokens; returns (inputs_embeds, attention_mask, position_ids)."""
        embed_tokens = self.model.embed_tokens
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        else:
            attention_mask = attention_mask.bool()

        # drop padding
        input_ids = [
            cur_input_ids[cur_attention_mask]
            for cur_input_ids, cur_attention_mask in zip(input_ids, attention_mask)
        ]

        new_input_embeds = []
        cur_image_idx = 0
        for cur_input_ids in input_ids:
            num_images = int((cur_input_ids == IMAGE_TOKEN_INDEX).sum())
            if num_images != 1:
                raise ValueError(
                    f"the original supports exactly one image (-200) per sample; got {num_images}"
                )
            image_token_indices = [
                -1,
                *torch.where(cur_input_ids == IMAGE_TOKEN_INDEX)[0].tolist(),
                cur_input_ids.shape[0],
            ]
            cur_input_ids_noim = []
            for i in range(len(image_token_indices) - 1):
                cur_input_ids_noim.append(
                    cur_input_ids[image_token_indices[i] + 1 : image_token_indices[i + 1]]
                )
            split_sizes = [x.shape[0] for x in cur_input_ids_noim]
            cur_input_embeds = embed_tokens(torch.cat(cur_input_ids_noim))
            cur_input_embeds_no_im = torch.split(cur_input_embeds, split_sizes, dim=0)
            cur_new_input_embeds = []
            for i in range(num_images + 1):
                cur_new_input_embeds.append(cur_input_embeds_no_im[i])
                if i < num_images:
                    cur_image_features = image_features[cur_image_idx]
                    cur_image_idx += 1
                    cur_new_input_embeds.append(cur_image_features.to(cur_input_embeds.dtype))
            new_input_embeds.append(torch.cat(cur_new_input_embeds))

        tokenizer_model_max_length = self.cfg.get("tokenizer_model_max_length")
        if tokenizer_model_max_length is not None:
            new_input_embeds = [x[:tokenizer_model_max_length] for x in new_input_embeds]

        # pad with zero vectors; position ids count real positions from 0
        max_len = max(x.shape[0] for x in new_input_embeds)
        batch_size = len(new_input_embeds)
        padding_side = self.cfg.get("tokenizer_padding_side", "right")
        new_input_embeds_padded = []
        new_attention_mask = torch.zeros(
            (batch_size, max_len), dtype=torch.bool, device=attention_mask.device
        )
        position_ids = torch.zeros((batch_size, max_len), dtype=torch.long, device=attention_mask.device)
        for i, cur_new_embed in enumerate(new_input_embeds):
            cur_len = cur_new_embed.shape[0]
            zeros = torch.zeros(
                (max_len - cur_len, cur_new_embed.shape[1]),
                dtype=cur_new_embed.dtype,
                device=cur_new_embed.device,
            )
            if padding_side == "left":
                new_input_embeds_padded.append(torch.cat((zeros, cur_new_embed), dim=0))
                if cur_len > 0:
                    new_attention_mask[i, -cur_len:] = True
                    position_ids[i, -cur_len:] = torch.arange(0, cur_len, dtype=position_ids.dtype)
            else:
                new_input_embeds_padded.append(torch.cat((cur_new_embed, zeros), dim=0))
                if cur_len > 0:
                    new_attention_mask[i, :cur_len] = True
                    position_ids[i, :cur_len] = torch.arange(0, cur_len, dtype=position_ids.dtype)
        new_input_embeds = torch.stack(new_input_embeds_padded, dim=0)
        return new_input_embeds, new_attention_mask, position_ids

    # --- LLM: section 3.9 ---

    def sva_layer_indices(self) -> list[int]:
        """Decoder layers after which the in-LLM SVA runs: start + k*stride, k = 0..K-1."""
        cfg = self.cfg
        if cfg["connector_only"]:
            return []
        start = cfg["start_of_vision_sampler_layers"]
        stride = cfg["stride_of_vision_sampler_layers"]
        return [
            start + cross_index
            for cross_index in range(len(self.model.vision_sampler_layers) * stride)
            if cross_index % stride == 0
        ]

    def apply_in_llm_sva(
        self, hidden_states: torch.Tensor, layer_i: int, vision_state: dict[str, Any]
    ) -> torch.Tensor:
        """Gather the latent queries at the CONSTANT image_position, run one SVA layer, scatter back."""
        cfg = self.cfg
        start = cfg["start_of_vision_sampler_layers"]
        stride = cfg["stride_of_vision_sampler_layers"]
        latent_query_start_idx = cfg["image_position"]  # hard-coded, section 6.1
        final_size = vision_state["final_size"]
        bs = hidden_states.shape[0]

        image_features = []
        newline_embeddings = []
        for batch_i in range(bs):
            cur_h, cur_w = final_size[batch_i]
            cur_image_features = hidden_states[
                batch_i, latent_query_start_idx : latent_query_start_idx + cur_h * (cur_w + 1), :
            ].view(cur_h, cur_w + 1, -1)
            newline_embeddings.append(cur_image_features[:, -1:])  # the newline column stays untouched
            image_features.append(cur_image_features[:, :-1].flatten(0, 1))  # (h*w, H)
        image_features = torch.cat(image_features, 0).unsqueeze(1)  # (sum h*w, 1, H)

        image_features = self.model.vision_sampler_layers[(layer_i - start) // stride](
            image_features,
            vision_state["global_context_feature"],
            *vision_state["feature_list"],
            *vision_state["mask_list"],
        )

        hidden_states = hidden_states.clone()
        cur_idx = 0
        for batch_i in range(bs):
            cur_h, cur_w = final_size[batch_i]
            cur_image_features = image_features[cur_idx : cur_idx + cur_h * cur_w].view(cur_h, cur_w, -1)
            cur_image_features = torch.cat(
                [cur_image_features.to(hidden_states.dtype), newline_embeddings[batch_i]], 1
            )
            hidden_states[batch_i, latent_query_start_idx : latent_query_start_idx + cur_h * (cur_w + 1)] = (
                cur_image_features.flatten(0, 1)
            )
            cur_idx += cur_h * cur_w
        return hidden_states

    def run_llm(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        vision_state: dict[str, Any] | None,
    ) -> torch.Tensor:
        """The decoder loop with SVA inserted after the scheduled layers; returns float32 logits."""
        hidden_states = inputs_embeds
        mask4d = _causal_padding_mask(attention_mask, hidden_states.dtype)
        position_embeddings = self.model.rotary_emb(hidden_states, position_ids)
        cross_layers_start_idx_list = self.sva_layer_indices()
        for i, decoder_layer in enumerate(self.model.layers):
            layer_outputs = decoder_layer(
                hidden_states,
                attention_mask=mask4d,
                position_ids=position_ids,
                past_key_values=None,
                use_cache=False,
                position_embeddings=position_embeddings,
            )
            hidden_states = layer_outputs[0] if isinstance(layer_outputs, tuple) else layer_outputs
            if vision_state is not None and i in cross_layers_start_idx_list:
                hidden_states = self.apply_in_llm_sva(hidden_states, i, vision_state)
        hidden_states = self.model.norm(hidden_states)
        return self.lm_head(hidden_states).float()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        tower_features: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """Prefill logits (B, T_expanded, vocab), float32.

        Args:
            input_ids: (B, T) token ids with exactly one ``IMAGE_TOKEN_INDEX`` (-200) per sample, right-padded.
            attention_mask: (B, T), True/1 on real tokens (None = all real).
            tower_features: per tower i, (B, N_i, C_i) features of sample b's image (one image per sample).
            image_sizes: per sample, (w, h) of the original image before pad-to-square.

        The image tokens of sample b replace its -200 in the spliced sequence; the in-LLM SVA nevertheless
        reads/writes positions [image_position, image_position + h_b*(w_b+1)) as the original does, so the
        -200 must sit at index ``cfg["image_position"]`` for the SVA to hit the image tokens.
        """
        bs = input_ids.shape[0]
        if len(image_sizes) != bs or any(f.shape[0] != bs for f in tower_features):
            raise ValueError("one image (tower feature row and image size) per sample is required")
        image_features, vision_state = self.encode_images(tower_features, image_sizes)
        inputs_embeds, attention_mask, position_ids = self.prepare_inputs_labels_for_multimodal(
            input_ids, attention_mask, image_features
        )
        return self.run_llm(
            inputs_embeds, attention_mask, position_ids, None if self.cfg["connector_only"] else vision_state
        )


# === A tiny released-layout model for tests ===


def make_tiny_released(
    seed: int = 0,
    *,
    tower_dims: tuple[int, ...] = (24, 20, 28),
    num_heads: int = 4,
    attn_implementation: str = "eager",
    **overrides: Any,
) -> tuple[dict[str, Any], OriginalCambrian]:
    """Build a tiny random Cambrian in the released layout: returns (cfg, model).

    ``cfg`` is a complete released-style config.json dict (LLM fields in the transformers 4.x spelling,
    ``rope_theta`` etc., plus the Cambrian keys), so ``model.state_dict()`` + ``cfg`` form a
    released-layout checkpoint. Defaults: Llama hidden 64, 4 layers, 4 heads / 2 kv heads, vocab 256;
    V = 32; towers with 16, 16, 64 tokens (grids 4, 4, 8; kv sizes 1, 1, 2); L = 16 (S = 4); one query
    group of 16; D = 2; K = 2 in-LLM layers after decoder layers 0 and 2; image_position 3. ``overrides``
    replace cfg keys (e.g. ``query_num_list=[4, 16], num_query_group=2``). Not derivable from a released
    config: ``tower_dims`` (C_i) and ``num_heads`` (4 here, 16 in the release); both are also attributes
    of the returned model.
    """
    from transformers import LlamaForCausalLM

    token_lens = overrides.get("mm_vision_tower_aux_token_len_list", [16, 16, 64])
    cfg: dict[str, Any] = {
        "architectures": ["CambrianLlamaForCausalLM"],
        "model_type": "cambrian_llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "mm_projector_type": "sva",
        "mm_vision_tower_aux_list": [f"tiny-tower-{i}" for i in range(len(token_lens))],
        "mm_vision_tower_aux_token_len_list": token_lens,
        "vision_tower_aux_token_len_list": token_lens,
        "vision_hidden_size": 32,
        "image_token_len": 16,
        "num_query_group": 1,
        "query_num_list": [16],
        "connector_depth": 2,
        "connector_only": False,
        "num_of_vision_sampler_layers": 2,
        "start_of_vision_sampler_layers": 0,
        "stride_of_vision_sampler_layers": 2,
        "image_position": 3,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
    }
    cfg.update(overrides)
    cfg["vision_tower_aux_token_len_list"] = cfg["mm_vision_tower_aux_token_len_list"]

    torch.manual_seed(seed)
    llm = LlamaForCausalLM(llama_config_from_released(cfg, attn_implementation))
    model = OriginalCambrian(cfg, llm, list(tower_dims), num_heads=num_heads)
    model.eval()
    return cfg, model


def llama_config_from_released(cfg: dict[str, Any], attn_implementation: str = "eager"):
    """A transformers ``LlamaConfig`` from the LLM fields of a released-style config dict (Llama family only)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        rope_theta=cfg.get("rope_theta", 10000.0),
        hidden_act=cfg.get("hidden_act", "silu"),
        initializer_range=cfg.get("initializer_range", 0.02),
        attention_bias=cfg.get("attention_bias", False),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        attn_implementation=attn_implementation,
    )
