"""Images into the RGB the towers see: one conversion for training, inference, serving and evaluation.

``to_rgb`` is the one place a PIL image of any supported mode becomes 8-bit RGB. Most modes go through
PIL's own ``convert("RGB")``; the wide modes do not, because PIL clips them to 0..255 and a 16-bit PNG
then reaches the towers saturated white. They are scaled by value range instead:

- ``I;16`` / ``I;16L`` / ``I;16B`` / ``I;16N`` (unsigned 16-bit: 16-bit PNG, PGM, TIFF): the format's full
  scale, ``v * 255 / 65535``, as image viewers show them. A 16-bit export of an 8-bit picture (``v =
  257 * p``) comes back exactly as ``p``, and a dark 16-bit image stays dark.
- ``I`` (32-bit integer): values within 0..65535 are 16-bit data in a 32-bit container (how PIL opens
  16-bit PNG/TIFF data in this mode), so they are scaled the same way; anything outside (negative, or
  above 65535) is stretched linearly from its minimum to its maximum.
- ``F`` (32-bit float): values within 0..1 are taken as intensities (``v * 255``); anything else is
  stretched from its minimum to its maximum. NaN counts as 0 and infinities as the finite extremes.
- A constant image that needs a stretch has no range to stretch: it becomes black.

Grey results are replicated to the three channels. Modes outside ``SUPPORTED_MODES`` are an
``ImageError``; ``check_image`` tells so (and checks the size) from the header alone, without decoding.

``open_image`` opens untrusted images (chat, the server, training files): the pixel count is checked
from the header before any pixel is decoded, so a decompression bomb (a small file that expands to
gigapixels) costs nothing; truncated or non-image data and unreadable files name where they came from.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# 64 megapixels: far above any tower's input (the processor resizes to <= 1024 px), far below PIL's own
# bomb limit (about 179 megapixels), so a hostile image is refused before it costs memory.
DEFAULT_MAX_PIXELS = 64_000_000

UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
WIDE_MODES = UINT16_MODES | {"I", "F"}  # scaled by value range, never clipped
# Every mode a PIL image file opens in that converts to meaningful RGB (PIL's "La" cannot be converted).
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"} | WIDE_MODES
)


class ImageError(ValueError):
    """An image that cannot be used; the message names it and says why.

    ``reason`` is the why alone; ``kind`` its category: ``"missing"``, ``"unreadable"``, ``"too large"``,
    ``"empty"`` or ``"unsupported mode"``.
    """

    def __init__(self, message: str, *, reason: str | None = None, kind: str = "unreadable"):
        super().__init__(message)
        self.reason = message if reason is None else reason
        self.kind = kind


def _error(where: str, reason: str, kind: str = "unreadable") -> ImageError:
    return ImageError(f"{where}: {reason}", reason=reason, kind=kind)


def check_image(im: Image.Image, where: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """``ImageError`` when ``im`` (opened, not necessarily decoded) is empty, too large or of a mode that
    ``to_rgb`` cannot convert. Reads the header only. ``max_pixels=None``: no size limit of ours."""
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        raise _error(where, f"{w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,}", "too large")
    if w == 0 or h == 0:
        raise _error(where, f"empty image ({w}x{h})", "empty")
    if im.mode not in SUPPORTED_MODES:
        supported = ", ".join(sorted(SUPPORTED_MODES))
        raise _error(where, f"unsupported image mode {im.mode!r}; supported: {supported}", "unsupported mode")


def _stretch(x: np.ndarray) -> np.ndarray:
    """float32 (H, W) -> uint8 (H, W): minimum -> 0, maximum -> 255 (constant -> 0)."""
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return np.rint((x - lo) * np.float32(255.0 / (hi - lo))).astype(np.uint8)


def _wide_to_uint8(im: Image.Image) -> np.ndarray:
    """uint8 (H, W) grey levels of a wide-mode image, scaled by value range (see the module docstring)."""
    a = np.asarray(im)  # (H, W): uint16 (either byte order) for I;16*, int32 for I, float32 for F
    if im.mode in UINT16_MODES:
        # Integer rounding of v * 255 / 65535: exact, and 257 * p maps back to p.
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if im.mode == "I":
        if a.size and int(a.min()) >= 0 and int(a.max()) <= 65535:
            return ((a.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)
        return _stretch(a.astype(np.float32))
    # "F": finite floats; NaN -> 0, +-inf -> the finite extremes.
    x = a.astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        good = x[finite]
        lo, hi = (float(good.min()), float(good.max())) if good.size else (0.0, 0.0)
        x = np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo)
    if x.size and float(x.min()) >= 0.0 and float(x.max()) <= 1.0:
        return np.rint(x * np.float32(255.0)).astype(np.uint8)
    return _stretch(x)


def to_rgb(
    im: Image.Image, where: str = "image", background: tuple[int, int, int] | None = None
) -> Image.Image:
    """``im`` as an 8-bit RGB image; wide modes (16-bit, 32-bit int, float) are scaled by value range.

    ``background``: composite transparent images (RGBA, LA, PA, P with transparency) onto this colour;
    None drops the alpha channel like ``convert("RGB")`` (what the models were trained with). Raises
    ``ImageError`` for a mode outside ``SUPPORTED_MODES``. Decodes the image if it is not yet.
    """
    if im.mode not in SUPPORTED_MODES:
        check_image(im, where, max_pixels=None)  # raises, naming the mode and the supported ones
    if im.mode in WIDE_MODES:
        return Image.fromarray(_wide_to_uint8(im), "L").convert("RGB")
    if background is not None and (
        im.mode in ("RGBA", "LA", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    ):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return im.convert("RGB")


def open_image(source: bytes | str | Path, where: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """An RGB PIL image (``to_rgb``) from raw bytes or a file path; ``ImageError`` when it cannot be used.

    ``where`` names the image in messages (default: the path, or "image").
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = where or str(path)
        if not path.is_file():
            raise _error(where, "no such file" if not path.exists() else "not a file", "missing")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise _error(where, f"cannot be read ({e.strerror or e})") from None
    else:
        data, where = bytes(source), where or "image"
    if not data:
        raise _error(where, "empty file, not an image", "empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_image(im, where, max_pixels)
            im.load()  # decode now: a truncated file fails here, not inside the processor
            return to_rgb(im, where)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise _error(where, f"refused as a decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise _error(where, "not an image (PIL does not recognise the data)") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports truncation and corrupt data as these
        raise _error(where, f"unreadable image ({e})") from None
