"""Chat templates of ``CambrianProcessor``: the generated Jinja template and ``apply_chat_template``.

Each Cambrian model was trained with one fixed conversation format (``cambrian.models.conversation``).
``jinja_chat_template`` writes that format as a Jinja template that renders exactly what
``build_prompt`` renders, so tools that only know ``apply_chat_template`` (transformers, vLLM) and the
``chat_template.jinja`` a saved processor carries build the same prompts. ``CambrianChatMixin`` gives the
processor its prompt methods (``template``, ``chat_template``, ``apply_chat_template``, ``stop_token_ids``,
``generate_replies``); it is kept apart from ``processing_cambrian`` so each file stays readable.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from cambrian.models.conversation import Style, Template, build_prompt, get_template, stop_token_ids
from cambrian.models.tokenization import IMAGE_TOKEN


def _lit(text: str) -> str:
    """``text`` as a Jinja string literal (JSON escapes are valid Jinja escapes)."""
    return json.dumps(text)


_SYSTEM_BEGIN = "{#- cambrian: default system message -#}"
_SYSTEM_END = "{#- cambrian: end of default system message -#}"


def jinja_chat_template(template: Template, image_token: str = IMAGE_TOKEN) -> str:
    """The Jinja chat template that renders exactly what ``build_prompt(template, ...)`` renders, for
    tools that only know ``apply_chat_template`` (transformers, vLLM).

    Message content is a string or a list of ``{"type": "text", "text": ...}`` / ``{"type": "image"}``
    blocks; an image block renders as ``image_token + "\\n"``. A leading system message replaces
    ``template.system``; user and assistant turns must alternate, starting with the user.
    ``template`` must have a fixed format (not ``chat_template``, which defers to the tokenizer).
    """
    t = template
    user, assistant = t.roles
    if t.style is Style.LLAMA_3:
        begin = _lit(t.sep)
        system = '{%- if sys -%}{{ "<|start_header_id|>system<|end_header_id|>" ~ sys ~ "<|eot_id|>" }}{%- endif -%}'
        user_turn = '{{ "<|start_header_id|>user<|end_header_id|>" ~ text ~ "<|eot_id|>" }}'
        assistant_turn = '{{ "<|start_header_id|>assistant<|end_header_id|>" ~ text ~ "<|eot_id|>" }}'
        prompt = _lit("<|start_header_id|>assistant<|end_header_id|>")
        begin = "{{ " + begin + " }}"
    elif t.style is Style.TWO:
        begin = ""
        system = "{{ sys ~ " + _lit(t.sep) + " }}"
        user_turn = "{{ " + _lit(f"{user}: ") + " ~ text ~ " + _lit(t.sep) + " }}"
        assistant_turn = "{{ " + _lit(f"{assistant}: ") + " ~ text ~ " + _lit(t.sep2 or "") + " }}"
        prompt = _lit(f"{assistant}:")
    elif t.style in (Style.MPT, Style.PHI3):
        begin = ""
        system = "{%- if sys -%}{{ " + _lit(t.system_prefix) + " ~ sys ~ " + _lit(t.sep) + " }}{%- endif -%}"
        user_turn = "{{ " + _lit(user) + " ~ text ~ " + _lit(t.sep) + " }}"
        assistant_turn = "{{ " + _lit(assistant) + " ~ text ~ " + _lit(t.sep) + " }}"
        prompt = _lit(assistant)
    else:
        raise ValueError(f"template {t.name!r} has no fixed format; its Jinja template is the tokenizer's")
    return (
        "{%- macro cambrian_text(content) -%}{%- if content is string -%}{{ content }}{%- else -%}"
        "{%- for block in content -%}{%- if block['type'] == 'image' -%}{{ "
        + _lit(image_token + "\n")
        + " }}"
        "{%- elif block['type'] == 'text' -%}{{ block['text'] }}{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set sys = cambrian_text(messages[0]['content']) -%}{%- set turns = messages[1:] -%}"
        "{%- else -%}{%- set sys = "
        + _lit(t.system or "")
        + " -%}{%- set turns = messages -%}{%- endif -%}"
        + begin
        + system
        + "{%- for message in turns -%}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/... "
        "after an optional first system message') }}{%- endif -%}"
        "{%- set text = cambrian_text(message['content']) -%}"
        "{%- if message['role'] == 'user' -%}" + user_turn + "{%- else -%}" + assistant_turn + "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + prompt + " }}{%- endif -%}"
    )


def strip_default_system(chat_template: Any) -> Any:
    """``chat_template`` without the default-system block ``CambrianProcessor`` may have put in front."""
    if (
        isinstance(chat_template, str)
        and chat_template.startswith(_SYSTEM_BEGIN)
        and _SYSTEM_END in chat_template
    ):
        return chat_template.split(_SYSTEM_END, 1)[1]
    return chat_template


def _flatten_content(
    conversation: Sequence[Mapping[str, Any]], image_token: str
) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages with block content turned into text (an image block -> ``image_token + "\\n"``) and the
    images of the blocks, in order (PIL images, or paths / URLs as given)."""
    messages, images = [], []
    for msg in conversation:
        key = "content" if "content" in msg else "value"
        content = msg.get(key)
        if isinstance(content, (list, tuple)):
            parts = []
            for block in content:
                kind = block.get("type") if isinstance(block, Mapping) else None
                if kind == "image":
                    parts.append(image_token + "\n")
                    images.extend(block[k] for k in ("image", "url", "path") if k in block)
                elif kind == "image_url":  # OpenAI style
                    parts.append(image_token + "\n")
                    url = block.get("image_url")
                    images.append(url.get("url") if isinstance(url, Mapping) else url)
                elif kind == "text":
                    parts.append(block["text"])
                else:
                    raise ValueError(f"content block {block!r} is neither a text nor an image block")
            content = "".join(parts)
        messages.append({**{k: v for k, v in msg.items() if v is not None}, key: content})
    return messages, images


def _with_system(conversation: Any, system: str) -> Any:
    """``conversation`` (or each of a batch) with ``system`` as its system message."""
    if conversation and isinstance(conversation[0], (list, tuple)):
        return [_with_system(c, system) for c in conversation]
    rest = [m for m in conversation if m.get("role") != "system"]
    return [{"role": "system", "content": system}, *rest]


class CambrianChatMixin:
    """The prompt methods of ``CambrianProcessor`` (mixed in before ``ProcessorMixin``, whose
    ``apply_chat_template`` renders custom Jinja templates).

    The host class provides ``tokenizer``, ``image_token``, ``conv_mode``, ``system`` and ``__call__``
    (text + images -> batch), as ``CambrianProcessor`` does.
    """

    def template(self, name: str | None = None) -> Template:
        """The conversation template ``name`` (default: ``conv_mode``) with this processor's ``system`` as
        its default system text, so a row's own system turn or an explicit ``system=`` still wins."""
        tpl = get_template(name or self.conv_mode or "chat_template")
        return tpl if self.system is None else dataclasses.replace(tpl, system=self.system)

    def default_chat_template(self) -> str | dict[str, str] | None:
        """The Jinja form of ``template()``: what ``apply_chat_template`` renders, for tools that only
        read ``chat_template`` (saved as ``chat_template.jinja``). For ``conv_mode`` ``chat_template`` it
        is the tokenizer's own template, with ``system`` as the default system message when set."""
        tpl = self.template()
        if tpl.style is not Style.CHAT_TEMPLATE:
            return jinja_chat_template(tpl, self.image_token)
        base = getattr(self.tokenizer, "chat_template", None)
        if not self.system or not isinstance(base, str):
            return base
        message = "{'role': 'system', 'content': " + _lit(self.system) + "}"
        return (
            _SYSTEM_BEGIN + "{%- if not (messages and messages[0]['role'] == 'system') -%}"
            "{%- set messages = [" + message + "] + messages -%}{%- endif -%}" + _SYSTEM_END + base
        )

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        """The Jinja chat template: one set explicitly (constructor, attribute, or a hand-edited
        ``chat_template.jinja``), else ``default_chat_template()``."""
        own = self.__dict__.get("_chat_template")
        return own if own is not None else self.default_chat_template()

    @chat_template.setter
    def chat_template(self, value: str | dict[str, str] | None) -> None:
        self.__dict__["_chat_template"] = value

    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        chat_template: str | None = None,
        system: str | None = None,
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = "auto",
        processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        """Messages -> prompt string in this model's conversation template (``conv_mode``).

        transformers' signature, except that ``add_generation_prompt`` defaults to True (the prompt ends
        with the open assistant turn) and ``system=`` overrides the system text (a leading system message
        and this processor's ``system``). Messages are ``{"role", "content"}`` (content a string or
        text / image blocks, an image block rendering as ``"<image>\\n"``) or LLaVA ``{"from", "value"}``;
        a list of conversations gives a list of prompts. ``tokenize=True`` runs the processor on the
        prompts (images from the image blocks, ``processor_kwargs`` passed on) and returns ``input_ids``,
        or the whole batch with ``return_dict=True``.

        The built-in renderer (``cambrian.models.conversation.build_prompt``) is used unless a Jinja
        template is given (``chat_template=``, a custom ``self.chat_template``) or Jinja-only options are
        (``tools``, ``documents``, ``continue_final_message``, ...); the generated Jinja template renders
        the same strings. Either way ``tokenize=True`` tokenises like ``__call__`` (the original release's
        chunked tokenisation), not like the tokenizer on the whole string.
        """
        if kwargs.get("return_assistant_tokens_mask"):
            raise ValueError("return_assistant_tokens_mask is not supported by CambrianProcessor")
        jinja_only = {k: v for k, v in kwargs.items() if v not in (None, False)}
        use_jinja = chat_template is not None or self.__dict__.get("_chat_template") is not None or jinja_only
        batched = (
            isinstance(conversation, (list, tuple))
            and bool(conversation)
            and (isinstance(conversation[0], (list, tuple)))
        )
        conversations = list(conversation) if batched else [conversation]
        prompts, images = [], []
        for conv in conversations:
            messages, conv_images = _flatten_content(conv, self.image_token)
            if use_jinja:
                prompt = super().apply_chat_template(
                    conv if system is None else _with_system(conv, system),
                    chat_template=chat_template,
                    add_generation_prompt=add_generation_prompt,
                    **kwargs,
                )
            else:
                prompt = build_prompt(
                    self.template(),
                    messages,
                    system=system,
                    add_generation_prompt=add_generation_prompt,
                    tokenizer=self.tokenizer,
                )
            prompts.append(prompt)
            images.append(conv_images)
        if not tokenize:
            return prompts if batched else prompts[0]
        call_kwargs = dict(processor_kwargs or {})
        if return_tensors != "auto":
            call_kwargs["return_tensors"] = return_tensors
        call_kwargs.setdefault("images", images if any(images) else None)
        out = self(text=prompts, **call_kwargs)
        return out if return_dict else out["input_ids"]

    def stop_token_ids(self) -> list[int]:
        """Token ids that end an assistant turn in this template (``</s>``, ``<|eot_id|>``, ...) plus EOS:
        pass as ``generate(..., eos_token_id=...)`` so generation stops where training turns ended."""
        return stop_token_ids(self.conv_mode or "chat_template", self.tokenizer)

    def generate_replies(
        self,
        model,
        conversations: Sequence[list[dict[str, str]]],
        images=None,
        max_new_tokens: int = 128,
        **kwargs,
    ) -> list[str]:
        """The model's next assistant reply to each conversation (batched, left padding), stripped.

        Prompts go through this template, generation stops at the template's turn end
        (``stop_token_ids``); ``kwargs`` go to ``generate`` (greedy unless ``do_sample=True``).
        """
        texts = [self.apply_chat_template(list(c)) for c in conversations]
        inputs = self(text=texts, images=images or None, padding_side="left").to(model.device)
        kwargs.setdefault("do_sample", False)
        with torch.inference_mode():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, eos_token_id=self.stop_token_ids(),
                pad_token_id=self.tokenizer.pad_token_id, **kwargs,
            )  # fmt: skip
        new_tokens = out[:, inputs["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
        return [t.strip() for t in self.batch_decode(new_tokens, skip_special_tokens=True)]
