"""Conversation templates: golden prompt strings (docs/checkpoint-format.md §4.1-4.2), segments, errors."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from cambrian.models.conversation import (
    CHATML_DIRECT,
    LLAMA_3,
    PHI3,
    TEMPLATES,
    VICUNA_V1,
    Template,
    build_prompt,
    build_prompt_segments,
    get_template,
    normalize_messages,
    stop_strings,
    stop_token_ids,
)
from cambrian.quickstart.tiny_tokenizer import build_tiny_tokenizer
from cambrian.registry import UnknownIdError

LLAMA_3_SYS = (
    "You are Cambrian, a highly intelligent multimodal AI trained by NYU Vision X. \n    As a multimodal AI, "
    "you have the ability to process and analyze images. Whenever an image is present in the conversation, "
    "very carefully examine it and consider its content when formulating your response.\n    You should give "
    "concise responses to very simple questions, but provide thorough responses to more complex and "
    "open-ended questions. "
)
VICUNA_SYS = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
CHATML_SYS = (
    "<|im_start|>system\nYou are Cambrian, a highly intelligent multimodal AI trained by NYU Vision X. As a "
    "multimodal AI, you have the ability to process and analyze images. Whenever an image is present in the "
    "conversation, very carefully examine it and consider its content when formulating your response. You "
    "should give concise responses to very simple questions, but provide thorough responses to more complex "
    "and open-ended questions."
)
PHI3_SYS = "<|system|>\nYou are a helpful AI assistant."

FIXED = ("llama_3", "vicuna_v1", "chatml_direct", "phi3")
ONE_TURN = [{"role": "user", "content": "<image>\nQ"}]
MULTI = [
    {"role": "user", "content": "<image>\nQ1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "Q2"},
]
CLOSED = [*MULTI, {"role": "assistant", "content": "A2"}]

SINGLE_GOLDEN = {
    "llama_3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>"
    + LLAMA_3_SYS
    + "<|eot_id|><|start_header_id|>user<|end_header_id|><image>\nQ<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>",
    "vicuna_v1": VICUNA_SYS + " USER: <image>\nQ ASSISTANT:",
    "chatml_direct": CHATML_SYS + "<|im_end|><|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n",
    "phi3": PHI3_SYS + "<|end|>\n<|user|>\n<image>\nQ<|end|>\n<|assistant|>\n",
}
MULTI_GOLDEN = {
    "llama_3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>S<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|><image>\nQ1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>A1<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>Q2<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>",
    "vicuna_v1": "S USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:",
    "chatml_direct": "<|im_start|>system\nS<|im_end|><|im_start|>user\n<image>\nQ1<|im_end|>"
    "<|im_start|>assistant\nA1<|im_end|><|im_start|>user\nQ2<|im_end|><|im_start|>assistant\n",
    "phi3": "<|system|>\nS<|end|>\n<|user|>\n<image>\nQ1<|end|>\n<|assistant|>\nA1<|end|>"
    "\n<|user|>\nQ2<|end|>\n<|assistant|>\n",
}
# The closing string of an assistant reply, which is learned together with the reply.
CLOSE = {"llama_3": "<|eot_id|>", "vicuna_v1": "</s>", "chatml_direct": "<|im_end|>", "phi3": "<|end|>"}


# === Registry ===


def test_registered_ids_and_aliases():
    assert {*FIXED, "chat_template", "llama_v3", "v1", "mistral_direct"} == set(TEMPLATES.names())
    assert TEMPLATES.get("llama_v3") is TEMPLATES.get("llama_3") is LLAMA_3
    assert TEMPLATES.get("v1") is TEMPLATES.get("vicuna_v1") is VICUNA_V1
    assert TEMPLATES.get("mistral_direct") is TEMPLATES.get("chatml_direct") is CHATML_DIRECT
    assert TEMPLATES.get("phi3") is PHI3


@pytest.mark.parametrize("bad", ["llama", "LLAMA_3", "vicuna", "chatml", ""])
def test_unknown_template_lists_valid_ids(bad):
    with pytest.raises(UnknownIdError) as err:
        build_prompt(bad, ONE_TURN)
    for name in (*FIXED, "llama_v3", "v1", "mistral_direct", "chat_template"):
        assert name in str(err.value)


def test_template_is_frozen_and_passes_through():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLAMA_3.system = "x"  # type: ignore[misc]
    assert get_template(PHI3) is PHI3


def test_system_strings_are_exact():
    assert LLAMA_3.upstream_system == LLAMA_3_SYS
    assert " \n    As a multimodal AI" in LLAMA_3.system and "response.\n    You should" in LLAMA_3.system
    assert LLAMA_3.system.endswith("questions. ")
    assert VICUNA_V1.upstream_system == VICUNA_SYS
    assert CHATML_DIRECT.upstream_system == CHATML_SYS
    assert PHI3.upstream_system == PHI3_SYS
    assert (VICUNA_V1.sep, VICUNA_V1.sep2) == (" ", "</s>")
    assert (LLAMA_3.sep, LLAMA_3.sep2) == ("<|begin_of_text|>", "<|end_of_text|>")


# === Prompts ===


@pytest.mark.parametrize("name", FIXED)
def test_single_turn_golden(name):
    assert build_prompt(name, ONE_TURN) == SINGLE_GOLDEN[name]


def test_aliases_render_identically():
    for alias, name in (("llama_v3", "llama_3"), ("v1", "vicuna_v1"), ("mistral_direct", "chatml_direct")):
        assert build_prompt(alias, MULTI) == build_prompt(name, MULTI)


def test_llama_3_has_no_blank_lines_after_headers():
    prompt = build_prompt("llama_3", MULTI, system="S")
    assert "<|end_header_id|>\n\n" not in prompt
    assert prompt.startswith("<|begin_of_text|>") and prompt.count("<|begin_of_text|>") == 1


@pytest.mark.parametrize("name", FIXED)
def test_multi_turn_golden(name):
    assert build_prompt(name, MULTI, system="S") == MULTI_GOLDEN[name]


@pytest.mark.parametrize("name", FIXED)
def test_system_message_overrides_default(name):
    with_message = build_prompt(name, [{"role": "system", "content": "S"}, *MULTI])
    assert with_message == MULTI_GOLDEN[name]
    # The explicit argument beats a system message.
    assert build_prompt(name, [{"role": "system", "content": "other"}, *MULTI], system="S") == with_message


def test_empty_system():
    assert build_prompt("llama_3", ONE_TURN, system="") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|><image>\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>"
    )
    assert build_prompt("chatml_direct", ONE_TURN, system="") == (
        "<|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n"
    )
    assert build_prompt("phi3", ONE_TURN, system="") == "\n<|user|>\n<image>\nQ<|end|>\n<|assistant|>\n"
    # Vicuna's TWO style always prints SYS + sep, like upstream.
    assert build_prompt("vicuna_v1", ONE_TURN, system="") == " USER: <image>\nQ ASSISTANT:"


def test_llava_style_messages():
    llava = [
        {"from": "human", "value": "<image>\nQ1"},
        {"from": "gpt", "value": "A1"},
        {"from": "human", "value": "Q2"},
    ]
    assert normalize_messages(llava) == MULTI
    for name in FIXED:
        assert build_prompt(name, llava, system="S") == MULTI_GOLDEN[name]
    with_system = [{"from": "system", "value": "S"}, *llava]
    assert build_prompt("vicuna_v1", with_system) == MULTI_GOLDEN["vicuna_v1"]


@pytest.mark.parametrize("name", FIXED)
def test_without_generation_prompt(name):
    closed = build_prompt(name, CLOSED, system="S", add_generation_prompt=False)
    space = " " if name == "vicuna_v1" else ""
    assert closed == MULTI_GOLDEN[name] + space + "A2" + CLOSE[name]
    # Ending on a user turn without the generation prompt drops only the open assistant turn.
    open_tail = {"llama_3": "<|start_header_id|>assistant<|end_header_id|>", "vicuna_v1": "ASSISTANT:"}
    tail = open_tail.get(name, TEMPLATES.get(name).roles[1])
    assert build_prompt(name, MULTI, system="S", add_generation_prompt=False) + tail == MULTI_GOLDEN[name]


def test_vicuna_closed_conversation():
    closed = build_prompt("vicuna_v1", CLOSED, system="S", add_generation_prompt=False)
    assert closed == "S USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT: A2</s>"


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "assistant", "content": "A"}], "alternate"),
        ([{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}], "alternate"),
        ([{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}], "first message"),
        ([{"role": "robot", "content": "Q"}], "unknown role"),
        ([{"text": "Q"}], "neither"),
        ([], "no user"),
        ([{"role": "system", "content": "S"}], "no user"),
    ],
)
def test_bad_conversations(messages, match):
    with pytest.raises(ValueError, match=match):
        build_prompt("llama_3", messages)


def test_non_string_content_and_open_turn_errors():
    with pytest.raises(TypeError):
        build_prompt("llama_3", [{"role": "user", "content": ["x"]}])
    with pytest.raises(ValueError, match="ends with a user turn"):
        build_prompt("llama_3", CLOSED)


# === Segments ===


@pytest.mark.parametrize("name", FIXED)
@pytest.mark.parametrize("system", [None, "S", ""])
def test_segments_join_to_prompt_and_flag_assistant_text(name, system):
    segments = build_prompt_segments(name, CLOSED, system=system)
    assert "".join(t for t, _ in segments) == build_prompt(
        name, CLOSED, system=system, add_generation_prompt=False
    )
    learned = [t for t, learn in segments if learn]
    space = " " if name == "vicuna_v1" else ""  # the space after "ASSISTANT:" belongs to the reply
    assert learned == [f"{space}A1{CLOSE[name]}", f"{space}A2{CLOSE[name]}"]
    assert all(a[1] != b[1] for a, b in itertools.pairwise(segments)), "neighbours must be merged"
    assert not segments[-1][1] or segments[-1][0].endswith(CLOSE[name])


@pytest.mark.parametrize("name", FIXED)
def test_segments_prompt_part_equals_inference_prompt(name):
    # Everything before the last learned segment is exactly what inference feeds the model.
    segments = build_prompt_segments(name, CLOSED, system="S")
    assert segments[-1][1]
    assert "".join(t for t, _ in segments[:-1]) == MULTI_GOLDEN[name]


# === Stop strings ===


def test_stop_strings():
    assert stop_strings("llama_3") == ("<|eot_id|>", "<|end_of_text|>")
    assert stop_strings("v1") == ("</s>",)
    assert stop_strings("chatml_direct") == ("<|im_end|>",)
    assert stop_strings("phi3") == ("<|end|>",)
    assert LLAMA_3.upstream_stop_str == "<|end_of_text|>" and PHI3.upstream_stop_str is None


def test_stop_token_ids_are_single_tokens():
    tok = build_tiny_tokenizer()
    eos = tok.eos_token_id
    assert stop_token_ids("llama_3", tok) == [tok.convert_tokens_to_ids("<|eot_id|>"), eos]
    assert stop_token_ids("phi3", tok) == [tok.convert_tokens_to_ids("<|end|>"), eos]


# === Tokenizer chat template ===

JINJA = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}"
)


def test_chat_template_uses_tokenizer():
    tok = build_tiny_tokenizer()
    tok.chat_template = JINJA
    prompt = build_prompt("chat_template", ONE_TURN, system="S", tokenizer=tok)
    assert prompt == (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>"
        "\n\n<image>\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    segments = build_prompt_segments("chat_template", CLOSED, tokenizer=tok)
    assert "".join(t for t, _ in segments) == build_prompt(
        "chat_template", CLOSED, tokenizer=tok, add_generation_prompt=False
    )
    assert [t for t, learn in segments if learn] == ["A1<|eot_id|>", "A2<|eot_id|>"]
    assert stop_strings("chat_template", tok) == ("<|end_of_text|>",)


def test_chat_template_needs_a_tokenizer_with_a_template():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        build_prompt("chat_template", ONE_TURN)
    with pytest.raises(ValueError, match="no chat_template"):
        build_prompt("chat_template", ONE_TURN, tokenizer=build_tiny_tokenizer())


def test_custom_template_object():
    custom = Template(
        name="mine", style=PHI3.style, system="hi", system_prefix="<|system|>\n", roles=PHI3.roles
    )
    custom = dataclasses.replace(custom, sep="<|end|>")
    assert build_prompt(custom, ONE_TURN).startswith("<|system|>\nhi<|end|>\n<|user|>\n")
