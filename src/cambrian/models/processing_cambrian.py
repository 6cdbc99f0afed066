"""`CambrianProcessor`: text + images -> model inputs, shared by inference and training.

It owns the tokenizer, one ``ImagePreprocessor`` per tower and the conversation template. Each
``<image>`` in the text is expanded into that image's number of slots (which depends on the image's
aspect ratio after unpadding), so ``input_ids``, ``attention_mask`` and the logits line up position by
position, as in transformers' LLaVA processors. Tokenisation around images follows the original
release (chunks tokenised separately; see ``cambrian.data.tokenization``) so prompts reproduce its
token sequences exactly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoTokenizer, BatchFeature

from cambrian.data.conversation import (
    Template,
    build_prompt,
    build_prompt_segments,
    get_template,
    stop_token_ids,
)
from cambrian.data.tokenization import IGNORE_INDEX, tokenize_segments, tokenize_with_images
from cambrian.models.connector.geometry import image_token_counts
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


class CambrianProcessor:
    """Tokenizer + per-tower image preprocessing + image-slot expansion + conversation template."""

    def __init__(
        self,
        tokenizer,
        preprocessors: Sequence[ImagePreprocessor],
        image_token_len: int,
        unpad: bool = True,
        image_newline: bool = True,
        conv_mode: str | None = None,
        image_token: str = IMAGE_TOKEN,
        system: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.preprocessors = list(preprocessors)
        self.image_token_len = image_token_len
        self.side = round(image_token_len**0.5)
        self.unpad, self.image_newline = unpad, image_newline
        self.conv_mode = conv_mode
        self.image_token = image_token
        # Default system text of this model (None: the template's own). Saved with the processor, so
        # training, chat and evaluation build the same prompts.
        self.system = system
        self.image_token_id = add_image_token(tokenizer, image_token)
        if tokenizer.pad_token_id is None:
            # Padding positions are masked out; any id works, eos is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------ construction / persistence
    @classmethod
    def from_config(cls, config, tokenizer) -> CambrianProcessor:
        """From a ``CambrianConfig`` and a tokenizer; sets ``config.image_token_id`` if unset."""
        proc = cls(
            tokenizer,
            [ImagePreprocessor.from_tower_config(t) for t in config.tower_configs],
            config.image_token_len,
            unpad=config.unpad,
            image_newline=config.image_newline,
            conv_mode=config.conv_mode,
            image_token=config.image_token,
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
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> CambrianProcessor:
        """Our saved processor, or a model directory (our format or the released Cambrian-1 layout)."""
        path = Path(path)
        # tower_paths is ours, not a tokenizer argument (it would end up in the tokenizer's init kwargs).
        tower_paths = kwargs.pop("tower_paths", None)
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        if (path / PROCESSOR_FILE).is_file():
            d = json.loads((path / PROCESSOR_FILE).read_text())
            return cls(
                tokenizer,
                [
                    ImagePreprocessor(
                        p["image_size"], tuple(p["image_mean"]), tuple(p["image_std"]), tuple(p["pad_fill"])
                    )
                    for p in d["preprocessors"]
                ],
                d["image_token_len"],
                unpad=d["unpad"],
                image_newline=d["image_newline"],
                conv_mode=d.get("conv_mode"),
                image_token=d.get("image_token", IMAGE_TOKEN),
                system=d.get("system"),
            )
        from cambrian.models.configuration_cambrian import CambrianConfig
        from cambrian.models.released import config_from_released, is_released_checkpoint

        if is_released_checkpoint(path):
            # Only the towers' preprocessing is needed: resolve them without loading weights. Released tower
            # names need no local copy for that (require_tower_weights=False; it used to raise without one).
            raw = json.loads((path / "config.json").read_text())
            config, _ = config_from_released(
                raw, path, tower_paths, allow_download=False, require_tower_weights=False
            )
            config.image_token_id = None
        else:
            config = CambrianConfig.from_pretrained(str(path))
        return cls.from_config(config, tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(path))
        d = {
            "processor_class": type(self).__name__,
            "preprocessors": [p.__dict__ for p in self.preprocessors],
            "image_token_len": self.image_token_len,
            "unpad": self.unpad,
            "image_newline": self.image_newline,
            "conv_mode": self.conv_mode,
            "image_token": self.image_token,
            "system": self.system,
        }
        (path / PROCESSOR_FILE).write_text(json.dumps(d, indent=2))

    # ------------------------------------------------------------------ prompts
    def template(self, name: str | None = None) -> Template:
        """The conversation template ``name`` (default: ``conv_mode``) with this processor's ``system`` as
        its default system text, so a row's own system turn or an explicit ``system=`` still wins."""
        tpl = get_template(name or self.conv_mode or "chat_template")
        return tpl if self.system is None else dataclasses.replace(tpl, system=self.system)

    def apply_chat_template(
        self, messages: list[dict[str, str]], system: str | None = None, add_generation_prompt: bool = True
    ) -> str:
        """Messages -> prompt string in this model's conversation template (``conv_mode``)."""
        return build_prompt(
            self.template(),
            messages,
            system=system,
            add_generation_prompt=add_generation_prompt,
            tokenizer=self.tokenizer,
        )

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

    # ------------------------------------------------------------------ main entry
    def __call__(
        self,
        text: str | list[str],
        images: Image.Image | Sequence[Image.Image] | Sequence[Sequence[Image.Image]] | None = None,
        return_tensors: str = "pt",
        padding_side: str | None = None,
    ) -> CambrianBatch:
        """Tokenise ``text`` (one string per sample) with its images, in order of their ``<image>`` tags.

        ``images`` is a flat list over the whole batch, or one list per sample. Returns ``input_ids``,
        ``attention_mask`` (B, T), ``pixel_values`` (a list: one (B_img, 3, R_i, R_i) tensor per tower)
        and ``image_sizes`` (B_img, 2) as (w, h).
        """
        if return_tensors != "pt":
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; valid: 'pt'")
        texts = [text] if isinstance(text, str) else list(text)
        flat = self._flatten_images(images, len(texts))
        counts = [t.count(self.image_token) for t in texts]
        if sum(counts) != len(flat):
            raise ValueError(
                f"the text has {sum(counts)} {self.image_token} placeholders (per sample: {counts}) "
                f"but {len(flat)} images were given; put one {self.image_token} in the text per image"
            )
        sizes = torch.tensor([im.size for im in flat], dtype=torch.long).reshape(-1, 2)
        slots = self.num_image_tokens(sizes).tolist() if flat else []
        ids, start = [], 0
        for t, n in zip(texts, counts):
            ids.append(
                tokenize_with_images(
                    self.tokenizer,
                    t,
                    image_token=self.image_token,
                    image_token_id=self.image_token_id,
                    num_slots=slots[start : start + n],
                )
            )
            start += n
        side = padding_side or self.tokenizer.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side {side!r} is not one of 'left', 'right'")
        longest = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), longest), dtype=torch.long)
        for i, x in enumerate(ids):  # per-sample copy into the padded batch (data prep, not a hot path)
            sl = slice(longest - len(x), longest) if side == "left" else slice(0, len(x))
            input_ids[i, sl] = torch.tensor(x, dtype=torch.long)
            attention_mask[i, sl] = 1
        data: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if flat:
            data["pixel_values"] = [torch.stack([p(im) for im in flat]) for p in self.preprocessors]
            data["image_sizes"] = sizes
        return CambrianBatch(data=data)

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
    def _flatten_images(images, batch: int) -> list[Image.Image]:
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
            else:
                out.extend(item)
        bad = [type(x).__name__ for x in out if not isinstance(x, Image.Image)]
        if bad:
            raise TypeError(f"images must be PIL images (got {', '.join(sorted(set(bad)))})")
        return out

    # ------------------------------------------------------------------ decoding
    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)
