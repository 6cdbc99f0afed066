"""Image-aware tokenisation: the upstream BOS rule (docs/checkpoint-format.md §4.3), slot expansion, labels."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from cambrian.models.conversation import build_prompt, build_prompt_segments
from cambrian.models.tokenization import (
    IGNORE_INDEX,
    IMAGE_TOKEN_INDEX,
    auto_prefix_ids,
    pad_ids,
    text_options,
    tokenize_segments,
    tokenize_with_images,
    truncate_ids,
)
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer

BOS = "<|begin_of_text|>"


@pytest.fixture(scope="module")
def plain_tok():
    """No automatic BOS, like the original Llama-3 tokenizer."""
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tok(plain_tok):
    """Same vocabulary, but BOS is prepended to every encoding (like LLaMA-2 / Vicuna sentencepiece)."""
    backend = Tokenizer.from_str(plain_tok.backend_tokenizer.to_str())
    bos_id = plain_tok.bos_token_id
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=plain_tok.eos_token,
        pad_token=plain_tok.pad_token,
        unk_token=plain_tok.unk_token,
    )


def raw(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_fixtures_differ_only_in_auto_bos(plain_tok, bos_tok):
    assert plain_tok("a red cube").input_ids == raw(bos_tok, "a red cube")
    assert bos_tok("a red cube").input_ids == [bos_tok.bos_token_id, *raw(bos_tok, "a red cube")]
    assert auto_prefix_ids(plain_tok) == [] and auto_prefix_ids(bos_tok) == [bos_tok.bos_token_id]
    assert plain_tok("").input_ids == [] and bos_tok("").input_ids == [bos_tok.bos_token_id]


# === BOS rule ===


def test_llama_3_literal_bos_drops_newline_after_image(plain_tok):
    """Upstream 8B inference: literal BOS + no auto-BOS, so the "\\n" after <image> is removed."""
    prompt = build_prompt("llama_3", [{"role": "user", "content": "<image>\nWhat colour is the cube?"}])
    head, tail = prompt.split("<image>")
    tail_ids = raw(plain_tok, tail)
    assert tail_ids[0] == plain_tok.convert_tokens_to_ids("Ċ")  # byte-level "\n"
    ids = tokenize_with_images(plain_tok, prompt)
    assert ids == [*raw(plain_tok, head), IMAGE_TOKEN_INDEX, *tail_ids[1:]]
    assert ids[0] == plain_tok.bos_token_id and ids.count(plain_tok.bos_token_id) == 1
    pos = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[pos - 1] == plain_tok.convert_tokens_to_ids("<|end_header_id|>")
    assert plain_tok.decode(ids[pos + 1 : pos + 2]) == "What"


def test_auto_bos_strips_only_the_repeated_bos(bos_tok):
    """Vicuna-style: every chunk gets BOS; only those BOS tokens are dropped, the "\\n" stays."""
    prompt = build_prompt("vicuna_v1", [{"role": "user", "content": "<image>\nWhat is near the star?"}])
    head, tail = prompt.split("<image>")
    ids = tokenize_with_images(bos_tok, prompt)
    assert ids == [bos_tok.bos_token_id, *raw(bos_tok, head), IMAGE_TOKEN_INDEX, *raw(bos_tok, tail)]
    assert ids.count(bos_tok.bos_token_id) == 1
    assert ids[ids.index(IMAGE_TOKEN_INDEX) + 1] == bos_tok.convert_tokens_to_ids("Ċ")


@pytest.mark.parametrize("name", ["chatml_direct", "phi3", "vicuna_v1"])
def test_no_bos_nothing_removed(plain_tok, name):
    prompt = build_prompt(name, [{"role": "user", "content": "<image>\nHow many cubes?"}])
    head, tail = prompt.split("<image>")
    assert tokenize_with_images(plain_tok, prompt) == [
        *raw(plain_tok, head),
        IMAGE_TOKEN_INDEX,
        *raw(plain_tok, tail),
    ]


def test_empty_chunks(plain_tok, bos_tok):
    q = raw(plain_tok, "\nQ")
    # Prompt starting with <image>: tokenising "" gives [BOS] (auto-BOS) or [] (plain).
    assert tokenize_with_images(bos_tok, "<image>\nQ") == [bos_tok.bos_token_id, IMAGE_TOKEN_INDEX, *q]
    assert tokenize_with_images(plain_tok, "<image>\nQ") == [IMAGE_TOKEN_INDEX, *q]
    # Prompt ending with <image>, and two adjacent images.
    assert tokenize_with_images(bos_tok, "Q<image>") == [
        bos_tok.bos_token_id,
        *raw(bos_tok, "Q"),
        IMAGE_TOKEN_INDEX,
    ]
    assert tokenize_with_images(plain_tok, "<image><image>", num_slots=[1, 2]) == [IMAGE_TOKEN_INDEX] * 3
    assert tokenize_with_images(bos_tok, "<image><image>", num_slots=[2, 1]) == [
        bos_tok.bos_token_id,
        *[IMAGE_TOKEN_INDEX] * 3,
    ]
    # A literal-BOS prompt whose image chunk is empty: the empty chunk has no token to lose.
    assert tokenize_with_images(plain_tok, f"{BOS}<image>") == [plain_tok.bos_token_id, IMAGE_TOKEN_INDEX]


def test_no_image(plain_tok, bos_tok):
    assert tokenize_with_images(plain_tok, "a blue cone") == plain_tok("a blue cone").input_ids
    assert tokenize_with_images(bos_tok, "a blue cone") == bos_tok("a blue cone").input_ids
    assert tokenize_with_images(plain_tok, "a blue cone", num_slots=[]) == plain_tok("a blue cone").input_ids


# === Slot expansion ===


@pytest.mark.parametrize("tok_name", ["plain_tok", "bos_tok"])
def test_slot_expansion(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    image_id = tok.convert_tokens_to_ids("<image>")
    prompt = "left <image> middle <image> right"
    ids = tokenize_with_images(tok, prompt, image_token_id=image_id, num_slots=[5, 7])
    assert ids.count(image_id) == 12
    first = ids.index(image_id)
    assert ids[first : first + 5] == [image_id] * 5 and ids[first + 5] != image_id
    second = ids.index(image_id, first + 5)
    assert ids[second : second + 7] == [image_id] * 7 and ids[second + 7] != image_id
    # Removing the slots leaves the one-slot tokenisation minus its single placeholders.
    one = tokenize_with_images(tok, prompt, image_token_id=image_id)
    assert [i for i in ids if i != image_id] == [i for i in one if i != image_id]


def test_custom_image_token(plain_tok):
    ids = tokenize_with_images(plain_tok, "a <img> b", image_token="<img>", image_token_id=-1, num_slots=[3])
    assert ids == [*raw(plain_tok, "a "), -1, -1, -1, *raw(plain_tok, " b")]


@pytest.mark.parametrize(
    ("prompt", "slots", "counts"),
    [("<image> a <image>", [4], ("2", "1")), ("a", [4], ("0", "1")), ("<image>", [1, 1], ("1", "2"))],
)
def test_slot_count_mismatch(plain_tok, prompt, slots, counts):
    with pytest.raises(ValueError, match=rf"contains {counts[0]} '<image>'.* has {counts[1]} entr"):
        tokenize_with_images(plain_tok, prompt, num_slots=slots)
    with pytest.raises(ValueError, match="num_slots"):
        tokenize_segments(plain_tok, [(prompt, False)], num_slots=slots)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_bad_slot_values(plain_tok, bad):
    with pytest.raises(ValueError, match="positive int"):
        tokenize_with_images(plain_tok, "<image>", num_slots=[bad])


# === Training segments ===

CONV = [
    {"role": "user", "content": "<image>\nWhat colour is the cube?"},
    {"role": "assistant", "content": "The cube is red."},
    {"role": "user", "content": "How many stars?"},
    {"role": "assistant", "content": "There are 3 stars."},
]


@pytest.mark.parametrize("name", ["llama_3", "vicuna_v1", "chatml_direct", "phi3"])
@pytest.mark.parametrize("tok_name", ["plain_tok", "bos_tok"])
def test_segments_match_whole_prompt_tokenisation(request, name, tok_name):
    tok = request.getfixturevalue(tok_name)
    image_id = tok.convert_tokens_to_ids("<image>")
    segments = build_prompt_segments(name, CONV)
    ids, labels = tokenize_segments(tok, segments, image_token_id=image_id)
    assert ids == tok("".join(t for t, _ in segments)).input_ids  # <image> is one special token here
    assert len(labels) == len(ids)
    learned = [i for i in labels if i != IGNORE_INDEX]
    assert learned == [i for i, lab in zip(ids, labels) if lab == i]
    close = {"llama_3": "<|eot_id|>", "vicuna_v1": "</s>", "chatml_direct": "<|im_end|>", "phi3": "<|end|>"}[
        name
    ]
    space = " " if name == "vicuna_v1" else ""
    expected = raw(tok, f"{space}The cube is red.{close}") + raw(tok, f"{space}There are 3 stars.{close}")
    assert learned == expected


def test_segments_expand_images_without_bos_rule(plain_tok):
    segments = build_prompt_segments("llama_3", CONV)
    ids, labels = tokenize_segments(plain_tok, segments, num_slots=[6])
    assert ids.count(IMAGE_TOKEN_INDEX) == 6
    first = ids.index(IMAGE_TOKEN_INDEX)
    assert all(labels[first + k] == IGNORE_INDEX for k in range(6))
    # Training keeps the "\n" after the image (upstream's llama3 splitter), unlike inference.
    assert ids[first + 6] == plain_tok.convert_tokens_to_ids("Ċ")
    infer = tokenize_with_images(plain_tok, build_prompt("llama_3", CONV[:1]), num_slots=[6])
    assert infer[first + 6] != plain_tok.convert_tokens_to_ids("Ċ")
    assert ids[:first] == infer[:first]


def test_segments_auto_bos_is_prepended_once_and_not_learned(bos_tok):
    segments = build_prompt_segments("vicuna_v1", CONV)
    ids, labels = tokenize_segments(bos_tok, segments)
    assert ids[0] == bos_tok.bos_token_id and ids.count(bos_tok.bos_token_id) == 1
    assert labels[0] == IGNORE_INDEX
    assert ids.count(IMAGE_TOKEN_INDEX) == 1 and labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX


def test_segments_custom_ignore_index(plain_tok):
    ids, labels = tokenize_segments(plain_tok, [("ask ", False), ("answer", True)], ignore_index=-1)
    n = len(raw(plain_tok, "ask "))
    assert labels[:n] == [-1] * n and labels[n:] == ids[n:] == raw(plain_tok, "answer")


# ---------------------------------------------------------------- processor text options, truncation, padding


class _Tok:
    """Just the two attributes ``text_options`` reads from a tokenizer."""

    def __init__(self, model_max_length=int(1e30), padding_side="right"):
        self.model_max_length, self.padding_side = model_max_length, padding_side


@pytest.mark.parametrize(
    ("kwargs", "padding", "truncate"),
    [
        ({}, "longest", False),
        ({"padding": True}, "longest", False),
        ({"padding": False}, "do_not_pad", False),
        ({"padding": "max_length", "max_length": 9}, "max_length", False),
        ({"truncation": True, "max_length": 9}, "longest", True),
        ({"truncation": "longest_first", "max_length": 9}, "longest", True),
        ({"truncation": "do_not_truncate"}, "longest", False),
    ],
)
def test_text_options_resolve_hf_values(kwargs, padding, truncate):
    opts = text_options(_Tok(), kwargs)
    assert (opts["padding"], opts["truncate"], opts["padding_side"]) == (padding, truncate, "right")
    assert opts["return_attention_mask"] is True


def test_text_options_defaults_come_from_the_tokenizer():
    opts = text_options(_Tok(model_max_length=16, padding_side="left"), {"truncation": True})
    assert opts["max_length"] == 16 and opts["padding_side"] == "left"
    assert text_options(_Tok(padding_side="left"), {"padding_side": "right"})["padding_side"] == "right"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 2}, "does not support stride"),
        ({"padding": "sideways"}, "padding='sideways' is not one of"),
        ({"truncation": "only_second"}, "needs text pairs"),
        ({"padding": "max_length"}, "needs max_length"),
        ({"padding_side": "middle"}, "padding_side 'middle'"),
    ],
)
def test_text_options_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        text_options(_Tok(), kwargs)


def test_truncate_ids_keeps_the_chosen_side():
    row = [1, 2, 3, 4, 5]
    assert truncate_ids(row, 3, image_token_id=-200, num_slots=[]) == [1, 2, 3]
    assert truncate_ids(row, 3, image_token_id=-200, num_slots=[], side="left") == [3, 4, 5]
    assert truncate_ids(row, 9, image_token_id=-200, num_slots=[]) == row


def test_truncate_ids_never_cuts_an_image_and_names_it():
    img = -200
    row = [1, img, img, 2, img, img, img, 3]  # image 0: 2 slots, image 1: 3 slots
    with pytest.raises(ValueError, match=r"text 4: .* would cut image 1 .*3 placeholder tokens"):
        truncate_ids(row, 5, image_token_id=img, num_slots=[2, 3], text_index=4)
    with pytest.raises(ValueError, match=r"left side\) would cut image 0 "):
        truncate_ids(row, 6, image_token_id=img, num_slots=[2, 3], side="left")
    assert truncate_ids(row, 7, image_token_id=img, num_slots=[2, 3]) == row[:7]  # only text is cut


def test_pad_ids_sides_strategies_and_multiples():
    rows = [[5, 6, 7], [8]]
    right = pad_ids(rows, pad_token_id=0)
    assert right == {"input_ids": [[5, 6, 7], [8, 0, 0]], "attention_mask": [[1, 1, 1], [1, 0, 0]]}
    left = pad_ids(rows, pad_token_id=0, padding_side="left", pad_to_multiple_of=4)
    assert left["input_ids"] == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert left["attention_mask"] == [[0, 1, 1, 1], [0, 0, 0, 1]]
    fixed = pad_ids(rows, pad_token_id=9, padding="max_length", max_length=5, return_attention_mask=False)
    assert fixed == {"input_ids": [[5, 6, 7, 9, 9], [8, 9, 9, 9, 9]]}
    assert pad_ids(rows, pad_token_id=0, padding="do_not_pad")["input_ids"] == rows
