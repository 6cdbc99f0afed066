"""Checkpoints in the RELEASED Cambrian-1 layout: strict loading and logit parity with the original forward.

A tiny released-layout directory (``released_fixture.build_released_checkpoint``: flat config.json, the
weights under the original names as sharded safetensors or one pytorch_model.bin, tiny HF vision towers
in sub-directories, a tokenizer) is loaded with ``CambrianForCausalLM.from_pretrained`` and compared
with ``tests.reference.original.OriginalCambrian``, the literal loop-based re-implementation of the
original forward, holding the very tensors that were saved.

Parity setup: both models get the same text ids and the same tower features (our loaded towers run on
the pixels; the reference takes features, since the original keeps its towers outside the checkpoint).
The reference gets -200 at ``cfg["image_position"]`` (its in-LLM SVA reads that constant position); ours
gets the ``<image>`` placeholder expanded to the image's slot count at the same place, so the two
expanded sequences align position by position and every real position is compared.

Tolerance: fp32 on CPU, ``|ours - reference| <= 1e-5 * max(1, max|reference logit|)`` on every real
position (no rtol). The two implementations compute the same math in a different order (vectorised vs
per-sample loops, one batched masked SDPA vs per-window calls), so only float rounding differs: observed
differences are ~3e-7 at logit scale ~0.7.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM

from cambrian import CambrianConfig, CambrianForCausalLM, CambrianProcessor
from cambrian.models.connector.geometry import image_token_counts
from cambrian.models.released import (
    _CAMBRIAN_KEYS,
    IMAGE_POSITION_TEMPLATES,
    released_key_name,
    rename_released_key,
)
from cambrian.models.tokenization import tokenize_with_images
from cambrian.quickstart.tiny_tokenizer import SPECIAL_TOKENS
from tests.models.released_fixture import (
    CONV_MODE,
    IMAGE_POSITION,
    SVA_NUM_HEADS,
    TOWERS,
    ReleasedCheckpoint,
    build_released_checkpoint,
)
from tests.reference.original import IMAGE_TOKEN_INDEX


def assert_logits_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """The documented tolerance: 1e-5 relative to the logit scale (at least 1e-5 absolute)."""
    assert ours.shape == ref.shape
    atol = 1e-5 * max(1.0, ref.abs().max().item())
    diff = (ours - ref).abs().max().item()
    assert diff <= atol, f"max |ours - reference| = {diff:.3g} > {atol:.3g}"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["safetensors", "bin"])
def released(request, tmp_path_factory) -> tuple[ReleasedCheckpoint, CambrianForCausalLM]:
    """The tiny released checkpoint in each weight format, and our model loaded from it."""
    ck = build_released_checkpoint(
        tmp_path_factory.mktemp(f"released-{request.param}"), weights=request.param
    )
    return ck, CambrianForCausalLM.from_pretrained(ck.path)


@pytest.fixture(scope="module")
def released_st(tmp_path_factory) -> tuple[ReleasedCheckpoint, CambrianForCausalLM]:
    ck = build_released_checkpoint(tmp_path_factory.mktemp("released-st"))
    return ck, CambrianForCausalLM.from_pretrained(ck.path)


# ----------------------------------------------------------------------------- inputs


def make_inputs(
    model: CambrianForCausalLM,
    sizes: list[tuple[int, int]],
    suffix_lens: list[int],
    seed: int = 0,
    padding_side: str = "right",
):
    """Matching inputs for ours and the reference, one image per sample at ``IMAGE_POSITION``.

    Text of sample b: ``IMAGE_POSITION`` random prefix tokens, the image, ``suffix_lens[b]`` suffix tokens.
    Returns ``ours`` (kwargs of our forward), ``ref`` (input_ids with -200, attention_mask, image sizes) and
    the tower features for the reference, computed by our loaded towers from the same pixels.
    """
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.text_config.vocab_size
    b = len(sizes)
    image_sizes = torch.tensor(sizes, dtype=torch.long)
    counts = image_token_counts(image_sizes, model.config.query_side, True, True).tolist()
    image_id = model.config.image_token_id
    ref_rows, our_rows = [], []
    for i in range(b):
        # ids past the special tokens: plain text, never the placeholder
        prefix = torch.randint(len(SPECIAL_TOKENS), vocab, (IMAGE_POSITION,), generator=g)
        suffix = torch.randint(len(SPECIAL_TOKENS), vocab, (suffix_lens[i],), generator=g)
        ref_rows.append(torch.cat([prefix, torch.tensor([IMAGE_TOKEN_INDEX]), suffix]))
        our_rows.append(torch.cat([prefix, torch.full((counts[i],), image_id), suffix]))

    def pad(rows, side):
        t = max(len(r) for r in rows)
        ids = torch.full((len(rows), t), 2, dtype=torch.long)  # any id: masked out
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            sl = slice(t - len(r), t) if side == "left" else slice(0, len(r))
            ids[i, sl], mask[i, sl] = r, 1
        return ids, mask

    ref_ids, ref_mask = pad(ref_rows, "right")  # the original pads right
    ids, mask = pad(our_rows, padding_side)
    pixel_values = [
        torch.randn(b, 3, t.cfg.image_size, t.cfg.image_size, generator=g) for t in model.vision_towers
    ]
    with torch.no_grad():
        feats = [tower(px) for tower, px in zip(model.vision_towers, pixel_values)]
    ours = {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixel_values,
        "image_sizes": image_sizes,
    }
    return ours, (ref_ids, ref_mask, sizes), feats


def compare(model: CambrianForCausalLM, reference, ours: dict, ref: tuple, feats) -> torch.Tensor:
    """Run both models and compare the logits of every real position; returns the reference logits."""
    ref_ids, ref_mask, sizes = ref
    with torch.no_grad():
        ref_logits = reference(ref_ids, ref_mask, feats, sizes)  # (B, T_expanded, V), right-padded
        our_logits = model(**ours).logits
    for b in range(ref_ids.shape[0]):
        real = ours["attention_mask"][b].bool()
        n = int(real.sum())
        placeholder = (ours["input_ids"][b][real] == model.config.image_token_id).nonzero().squeeze(-1)
        # same text and one image: the reference's expanded sequence is ours, position by position
        assert n == int(ref_mask[b].sum()) - 1 + placeholder.numel()
        assert placeholder[0].item() == IMAGE_POSITION  # the original's hard-coded SVA span starts here
        assert_logits_close(our_logits[b][real], ref_logits[b, :n])
    return ref_logits


# ----------------------------------------------------------------------------- 1-2: loading


def test_config_conversion(released) -> None:
    ck, model = released
    cfg = model.config
    assert isinstance(cfg, CambrianConfig)
    assert cfg.sva_num_heads == SVA_NUM_HEADS
    assert cfg.released_image_position == IMAGE_POSITION
    assert cfg.conv_mode == CONV_MODE
    assert cfg.image_token_id == SPECIAL_TOKENS.index("<image>")
    assert cfg.sva_layer_indices == ck.reference.sva_layer_indices() == [0, 2]
    assert [t.family for t in cfg.tower_configs] == [f for f, *_ in TOWERS]
    assert [t.token_len for t in cfg.tower_configs] == [n for _, _, n, _ in TOWERS]
    # every wrapper key stays out of the LLM config (sva_num_heads / released_image_position included)
    text = cfg.text_config.to_dict()
    leaked_sentinel = object()
    # (a key PretrainedConfig always has, e.g. architectures, may exist but must not carry the value)
    leaked = sorted(k for k in ck.cfg if k in _CAMBRIAN_KEYS and text.get(k, leaked_sentinel) == ck.cfg[k])
    assert leaked == []
    assert cfg.text_config.model_type == "llama"
    assert cfg.text_config.vocab_size == ck.cfg["vocab_size"]


def test_state_dict_equals_reference_under_renaming(released) -> None:
    ck, model = released
    ref_sd = ck.reference.state_dict()
    ours = model.state_dict()
    renamed = {rename_released_key(k): k for k in ref_sd}
    assert len(renamed) == len(ref_sd)  # the renaming is injective
    non_tower = {k for k in ours if not k.startswith("vision_towers.")}
    assert set(renamed) == non_tower  # zero missing, zero unexpected
    for new, old in renamed.items():
        assert released_key_name(new) == old  # error messages can name the released key
        assert ours[new].dtype == torch.float32
        assert torch.equal(ours[new], ref_sd[old]), old
    assert not model.training


def test_towers_equal_saved_hf_towers(released) -> None:
    ck, model = released
    for i, ((family, _, token_len, width), tower) in enumerate(zip(TOWERS, model.vision_towers)):
        assert tower.cfg.family == family and tower.cfg.backend == "hf"
        assert tower.hidden_size == width and tower.token_len == token_len
        # the HF model that was saved (its file layout may differ, e.g. DINOv2's legacy key names)
        saved = ck.towers[i].state_dict()
        own = tower.model.state_dict()
        assert own.keys() == saved.keys(), family
        for k, v in saved.items():
            assert torch.equal(own[k], v), f"{family}: {k}"
        # and the same features: CLIP = hidden_states[-2] without CLS, on the tower's own pixel size
        if family == "clip":
            px = torch.randn(2, 3, tower.cfg.image_size, tower.cfg.image_size)
            with torch.no_grad():
                expected = ck.towers[i](pixel_values=px, output_hidden_states=True).hidden_states[-2][:, 1:]
                assert torch.equal(tower(px), expected)
    # SigLIP's native 5 x 5 grid is interpolated to 4 x 4, as the release does 27 x 27 -> 24 x 24
    assert model.vision_towers[0].native_grid == 5


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("unexpected", "model.vision_sampler_0.layers.1.pos_embed_0"),
        ("unexpected", "model.layers.0.self_attn.rotary_emb.inv_freq"),
        ("missing", "model.vision_sampler_layers.1.layers.0.cross_attn.k_proj_3.1.weight"),
        ("missing", "model.mm_projector_aux_2.3.bias"),
        ("missing", "lm_head.weight"),
    ],
)
def test_key_mismatch_raises_naming_the_key(tmp_path, released_st, weights, change, key) -> None:
    ck, _ = released_st
    sd = dict(ck.reference.state_dict())
    if change == "unexpected":
        sd[key] = torch.zeros(4)
    else:
        del sd[key]
    bad = build_released_checkpoint(tmp_path / "bad", weights=weights, state_dict=sd)
    with pytest.raises(ValueError, match=re.escape(key)) as err:
        CambrianForCausalLM.from_pretrained(bad.path)
    msg = str(err.value)
    assert f"1 {change} keys ['{key}']" in msg, msg
    assert f"0 {'unexpected' if change == 'missing' else 'missing'} keys" in msg, msg


def test_missing_tower_dir_raises(tmp_path, released_st) -> None:
    ck, _ = released_st
    shutil.copytree(ck.path, tmp_path / "ck")
    shutil.rmtree(tmp_path / "ck" / "towers" / "dinov2")
    with pytest.raises(Exception, match="towers/dinov2"):
        CambrianForCausalLM.from_pretrained(tmp_path / "ck")


# ----------------------------------------------------------------------------- 3: logit parity

SIZE_CASES = {
    "square": [(48, 48)],
    "wide": [(90, 40)],  # 2 of 4 query rows kept
    "tall": [(36, 100)],  # odd padding: the original's n + 1 columns
    "mixed": [(48, 48), (90, 40), (36, 100), (101, 100)],
}


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_logit_parity(released, case: str) -> None:
    ck, model = released
    sizes = SIZE_CASES[case]
    ours, ref, feats = make_inputs(model, sizes, suffix_lens=[5, 2, 7, 3][: len(sizes)], seed=len(case))
    compare(model, ck.reference, ours, ref, feats)


def test_parity_is_sensitive(released_st) -> None:
    """The fixture exercises what parity is about: the in-LLM SVA and the image change the logits a lot."""
    ck, model = released_st
    ref_model = ck.reference
    _, (ref_ids, ref_mask, sizes), feats = make_inputs(model, SIZE_CASES["mixed"], [5, 2, 7, 3])
    with torch.no_grad():
        full = ref_model(ref_ids, ref_mask, feats, sizes)
        image_features, _ = ref_model.encode_images(feats, sizes)
        embeds, mask, pos = ref_model.prepare_inputs_labels_for_multimodal(ref_ids, ref_mask, image_features)
        no_sva = ref_model.run_llm(embeds, mask, pos, None)
        other_image = ref_model(ref_ids, ref_mask, [f.flip(0) for f in feats], sizes)
    tol = 1e-5 * max(1.0, full.abs().max().item())
    assert (full - no_sva)[mask].abs().max() > 1000 * tol
    assert (full - other_image)[mask].abs().max() > 1000 * tol


def test_left_padding_matches_original_right_padding(released_st) -> None:
    """Ours finds images by their placeholders, so left padding gives the original's (right-padded) logits."""
    ck, model = released_st
    ours, ref, feats = make_inputs(model, SIZE_CASES["mixed"], [5, 2, 7, 3], padding_side="left")
    compare(model, ck.reference, ours, ref, feats)


@pytest.mark.parametrize(
    "overrides",
    [
        {"query_num_list": [4, 16], "num_query_group": 2},  # a 2 x 2 group bilinearly resized to 4 x 4
        {"connector_only": True},
        {
            "start_of_vision_sampler_layers": 1,
            "stride_of_vision_sampler_layers": 1,
            "num_of_vision_sampler_layers": 3,
        },
        # S = 8: every tower interpolated to 8 x 8, ConvNeXt to 16 x 16 (2 x 2 windows); odd unpadding
        {
            "image_token_len": 64,
            "query_num_list": [64],
            "mm_vision_tower_aux_token_len_list": [64, 64, 64, 256],
        },
    ],
    ids=["two-query-groups", "connector-only", "sva-every-layer", "grid8"],
)
def test_logit_parity_config_variants(tmp_path, overrides) -> None:
    ck = build_released_checkpoint(tmp_path / "ck", seed=1, **overrides)
    model = CambrianForCausalLM.from_pretrained(ck.path)
    sizes = [(1920, 1080), (333, 1000), (640, 480), (480, 640)]
    ours, ref, feats = make_inputs(model, sizes, [4, 1, 6, 3], seed=1)
    compare(model, ck.reference, ours, ref, feats)


# ----------------------------------------------------------------------------- 4: processor


def test_processor_from_released_dir(released_st) -> None:
    ck, model = released_st
    proc = CambrianProcessor.from_pretrained(ck.path)
    assert proc.conv_mode == CONV_MODE
    assert proc.image_token_id == model.config.image_token_id
    assert proc.image_token_len == ck.cfg["image_token_len"]
    assert proc.preprocessors == [t.preprocess for t in model.vision_towers]
    got = [(p.image_size, p.pad_fill) for p in proc.preprocessors]
    assert got == [(40, (122, 116, 104)), (32, (122, 116, 104)), (32, (123, 116, 103)), (64, (122, 116, 104))]
    assert proc.preprocessors[0].image_mean == (0.5, 0.5, 0.5)  # SigLIP: its own mean, CLIP pad fill


def test_processor_end_to_end_parity(released_st) -> None:
    """PIL images + a llama_3 prompt through the processor, ours vs the original on the same tokens."""
    ck, model = released_st
    proc = CambrianProcessor.from_pretrained(ck.path)
    g = torch.Generator().manual_seed(0)
    sizes = [(60, 60), (90, 40), (40, 100)]
    images = [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy())
        for w, h in sizes
    ]
    questions = ["What colour is the circle?", "How many stars are there?", "Is the red cube near the cone?"]
    prompts = [
        proc.apply_chat_template([{"role": "user", "content": f"<image>\n{q}"}], system="") for q in questions
    ]
    batch = proc(prompts, images=images)
    # the reference's ids: the original tokenisation (-200 once per image), right-padded
    rows = [tokenize_with_images(proc.tokenizer, p, image_token_id=IMAGE_TOKEN_INDEX) for p in prompts]
    assert all(r.index(IMAGE_TOKEN_INDEX) == ck.cfg["image_position"] for r in rows)
    ref_ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    ref_mask = torch.zeros_like(ref_ids, dtype=torch.bool)
    for i, r in enumerate(rows):
        ref_ids[i, : len(r)], ref_mask[i, : len(r)] = torch.tensor(r), True
        # our sequence is the same text with the image expanded in place
        ours_real = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
        n_img = ours_real.count(proc.image_token_id)
        assert ours_real == r[:IMAGE_POSITION] + [proc.image_token_id] * n_img + r[IMAGE_POSITION + 1 :]
    with torch.no_grad():
        feats = [t(px) for t, px in zip(model.vision_towers, batch["pixel_values"])]
    compare(model, ck.reference, dict(batch), (ref_ids, ref_mask, sizes), feats)


@pytest.mark.parametrize(("image_position", "template"), sorted(IMAGE_POSITION_TEMPLATES.items()))
def test_processor_template_from_image_position_released_towers(
    tmp_path, released_st, image_position, template
):
    """A config as released: no conv_mode, released tower names (no local tower weights needed)."""
    ck, _ = released_st
    d = tmp_path / "ck"
    d.mkdir()
    for f in ck.path.glob("tokenizer*"):
        shutil.copy(f, d / f.name)
    cfg = {k: v for k, v in ck.cfg.items() if k not in ("conv_mode", "sva_num_heads")}
    cfg.update(
        image_position=image_position,
        mm_vision_tower_aux_list=[
            "siglip/CLIP-ViT-SO400M-14-384",
            "openai/clip-vit-large-patch14-336",
            "facebook/dinov2-giant-res378",
            "clip-convnext-XXL-multi-stage",
        ],
        mm_vision_tower_aux_token_len_list=[576, 576, 576, 9216],
        image_token_len=576,
        query_num_list=[576],
    )
    (d / "config.json").write_text(json.dumps(cfg))
    proc = CambrianProcessor.from_pretrained(d)
    assert proc.conv_mode == template
    assert [p.image_size for p in proc.preprocessors] == [384, 336, 378, 1024]
    assert [p.pad_fill for p in proc.preprocessors] == [(122, 116, 104)] * 2 + [
        (123, 116, 103),
        (122, 116, 104),
    ]
    assert proc.num_image_tokens(torch.tensor([[640, 480], [1920, 1080]])).tolist() == [450, 350]
    assert "tower_paths" not in proc.tokenizer.init_kwargs


# ----------------------------------------------------------------------------- 5: our own format + Auto


def test_save_and_auto_reload(tmp_path, released_st) -> None:
    ck, model = released_st
    out = tmp_path / "ours"
    model.save_pretrained(out)
    assert isinstance(AutoConfig.from_pretrained(out), CambrianConfig)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert type(reloaded) is CambrianForCausalLM
    a, b = model.state_dict(), reloaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert reloaded.config.sva_num_heads == SVA_NUM_HEADS
    assert reloaded.config.image_token_id == model.config.image_token_id
    # same forward (towers included, now from our checkpoint), hence still the original's logits
    ours, ref, feats = make_inputs(reloaded.eval(), SIZE_CASES["mixed"], [5, 2, 7, 3])
    with torch.no_grad():
        assert torch.equal(model(**ours).logits, reloaded(**ours).logits)
    compare(reloaded, ck.reference, ours, ref, feats)


def test_placeholder_id_outside_the_llm_vocabulary(tmp_path, released_st) -> None:
    """A tokenizer without ``<image>`` (like the released Llama-3 one): it is added after the vocabulary, so its
    id equals vocab_size; the model never embeds it and parity holds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ck, _ = released_st
    vocab_size = ck.cfg["vocab_size"]
    words = {f"w{i}": i for i in range(vocab_size - 2)} | {"<unk>": vocab_size - 2, "</s>": vocab_size - 1}
    tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    d = tmp_path / "ck"
    shutil.copytree(ck.path, d, ignore=shutil.ignore_patterns("tokenizer*"))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>").save_pretrained(d)

    model = CambrianForCausalLM.from_pretrained(d)
    proc = CambrianProcessor.from_pretrained(d)
    assert model.config.image_token_id == proc.image_token_id == vocab_size
    ours, ref, feats = make_inputs(model, SIZE_CASES["mixed"], [5, 2, 7, 3])
    assert int(ours["input_ids"].max()) == vocab_size
    compare(model, ck.reference, ours, ref, feats)


def test_wrong_tensor_shape_names_the_released_key(tmp_path):
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from cambrian import CambrianForCausalLM
    from tests.models.released_fixture import build_released_checkpoint

    ckpt = build_released_checkpoint(tmp_path / "ckpt", weights="safetensors").path
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    shard = ckpt / index["weight_map"]["model.vision_query"]
    tensors = load_file(str(shard))
    tensors["model.vision_query"] = torch.zeros(1, 7)
    save_file(tensors, str(shard))
    with pytest.raises(ValueError, match=r"model\.vision_query \(1, 7\)"):
        CambrianForCausalLM.from_pretrained(ckpt)
