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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IMAGE_TOKEN = "<image>"
IMAGE_TOKEN_INDEX = -200  # upstream id for "an image goes here"; any real placeholder id works too
IGNORE_INDEX = -100


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
