"""Self-checks of the literal original-Cambrian reference (tests/reference/original.py) against the spec.

docs/checkpoint-format.md sections 2.2-2.5 (names, shapes, parameter counts), 3.4 and 3.7 (windows, masks,
unpadding) and 3.8-3.9 (splice, decoder loop) on tiny random models.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from .original import (
    IMAGE_TOKEN_INDEX,
    CambrianMetaModel,
    OriginalCambrian,
    llama_config_from_released,
    make_tiny_released,
    rearrange_vision_tower_features_inference,
    unmask_attention_mask,
    unpad_image,
)

# === helpers ===


def _layer_keys(num_towers: int, pos_embed_towers: list[int]) -> list[str]:
    """The per-layer key list of section 2.3."""
    keys = [
        "proj_context.weight",
        "proj_in.weight",
        "proj_out.linear_1.weight",
        "proj_out.linear_2.weight",
        "norm.weight",
        "norm.bias",
        "cross_attn.q_proj.0.weight",
        "cross_attn.q_proj.0.bias",
        "cross_attn.q_proj.1.weight",
    ]
    for i in range(num_towers):
        for kv in ("k", "v"):
            keys += [
                f"cross_attn.{kv}_proj_{i}.0.weight",
                f"cross_attn.{kv}_proj_{i}.0.bias",
                f"cross_attn.{kv}_proj_{i}.1.weight",
            ]
    keys.append("cross_attn.o_proj.weight")
    keys += [f"pos_embed_{i}" for i in pos_embed_towers]
    return keys


def _released_keys(
    cfg: dict, num_towers: int, pos_embed_g: list[list[int]], pos_embed_llm: list[int]
) -> set[str]:
    keys = {"model.vision_query", "model.image_newline", "model.embed_tokens.weight", "model.norm.weight"}
    keys |= {"lm_head.weight"}
    for n in range(cfg["num_hidden_layers"]):
        for name in (
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
            "input_layernorm.weight",
            "post_attention_layernorm.weight",
        ):
            keys.add(f"model.layers.{n}.{name}")
    keys |= {f"model.mm_projector.{j}.{p}" for j in (0, 2) for p in ("weight", "bias")}
    keys |= {
        f"model.mm_projector_aux_{i}.{j}.{p}"
        for i in range(num_towers)
        for j in (0, 2, 3)
        for p in ("weight", "bias")
    }
    for g in range(cfg["num_query_group"]):
        for d in range(cfg["connector_depth"]):
            keys |= {
                f"model.vision_sampler_{g}.layers.{d}.{k}" for k in _layer_keys(num_towers, pos_embed_g[g])
            }
    for k in range(cfg["num_of_vision_sampler_layers"]):
        keys |= {
            f"model.vision_sampler_layers.{k}.layers.0.{key}"
            for key in _layer_keys(num_towers, pos_embed_llm)
        }
    return keys


def _tiny_inputs(
    cfg: dict, tower_dims: list[int], image_sizes: list[tuple[int, int]], text_lens: list[int], seed: int = 0
):
    """Right-padded input_ids with -200 at index image_position, and random tower features."""
    g = torch.Generator().manual_seed(seed)
    bs = len(image_sizes)
    max_len = max(text_lens)
    input_ids = torch.zeros(bs, max_len, dtype=torch.long)
    attention_mask = torch.zeros(bs, max_len, dtype=torch.bool)
    for b, n in enumerate(text_lens):
        input_ids[b, :n] = torch.randint(3, cfg["vocab_size"], (n,), generator=g)
        input_ids[b, cfg["image_position"]] = IMAGE_TOKEN_INDEX
        attention_mask[b, :n] = True
    feats = [
        torch.randn(bs, n_i, c_i, generator=g)
        for n_i, c_i in zip(cfg["mm_vision_tower_aux_token_len_list"], tower_dims)
    ]
    return input_ids, attention_mask, feats


def _released_cfg(hidden_size: int, k: int) -> dict:
    return {
        "hidden_size": hidden_size,
        "mm_projector_type": "sva",
        "vision_hidden_size": 1024,
        "num_query_group": 1,
        "query_num_list": [576],
        "connector_depth": 3,
        "image_token_len": 576,
        "mm_vision_tower_aux_token_len_list": [576, 576, 576, 9216],
        "num_of_vision_sampler_layers": k,
        "start_of_vision_sampler_layers": 0,
        "stride_of_vision_sampler_layers": 3,
        "connector_only": False,
        "image_position": 91,
    }


RELEASED_TOWER_DIMS = [1152, 1024, 1536, 5760]


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# === names and shapes (2.2, 2.3) ===


def test_tiny_state_dict_keys_are_exactly_the_released_names():
    cfg, model = make_tiny_released(0)
    expected = _released_keys(cfg, 3, pos_embed_g=[[2]], pos_embed_llm=[2])
    assert set(model.state_dict()) == expected
    assert model.released_state_dict().keys() == model.state_dict().keys()


def test_four_tower_layer_keys_and_shapes():
    # grids 4, 4, 4, 16 against S = 4: kv sizes 1, 1, 1, 4 as in the release (1, 1, 1, 4)
    cfg, model = make_tiny_released(
        0, tower_dims=(12, 8, 16, 40), mm_vision_tower_aux_token_len_list=[16, 16, 16, 256]
    )
    v, h = cfg["vision_hidden_size"], cfg["hidden_size"]
    sd = model.state_dict()
    assert set(sd) == _released_keys(cfg, 4, pos_embed_g=[[3]], pos_embed_llm=[3])

    expected_layer = _layer_keys(4, [3])
    assert len(expected_layer) == 35
    for prefix, qdim in (
        ("model.vision_sampler_0.layers.0.", v),
        ("model.vision_sampler_layers.1.layers.0.", h),
    ):
        layer = {k[len(prefix) :]: t for k, t in sd.items() if k.startswith(prefix)}
        assert sorted(layer) == sorted(expected_layer)
        assert layer["proj_in.weight"].shape == (v, qdim + v)
        assert layer["proj_out.linear_2.weight"].shape == (qdim, v)
        assert layer["cross_attn.o_proj.weight"].shape == (v, v)
        assert layer["cross_attn.q_proj.1.weight"].shape == (v, v)
        assert layer["pos_embed_3"].shape == (16, v)
    assert sd["model.vision_query"].shape == (1, v)
    assert sd["model.image_newline"].shape == (h,)
    assert sd["model.mm_projector.0.weight"].shape == (h, v)
    assert sd["model.mm_projector_aux_3.0.weight"].shape == (v, 40)
    assert sd["model.mm_projector_aux_3.3.weight"].shape == (v,)


# === parameter counts with the released dimensions (2.5), on the meta device ===


@pytest.mark.parametrize(
    ("hidden_size", "k", "in_llm_layer", "mm_projector", "connector_total"),
    [
        (4096, 10, 22_056_960, 20_979_712, 302_760_960),  # 8B
        (5120, 10, 24_154_112, 31_467_520, 334_221_312),  # 13B
        (7168, 9, 28_348_416, 58_734_592, 375_085_056),  # 34B
        (3072, 10, 19_959_808, 12_589_056, 273_397_760),  # phi3-3b
    ],
)
def test_released_connector_parameter_counts(hidden_size, k, in_llm_layer, mm_projector, connector_total):
    with torch.device("meta"):
        connector = CambrianMetaModel(_released_cfg(hidden_size, k), RELEASED_TOWER_DIMS)
    aux = sum(_numel(getattr(connector, f"mm_projector_aux_{i}")) for i in range(4))
    assert aux == 13_910_016
    assert _numel(connector.vision_sampler_0) == 47_296_512
    assert _numel(connector.vision_sampler_0.layers[0]) == 15_765_504
    assert _numel(connector.vision_sampler_layers[0]) == in_llm_layer
    v, h = 1024, hidden_size
    assert in_llm_layer == 3 * v * v + (h + v) * v + v * h + 2 * v + 9 * (2 * v + v * v) + 16 * v
    assert _numel(connector.mm_projector) == mm_projector
    assert _numel(connector) == connector_total
    assert connector.vision_sampler_0.layers[0].pos_embed_3.shape == (16, 1024)
    assert not hasattr(connector.vision_sampler_0.layers[0], "pos_embed_0")


# === unpadding (3.7) and windows / masks (3.4) ===


@pytest.mark.parametrize(
    ("image_size", "grid", "tokens"),
    [
        ((500, 500), (24, 24), 600),
        ((640, 480), (18, 24), 450),
        ((480, 640), (24, 18), 456),
        ((1920, 1080), (14, 24), 350),
    ],
)
def test_unpad_token_counts(image_size, grid, tokens):
    kept = unpad_image(torch.zeros(1, 24, 24, 1), image_size)
    h_b, w_b = kept.shape[1:3]
    assert (h_b, w_b) == grid
    assert h_b * (w_b + 1) == tokens


def test_1920x1080_full_grid_mask():
    mask = unmask_attention_mask(torch.ones(1, 96, 96, dtype=torch.bool), (1920, 1080))
    rows = mask[0].all(dim=1)
    assert not mask[0, :21].any() and not mask[0, 75:].any()
    assert rows[21:75].all()


def test_1920x1080_windows_rows_5_to_18_and_partial_masks():
    # one ConvNeXt-like tower on the 96 grid (r = 4 at s = 24); the feature value is the token row index
    rows = torch.arange(96).float().view(96, 1).expand(96, 96).reshape(1, 96 * 96, 1)
    feats, masks = rearrange_vision_tower_features_inference([rows], 24, [(1920, 1080)], unpad=True)
    feat, mask = feats[0], masks[0]
    assert feat.shape == (14 * 24, 16, 1) and mask.shape == (14 * 24, 16)
    window_rows = feat[:, :, 0].view(14, 24, 4, 4)  # (window row, window col, in-window y, in-window x)
    assert window_rows[0, :, 0, 0].eq(20).all() and window_rows[-1, :, 3, 0].eq(75).all()  # rows 5 .. 18
    mask = mask.view(14, 24, 4, 4)
    assert not mask[0, :, 0].any() and mask[0, :, 1:].all()  # window row 5: token row 20 masked
    assert not mask[-1, :, 3].any() and mask[-1, :, :3].all()  # window row 18: token row 75 masked
    assert mask[1:-1].all()


def test_fully_masked_windows_fall_back_to_all_true():
    rows = torch.zeros(1, 96 * 96, 1)
    _, masks = rearrange_vision_tower_features_inference([rows, torch.zeros(1, 576, 1)], 24, [(1920, 1080)])
    conv = masks[0].view(24, 24, 16)
    assert conv[:5].all() and conv[19:].all()  # window rows 0-4 and 19-23 are fully padded -> all True
    assert not conv[5, :, :4].any()  # the straddling rows stay partially masked
    assert masks[1].all()  # r = 1 towers never mask anything


# === forward ===

IMAGE_SIZES = [(300, 300), (1920, 1080), (480, 960)]  # at S = 4: 4x4, 2x4, 4x2 kept -> 20, 10, 12 tokens
TEXT_LENS = [9, 12, 7]


def test_tiny_forward_shape_and_finite():
    cfg, model = make_tiny_released(0)
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        logits = model(input_ids, attention_mask, feats, IMAGE_SIZES)
    t_expanded = max(n - 1 + t for n, t in zip(TEXT_LENS, [20, 10, 12]))
    assert logits.shape == (3, t_expanded, cfg["vocab_size"])
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert model.sva_layer_indices() == [0, 2]


def test_splice_places_image_tokens_at_the_minus_200():
    cfg, model = make_tiny_released(0)
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    p = cfg["image_position"]
    with torch.no_grad():
        image_features, vision_state = model.encode_images(feats, IMAGE_SIZES)
        embeds, mask, position_ids = model.prepare_inputs_labels_for_multimodal(
            input_ids, attention_mask, image_features
        )
    assert vision_state["final_size"] == [(4, 4), (2, 4), (4, 2)]
    for b, (n, img) in enumerate(zip(TEXT_LENS, image_features)):
        real = n - 1 + img.shape[0]
        torch.testing.assert_close(embeds[b, p : p + img.shape[0]], img)
        torch.testing.assert_close(embeds[b, :p], model.model.embed_tokens(input_ids[b, :p]))
        # the newline closes every row
        h_b, w_b = vision_state["final_size"][b]
        newline = img.view(h_b, w_b + 1, -1)[:, -1]
        torch.testing.assert_close(newline, model.model.image_newline.expand(h_b, -1))
        assert mask[b, :real].all() and not mask[b, real:].any()
        assert position_ids[b, :real].tolist() == list(range(real))
        assert not position_ids[b, real:].any() and not embeds[b, real:].any()
    total = sum(h * w for h, w in vision_state["final_size"])
    assert vision_state["global_context_feature"].shape == (total, 1, cfg["vision_hidden_size"])
    assert [f.shape[:2] for f in vision_state["feature_list"]] == [(total, 1), (total, 1), (total, 4)]


def test_batch_matches_single_samples_on_real_positions():
    cfg, model = make_tiny_released(0)
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        batched = model(input_ids, attention_mask, feats, IMAGE_SIZES)
        for b, (n, tokens) in enumerate(zip(TEXT_LENS, [20, 10, 12])):
            single = model(
                input_ids[b : b + 1, :n],
                attention_mask[b : b + 1, :n],
                [f[b : b + 1] for f in feats],
                IMAGE_SIZES[b : b + 1],
            )
            real = n - 1 + tokens
            assert single.shape[1] == real
            torch.testing.assert_close(batched[b, :real], single[0], rtol=1e-4, atol=1e-5)


def test_in_llm_sva_changes_the_logits_after_the_image_only():
    cfg, model = make_tiny_released(0)
    _, connector_only = make_tiny_released(0, connector_only=True)
    connector_only.load_state_dict(model.state_dict(), strict=False)
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        full = model(input_ids, attention_mask, feats, IMAGE_SIZES)
        base = connector_only(input_ids, attention_mask, feats, IMAGE_SIZES)
    p = cfg["image_position"]
    torch.testing.assert_close(full[:, :p], base[:, :p])
    assert not torch.allclose(full[:, p:], base[:, p:])


def test_manual_decoder_loop_matches_hf_forward_without_in_llm_sva():
    cfg, _ = make_tiny_released(0)
    torch.manual_seed(1)
    llm = LlamaForCausalLM(llama_config_from_released(cfg)).eval()
    model = OriginalCambrian(dict(cfg, connector_only=True), llm, [24, 20, 28], num_heads=4).eval()
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        image_features, _ = model.encode_images(feats, IMAGE_SIZES)
        embeds, mask, position_ids = model.prepare_inputs_labels_for_multimodal(
            input_ids, attention_mask, image_features
        )
        ours = model.run_llm(embeds, mask, position_ids, None)
        theirs = llm(
            inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids
        ).logits.float()
    for b in range(len(TEXT_LENS)):
        real = int(mask[b].sum())
        torch.testing.assert_close(ours[b, :real], theirs[b, :real], rtol=1e-4, atol=1e-5)


def test_eager_and_sdpa_agree():
    cfg, eager = make_tiny_released(0, attn_implementation="eager")
    _, sdpa = make_tiny_released(0, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    input_ids, attention_mask, feats = _tiny_inputs(cfg, eager.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        a = eager(input_ids, attention_mask, feats, IMAGE_SIZES)
        b = sdpa(input_ids, attention_mask, feats, IMAGE_SIZES)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_two_query_groups_interpolate_to_the_final_grid():
    # group 0 has side 2 (interpolated to S = 4), group 1 side 4
    cfg, model = make_tiny_released(0, num_query_group=2, query_num_list=[4, 16])
    assert model.state_dict()["model.mm_projector.0.weight"].shape == (
        cfg["hidden_size"],
        2 * cfg["vision_hidden_size"],
    )
    assert model.model.vision_sampler_0.layers[0].pos_embed_2.shape == (
        16,
        cfg["vision_hidden_size"],
    )  # kv 2,2,4
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES, TEXT_LENS)
    with torch.no_grad():
        logits = model(input_ids, attention_mask, feats, IMAGE_SIZES)
    assert logits.shape[0] == 3 and torch.isfinite(logits).all()


def test_one_image_per_sample_is_required():
    cfg, model = make_tiny_released(0)
    input_ids, attention_mask, feats = _tiny_inputs(cfg, model.tower_dims, IMAGE_SIZES[:1], TEXT_LENS[:1])
    input_ids[0, cfg["image_position"]] = 5
    with pytest.raises(ValueError, match="exactly one image"):
        model(input_ids, attention_mask, feats, IMAGE_SIZES[:1])
