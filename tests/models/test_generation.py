"""``generate`` with images on tiny random models: greedy, beam search, sampling, several returned
sequences, cache vs no cache, and the in-LLM SVA under beam search (CPU, offline).

The batch mixes samples with 0, 2 and 1 images of different sizes, so expanding the inputs per beam
must repeat each sample's own images (not the first k images of the batch).
"""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from cambrian import build_tiny
from cambrian.models.llm_hooks import decoder_layers
from cambrian.quickstart.demo import demo_image

TOL = 1e-4
NEW = 5


def _prompt(proc, text: str) -> str:
    return proc.apply_chat_template([{"role": "user", "content": text}])


def _samples(proc) -> tuple[list[str], list[list]]:
    texts = [
        _prompt(proc, "A question with no picture at all?"),
        _prompt(proc, "<image>\nand <image>\nwhich one has more balls?"),
        _prompt(proc, "<image>\nWhat is left of the ball?"),
    ]
    images = [[], [demo_image(30, 70, seed=2), demo_image(50, 50, seed=3)], [demo_image(80, 40, seed=1)]]
    return texts, images


def _batch(proc):
    texts, images = _samples(proc)
    return proc(text=texts, images=images, padding_side="left")


def _alone(proc, i: int):
    texts, images = _samples(proc)
    return proc(text=[texts[i]], images=images[i] or None)


@pytest.fixture(scope="module", params=["tiny", "tiny-mlp"])
def model_proc(request):
    """``tiny`` has in-LLM SVA layers (after decoder layers 0 and 2); ``tiny-mlp`` has no vision state."""
    return build_tiny(request.param, seed=0)


@pytest.fixture(scope="module")
def tiny():
    model, proc = build_tiny("tiny", seed=0)
    assert model.config.sva_layer_indices  # this file relies on tiny running the in-LLM SVA
    return model, proc


def test_select_images_equals_encoding_those_images(tiny):
    model, proc = tiny
    _, images = _samples(proc)
    enc = proc(text=[_prompt(proc, "<image> <image> <image>")], images=[[im for ims in images for im in ims]])
    order = torch.tensor([2, 0, 0, 1])
    with torch.no_grad():
        picked = model.encode_images(enc["pixel_values"], enc["image_sizes"]).select_images(order)
        direct = model.encode_images([px[order] for px in enc["pixel_values"]], enc["image_sizes"][order])
    torch.testing.assert_close(picked.embeds, direct.embeds, atol=1e-5, rtol=1e-5)
    assert picked.is_query.tolist() == direct.is_query.tolist()
    assert picked.tokens_per_image.tolist() == direct.tokens_per_image.tolist()
    a, b = picked.vision_state.kv, direct.vision_state.kv
    assert a.image_index.tolist() == b.image_index.tolist()
    torch.testing.assert_close(a.context, b.context, atol=1e-5, rtol=1e-5)
    for fa, fb, ma, mb in zip(a.features, b.features, a.masks, b.masks):
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)
        assert ma.tolist() == mb.tolist()


def test_greedy_equals_num_beams_1_no_cache_and_each_sample_alone(model_proc):
    model, proc = model_proc
    batch = _batch(proc)
    greedy = model.generate(**batch, max_new_tokens=NEW, do_sample=False)
    assert greedy.shape == (3, batch["input_ids"].shape[1] + NEW)
    one_beam = model.generate(**batch, max_new_tokens=NEW, do_sample=False, num_beams=1)
    no_cache = model.generate(**batch, max_new_tokens=NEW, do_sample=False, use_cache=False)
    assert one_beam.tolist() == greedy.tolist()
    assert no_cache.tolist() == greedy.tolist()
    for i in range(3):
        single = model.generate(**_alone(proc, i), max_new_tokens=NEW, do_sample=False)
        assert greedy[i, -NEW:].tolist() == single[0, -NEW:].tolist()


def test_generate_never_emits_the_image_placeholder(tiny):
    model, proc = tiny
    image_id = model.config.image_token_id
    assert image_id < model.config.text_config.vocab_size  # the tiny LLM could emit it
    seen = []

    class Spy(LogitsProcessor):
        """A caller's own processor: records the placeholder's score it is given."""

        def __call__(self, input_ids, scores):
            seen.append(scores[:, image_id].clone())
            return scores

    out = model.generate(
        **_batch(proc), max_new_tokens=3, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    assert all(bool(torch.isneginf(s[:, image_id]).all()) for s in out.scores)
    model.generate(
        **_batch(proc), max_new_tokens=1, do_sample=False, logits_processor=LogitsProcessorList([Spy()])
    )
    assert seen and all(bool(torch.isneginf(s).all()) for s in seen)  # suppressed before the caller's


@pytest.mark.parametrize("n_return", [1, 2])
def test_beam_search_rows_equal_each_sample_searched_alone(model_proc, n_return):
    model, proc = model_proc
    kw = dict(
        max_new_tokens=NEW,
        do_sample=False,
        num_beams=2,
        num_return_sequences=n_return,
        return_dict_in_generate=True,
        output_scores=True,
    )
    out = model.generate(**_batch(proc), **kw)
    assert out.sequences.shape[0] == 3 * n_return
    for i in range(3):
        single = model.generate(**_alone(proc, i), **kw)
        rows = slice(i * n_return, (i + 1) * n_return)
        assert out.sequences[rows, -NEW:].tolist() == single.sequences[:, -NEW:].tolist()
        torch.testing.assert_close(out.sequences_scores[rows], single.sequences_scores, atol=TOL, rtol=TOL)


def test_beam_search_with_and_without_cache_agree(tiny):
    model, proc = tiny
    batch = _batch(proc)
    kw = dict(max_new_tokens=NEW, do_sample=False, num_beams=2, num_return_sequences=2)
    cached = model.generate(**batch, **kw)
    uncached = model.generate(**batch, **kw, use_cache=False)
    assert cached.tolist() == uncached.tolist()


def _teacher_forced_logits(model, proc, i: int, generated: torch.Tensor) -> torch.Tensor:
    """Logits (n, V) of sample i alone, with its own images, for the n tokens ``generated`` (n,)."""
    one = _alone(proc, i)
    ids = torch.cat([one["input_ids"], generated[None]], dim=1)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=one.get("pixel_values"),
            image_sizes=one.get("image_sizes"),
        ).logits
    n = generated.numel()
    return logits[0, -n - 1 : -1]


@pytest.mark.parametrize("num_beams", [1, 2])
def test_sampling_two_sequences_per_sample_use_that_samples_images(tiny, num_beams):
    model, proc = tiny
    batch = _batch(proc)
    kw = dict(
        max_new_tokens=NEW,
        do_sample=True,
        top_k=20,
        num_beams=num_beams,
        num_return_sequences=2,
        return_dict_in_generate=True,
        output_logits=True,
    )
    torch.manual_seed(7)
    out = model.generate(**batch, **kw)
    torch.manual_seed(7)
    again = model.generate(**batch, **kw)
    assert out.sequences.shape == (6, batch["input_ids"].shape[1] + NEW)
    assert out.sequences.tolist() == again.sequences.tolist()
    if num_beams > 1:
        return  # per-step beam logits follow the running beams, not the returned rows
    # Each returned row's raw logits are those of its own sample, alone and with its own images.
    logits = torch.stack(out.logits, dim=1)  # (6, NEW, V)
    for row in range(6):
        expected = _teacher_forced_logits(model, proc, row // 2, out.sequences[row, -NEW:])
        torch.testing.assert_close(logits[row], expected, atol=TOL, rtol=TOL)


def test_images_are_encoded_once_per_generate(tiny):
    model, proc = tiny
    batch = _batch(proc)
    calls = []
    handles = [t.register_forward_hook(lambda m, a, o: calls.append(m)) for t in model.vision_towers]
    try:
        for use_cache in (True, False):
            calls.clear()
            model.generate(
                **batch, max_new_tokens=3, num_beams=2, num_return_sequences=2, use_cache=use_cache
            )
            assert len(calls) == len(model.vision_towers)
    finally:
        for h in handles:
            h.remove()


def test_in_llm_sva_refines_every_beam_copy_of_every_sample(tiny):
    model, proc = tiny
    batch = _batch(proc)
    seen = []
    layer = decoder_layers(model.language_model)[model.config.sva_layer_indices[0]]
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(model.in_llm_sva.current()))
    try:
        model.generate(**batch, max_new_tokens=3, num_beams=2, do_sample=False)
    finally:
        handle.remove()
    prefill, decode = seen[0], seen[1:]
    assert prefill is not None and all(c is None for c in decode)  # SVA runs at prefill only
    t = batch["input_ids"].shape[1]
    rows = torch.bincount(prefill.positions // t, minlength=6)  # query tokens per expanded row
    with torch.no_grad():
        per_sample = []
        for i in range(3):
            one = _alone(proc, i)
            n = (
                0
                if "pixel_values" not in one
                else int(model.encode_images(one["pixel_values"], one["image_sizes"]).is_query.sum())
            )
            per_sample.append(n)
    assert rows.tolist() == [n for n in per_sample for _ in range(2)]
    assert prefill.kv.features[0].shape[0] == prefill.positions.numel()
    assert prefill.images_per_sample.tolist() == [0, 0, 2, 2, 1, 1]
    assert prefill.seq_shape == (6, t)
    assert model.in_llm_sva.current() is None  # reset after the call


def test_images_that_do_not_fill_their_rows_fail_clearly(tiny):
    model, proc = tiny
    texts, images = _samples(proc)
    batch = proc(text=texts[1:], images=images[1:], padding_side="left")
    # Same images, wrong order: the totals still match, but row 0 gets the wrong tokens.
    order = torch.tensor([2, 0, 1])
    batch["pixel_values"] = [px[order] for px in batch["pixel_values"]]
    batch["image_sizes"] = batch["image_sizes"][order]
    with pytest.raises(ValueError, match="do not match in row 0"):
        model.generate(**batch, max_new_tokens=2, num_beams=2)
    with pytest.raises(ValueError, match="do not match in row 0"):
        model(**batch)
    with pytest.raises(ValueError, match=r"pixel_values\[0\] holds 2 images but image_sizes has 3"):
        model(**{**batch, "pixel_values": [px[:2] for px in batch["pixel_values"]]})
