"""The in-process tiny tokenizer: determinism, special tokens, no auto-BOS, offline save/reload."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
from transformers import AutoTokenizer

from cambrian.models.conversation import build_prompt
from cambrian.quickstart.tiny_tokenizer import SPECIAL_TOKENS, build_tiny_tokenizer, default_corpus

CONV = [
    {"role": "user", "content": "<image>\nIs the red cube left of the blue star?"},
    {"role": "assistant", "content": "Yes."},
    {"role": "user", "content": "How many circles?"},
]
FIXED = ("llama_3", "vicuna_v1", "chatml_direct", "phi3")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_builds_fast_and_deterministically():
    start = time.perf_counter()
    a = build_tiny_tokenizer()
    assert time.perf_counter() - start < 5.0  # ~20 ms in practice; generous for slow CI
    b = build_tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab()
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert default_corpus() == default_corpus()
    assert default_corpus(seed=1) != default_corpus(seed=0)


def _vocab_digest_snippet() -> str:
    return (
        "import hashlib, json\n"
        "from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer\n"
        "v = build_tiny_tokenizer().get_vocab()\n"
        "print(hashlib.sha256(json.dumps(sorted(v.items())).encode()).hexdigest())\n"
    )


def test_identical_across_processes(tok):
    """Rust hash maps are randomly seeded per process; the merges must not depend on that."""
    import json

    local = hashlib.sha256(json.dumps(sorted(tok.get_vocab().items())).encode()).hexdigest()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", _vocab_digest_snippet()], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == local


def test_vocab_size_and_specials(tok):
    assert len(tok) == 512
    for i, special in enumerate(SPECIAL_TOKENS):
        assert tok.convert_tokens_to_ids(special) == i
        assert tok(special).input_ids == [i], special
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<pad>",
        "<unk>",
    )
    assert "<image>" in tok.all_special_tokens
    assert tok.padding_side == "right"


def test_no_automatic_bos(tok):
    assert tok("").input_ids == []
    assert tok("a red cube").input_ids == tok("a red cube", add_special_tokens=False).input_ids
    assert tok.bos_token_id not in tok("a red cube").input_ids


@pytest.mark.parametrize("name", FIXED)
def test_templates_tokenise_markers_as_single_tokens_and_round_trip(tok, name):
    prompt = build_prompt(name, CONV)
    ids = tok(prompt).input_ids
    assert tok.decode(ids) == prompt
    pieces = tok.convert_ids_to_tokens(ids)
    for marker in SPECIAL_TOKENS:
        assert pieces.count(marker) == prompt.count(marker), marker


def test_custom_corpus_and_size():
    small = build_tiny_tokenizer(vocab_size=300, corpus=["hello world"] * 10)
    assert len(small) <= 300
    assert small.decode(small("hello world").input_ids) == "hello world"
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        build_tiny_tokenizer(vocab_size=100)


def test_save_and_reload_offline(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tok.get_vocab()
    assert again.padding_side == "right"
    assert (again.bos_token_id, again.eos_token_id, again.pad_token_id) == (
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    assert set(tok.all_special_tokens) <= set(again.all_special_tokens)
    for name in FIXED:
        prompt = build_prompt(name, CONV)
        assert again(prompt).input_ids == tok(prompt).input_ids
    batch = again(["a", "a red cube"], padding=True)
    assert batch.input_ids[0][-1] == tok.pad_token_id  # right padding
