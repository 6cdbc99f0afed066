"""Weight-only quantisation of the LLM (cambrian.models.quantize): int8 on CPU, bitsandbytes on CUDA."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from optimum.quanto import QBytesTensor, QLinear

from cambrian import CambrianForCausalLM, CambrianProcessor, build_tiny
from cambrian.models.loading import load_model
from cambrian.models.quantize import (
    BNB_MODES,
    QUANTIZE_MODES,
    llm_linear_names,
    quantize_model,
    storage_bytes,
)
from cambrian.quickstart.demo import demo_image
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

# Max |logit - fp32 logit| over the vocabulary at the last position, as a share of the fp32 logits' standard
# deviation. Measured on the tiny presets (seed 0, CPU): int8 0.028-0.044, int8-bnb 0.039 and nf4 0.40
# (the latter two through bitsandbytes' CPU path); the tolerances leave ~3x headroom.
REL_DRIFT = {"int8": 0.15, "int8-bnb": 0.15, "nf4": 1.0}
CONVS = [
    [{"role": "user", "content": "<image>\nHow many balls?"}],
    [{"role": "user", "content": "<image>\nColour?"}],
]
IMAGES = [demo_image(64, 48, seed=0), demo_image(48, 64, seed=1)]


def _batch(proc, device="cpu"):
    texts = [proc.apply_chat_template(c) for c in CONVS]
    return proc(text=texts, images=IMAGES, padding_side="left").to(device)


def _last_logits(model, batch) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits[:, -1].float().cpu()  # (B, V)


def _rel_drift(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.std())


def _quickstart_model():
    """The quickstart architecture (tied lm_head, in-LLM SVA) with random weights."""
    from cambrian.quickstart import QuickstartConfig, model_config

    qc = QuickstartConfig()
    tok = build_tiny_tokenizer(vocab_size=qc.vocab_size)
    config = model_config(qc, len(tok))
    torch.manual_seed(0)
    return CambrianForCausalLM(config).eval(), CambrianProcessor.from_config(config, tok)


def _build(name):
    return _quickstart_model() if name == "quickstart" else build_tiny(name, seed=0)


@pytest.mark.parametrize("name", ["tiny", "tiny-mlp", "quickstart"])
def test_int8_quantises_the_llm_linears_only(name):
    model, proc = _build(name)
    ref = _last_logits(model, _batch(proc))
    llm, head = model.language_model, model.language_model.get_output_embeddings()
    names = llm_linear_names(model)
    fp32_bytes = sum(storage_bytes(llm.get_submodule(n)) for n in names)
    vision_before = {
        k: v.clone()
        for k, v in [*model.vision_towers.state_dict().items(), *model.connector.state_dict().items()]
    }

    out_model = quantize_model(model, "int8")
    assert out_model is model and model.language_model is llm  # same HF model object, layers swapped inside
    assert model.quantize_mode == "int8" and len(names) == 7 * model.config.text_config.num_hidden_layers
    for n in names:
        layer = llm.get_submodule(n)
        assert isinstance(layer, QLinear) and isinstance(layer.weight, QBytesTensor), n
        assert layer.weight._data.dtype == torch.int8, n
    # lm_head, embeddings, norms: untouched float tensors (the quickstart's lm_head stays tied)
    assert type(llm.get_output_embeddings()) is torch.nn.Linear and llm.get_output_embeddings() is head
    assert type(head.weight) is torch.nn.Parameter and head.weight.dtype == torch.float32
    if model.config.text_config.tie_word_embeddings:
        assert head.weight is llm.get_input_embeddings().weight
    # towers and connector (with the in-LLM SVA layers) untouched
    for part in (model.vision_towers, model.connector):
        assert not any(isinstance(m, QLinear) for m in part.modules())
        assert all(type(p) is torch.nn.Parameter and p.dtype == torch.float32 for p in part.parameters())
    after = [*model.vision_towers.state_dict().items(), *model.connector.state_dict().items()]
    assert all(torch.equal(v, vision_before[k]) for k, v in after)

    # int8 data is a quarter of fp32, plus one fp32 scale per output row
    q_bytes = sum(storage_bytes(llm.get_submodule(n)) for n in names)
    assert fp32_bytes / 4 <= q_bytes < 0.3 * fp32_bytes

    out = _last_logits(model, _batch(proc))
    assert 0 < _rel_drift(out, ref) < REL_DRIFT["int8"]  # > 0: the int8 path really runs


def test_int8_keeps_in_llm_sva_and_generates_with_images():
    model, proc = build_tiny("tiny", seed=0)
    assert len(model.connector.llm_layers) > 0  # the tiny preset has SVA layers inside the LLM
    quantize_model(model, "int8")
    calls = []
    model.connector.llm_layers[0].register_forward_hook(lambda *a: calls.append(1))
    replies = proc.generate_replies(model, CONVS, images=[[im] for im in IMAGES], max_new_tokens=6)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert calls == [1]  # in-LLM SVA ran once, at prefill, through the hook on the quantised decoder layer
    batch = _batch(proc)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    first = out[:, batch["input_ids"].shape[1]]  # (B,) the first new token is the greedy pick of the logits
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    assert torch.equal(first, _last_logits(model, batch).argmax(-1))


def test_include_vision_quantises_towers_and_connector():
    model, proc = build_tiny("tiny", seed=0)
    ref = _last_logits(model, _batch(proc))
    full = storage_bytes(model)
    quantize_model(model, "int8", include_vision=True)
    for part in (model.vision_towers, model.connector):
        assert any(isinstance(m, QLinear) for m in part.modules())
    assert not any(
        isinstance(m, QLinear) for n, m in model.connector.named_modules() if n.endswith("proj_in")
    )
    replies = proc.generate_replies(model, CONVS, images=[[im] for im in IMAGES], max_new_tokens=4)
    assert len(replies) == 2  # under inference_mode, through the SVA connector's direct weight reads
    assert storage_bytes(model) < 0.6 * full  # the rest (embeddings, lm_head, convs, norms) stays fp32
    assert 0 < _rel_drift(_last_logits(model, _batch(proc)), ref) < REL_DRIFT["int8"]


def test_bad_mode_and_requantising_are_clear_errors():
    model, _ = build_tiny("tiny", seed=0)
    with pytest.raises(ValueError, match=r"'int4'.*valid: int8, nf4, int8-bnb"):
        quantize_model(model, "int4")
    with pytest.raises(ValueError, match="int8 only"):
        quantize_model(model, "nf4", include_vision=True)
    quantize_model(model, "int8")
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(model, "int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
@pytest.mark.parametrize("mode", BNB_MODES)
def test_bitsandbytes_modes_need_cuda(mode):
    model, _ = build_tiny("tiny", seed=0)
    with pytest.raises(ValueError, match=r"needs a CUDA device and `pip install bitsandbytes`"):
        quantize_model(model, mode)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        load_model("tiny", quantize=mode, random_ok=True)


def test_bitsandbytes_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    model, _ = build_tiny("tiny", seed=0)
    with pytest.raises(ValueError, match=r"'nf4' needs a CUDA device and `pip install bitsandbytes`"):
        quantize_model(model, "nf4")


def test_load_model_quantizes_after_dtype(tmp_path):
    with pytest.raises(ValueError, match="valid: int8, nf4, int8-bnb"):
        load_model("tiny", quantize="fp8", random_ok=True)
    saved, saved_proc = build_tiny("tiny", seed=0)
    saved.save_pretrained(tmp_path)
    saved_proc.save_pretrained(tmp_path)
    loaded, _ = load_model(str(tmp_path), quantize="int8")  # the model-directory path
    assert loaded.quantize_mode == "int8" and not loaded.training
    model, proc = load_model("tiny", dtype="bfloat16", quantize="int8", random_ok=True)
    layer = model.language_model.get_submodule(llm_linear_names(model)[0])
    assert isinstance(layer, QLinear) and layer.weight._scale.dtype == torch.bfloat16
    assert next(model.vision_towers.parameters()).dtype == torch.bfloat16
    assert torch.isfinite(_last_logits(model, _batch(proc))).all()
    assert QUANTIZE_MODES == ("int8", "nf4", "int8-bnb")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", QUANTIZE_MODES)
def test_quantized_modes_on_cuda(mode):
    if mode in BNB_MODES:
        bnb = pytest.importorskip("bitsandbytes")
        layer_type = bnb.nn.Linear4bit if mode == "nf4" else bnb.nn.Linear8bitLt
    else:
        layer_type = QLinear
    base, proc = build_tiny("tiny", seed=0)
    ref = _last_logits(copy.deepcopy(base).cuda(), _batch(proc, "cuda"))  # fp32 on the same device
    names = llm_linear_names(base)
    fp32_bytes = sum(storage_bytes(base.language_model.get_submodule(n)) for n in names)
    model = quantize_model(copy.deepcopy(base).cuda(), mode)
    assert model.device.type == "cuda" and model.quantize_mode == mode
    assert all(isinstance(model.language_model.get_submodule(n), layer_type) for n in names)
    assert not any(
        isinstance(m, layer_type) for m in [*model.vision_towers.modules(), *model.connector.modules()]
    )
    replies = proc.generate_replies(model, CONVS, images=[[im] for im in IMAGES], max_new_tokens=6)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    q_bytes = sum(storage_bytes(model.language_model.get_submodule(n)) for n in names)
    assert q_bytes < (0.2 if mode == "nf4" else 0.3) * fp32_bytes  # 4-bit: an eighth, plus block scales
    drift = _rel_drift(_last_logits(model, _batch(proc, "cuda")), ref)
    print(f"{mode}: LLM linears {q_bytes / fp32_bytes:.3f} of fp32, max drift {drift:.4f} x logit std")
    assert 0 < drift < REL_DRIFT[mode]
