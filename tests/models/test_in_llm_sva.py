"""The in-LLM SVA layers (``cambrian.models.llm_hooks``) on tiny random models (CPU, offline).

- the typed per-call context: active only during a call, reset afterwards (also when the LLM raises),
  invisible to other threads, None for text-only calls and decode steps;
- the firing count: a call with images where a configured layer's hook did not run (removed hook,
  a layer wrapper that calls ``.forward``) or ran twice raises a RuntimeError naming the layers;
- over every LLM family of the presets (Llama, Qwen2, Phi-3, Mistral) plus Gemma: SVA changes the
  logits; with it off the logits equal the bare Hugging Face LLM given the same ``inputs_embeds``;
  the hooked decoder layers keep the bare LLM's classes and state-dict keys; cached greedy generation
  equals uncached.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
from cambrian.models.llm_hooks import InLLMSVAContext, decoder_layers
from cambrian.models.presets import tiny_config
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

FAMILIES = ["llama", "qwen2", "phi3", "mistral", "gemma"]
NEW = 4


def _prompt(proc, text: str) -> str:
    return proc.apply_chat_template([{"role": "user", "content": text}])


def _batch(proc):
    """Left-padded: an image sample, a text-only sample and a two-image sample."""
    texts = [
        _prompt(proc, "<image>\nWhat is left of the ball?"),
        _prompt(proc, "A question with no picture at all?"),
        _prompt(proc, "<image>\nand <image>\nwhich one has more balls?"),
    ]
    images = [[demo_image(80, 40, seed=1)], [], [demo_image(30, 70, seed=2), demo_image(50, 50, seed=3)]]
    return proc(text=texts, images=images, padding_side="left")


@pytest.fixture(scope="module")
def tiny():
    model, proc = build_tiny("tiny", seed=0)
    assert model.config.sva_layer_indices == [0, 2]
    return model, proc


def _first_image_token(batch, image_token_id: int) -> torch.Tensor:
    """(B,) index of each row's first placeholder (T where a row has none)."""
    is_img = batch["input_ids"] == image_token_id
    t = is_img.shape[1]
    pos = torch.arange(t).expand_as(is_img)
    return torch.where(is_img, pos, t).min(dim=1).values


# ---------------------------------------------------------------------------------------------- context
def test_context_is_typed_and_active_only_during_the_call(tiny):
    model, proc = tiny
    batch = _batch(proc)
    seen, other_thread = [], []

    def spy(module, args):
        seen.append(model.in_llm_sva.current())
        t = threading.Thread(target=lambda: other_thread.append(model.in_llm_sva.current()))
        t.start()
        t.join()

    layers = decoder_layers(model.language_model)
    handles = [layer.register_forward_pre_hook(spy) for layer in layers]
    try:
        with torch.no_grad():
            model(**batch)
            text_only = {k: batch[k][1:2] for k in ("input_ids", "attention_mask")}
            model(**text_only)
    finally:
        for h in handles:
            h.remove()
    n = len(layers)
    with_images, without = seen[:n], seen[n:]
    ctx = with_images[0]
    assert isinstance(ctx, InLLMSVAContext)
    assert all(c is ctx for c in with_images)  # one context for the whole call
    assert all(c is None for c in without) and all(c is None for c in other_thread)
    assert model.in_llm_sva.current() is None
    b, t = batch["input_ids"].shape
    assert ctx.seq_shape == (b, t)
    assert ctx.images_per_sample.tolist() == [1, 0, 2]
    with torch.no_grad():
        enc = model.encode_images(batch["pixel_values"], batch["image_sizes"])
    n_query = int(enc.is_query.sum())
    assert ctx.positions.numel() == n_query == ctx.kv.image_index.numel()
    assert all(x.shape[0] == n_query for x in (*ctx.kv.features, *ctx.kv.masks))
    # every query position is a placeholder slot of its row
    flat_ids = batch["input_ids"].flatten()
    assert bool((flat_ids[ctx.positions] == model.config.image_token_id).all())
    rows = torch.bincount(ctx.positions // t, minlength=b)
    assert rows[1] == 0 and rows[0] > 0 and rows[2] > rows[0]


def test_context_is_reset_when_the_llm_raises(tiny):
    model, proc = tiny
    batch = _batch(proc)
    with torch.no_grad():
        expected = model(**batch).logits

    class Boom(Exception):
        pass

    def boom(module, args):
        raise Boom

    handle = decoder_layers(model.language_model)[1].register_forward_pre_hook(boom)
    try:
        with pytest.raises(Boom), torch.no_grad():  # the LLM's own error, not the firing check
            model(**batch)
    finally:
        handle.remove()
    assert model.in_llm_sva.current() is None
    with pytest.raises(Boom), model.in_llm_sva.disabled():
        raise Boom
    assert model.in_llm_sva.enabled
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, expected, atol=0, rtol=0)


def test_context_rows_must_match_the_query_positions(tiny):
    model, proc = tiny
    batch = _batch(proc)
    with torch.no_grad():
        enc = model.encode_images(batch["pixel_values"], batch["image_sizes"])
    kv = enc.vision_state.kv
    mask = batch["input_ids"] == model.config.image_token_id
    ctx = InLLMSVAContext.from_slots(mask, enc.is_query, kv, torch.tensor([1, 0, 2]))
    with pytest.raises(ValueError, match="query positions but key/value rows"):
        InLLMSVAContext(kv, ctx.positions[:-1], ctx.seq_shape, ctx.images_per_sample)
    with pytest.raises(ValueError, match="images_per_sample has 2 rows for a batch of 3"):
        InLLMSVAContext(kv, ctx.positions, ctx.seq_shape, torch.tensor([1, 2]))


# ---------------------------------------------------------------------------------------------- firing count
class _CallsForward(nn.Module):
    """A decoder-layer wrapper that calls ``layer.forward`` directly, bypassing the layer's hooks."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        return self.layer.forward(*args, **kwargs)


class _CallsTwice(nn.Module):
    """A decoder-layer wrapper that runs its layer twice (its hooks fire twice)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        self.layer(*args, **kwargs)
        return self.layer(*args, **kwargs)


def test_a_removed_hook_fails_the_call_with_images(tiny):
    model, proc = tiny
    model = copy.deepcopy(model)
    model.in_llm_sva.handles[1].remove()  # SVA layer 1, after decoder layer 2
    batch = _batch(proc)
    with pytest.raises(RuntimeError) as err, torch.no_grad():
        model(**batch)
    msg = str(err.value)
    assert "expected 2 layers to fire (after decoder layers [0, 2]), but 1 fired (after [0])" in msg
    assert "never ran after decoder layers [2]" in msg
    assert model.in_llm_sva.current() is None
    with torch.no_grad():  # text-only calls and SVA switched off do not need the hooks
        model(input_ids=batch["input_ids"][1:2], attention_mask=batch["attention_mask"][1:2])
        with model.in_llm_sva.disabled():
            model(**batch)
    with pytest.raises(RuntimeError, match="never ran after decoder layers"):
        model.generate(**batch, max_new_tokens=2, do_sample=False)


@pytest.mark.parametrize(
    ("wrapper", "match"),
    [
        (_CallsForward, r"but 1 fired \(after \[0\]\): it never ran after decoder layers \[2\]"),
        (_CallsTwice, r"but 3 fired \(after \[0, 2, 2\]\): it ran more than once after decoder layers \[2\]"),
    ],
)
def test_a_layer_wrapper_that_bypasses_or_repeats_the_hook_fails(tiny, wrapper, match):
    model, proc = tiny
    model = copy.deepcopy(model)
    layers = decoder_layers(model.language_model)
    layers[2] = wrapper(layers[2])
    with pytest.raises(RuntimeError, match=match), torch.no_grad():
        model(**_batch(proc), use_cache=False)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # the frozen towers
@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_fires_each_hook_once_with_the_same_grads(tiny, use_reentrant):
    model, proc = tiny
    batch = _batch(proc)
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == model.config.image_token_id, -100)
    results = []
    for gc in (False, True):
        m = copy.deepcopy(model).train()
        if gc:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
        loss = m(**batch, labels=labels).loss  # raises if a hook did not fire exactly once
        loss.backward()
        results.append(
            [loss.detach()] + [layer.proj_in.weight.grad.clone() for layer in m.connector.llm_layers]
        )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- LLM families
@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    """(model, processor, bare LLM with the same weights and no hooks) for one LLM family."""
    config = tiny_config(request.param)
    assert config.sva_layer_indices == [0, 2] and config.text_config.num_hidden_layers == 4
    proc = CambrianProcessor.from_config(config, build_tiny_tokenizer())
    torch.manual_seed(0)
    model = CambrianForCausalLM(config).eval()
    bare = AutoModelForCausalLM.from_config(config.text_config).eval()
    bare.load_state_dict(model.language_model.state_dict())
    return model, proc, bare


def _llm_inputs(model, batch):
    """Logits of ``model(**batch)`` and the keyword arguments the wrapped LLM received."""
    seen = {}

    def capture(module, args, kwargs):
        seen.update(kwargs)

    handle = model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(**batch).logits
    finally:
        handle.remove()
    return logits, {k: seen[k] for k in ("inputs_embeds", "attention_mask", "position_ids")}


def test_sva_changes_the_logits_and_off_equals_the_bare_llm(family):
    model, proc, bare = family
    batch = _batch(proc)
    on, llm_in = _llm_inputs(model, batch)
    with model.in_llm_sva.disabled():
        off, llm_in_off = _llm_inputs(model, batch)
    for k, v in llm_in.items():  # SVA runs inside the LLM only: its inputs are the same either way
        torch.testing.assert_close(llm_in_off[k], v, atol=0, rtol=0)
    with torch.no_grad():
        reference = bare(**llm_in).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(off[mask], reference[mask])
    # On: causal, so only positions from each row's first image token on change (row 1 has no image).
    first = _first_image_token(batch, model.config.image_token_id)  # (B,)
    diff = (on - off).abs().amax(-1).masked_fill(~mask, 0)  # (B, T)
    before = torch.arange(mask.shape[1]) < first[:, None]  # (B, T)
    assert float(diff[before].max()) < 1e-5  # includes all of row 1, which has no image
    assert [float(diff[row].masked_fill(before[row], 0).max()) > 1e-3 for row in range(3)] == [
        True,
        False,
        True,
    ]


def test_hooked_decoder_layers_keep_the_bare_llm_classes_and_keys(family):
    model, _, bare = family
    ours, theirs = decoder_layers(model.language_model), decoder_layers(bare)
    for n in model.config.sva_layer_indices:
        assert type(ours[n]) is type(theirs[n])
        assert list(ours[n].state_dict()) == list(theirs[n].state_dict())
    assert list(model.language_model.state_dict()) == list(bare.state_dict())
    prefix = "language_model."
    assert [k[len(prefix) :] for k in model.state_dict() if k.startswith(prefix)] == list(bare.state_dict())
    # the SVA weights live in the connector only, once
    sva = {id(p) for p in model.connector.llm_layers.parameters()}
    assert not sva & {id(p) for p in model.language_model.parameters()}


def test_cached_greedy_generation_equals_uncached(family):
    model, proc, _ = family
    batch = _batch(proc)
    kw = dict(max_new_tokens=NEW, do_sample=False, return_dict_in_generate=True, output_logits=True)
    cached = model.generate(**batch, **kw)
    uncached = model.generate(**batch, **kw, use_cache=False)
    assert cached.sequences.tolist() == uncached.sequences.tolist()
    torch.testing.assert_close(torch.stack(cached.logits), torch.stack(uncached.logits), atol=1e-4, rtol=1e-4)
    assert model.in_llm_sva.current() is None
