"""`CambrianProcessor`: text + images -> model inputs, shared by inference and training.

A Hugging Face ``ProcessorMixin`` with two parts, as transformers' LLaVA processors: the tokenizer and a
``CambrianImageProcessor`` (one ``ImagePreprocessor`` per tower), plus the conversation template. Each
``<image>`` in the text is expanded into that image's number of slots (which depends on the image's
aspect ratio after unpadding), so ``input_ids``, ``attention_mask`` and the logits line up position by
position. Tokenisation around images follows the original release (chunks tokenised separately; see
``cambrian.models.tokenization``) so prompts reproduce its token sequences exactly.

The call takes the standard text arguments (``padding``, ``truncation``, ``max_length``,
``pad_to_multiple_of``, ``padding_side``, ``return_attention_mask``, ``return_tensors``). Two defaults
differ from a plain HF processor, for the callers of this repository: ``padding`` is ``"longest"`` and
``return_tensors`` is ``"pt"``. Truncation never cuts an image: a text whose truncation would remove any
of an image's placeholder tokens raises ``ValueError`` (raise ``max_length`` or shorten the text), so the
placeholder count always matches ``pixel_values``.

``save_pretrained`` writes the HF layout (``processor_config.json`` with the image processor nested in
it, the tokenizer files, ``chat_template.jinja``) plus ``auto_map`` entries and the small
``*_cambrian.py`` files that let ``trust_remote_code`` loaders find the installed classes (see
``cambrian.models.auto``). ``from_pretrained`` also reads a model directory without processor files (from
its config), the released Cambrian-1 layout, and processors saved by earlier versions of this package.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import (
    ImagesKwargs,
    MultiModalData,
    ProcessingKwargs,
    ProcessorMixin,
    TextKwargs,
)

from cambrian.models.auto import IMAGE_PROCESSOR_AUTO_MAP, PROCESSOR_AUTO_MAP, write_remote_code_files
from cambrian.models.connector.geometry import image_token_counts
from cambrian.models.conversation import (
    TEMPLATES,
    Style,
    Template,
    build_prompt,
    build_prompt_segments,
    get_template,
    stop_token_ids,
)
from cambrian.models.tokenization import IGNORE_INDEX, tokenize_segments, tokenize_with_images
from cambrian.models.vision.base import ImagePreprocessor

PROCESSOR_FILE = "processor_config.json"
IMAGE_TOKEN = "<image>"


def add_image_token(tokenizer, image_token: str = IMAGE_TOKEN) -> int:
    """Make ``image_token`` a special token of ``tokenizer`` (if it is not already) and return its id."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [image_token]}, replace_extra_special_tokens=False
        )
    return tokenizer.convert_tokens_to_ids(image_token)


def load_tokenizer_with_image_token(path: str | Path, image_token: str = IMAGE_TOKEN):
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return tokenizer, add_image_token(tokenizer, image_token)


class CambrianBatch(BatchFeature):
    """A BatchFeature whose ``pixel_values`` is a list (one tensor per tower) that ``.to`` also moves."""

    def to(self, *args: Any, **kwargs: Any) -> CambrianBatch:
        pv = self.data.pop("pixel_values", None)
        super().to(*args, **kwargs)
        if pv is not None:
            device = kwargs.get("device", args[0] if args and not isinstance(args[0], torch.dtype) else None)
            dtype = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
            self.data["pixel_values"] = [p.to(device=device, dtype=dtype or p.dtype) for p in pv]
        return self


def flatten_images(images: Any) -> list[Image.Image]:
    """``images`` as one flat list: None, one image, a flat list over the batch, or one list per sample
    (a None entry stands for a sample without images). Anything but PIL images is a TypeError."""
    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    out: list[Image.Image] = []
    for item in images:
        if isinstance(item, Image.Image):
            out.append(item)
        elif item is None:
            continue
        elif isinstance(item, (list, tuple)):
            out.extend(item)
        else:
            out.append(item)
    bad = [type(x).__name__ for x in out if not isinstance(x, Image.Image)]
    if bad:
        raise TypeError(f"images must be PIL images (got {', '.join(sorted(set(bad)))})")
    return out


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------- image processor
_TOWER_FIELDS = ("image_size", "image_mean", "image_std", "pad_fill")
# Standard image kwargs that change nothing here (every image is converted to RGB anyway).
_NEUTRAL_IMAGE_KWARGS = {"do_convert_rgb": True}


class CambrianImageProcessor(BaseImageProcessor):
    """Every tower's image preprocessing as one Hugging Face image processor.

    ``towers`` holds one dict per vision tower (``image_size``, ``image_mean``, ``image_std``,
    ``pad_fill``); each image is padded to a square with the tower's fill colour, resized (bicubic) to
    its size and normalised, exactly as ``ImagePreprocessor``. Returns ``pixel_values`` (a list: one
    (B_img, 3, R_i, R_i) float32 tensor per tower) and ``image_sizes`` (B_img, 2) long as (w, h).
    The standard resize / crop / normalise kwargs are not supported (each tower fixes its own).
    """

    model_input_names = ["pixel_values", "image_sizes"]  # noqa: RUF012 (Hugging Face convention)

    def __init__(self, towers: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.towers = []
        for i, t in enumerate(towers or []):
            missing = [k for k in _TOWER_FIELDS if k not in t]
            if missing:
                raise ValueError(f"towers[{i}] lacks {', '.join(missing)}; each tower needs {_TOWER_FIELDS}")
            self.towers.append(
                {
                    "image_size": int(t["image_size"]),
                    "image_mean": [float(x) for x in t["image_mean"]],
                    "image_std": [float(x) for x in t["image_std"]],
                    "pad_fill": [int(x) for x in t["pad_fill"]],
                }
            )

    @classmethod
    def from_preprocessors(cls, preprocessors: Sequence[ImagePreprocessor]) -> CambrianImageProcessor:
        return cls([dataclasses.asdict(p) for p in preprocessors])

    @property
    def preprocessors(self) -> list[ImagePreprocessor]:
        """One ``ImagePreprocessor`` per tower, in tower order."""
        return [
            ImagePreprocessor(
                t["image_size"], tuple(t["image_mean"]), tuple(t["image_std"]), tuple(t["pad_fill"])
            )
            for t in self.towers
        ]

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        unsupported = sorted(
            k for k, v in kwargs.items() if v is not None and _NEUTRAL_IMAGE_KWARGS.get(k, object()) != v
        )
        if unsupported:
            raise ValueError(
                f"CambrianImageProcessor does not take {', '.join(unsupported)}: each tower fixes its own "
                "image size, padding and normalisation"
            )
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; valid: 'pt', 'np', None")
        flat = flatten_images(_load_strings(images))
        sizes = torch.tensor([im.size for im in flat], dtype=torch.long).reshape(-1, 2)  # (B_img, 2) (w, h)
        pixel_values = [
            torch.stack([p(im) for im in flat]) if flat else torch.zeros(0, 3, p.image_size, p.image_size)
            for p in self.preprocessors
        ]
        data: dict[str, Any] = {"pixel_values": pixel_values, "image_sizes": sizes}
        if return_tensors == "np":
            data = {k: _to_numpy(v) for k, v in data.items()}
        return BatchFeature(data=data)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["auto_map"] = {**(d.get("auto_map") or {}), **IMAGE_PROCESSOR_AUTO_MAP}
        return d


def _load_strings(images: Any) -> Any:
    """``images`` with every path or URL string replaced by its image (transformers' ``load_image``)."""
    if isinstance(images, str):
        from transformers.image_utils import load_image

        return load_image(images)
    if isinstance(images, (list, tuple)):
        return [_load_strings(x) for x in images]
    return images


# ---------------------------------------------------------------------------------------- chat template
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


def _strip_default_system(chat_template: Any) -> Any:
    """``chat_template`` without the default-system block ``CambrianProcessor`` may have put in front."""
    if (
        isinstance(chat_template, str)
        and chat_template.startswith(_SYSTEM_BEGIN)
        and _SYSTEM_END in chat_template
    ):
        return chat_template.split(_SYSTEM_END, 1)[1]
    return chat_template


# ---------------------------------------------------------------------------------------- processor
# Text kwargs the call implements; the other standard ones are refused when set (see ``_text_options``).
_TEXT_KWARGS = {
    "add_special_tokens", "padding", "truncation", "max_length", "pad_to_multiple_of", "padding_side",
    "return_attention_mask", "return_tensors", "verbose", "return_mm_token_type_ids",
}  # fmt: skip
_KNOWN_CALL_KWARGS = (
    set(TextKwargs.__annotations__)
    | set(ImagesKwargs.__annotations__)
    | set(ProcessingKwargs.__annotations__)
    | {"text_kwargs", "images_kwargs", "videos_kwargs", "audio_kwargs", "common_kwargs"}
)
_VERY_LARGE = 10**8  # tokenizers without a limit report model_max_length ~1e30


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)
    )


class CambrianProcessor(ProcessorMixin):
    """Tokenizer + per-tower image preprocessing + image-slot expansion + conversation template.

    Args:
        image_processor: a ``CambrianImageProcessor`` (or a list of ``ImagePreprocessor``, one per tower).
        tokenizer: the LLM's tokenizer; ``image_token`` is added to it as a special token if missing, and
            its pad token is set to EOS when it has none (padding positions are masked out).
        chat_template: a Jinja chat template overriding the one generated from ``conv_mode`` and
            ``system`` (``chat_template`` property); None: the generated one.
        image_token_len, unpad, image_newline: the model's image-slot geometry (``CambrianConfig``).
        conv_mode: conversation template id (``cambrian.models.conversation``).
        image_token: the image placeholder in the text.
        system: default system text of this model (None: the template's own). Saved with the processor,
            so training, chat and evaluation build the same prompts.
    """

    # Defaults of this repository's callers (a plain HF processor has padding=False, return_tensors=None).
    text_kwargs = {"padding": "longest", "return_tensors": "pt"}  # noqa: RUF012 (HF convention)

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_token_len: int = 576,
        unpad: bool = True,
        image_newline: bool = True,
        conv_mode: str | None = None,
        image_token: str = IMAGE_TOKEN,
        system: str | None = None,
    ):
        if image_processor is None or tokenizer is None:
            raise ValueError("CambrianProcessor needs an image_processor and a tokenizer")
        if isinstance(image_processor, (list, tuple)):
            image_processor = CambrianImageProcessor.from_preprocessors(image_processor)
        self.image_token_len = image_token_len
        self.side = round(image_token_len**0.5)
        self.unpad, self.image_newline = unpad, image_newline
        self.conv_mode = conv_mode
        self.image_token = image_token
        self.system = system
        self.image_token_id = add_image_token(tokenizer, image_token)
        if tokenizer.pad_token_id is None:
            # Padding positions are masked out; any id works, eos is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token
        # A saved processor's chat_template.jinja is also read back as the tokenizer's template: keep the
        # tokenizer's own (without our default-system block) so the two never stack.
        own = getattr(tokenizer, "chat_template", None)
        if _strip_default_system(own) is not own:
            tokenizer.chat_template = _strip_default_system(own)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        if chat_template is not None and (conv_mode is None or conv_mode in TEMPLATES):
            if chat_template == self.default_chat_template():
                # The generated one (e.g. read back from chat_template.jinja): drop it, so the template
                # keeps following ``system`` / ``conv_mode``; a different one stays an override.
                self.chat_template = None

    # ------------------------------------------------------------------ construction / persistence
    @classmethod
    def from_config(cls, config, tokenizer, **kwargs: Any) -> CambrianProcessor:
        """From a ``CambrianConfig`` and a tokenizer; sets ``config.image_token_id`` if unset."""
        proc = cls(
            CambrianImageProcessor.from_preprocessors(
                [ImagePreprocessor.from_tower_config(t) for t in config.tower_configs]
            ),
            tokenizer,
            image_token_len=config.image_token_len,
            unpad=config.unpad,
            image_newline=config.image_newline,
            conv_mode=config.conv_mode,
            image_token=config.image_token,
            **kwargs,
        )
        if config.image_token_id is None:
            config.image_token_id = proc.image_token_id
        elif config.image_token_id != proc.image_token_id:
            raise ValueError(
                f"the tokenizer gives {config.image_token!r} id {proc.image_token_id} but the model config "
                f"expects image_token_id {config.image_token_id}"
            )
        return proc

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs: Any) -> CambrianProcessor:
        """A saved processor (HF layout, or this package's earlier ``processor_config.json``), or a model
        directory without one (our format or the released Cambrian-1 layout), or a hub id.

        ``tower_paths`` ({released tower name: local dir}) only matters for the released layout.
        """
        # tower_paths is ours, not a tokenizer argument (it would end up in the tokenizer's init kwargs).
        tower_paths = kwargs.pop("tower_paths", None)
        name = str(pretrained_model_name_or_path)
        d = cls._saved_processor_dict(name, kwargs)
        if d is not None and "image_processor" in d:
            return super().from_pretrained(name, **kwargs)
        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k != "config"}
        tokenizer = AutoTokenizer.from_pretrained(name, **tokenizer_kwargs)
        if d is not None and "preprocessors" in d:  # saved by an earlier version of this package
            return cls(
                [
                    ImagePreprocessor(
                        p["image_size"], tuple(p["image_mean"]), tuple(p["image_std"]), tuple(p["pad_fill"])
                    )
                    for p in d["preprocessors"]
                ],
                tokenizer,
                image_token_len=d["image_token_len"],
                unpad=d["unpad"],
                image_newline=d["image_newline"],
                conv_mode=d.get("conv_mode"),
                image_token=d.get("image_token", IMAGE_TOKEN),
                system=d.get("system"),
            )
        from cambrian.models.configuration_cambrian import CambrianConfig
        from cambrian.models.released import config_from_released, is_released_checkpoint

        path = Path(name)
        if path.is_dir() and is_released_checkpoint(path):
            # Only the towers' preprocessing is needed: resolve them without loading weights. Released tower
            # names need no local copy for that (require_tower_weights=False; it used to raise without one).
            raw = json.loads((path / "config.json").read_text())
            config, _ = config_from_released(
                raw, path, tower_paths, allow_download=False, require_tower_weights=False
            )
            config.image_token_id = None
        else:
            config = kwargs.get("config")
            if not isinstance(config, CambrianConfig):
                config = CambrianConfig.from_pretrained(name, **tokenizer_kwargs)
        return cls.from_config(config, tokenizer)

    @staticmethod
    def _saved_processor_dict(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        """``processor_config.json`` of a directory or hub id, None when there is none."""
        path = Path(name)
        if path.is_dir():
            file = path / kwargs.get("subfolder", "") / PROCESSOR_FILE
            return json.loads(file.read_text()) if file.is_file() else None
        from transformers.utils import cached_file

        hub = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
        file = cached_file(
            name,
            PROCESSOR_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **{k: kwargs[k] for k in hub if k in kwargs},
        )
        return json.loads(Path(file).read_text()) if file else None

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """The HF processor layout plus the ``auto_map`` files (``cambrian.models.auto``)."""
        write_remote_code_files(save_directory)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["auto_map"] = {**(d.get("auto_map") or {}), **PROCESSOR_AUTO_MAP}
        return d

    @property
    def preprocessors(self) -> list[ImagePreprocessor]:
        """One ``ImagePreprocessor`` per tower (the image processor's)."""
        return self.image_processor.preprocessors

    # ------------------------------------------------------------------ prompts
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

    def num_image_tokens(self, image_sizes: torch.Tensor) -> torch.Tensor:
        """(B_img,) slots each image occupies; ``image_sizes`` (B_img, 2) as (w, h)."""
        return image_token_counts(image_sizes, self.side, self.unpad, self.image_newline)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs: Any) -> MultiModalData:
        """Placeholder tokens per image for ``image_sizes`` given as (height, width) pairs (the HF/vLLM
        convention; ``num_image_tokens`` takes (w, h))."""
        if image_sizes is None:
            return MultiModalData()
        hw = torch.as_tensor(image_sizes, dtype=torch.long).reshape(-1, 2)
        counts = self.num_image_tokens(hw.flip(-1)).tolist() if hw.numel() else []
        return MultiModalData(num_image_tokens=counts, num_image_patches=[1] * len(counts))

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Image.Image | Sequence[Image.Image] | Sequence[Sequence[Image.Image]] | None = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs: Any,
    ) -> CambrianBatch:
        """Tokenise ``text`` (one string per sample) with its images, in order of their ``<image>`` tags.

        ``images`` is a flat list over the whole batch, or one list per sample (PIL images; strings are
        loaded as paths / URLs). ``text`` and ``images`` may also come positionally in transformers'
        (images, text) order. Returns ``input_ids``, ``attention_mask`` (B, T), ``pixel_values`` (a list:
        one (B_img, 3, R_i, R_i) tensor per tower) and ``image_sizes`` (B_img, 2) as (w, h).

        Text options (top level or in ``text_kwargs``): ``padding`` (``"longest"``/True, the default;
        ``"max_length"``; False), ``max_length``, ``pad_to_multiple_of``, ``padding_side`` (default: the
        tokenizer's), ``truncation`` (True cuts each text to ``max_length`` on the tokenizer's
        ``truncation_side``; cutting into any image's placeholder tokens raises ValueError),
        ``return_attention_mask``, ``add_special_tokens`` (False: no BOS/EOS of the tokenizer's own),
        ``return_tensors`` (``"pt"``, the default; ``"np"``; None for lists), ``return_mm_token_type_ids``.
        """
        if videos is not None or audio is not None:
            raise ValueError("CambrianProcessor takes text and images only (no videos or audio)")
        if text is not None and _is_text(images) and not _is_text(text):
            text, images = images, text  # given positionally in transformers' order: (images, text)
        unknown = sorted(set(kwargs) - _KNOWN_CALL_KWARGS)
        if unknown:
            raise TypeError(f"CambrianProcessor got unexpected keyword arguments: {', '.join(unknown)}")
        merged = self._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        images_kwargs.pop("return_tensors", None)
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; valid: 'pt', 'np', None")
        images = _load_strings(images)
        if text is None:
            if images is None:
                raise ValueError("pass text (one <image> per image in it), images, or both")
            return CambrianBatch(
                data=self.image_processor(images, return_tensors=return_tensors, **images_kwargs).data
            )
        if not _is_text(text):
            raise TypeError("text must be a string or a non-empty list of strings")
        texts = [text] if isinstance(text, str) else list(text)
        flat = flatten_images(images)
        counts = [t.count(self.image_token) for t in texts]
        if sum(counts) != len(flat):
            raise ValueError(
                f"the text has {sum(counts)} {self.image_token} placeholders (per sample: {counts}) "
                f"but {len(flat)} images were given; put one {self.image_token} in the text per image"
            )
        opts = self._text_options(text_kwargs)
        return_mm = text_kwargs.pop("return_mm_token_type_ids", None) or merged.get(
            "return_mm_token_type_ids"
        )
        sizes = torch.tensor([im.size for im in flat], dtype=torch.long).reshape(-1, 2)
        slots = self.num_image_tokens(sizes).tolist() if flat else []
        ids, start = [], 0
        for i, (t, n) in enumerate(zip(texts, counts)):
            row = self._tokenize(t, slots[start : start + n], opts["add_special_tokens"])
            if opts["max_length"] is not None and opts["truncate"] and len(row) > opts["max_length"]:
                row = self._truncate(row, opts["max_length"], i, slots[start : start + n])
            ids.append(row)
            start += n
        data = self._pad(ids, opts, return_tensors)
        if return_mm:
            data["mm_token_type_ids"] = [
                [int(x == self.image_token_id) for x in row] for row in data["input_ids"]
            ]
            if return_tensors is not None:
                data["mm_token_type_ids"] = _as_tensor(
                    data["mm_token_type_ids"], return_tensors, "mm_token_type_ids"
                )
        if return_tensors is not None:
            for key in ("input_ids", "attention_mask"):
                if key in data:
                    data[key] = _as_tensor(data[key], return_tensors, key)
        if flat:
            data.update(
                self.image_processor(flat, return_tensors=return_tensors or "pt", **images_kwargs).data
            )
        return CambrianBatch(data=data)

    def _text_options(self, text_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's text options, resolved against the tokenizer (padding side, model_max_length)."""
        refused = sorted(
            k for k, v in text_kwargs.items() if k not in _TEXT_KWARGS and v not in (None, False)
        )
        if refused:
            raise ValueError(f"CambrianProcessor does not support {', '.join(refused)}")
        padding = text_kwargs.get("padding", "longest")
        padding = getattr(padding, "value", padding)
        if padding is True:
            padding = "longest"
        elif padding in (False, None):
            padding = "do_not_pad"
        if padding not in ("longest", "max_length", "do_not_pad"):
            raise ValueError(
                f"padding={padding!r} is not one of True, False, 'longest', 'max_length', 'do_not_pad'"
            )
        truncation = text_kwargs.get("truncation")
        truncation = getattr(truncation, "value", truncation)
        if truncation == "only_second":
            raise ValueError(
                "truncation='only_second' needs text pairs, which CambrianProcessor does not take"
            )
        truncate = truncation not in (None, False, "do_not_truncate")
        max_length = text_kwargs.get("max_length")
        if max_length is None and (truncate or padding == "max_length"):
            limit = getattr(self.tokenizer, "model_max_length", None)
            max_length = limit if isinstance(limit, int) and limit < _VERY_LARGE else None
            if max_length is None and padding == "max_length":
                raise ValueError("padding='max_length' needs max_length (the tokenizer sets no limit)")
        side = text_kwargs.get("padding_side") or self.tokenizer.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side {side!r} is not one of 'left', 'right'")
        return {
            "padding": padding,
            "truncate": truncate,
            "max_length": max_length,
            "pad_to_multiple_of": text_kwargs.get("pad_to_multiple_of"),
            "padding_side": side,
            "return_attention_mask": text_kwargs.get("return_attention_mask", True) is not False,
            "add_special_tokens": text_kwargs.get("add_special_tokens"),
        }

    def _tokenize(self, text: str, num_slots: list[int], add_special_tokens: bool | None) -> list[int]:
        if add_special_tokens is False:  # plain chunks, joined; no BOS rule (there is no BOS to move)
            chunks = text.split(self.image_token)
            out: list[int] = []
            for k, chunk in enumerate(chunks):
                if k:
                    out.extend([self.image_token_id] * num_slots[k - 1])
                out.extend(self.tokenizer(chunk, add_special_tokens=False).input_ids)
            return out
        return tokenize_with_images(
            self.tokenizer,
            text,
            image_token=self.image_token,
            image_token_id=self.image_token_id,
            num_slots=num_slots,
        )

    def _truncate(self, row: list[int], max_length: int, i: int, num_slots: list[int]) -> list[int]:
        """``row`` cut to ``max_length`` on the tokenizer's truncation side; ValueError if that would cut
        any image placeholder (the image's pixels would no longer match its slots)."""
        left = getattr(self.tokenizer, "truncation_side", "right") == "left"
        kept, cut = (row[-max_length:], row[:-max_length]) if left else (row[:max_length], row[max_length:])
        n_cut = sum(1 for x in cut if x == self.image_token_id)
        if n_cut:
            if left:
                k = 0  # left truncation cuts the earliest slots first: those of the text's first image
            else:
                n_kept = sum(1 for x in kept if x == self.image_token_id)
                k = int(np.searchsorted(np.cumsum(num_slots), n_kept, side="right"))
            raise ValueError(
                f"text {i}: truncating its {len(row)} tokens to max_length {max_length} "
                f"({'left' if left else 'right'} side) would cut image {k} of that text (counting from 0; "
                f"{num_slots[k]} placeholder tokens); images are never truncated: raise max_length or "
                "shorten the text"
            )
        return kept

    def _pad(
        self, ids: list[list[int]], opts: Mapping[str, Any], return_tensors: str | None
    ) -> dict[str, Any]:
        lengths = [len(x) for x in ids]
        target = None
        if opts["padding"] == "longest":
            target = max(lengths)
        elif opts["padding"] == "max_length":
            target = opts["max_length"]
        if target is not None and opts["pad_to_multiple_of"]:
            m = opts["pad_to_multiple_of"]
            target = -(-target // m) * m
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask = [], []
        for x in ids:
            n = max(0, (target or 0) - len(x))
            if opts["padding_side"] == "left":
                input_ids.append([pad_id] * n + x)
                attention_mask.append([0] * n + [1] * len(x))
            else:
                input_ids.append(x + [pad_id] * n)
                attention_mask.append([1] * len(x) + [0] * n)
        data: dict[str, Any] = {"input_ids": input_ids}
        if opts["return_attention_mask"]:
            data["attention_mask"] = attention_mask
        return data

    def training_example(
        self,
        conversations: Sequence[Mapping[str, Any]],
        images: Sequence[Image.Image] = (),
        system: str | None = None,
        template: str | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """One conversation -> the tensors a training step needs (the training twin of ``__call__``).

        Args:
            conversations: LLaVA turns (``{"from": "human" | "gpt" | "system", "value": ...}``) or
                ``{"role", "content"}`` messages; a leading system turn is the system prompt.
            images: PIL images in the order of the ``<image>`` placeholders in the conversation.
            system: system text overriding the template default and a leading system turn.
            template: conversation template id; defaults to this processor's ``conv_mode``.
            max_length: longest allowed example; longer ones are cut from the end, unless that would cut
                an image's slots (ValueError). A result with no supervised token is a ValueError too.

        Returns ``input_ids`` and ``labels`` (T,) long, labels ``IGNORE_INDEX`` (-100) everywhere but on
        the assistant replies and the strings that close them; with images also ``pixel_values`` (a list:
        one (n_img, 3, R_i, R_i) float tensor per tower) and ``image_sizes`` (n_img, 2) long as (w, h).
        Images are expanded into ``num_image_tokens`` slots exactly as at inference.
        """
        template = template or self.conv_mode
        if template is None:
            raise ValueError("no conversation template: pass template= or build the processor with conv_mode")
        images = list(images)
        bad = [type(x).__name__ for x in images if not isinstance(x, Image.Image)]
        if bad:
            raise TypeError(f"images must be PIL images (got {', '.join(sorted(set(bad)))})")
        segments = build_prompt_segments(
            self.template(template), conversations, system=system, tokenizer=self.tokenizer
        )
        n_placeholders = sum(text.count(self.image_token) for text, _ in segments)
        if n_placeholders != len(images):
            raise ValueError(
                f"the conversation has {n_placeholders} {self.image_token} placeholder(s) but "
                f"{len(images)} image(s) were given; put one {self.image_token} in the text per image"
            )
        sizes = torch.tensor([im.size for im in images], dtype=torch.long).reshape(-1, 2)  # (n_img, 2) (w, h)
        slots = self.num_image_tokens(sizes).tolist() if images else []
        ids, labs = tokenize_segments(
            self.tokenizer,
            segments,
            image_token=self.image_token,
            image_token_id=self.image_token_id,
            num_slots=slots,
        )
        input_ids = torch.tensor(ids, dtype=torch.long)  # (T,)
        labels = torch.tensor(labs, dtype=torch.long)  # (T,)
        if max_length is not None and len(input_ids) > max_length:
            cut = input_ids[max_length:] == self.image_token_id
            if cut.any():
                # Slots kept before the cut -> index of the first image whose slots do not all fit.
                kept = int((input_ids[:max_length] == self.image_token_id).sum())
                k = int(torch.searchsorted(torch.tensor(slots).cumsum(0), kept, right=True))
                raise ValueError(
                    f"{len(input_ids)} tokens > max_length {max_length} and truncation would cut image {k} "
                    f"(of {len(images)}, counting from 0)"
                )
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            if not (labels[1:] != IGNORE_INDEX).any():
                raise ValueError(
                    f"truncating to max_length {max_length} leaves no supervised (assistant) token"
                )
        elif not (labels[1:] != IGNORE_INDEX).any():
            # Position 0 is never predicted (causal LMs shift labels), so it cannot carry the loss either.
            raise ValueError("the conversation has no supervised token: it needs an assistant reply")
        out: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
        if images:
            out["pixel_values"] = [torch.stack([p(im) for im in images]) for p in self.preprocessors]
            out["image_sizes"] = sizes
        return out

    @staticmethod
    def _flatten_images(images, batch: int | None = None) -> list[Image.Image]:
        return flatten_images(images)


def _as_tensor(rows: list[list[int]], return_tensors: str, key: str):
    if len({len(r) for r in rows}) > 1:
        raise ValueError(
            f"the texts tokenise to different lengths ({sorted({len(r) for r in rows})}), so {key} cannot be "
            "one tensor: pass padding=True (or padding='max_length') or return_tensors=None for lists"
        )
    arr = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)
    return torch.from_numpy(arr) if return_tensors == "pt" else arr


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


def _register_auto() -> None:
    from cambrian.models.auto import register_auto_classes

    register_auto_classes()


_register_auto()
