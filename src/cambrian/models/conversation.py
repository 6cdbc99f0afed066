"""Conversation templates: turn a list of chat messages into the exact prompt string a Cambrian model saw.

Each released model was trained and evaluated with one fixed prompt format (docs/checkpoint-format.md §4):
``llama_3`` (cambrian-8b), ``vicuna_v1`` (13b), ``chatml_direct`` (34b) and ``phi3`` (phi3-3b). The
formats are data (a frozen ``Template``) registered by exact id in ``TEMPLATES``, together with the
upstream aliases ``llama_v3``, ``v1`` and ``mistral_direct``. The extra id ``chat_template`` defers to the
tokenizer's own Jinja ``apply_chat_template``, for LLMs that ship one.

Two renderers share one code path, so they can never disagree:

- ``build_prompt`` returns the prompt string (inference: ends with the open assistant turn);
- ``build_prompt_segments`` returns the same string cut into ``(text, learn)`` pieces, where ``learn`` is
  True exactly on assistant replies plus the string that closes them (training labels).

Messages are dicts ``{"role": "user" | "assistant" | "system", "content": str}``; LLaVA-style
``{"from": "human" | "gpt" | "system", "value": str}`` is accepted too. Images are not handled here: the
user text carries a literal ``<image>`` (usually ``"<image>\\n" + question``), which
``cambrian.models.tokenization`` expands into image slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cambrian.registry import Registry

Segment = tuple[str, bool]  # (text, learn): learn is True on assistant content that carries a loss


class Style(str, Enum):
    """How a template lays out turns (the upstream ``SeparatorStyle`` values we need)."""

    LLAMA_3 = "llama_3"  # header tokens around each turn, literal BOS in the text
    TWO = "two"  # "ROLE: msg" with alternating separators (Vicuna v1)
    MPT = "mpt"  # role strings carry the markup, one separator after every turn (ChatML)
    PHI3 = "phi3"  # like MPT with Phi-3's markup
    CHAT_TEMPLATE = "chat_template"  # the tokenizer's own Jinja chat template


@dataclass(frozen=True)
class Template:
    """One conversation style. Field values are copied from docs/checkpoint-format.md §4.1.

    ``system`` is the default system *text*; ``system_prefix`` is the markup printed before it (the
    upstream code stores the two glued together as one system string, see ``upstream_system``).
    """

    name: str  # canonical id
    style: Style
    # Default system text; a system message or ``system=`` argument replaces it. None: no default of its
    # own (``chat_template``: the tokenizer's Jinja template decides).
    system: str | None = ""
    system_prefix: str = ""  # e.g. "<|im_start|>system\n" for ChatML
    roles: tuple[str, str] = ("USER", "ASSISTANT")  # (user, assistant) as printed (LLAMA_3: not printed)
    sep: str = ""
    sep2: str | None = None
    stop: tuple[str, ...] = ()  # strings that close an assistant turn; generation stops at any of them
    upstream_stop_str: str | None = None  # what the upstream demo server stopped on (§4.4), for reference

    @property
    def upstream_system(self) -> str:
        """The system string exactly as the upstream template object stores it."""
        return self.system_prefix + (self.system or "")


TEMPLATES: Registry[Template] = Registry("conversation template")

_LLAMA_3_SYSTEM = (
    "You are Cambrian, a highly intelligent multimodal AI trained by NYU Vision X. \n"
    "    As a multimodal AI, you have the ability to process and analyze images. Whenever an image is present "
    "in the conversation, very carefully examine it and consider its content when formulating your response.\n"
    "    You should give concise responses to very simple questions, but provide thorough responses to more "
    "complex and open-ended questions. "
)
_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_CHATML_SYSTEM = (
    "You are Cambrian, a highly intelligent multimodal AI trained by NYU Vision X. As a multimodal AI, you "
    "have the ability to process and analyze images. Whenever an image is present in the conversation, very "
    "carefully examine it and consider its content when formulating your response. You should give concise "
    "responses to very simple questions, but provide thorough responses to more complex and open-ended "
    "questions."
)

LLAMA_3 = Template(
    name="llama_3",
    style=Style.LLAMA_3,
    system=_LLAMA_3_SYSTEM,
    roles=("USER", "ASSISTANT"),
    sep="<|begin_of_text|>",
    sep2="<|end_of_text|>",
    stop=("<|eot_id|>", "<|end_of_text|>"),
    upstream_stop_str="<|end_of_text|>",
)
VICUNA_V1 = Template(
    name="vicuna_v1",
    style=Style.TWO,
    system=_VICUNA_SYSTEM,
    roles=("USER", "ASSISTANT"),
    sep=" ",
    sep2="</s>",
    stop=("</s>",),
    upstream_stop_str="</s>",
)
CHATML_DIRECT = Template(
    name="chatml_direct",
    style=Style.MPT,
    system=_CHATML_SYSTEM,
    system_prefix="<|im_start|>system\n",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    sep="<|im_end|>",
    stop=("<|im_end|>",),
    upstream_stop_str="<|im_end|>",
)
PHI3 = Template(
    name="phi3",
    style=Style.PHI3,
    system="You are a helpful AI assistant.",
    system_prefix="<|system|>\n",
    roles=("\n<|user|>\n", "\n<|assistant|>\n"),
    sep="<|end|>",
    stop=("<|end|>",),
    upstream_stop_str=None,  # the PHI3 style has no sep2, so the upstream server set no stop string
)
CHAT_TEMPLATE = Template(name="chat_template", style=Style.CHAT_TEMPLATE, system=None)

for _template in (LLAMA_3, VICUNA_V1, CHATML_DIRECT, PHI3, CHAT_TEMPLATE):
    TEMPLATES.register(_template.name, _template)
# Upstream aliases (the ids the training scripts pass as --version), registered as ids of their own.
TEMPLATES.register("llama_v3", LLAMA_3)
TEMPLATES.register("v1", VICUNA_V1)
TEMPLATES.register("mistral_direct", CHATML_DIRECT)


def get_template(template: str | Template) -> Template:
    """Resolve a template id (exact match; unknown ids raise ``UnknownIdError``) or pass a Template through."""
    return template if isinstance(template, Template) else TEMPLATES.get(template)


# === Messages ===

_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


def normalize_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Return ``[{"role", "content"}]`` dicts, accepting LLaVA ``{"from", "value"}`` messages too."""
    out = []
    for i, msg in enumerate(messages):
        if "role" in msg:
            role, content = msg["role"], msg.get("content")
        elif "from" in msg:
            role, content = msg["from"], msg.get("value")
        else:
            raise ValueError(f"message {i} has neither 'role' nor 'from': {dict(msg)!r}")
        key = role.lower() if isinstance(role, str) else role
        if key not in _ROLE_ALIASES:
            raise ValueError(
                f"message {i} has unknown role {role!r}; expected one of {sorted(_ROLE_ALIASES)}"
            )
        if not isinstance(content, str):
            raise TypeError(f"message {i} content must be a str, got {type(content).__name__}")
        out.append({"role": _ROLE_ALIASES[key], "content": content})
    return out


def turn_order_error(roles: Sequence[str]) -> str | None:
    """Why a conversation with these roles (in order) cannot be rendered, or None when it can.

    The rule every template shares: at most one system message, and only first; then user and
    assistant alternate, starting with the user. ``roles`` are normalised (``user``, ``assistant``,
    ``system``) or LLaVA's (``human``, ``gpt``, ``system``); messages name them as given and count
    from 0 over all messages, the system one included. ``records.check_row`` (``data validate``) and
    the prompt builders (training, inference) both use this, so they accept the same conversations.
    """
    # Name the roles the way the caller wrote them: human/gpt for LLaVA rows, user/assistant otherwise.
    user, assistant = ("human", "gpt") if any(r in ("human", "gpt") for r in roles) else ("user", "assistant")
    canon = {"human": "user", "gpt": "assistant"}
    start = 1 if roles and roles[0] == "system" else 0
    if len(roles) == start:
        return "the conversation has no user or assistant messages"
    for k in range(start, len(roles)):
        role = canon.get(roles[k], roles[k])
        if role == "system":
            return f"turn {k} is a system message; a system message is only allowed as the first message"
        expected = "user" if (k - start) % 2 == 0 else "assistant"
        if role != expected:
            want = user if expected == "user" else assistant
            return (
                f"turn {k} is from {roles[k]!r} but {want!r} was expected: conversations must alternate "
                f"{user}/{assistant}, starting with {user}"
            )
    return None


def _split_system(
    messages: list[dict[str, str]], system: str | None
) -> tuple[str | None, list[dict[str, str]]]:
    """Check the turn order (``turn_order_error``), then pull a leading system message out; the
    explicit ``system`` argument wins over it."""
    error = turn_order_error([m["role"] for m in messages])
    if error is not None:
        raise ValueError(error)
    turns = messages
    if turns[0]["role"] == "system":
        if system is None:
            system = turns[0]["content"]
        turns = turns[1:]
    return system, turns


# === Rendering ===


def _render(
    template: Template, turns: list[dict[str, str]], system: str, add_generation_prompt: bool
) -> Iterator[Segment]:
    """Yield (text, learn) pieces for a fixed-format template; ``turns`` alternate user/assistant."""
    user, assistant = template.roles
    if template.style is Style.LLAMA_3:
        # Upstream: no "\n\n" after <|end_header_id|>; the header of the open assistant turn always closes
        # the prompt there (we only add it for add_generation_prompt, so training prompts end on <|eot_id|>).
        yield template.sep, False
        if system:
            yield f"<|start_header_id|>system<|end_header_id|>{system}<|eot_id|>", False
        for msg in turns:
            if msg["role"] == "user":
                yield f"<|start_header_id|>user<|end_header_id|>{msg['content']}<|eot_id|>", False
            else:
                yield "<|start_header_id|>assistant<|end_header_id|>", False
                yield msg["content"] + "<|eot_id|>", True
        if add_generation_prompt:
            yield "<|start_header_id|>assistant<|end_header_id|>", False
    elif template.style is Style.TWO:
        # The upstream TWO style always prints SYS + sep, so an empty system leaves a leading separator.
        yield system + template.sep, False
        for msg in turns:
            if msg["role"] == "user":
                yield f"{user}: {msg['content']}{template.sep}", False
            else:
                # "ASSISTANT:" is exactly the inference prompt's tail; the space that follows belongs to the
                # reply, which is how a whole-string tokenisation groups it (" The", "▁The").
                yield f"{assistant}:", False
                yield f" {msg['content']}{template.sep2}", True
        if add_generation_prompt:
            yield f"{assistant}:", False
    elif template.style in (Style.MPT, Style.PHI3):
        if system:  # empty system text: no system block at all (upstream would print a stray separator)
            yield template.system_prefix + system + template.sep, False
        for msg in turns:
            if msg["role"] == "user":
                yield user + msg["content"] + template.sep, False
            else:
                yield assistant, False
                yield msg["content"] + template.sep, True
        if add_generation_prompt:
            yield assistant, False
    else:  # pragma: no cover - CHAT_TEMPLATE is handled by the callers
        raise ValueError(f"template {template.name!r} has no fixed format")


def _merge(pieces: Iterable[Segment]) -> list[Segment]:
    """Concatenate neighbouring pieces with the same flag and drop empty ones."""
    out: list[Segment] = []
    for text, learn in pieces:
        if not text:
            continue
        if out and out[-1][1] == learn:
            out[-1] = (out[-1][0] + text, learn)
        else:
            out.append((text, learn))
    return out


def _chat_template_messages(turns: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + turns


def _apply_chat_template(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if tokenizer is None:
        raise ValueError("the 'chat_template' template needs a tokenizer")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no chat_template")
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):  # pragma: no cover - defensive: tokenize=False returns str
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def _chat_template_segments(tokenizer: Any, turns: list[dict[str, str]], system: str | None) -> list[Segment]:
    """Segments for a Jinja template, found by rendering growing prefixes of the conversation.

    The learned part of assistant turn i is render(turns[:i+1]) minus render(turns[:i], generation prompt),
    which requires the template to be prefix-stable (true for the usual Llama-3/ChatML/Phi-3 templates).
    """
    messages = _chat_template_messages(turns, system)
    offset = len(messages) - len(turns)
    pieces: list[Segment] = []
    done = ""
    for i, msg in enumerate(turns):
        if msg["role"] != "assistant":
            continue
        head = _apply_chat_template(tokenizer, messages[: offset + i], add_generation_prompt=True)
        full = _apply_chat_template(tokenizer, messages[: offset + i + 1], add_generation_prompt=False)
        if not (head.startswith(done) and full.startswith(head)):
            raise ValueError(
                "the tokenizer's chat template is not prefix-stable, so assistant turns cannot be located "
                "in the rendered prompt; use a fixed template id instead"
            )
        pieces += [(head[len(done) :], False), (full[len(head) :], True)]
        done = full
    final = _apply_chat_template(tokenizer, messages, add_generation_prompt=False)
    if not final.startswith(done):
        raise ValueError("the tokenizer's chat template is not prefix-stable")
    pieces.append((final[len(done) :], False))
    return _merge(pieces)


def _prepare(
    template: str | Template, messages: Iterable[Mapping[str, Any]], system: str | None
) -> tuple[Template, str | None, list[dict[str, str]]]:
    tpl = get_template(template)
    system, turns = _split_system(normalize_messages(messages), system)
    return tpl, tpl.system if system is None else system, turns


def build_prompt(
    template: str | Template,
    messages: Iterable[Mapping[str, Any]],
    system: str | None = None,
    add_generation_prompt: bool = True,
    tokenizer: Any = None,
) -> str:
    """Render ``messages`` in ``template``'s format.

    Args:
        template: a registered id (``llama_3``, ``vicuna_v1``, ``chatml_direct``, ``phi3``, an alias, or
            ``chat_template``) or a ``Template``.
        messages: alternating user/assistant messages, optionally preceded by one system message.
        system: system text overriding both the template default and a system message; ``""`` drops the
            system block (llama_3, chatml_direct, phi3; vicuna_v1 keeps its leading separator like upstream).
        add_generation_prompt: end with the open assistant turn (``ASSISTANT:``, assistant header, ...).
            The conversation must then end with a user turn.
        tokenizer: only needed for ``chat_template``.

    >>> build_prompt("vicuna_v1", [{"role": "user", "content": "<image>\\nQ"}], system="SYS")
    'SYS USER: <image>\\nQ ASSISTANT:'
    """
    tpl, system, turns = _prepare(template, messages, system)
    if add_generation_prompt and turns[-1]["role"] != "user":
        raise ValueError("add_generation_prompt=True needs a conversation that ends with a user turn")
    if tpl.style is Style.CHAT_TEMPLATE:
        return _apply_chat_template(tokenizer, _chat_template_messages(turns, system), add_generation_prompt)
    return "".join(text for text, _ in _render(tpl, turns, system, add_generation_prompt))


def build_prompt_segments(
    template: str | Template,
    messages: Iterable[Mapping[str, Any]],
    system: str | None = None,
    tokenizer: Any = None,
) -> list[Segment]:
    """The training view of ``build_prompt(..., add_generation_prompt=False)``: ``(text, learn)`` pieces.

    ``learn`` is True exactly on each assistant reply plus the string that closes it (``<|eot_id|>``,
    ``</s>``, ``<|im_end|>``, ``<|end|>``); role markup and user/system text are False. Neighbouring
    pieces with the same flag are merged, and ``"".join(text for text, _ in segments)`` equals the prompt.
    """
    tpl, system, turns = _prepare(template, messages, system)
    if tpl.style is Style.CHAT_TEMPLATE:
        return _chat_template_segments(tokenizer, turns, system)
    return _merge(_render(tpl, turns, system, add_generation_prompt=False))


def stop_strings(template: str | Template, tokenizer: Any = None) -> tuple[str, ...]:
    """Strings that end an assistant turn (§4.4); generation should stop at any of them.

    For ``chat_template`` this is the tokenizer's EOS token.
    """
    tpl = get_template(template)
    if tpl.style is Style.CHAT_TEMPLATE:
        if tokenizer is None or tokenizer.eos_token is None:
            raise ValueError("stop strings of 'chat_template' come from the tokenizer's eos_token")
        return (tokenizer.eos_token,)
    return tpl.stop


def stop_token_ids(template: str | Template, tokenizer: Any) -> list[int]:
    """Ids of the stop strings that are single tokens of ``tokenizer``, plus its EOS id (deduplicated)."""
    ids: list[int] = []
    unk = tokenizer.unk_token_id
    for text in stop_strings(template, tokenizer):
        tid = tokenizer.convert_tokens_to_ids(text)
        if isinstance(tid, int) and tid != unk and tid not in ids:
            ids.append(tid)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def template_names() -> Sequence[str]:
    """Every registered template id, aliases included."""
    return TEMPLATES.names()
