"""`CambrianProcessor`: text + images -> model inputs, shared by inference and training.

A Hugging Face ``ProcessorMixin`` with two parts, as transformers' LLaVA processors: the tokenizer and a
``CambrianImageProcessor`` (``cambrian.models.image_processing_cambrian``: one ``ImagePreprocessor`` per
tower), plus the conversation template (``cambrian.models.chat_template``). Each ``<image>`` in the text is
expanded into that image's number of slots (which depends on the image's aspect ratio after unpadding), so
``input_ids``, ``attention_mask`` and the logits line up position by position. Tokenisation around images
follows the original release (chunks tokenised separately; see ``cambrian.models.tokenization``) so prompts
reproduce its token sequences exactly.

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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature
from transformers.processing_utils import (
    ImagesKwargs,
    MultiModalData,
    ProcessingKwargs,
    ProcessorMixin,
    TextKwargs,
)

from cambrian.models.auto import PROCESSOR_AUTO_MAP, register_auto_classes, write_remote_code_files
from cambrian.models.chat_template import CambrianChatMixin, strip_default_system
from cambrian.models.configuration_cambrian import CambrianConfig
from cambrian.models.connector.geometry import image_token_counts
from cambrian.models.conversation import TEMPLATES, build_prompt_segments
from cambrian.models.image_processing_cambrian import CambrianImageProcessor, flatten_images, load_images
from cambrian.models.tokenization import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    add_image_token,
    pad_ids,
    text_options,
    tokenize_segments,
    tokenize_with_images,
    truncate_ids,
)
from cambrian.models.vision.base import ImagePreprocessor

PROCESSOR_FILE = "processor_config.json"


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


_KNOWN_CALL_KWARGS = (
    set(TextKwargs.__annotations__)
    | set(ImagesKwargs.__annotations__)
    | set(ProcessingKwargs.__annotations__)
    | {"text_kwargs", "images_kwargs", "videos_kwargs", "audio_kwargs", "common_kwargs"}
)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value)
    )


class CambrianProcessor(CambrianChatMixin, ProcessorMixin):
    """Tokenizer + per-tower image preprocessing + image-slot expansion + conversation template.

    The prompt methods (``template``, ``chat_template``, ``apply_chat_template``, ``stop_token_ids``,
    ``generate_replies``) come from ``CambrianChatMixin`` (``cambrian.models.chat_template``).

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
        if strip_default_system(own) is not own:
            tokenizer.chat_template = strip_default_system(own)
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
        # Imported here, not at the top: released imports configuration_cambrian, whose import registers
        # the Auto classes and so imports this module, which would find released half imported when
        # released is imported first. (released itself never imports this module.)
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
        images = load_images(images)
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
        opts = text_options(self.tokenizer, text_kwargs)
        return_mm = text_kwargs.pop("return_mm_token_type_ids", None) or merged.get(
            "return_mm_token_type_ids"
        )
        sizes = torch.tensor([im.size for im in flat], dtype=torch.long).reshape(-1, 2)
        slots = self.num_image_tokens(sizes).tolist() if flat else []
        ids, start = [], 0
        for i, (t, n) in enumerate(zip(texts, counts)):
            row = self._tokenize(t, slots[start : start + n], opts["add_special_tokens"])
            if opts["max_length"] is not None and opts["truncate"] and len(row) > opts["max_length"]:
                row = truncate_ids(
                    row,
                    opts["max_length"],
                    image_token_id=self.image_token_id,
                    num_slots=slots[start : start + n],
                    side=getattr(self.tokenizer, "truncation_side", "right"),
                    text_index=i,
                )
            ids.append(row)
            start += n
        data: dict[str, Any] = pad_ids(
            ids,
            pad_token_id=self.tokenizer.pad_token_id,
            padding=opts["padding"],
            max_length=opts["max_length"],
            pad_to_multiple_of=opts["pad_to_multiple_of"],
            padding_side=opts["padding_side"],
            return_attention_mask=opts["return_attention_mask"],
        )
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


def _as_tensor(rows: list[list[int]], return_tensors: str, key: str):
    if len({len(r) for r in rows}) > 1:
        raise ValueError(
            f"the texts tokenise to different lengths ({sorted({len(r) for r in rows})}), so {key} cannot be "
            "one tensor: pass padding=True (or padding='max_length') or return_tensors=None for lists"
        )
    arr = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)
    return torch.from_numpy(arr) if return_tensors == "pt" else arr


register_auto_classes()  # last: the classes above must exist (see ``cambrian.models.auto``)
