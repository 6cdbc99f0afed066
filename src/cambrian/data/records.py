"""What a well-formed LLaVA/Cambrian training row is: one place for the checks and the image list.

A row is a JSON object::

    {"id": "000123" | 123,
     "image": "coco/train2017/000123.jpg" | ["a.jpg", "b.jpg"] | null,   # optional; absent = text only
     "system": "...",                                                   # optional
     "conversations": [{"from": "human", "value": "<image>\\nWhat is this?"},
                       {"from": "gpt", "value": "A cat."}]}

Each image needs exactly one ``<image>`` placeholder in the human turns, in order; the turns follow
``conversation.turn_order_error`` (an optional leading system turn, then human/gpt alternating, human
first). ``check_row`` lists everything wrong with one parsed row: ``cambrian data validate`` and the
training dataset both run it, so a row one accepts the other accepts too. ``load_image`` is the one way a
training image file is read (``cambrian.utils.images``: size and mode checks, 16-bit scaled to 8-bit
RGB), used by the dataset and by ``check_row(..., decode=True)``. ``row_images`` normalises the
``image`` field to a list of relative paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cambrian.models.conversation import turn_order_error
from cambrian.models.tokenization import IMAGE_TOKEN

ROLES = ("human", "gpt", "system")


class Problem(str):
    """One problem of a row: the message (a ``str``) plus ``kind``, its category for summaries."""

    kind: str

    def __new__(cls, kind: str, message: str) -> Problem:
        self = super().__new__(cls, message)
        self.kind = kind
        return self

    def __reduce__(self):
        return (Problem, (self.kind, str(self)))


def _type_name(v: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(v), type(v).__name__)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def row_images(row: dict[str, Any]) -> list[str]:
    """The row's image paths as a list: ``"a.jpg"`` -> ``["a.jpg"]``; absent, null or ``[]`` -> ``[]``.

    Raises ``ValueError`` when ``image`` is neither a non-empty path string nor a list of them.
    """
    value = row.get("image")
    if value is None:
        return []
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise ValueError(
        f"'image' must be a path string or a list of path strings, got {_type_name(value)} {value!r:.60}"
    )


def load_image(path: str | Path, where: str | None = None) -> Any:
    """A training image file as RGB PIL (``cambrian.utils.images.open_image``: full decode, size limit,
    16-bit and float modes scaled by value range); ``ImageError`` naming ``where`` (default: the path)."""
    from cambrian.utils.images import open_image

    return open_image(Path(path), where=where)


def _check_image_file(rel: str, image_root: Path, decode: bool) -> Problem | None:
    from PIL import Image

    from cambrian.utils.images import ImageError, check_image

    path = image_root / rel
    if not path.is_file():
        return Problem("missing image", f"missing image {rel!r} (looked under {image_root})")
    try:
        if decode:
            load_image(path, where=rel)  # exactly what the training dataset does with the file
        else:
            with Image.open(path) as im:
                check_image(im, rel)  # size and mode from the header
                im.verify()  # headers and (PNG) checksums, without decoding every pixel
    except ImageError as e:
        kind = {"unsupported mode": "unsupported image mode", "too large": "image too large"}.get(e.kind)
        return Problem(kind or "unreadable image", f"image {rel!r}: {e.reason}")
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        msg = str(e).replace(str(path), rel)
        return Problem("unreadable image", f"unreadable image {rel!r}: {type(e).__name__}: {msg}")
    return None


def check_row(
    row: Any,
    image_root: Path | None,
    image_token: str = IMAGE_TOKEN,
    check_images: bool = True,
    *,
    decode: bool = False,
) -> list[Problem]:
    """Everything wrong with one parsed row; an empty list when it is fine.

    Problems are ``str`` messages with a ``kind`` attribute. Image files are checked (exist under
    ``image_root`` and open with PIL: ``verify()``, or a full decode with ``decode=True``) only when
    ``check_images`` is set and ``image_root`` is given.
    """
    if not isinstance(row, dict):
        return [Problem("not an object", f"row is not a JSON object (got {_type_name(row)})")]
    out: list[Problem] = []

    rid = row.get("id")
    if "id" not in row:
        out.append(Problem("bad id", "missing 'id'"))
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        out.append(Problem("bad id", f"'id' must be a string or integer, got {_type_name(rid)}"))
    elif rid == "":
        out.append(Problem("bad id", "'id' is an empty string"))

    system = row.get("system")
    if system is not None and not isinstance(system, str):
        out.append(Problem("bad system", f"'system' must be a string or null, got {_type_name(system)}"))
    elif isinstance(system, str) and image_token in system:
        out.append(
            Problem(
                "image/placeholder mismatch",
                f"'system' contains {image_token}; placeholders belong in human turns",
            )
        )

    images: list[str] | None
    try:
        images = row_images(row)
    except ValueError as e:
        images = None
        out.append(Problem("bad image field", str(e)))

    conv = row.get("conversations")
    placeholders = 0
    if "conversations" not in row:
        out.append(Problem("bad conversations", "missing 'conversations'"))
    elif not isinstance(conv, list):
        out.append(
            Problem("bad conversations", f"'conversations' must be a list of turns, got {_type_name(conv)}")
        )
    elif not conv:
        out.append(Problem("bad conversations", "'conversations' is empty"))
    else:
        has_gpt, well_formed = False, True
        for k, turn in enumerate(conv):
            if not isinstance(turn, dict):
                out.append(Problem("bad turn", f"turn {k} is not an object (got {_type_name(turn)})"))
                well_formed = False
                continue
            role, value = turn.get("from"), turn.get("value")
            well_formed &= role in ROLES
            if "from" not in turn:
                out.append(Problem("bad turn", f"turn {k} has no 'from' (valid: {', '.join(ROLES)})"))
            elif role not in ROLES:
                out.append(Problem("bad role", f"turn {k}: 'from' is {role!r}; valid: {', '.join(ROLES)}"))
            if "value" not in turn:
                out.append(Problem("bad turn", f"turn {k} has no 'value'"))
            elif not isinstance(value, str):
                out.append(
                    Problem("bad turn", f"turn {k}: 'value' must be a string, got {_type_name(value)}")
                )
            has_gpt |= role == "gpt"
            if isinstance(value, str) and image_token in value:
                if role == "human":
                    placeholders += value.count(image_token)
                elif role in ROLES:
                    out.append(
                        Problem(
                            "image/placeholder mismatch",
                            f"turn {k} ({role}) contains {image_token}; placeholders belong in human turns",
                        )
                    )
        order = turn_order_error([t["from"] for t in conv]) if well_formed else None
        if order is not None:
            out.append(Problem("bad turn order", order))
        if not has_gpt:
            out.append(Problem("no gpt turn", "no 'gpt' turn (nothing to learn from)"))
        if images is not None and placeholders != len(images):
            out.append(
                Problem(
                    "image/placeholder mismatch",
                    f"{_plural(len(images), 'image')} but {_plural(placeholders, image_token + ' placeholder')}"
                    " in the human turns",
                )
            )

    if check_images and image_root is not None and images:
        root = Path(image_root)
        for rel in images:
            bad = _check_image_file(rel, root, decode)
            if bad is not None:
                out.append(bad)
    return out
