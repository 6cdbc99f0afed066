"""Tokenise prompts that contain ``<image>`` placeholders, for inference and for training.

The prompt text is split on the image placeholder and each text chunk is tokenised on its own; between
chunks we insert ``image_token_id`` once per image slot (``num_slots[k]`` for the k-th image), so the
model can later find every slot with ``input_ids == image_token_id`` instead of a fixed position.

``tokenize_with_images`` reproduces the upstream inference tokenisation (docs/checkpoint-format.md §4.3)
including its BOS rule: when the first chunk starts with BOS, every chunk loses its first token. For
Llama-3, whose tokenizer does not add BOS but whose prompt carries a literal ``<|begin_of_text|>``, that
deletes the ``"\\n"`` after ``<image>`` (§6 item 7); we keep the quirk because the released 8B model was
evaluated that way.

``tokenize_segments`` is the training variant: it tokenises ``(text, learn)`` segments from
``cambrian.models.conversation.build_prompt_segments`` piece by piece, without the BOS rule (upstream
training kept the ``"\\n"``), and returns labels that are ``ignore_index`` everywhere except on learned
text.

``text_options``, ``truncate_ids`` and ``pad_ids`` are the text side of a ``CambrianProcessor`` call: they
resolve its padding / truncation kwargs and turn the per-text id lists into one batch. Truncation that
would cut into an image's slots is refused (the image's pixels would no longer match its slots).

``add_image_token`` / ``load_tokenizer_with_image_token`` make the placeholder a special token of the LLM's
tokenizer. They live here, below the processor and the released-checkpoint loader, so that both import
them at module level without importing each other; transformers is imported only when a tokenizer is
loaded, so the data commands that import this module for ``IMAGE_TOKEN`` stay light.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # upstream id for "an image goes here"; any real placeholder id works too
IGNORE_INDEX = -100


def add_image_token(tokenizer: Any, image_token: str = IMAGE_TOKEN) -> int:
    """Make ``image_token`` a special token of ``tokenizer`` (if it is not already) and return its id."""
    if image_token not in tokenizer.get_vocab():
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [image_token]}, replace_extra_special_tokens=False
        )
    return tokenizer.convert_tokens_to_ids(image_token)


def load_tokenizer_with_image_token(path: str | Path, image_token: str = IMAGE_TOKEN) -> tuple[Any, int]:
    """``(tokenizer, image_token_id)``: ``AutoTokenizer.from_pretrained(path)`` with ``image_token`` added."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return tokenizer, add_image_token(tokenizer, image_token)


def _resolve_slots(num_images: int, num_slots: Sequence[int] | None, image_token: str) -> list[int]:
    if num_slots is None:
        return [1] * num_images
    slots = list(num_slots)
    if len(slots) != num_images:
        raise ValueError(
            f"the prompt contains {num_images} {image_token!r} placeholder(s) but num_slots has "
            f"{len(slots)} entr{'y' if len(slots) == 1 else 'ies'}; they must match"
        )
    for k, n in enumerate(slots):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"num_slots[{k}] must be a positive int, got {n!r}")
    return slots


def _ids(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)


def tokenize_with_images(
    tokenizer: Any,
    prompt: str,
    *,
    image_token: str = IMAGE_TOKEN,
    image_token_id: int = IMAGE_TOKEN_INDEX,
    num_slots: Sequence[int] | None = None,
) -> list[int]:
    """Token ids of ``prompt`` with each ``image_token`` replaced by ``num_slots[k]`` copies of ``image_token_id``.

    Every chunk between placeholders is tokenised with the tokenizer's default special-token handling
    (``tokenizer(chunk).input_ids``). If the first chunk starts with the BOS id, the result is
    ``[BOS]`` followed by every chunk minus its first token (upstream §4.3); otherwise the chunks are
    joined unchanged. ``num_slots=None`` means one slot per image (the upstream single ``-200``).

    Raises:
        ValueError: the number of placeholders differs from ``len(num_slots)``.
    """
    chunks = prompt.split(image_token)
    slots = _resolve_slots(len(chunks) - 1, num_slots, image_token)
    chunk_ids = [_ids(tokenizer, chunk) for chunk in chunks]
    bos = tokenizer.bos_token_id
    strip = bos is not None and chunk_ids[0][:1] == [bos]
    out = [bos] if strip else []
    for k, ids in enumerate(chunk_ids):
        if k > 0:
            out.extend([image_token_id] * slots[k - 1])
        out.extend(ids[1:] if strip else ids)  # an empty chunk stays empty either way
    return out


def auto_prefix_ids(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts in front of any text by itself (e.g. ``[BOS]``), often []."""
    probe = "a"
    with_special = _ids(tokenizer, probe, add_special_tokens=True)
    without = _ids(tokenizer, probe, add_special_tokens=False)
    if without and len(with_special) >= len(without):
        for start in range(len(with_special) - len(without) + 1):
            if with_special[start : start + len(without)] == without:
                return with_special[:start]
    return []


def tokenize_segments(
    tokenizer: Any,
    segments: Sequence[tuple[str, bool]],
    *,
    image_token: str = IMAGE_TOKEN,
    image_token_id: int = IMAGE_TOKEN_INDEX,
    num_slots: Sequence[int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for a training example given as ``(text, learn)`` segments.

    Each segment (and each piece of it between image placeholders) is tokenised on its own without
    special-token insertion; whatever the tokenizer would put in front of a whole text by itself (an
    auto-added BOS) is prepended once. Special tokens written in the text (``<|begin_of_text|>``,
    ``<|eot_id|>``, ...) are recognised as usual. Image slots are expanded as in ``tokenize_with_images``
    but the BOS rule is *not* applied, matching upstream training. ``labels`` equal ``input_ids`` on
    tokens of segments flagged True and ``ignore_index`` elsewhere (image slots included).

    Piece-by-piece tokenisation equals whole-string tokenisation when pieces meet at special tokens or
    before a space-led word, which is how ``build_prompt_segments`` cuts the built-in templates for
    byte-level BPE tokenizers.
    """
    pieces = [
        (part, learn, k > 0) for text, learn in segments for k, part in enumerate(text.split(image_token))
    ]
    slots = _resolve_slots(sum(after_image for _, _, after_image in pieces), num_slots, image_token)
    input_ids = auto_prefix_ids(tokenizer)
    labels = [ignore_index] * len(input_ids)
    image = 0
    for part, learn, after_image in pieces:
        if after_image:
            input_ids.extend([image_token_id] * slots[image])
            labels.extend([ignore_index] * slots[image])
            image += 1
        ids = _ids(tokenizer, part, add_special_tokens=False) if part else []
        input_ids.extend(ids)
        labels.extend(ids if learn else [ignore_index] * len(ids))
    return input_ids, labels


# The text kwargs of a processor call that ``text_options`` implements; the other standard ones
# (``return_offsets_mapping``, ``stride``, ...) are refused when set.
TEXT_KWARGS = {
    "add_special_tokens", "padding", "truncation", "max_length", "pad_to_multiple_of", "padding_side",
    "return_attention_mask", "return_tensors", "verbose", "return_mm_token_type_ids",
}  # fmt: skip
_VERY_LARGE = 10**8  # tokenizers without a limit report model_max_length ~1e30


def text_options(tokenizer: Any, text_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A processor call's text kwargs resolved against ``tokenizer`` (padding side, model_max_length):
    ``padding`` ("longest", the default; "max_length"; "do_not_pad"), ``truncate``, ``max_length``,
    ``pad_to_multiple_of``, ``padding_side``, ``return_attention_mask``, ``add_special_tokens``.
    ValueError for kwargs outside ``TEXT_KWARGS`` and for invalid values."""
    refused = sorted(k for k, v in text_kwargs.items() if k not in TEXT_KWARGS and v not in (None, False))
    if refused:
        raise ValueError(f"CambrianProcessor does not support {', '.join(refused)}")
    padding = text_kwargs.get("padding", "longest")
    padding = getattr(padding, "value", padding)  # transformers' PaddingStrategy enum -> its string
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
        raise ValueError("truncation='only_second' needs text pairs, which CambrianProcessor does not take")
    truncate = truncation not in (None, False, "do_not_truncate")
    max_length = text_kwargs.get("max_length")
    if max_length is None and (truncate or padding == "max_length"):
        limit = getattr(tokenizer, "model_max_length", None)
        max_length = limit if isinstance(limit, int) and limit < _VERY_LARGE else None
        if max_length is None and padding == "max_length":
            raise ValueError("padding='max_length' needs max_length (the tokenizer sets no limit)")
    side = text_kwargs.get("padding_side") or tokenizer.padding_side
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


def truncate_ids(
    row: list[int],
    max_length: int,
    *,
    image_token_id: int,
    num_slots: Sequence[int],
    side: str = "right",
    text_index: int = 0,
) -> list[int]:
    """``row`` cut to ``max_length`` tokens on ``side`` (the tokenizer's ``truncation_side``).

    Raises:
        ValueError: the cut would remove any image slot (``image_token_id``); ``num_slots`` (the slots of
            each image of the text, in order) and ``text_index`` (the text's place in the batch) name the
            image in the message.
    """
    left = side == "left"
    kept, cut = (row[-max_length:], row[:-max_length]) if left else (row[:max_length], row[max_length:])
    n_cut = sum(1 for x in cut if x == image_token_id)
    if n_cut:
        if left:
            k = 0  # left truncation cuts the earliest slots first: those of the text's first image
        else:
            n_kept = sum(1 for x in kept if x == image_token_id)
            k = bisect_right(list(accumulate(num_slots)), n_kept)  # first image not wholly kept
        raise ValueError(
            f"text {text_index}: truncating its {len(row)} tokens to max_length {max_length} "
            f"({'left' if left else 'right'} side) would cut image {k} of that text (counting from 0; "
            f"{num_slots[k]} placeholder tokens); images are never truncated: raise max_length or "
            "shorten the text"
        )
    return kept


def pad_ids(
    ids: Sequence[list[int]],
    *,
    pad_token_id: int,
    padding: str = "longest",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
    padding_side: str = "right",
    return_attention_mask: bool = True,
) -> dict[str, list[list[int]]]:
    """``{"input_ids", "attention_mask"}`` as (B, T) nested lists: each row padded with ``pad_token_id``.

    ``padding`` is ``"longest"`` (T = the longest row), ``"max_length"`` (T = ``max_length``) or
    ``"do_not_pad"`` (rows keep their lengths); T is then rounded up to ``pad_to_multiple_of``. The mask
    is 1 on real tokens and 0 on padding; rows already longer than T are left as they are.
    """
    target = None
    if padding == "longest":
        target = max(len(x) for x in ids)
    elif padding == "max_length":
        target = max_length
    if target is not None and pad_to_multiple_of:
        target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
    input_ids, attention_mask = [], []
    for x in ids:
        n = max(0, (target or 0) - len(x))
        if padding_side == "left":
            input_ids.append([pad_token_id] * n + x)
            attention_mask.append([0] * n + [1] * len(x))
        else:
            input_ids.append(x + [pad_token_id] * n)
            attention_mask.append([1] * len(x) + [0] * n)
    data = {"input_ids": input_ids}
    if return_attention_mask:
        data["attention_mask"] = attention_mask
    return data
