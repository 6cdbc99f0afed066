"""Contract tests of CambrianForCausalLM on tiny random models (CPU, offline)."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from cambrian import CambrianConfig, CambrianForCausalLM, CambrianProcessor, build_tiny, preset_config
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny", seed=0)


def _img(w: int, h: int, seed: int = 0) -> Image.Image:
    return demo_image(w, h, seed=seed)


def _prompt(proc, text: str) -> str:
    return proc.apply_chat_template([{"role": "user", "content": text}])


def _real_logits(model, batch, i):
    with torch.no_grad():
        out = model(**batch).logits
    return out[i][batch["attention_mask"][i].bool()]


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen2", "tiny-phi3", "tiny-mistral", "tiny-mlp"])
def test_forward_generate_every_llm_and_connector(preset):
    model, proc = build_tiny(preset)
    batch = proc(text=[_prompt(proc, "<image>\nHow many balls?")], images=[_img(64, 48)])
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    gen = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert gen.shape == (1, batch["input_ids"].shape[1] + 3)


def test_sample_logits_independent_of_batch_mates_and_padding_side(tiny):
    model, proc = tiny
    texts = [
        _prompt(proc, "<image>\nWhat is left of the ball?"),
        # image in a later turn, and two images in one sample
        proc.apply_chat_template(
            [
                {"role": "user", "content": "Hello there."},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "<image>\nand <image>\ncompare them."},
            ]
        ),
        _prompt(proc, "A text-only question about nothing in particular?"),
    ]
    images = [[_img(80, 40, 1)], [_img(30, 70, 2), _img(50, 50, 3)], []]
    singles = [_real_logits(model, proc(text=[t], images=im or None), 0) for t, im in zip(texts, images)]
    for side in ("left", "right"):
        batch = proc(text=texts, images=images, padding_side=side)
        for i in range(3):
            torch.testing.assert_close(_real_logits(model, batch, i), singles[i], atol=TOL, rtol=TOL)


def test_text_only_without_in_llm_sva_equals_bare_llm(tiny):
    model, proc = tiny
    batch = proc(text=[_prompt(proc, "Just words."), _prompt(proc, "More words, longer this time.")])
    with torch.no_grad():
        ours = model(**batch).logits
        pos = batch["attention_mask"].cumsum(-1) - 1
        bare = model.language_model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=pos.clamp(min=0),
        ).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[mask], bare[mask], atol=TOL, rtol=TOL)


def test_in_llm_sva_changes_only_positions_from_the_image_on(tiny):
    model, proc = tiny
    batch = proc(text=[_prompt(proc, "<image>\nWhere is the red ball?")], images=[_img(60, 60)])
    with torch.no_grad():
        a = model(**batch).logits[0]
        with model.in_llm_sva.disabled():
            b = model(**batch).logits[0]
    first = int((batch["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    torch.testing.assert_close(a[:first], b[:first], atol=TOL, rtol=TOL)
    assert (a[first:] - b[first:]).abs().max() > 1e-4


def test_batched_greedy_generation_matches_single_and_leaves_no_state(tiny):
    model, proc = tiny
    fresh = copy.deepcopy(model)
    texts = [_prompt(proc, "<image>\nHow many?"), _prompt(proc, "<image>\nWhich is closer?")]
    images = [_img(70, 40, 4), _img(40, 70, 5)]
    batch = proc(text=texts, images=images, padding_side="left")
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    for i in range(2):
        one = proc(text=[texts[i]], images=[images[i]])
        single = model.generate(**one, max_new_tokens=6, do_sample=False)
        assert out[i, -6:].tolist() == single[0, -6:].tolist()
    text_only = proc(text=[_prompt(proc, "Say something.")])
    after = model.generate(**text_only, max_new_tokens=6, do_sample=False)
    clean = fresh.generate(**text_only, max_new_tokens=6, do_sample=False)
    assert after.tolist() == clean.tolist()
    sampled = model.generate(**batch, max_new_tokens=4, do_sample=True, top_k=5)
    assert sampled.shape == (2, batch["input_ids"].shape[1] + 4)


def test_placeholder_image_mismatch_errors(tiny):
    model, proc = tiny
    with pytest.raises(ValueError, match="2 <image> placeholders"):
        proc(text=[_prompt(proc, "<image>\n<image>\nTwo?")], images=[_img(40, 40)])
    batch = proc(text=[_prompt(proc, "<image>\nOne?")], images=[_img(40, 40)])
    ids = batch["input_ids"].clone()
    ids[0, int((ids[0] == model.config.image_token_id).nonzero()[0])] = 5  # drop one slot
    with pytest.raises(ValueError, match="do not match"):
        model(
            input_ids=ids,
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            image_sizes=batch["image_sizes"],
        )
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_frozen_towers_get_no_gradients_and_connector_does(tiny):
    model, proc = tiny
    model = copy.deepcopy(model).train()
    batch = proc(text=[_prompt(proc, "<image>\nCount.")], images=[_img(50, 30)])
    out = model(
        **batch,
        labels=batch["input_ids"].masked_fill(batch["input_ids"] == model.config.image_token_id, -100),
    )
    out.loss.backward()
    assert all(p.grad is None for p in model.vision_towers.parameters())
    assert all(not p.requires_grad for p in model.vision_towers.parameters())
    grads = [p.grad for p in model.connector.parameters()]
    assert all(g is not None for g in grads)
    assert all(model.connector.llm_layers[k].proj_in.weight.grad.abs().sum() > 0 for k in range(2))


def test_gradient_checkpointing_gives_the_same_loss_and_grads(tiny):
    model, proc = tiny
    batch = proc(text=[_prompt(proc, "<image>\nCount.")], images=[_img(50, 30)])
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.image_token_id, -100)
    results = []
    for gc in (False, True):
        m = copy.deepcopy(model).train()
        if gc:
            m.gradient_checkpointing_enable()
        loss = m(**batch, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), m.connector.llm_layers[0].proj_in.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_save_and_load_round_trip(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    model, proc = tiny
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for loader in (CambrianForCausalLM.from_pretrained, AutoModelForCausalLM.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, CambrianForCausalLM)
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    proc2 = CambrianProcessor.from_pretrained(tmp_path)
    batch = proc(text=[_prompt(proc, "<image>\nHi")], images=[_img(40, 60)])
    batch2 = proc2(text=[_prompt(proc2, "<image>\nHi")], images=[_img(40, 60)])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, loaded.eval()(**batch2).logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(image_token_len=15), "not a perfect square"),
        (dict(query_num_list=[9]), "not divisible"),
        (dict(mm_projector_type="qformer"), "valid: sva, mlp2x_gelu"),
        (dict(num_of_vision_sampler_layers=5), "do not exist"),
        (dict(sva_num_heads=5), "not divisible by sva_num_heads"),
    ],
)
def test_bad_configs_fail_clearly(overrides, match):
    base = preset_config("tiny").to_dict()
    base.update(overrides)
    with pytest.raises(ValueError, match=match):
        CambrianConfig(**base)


def test_unknown_ids_list_the_valid_ones():
    from cambrian.models.presets import PRESETS
    from cambrian.registry import UnknownIdError

    with pytest.raises(UnknownIdError, match="cambrian-8b"):
        PRESETS.get("cambrian-9b")
    base = preset_config("tiny").to_dict()
    base["vision_towers"][0]["family"] = "sam"
    with pytest.raises(UnknownIdError, match="siglip"):
        CambrianForCausalLM(CambrianConfig(**base))


@pytest.mark.parametrize(
    ("preset", "total"),
    [
        ("cambrian-8b", 8_333_022_208),
        ("cambrian-13b", 13_350_085_632),
        ("cambrian-34b", 34_764_002_304),
        ("cambrian-phi3-3b", 4_094_477_312),
    ],
)
def test_released_presets_match_published_parameter_counts(preset, total):
    # docs/checkpoint-format.md 2.5: LLM + connector, towers excluded (they are not in the checkpoints)
    with torch.device("meta"):
        model = CambrianForCausalLM(preset_config(preset))
    n = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.vision_towers.parameters())
    assert n == total


def test_tokenizer_and_config_image_token_must_agree():
    config = preset_config("tiny")
    config.image_token_id = 7
    with pytest.raises(ValueError, match="image_token_id"):
        CambrianProcessor.from_config(config, build_tiny_tokenizer())
