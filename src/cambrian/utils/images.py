"""Opening untrusted images (chat, the server): one clear ``ImageError`` instead of a PIL traceback.

The pixel count is checked from the header before any pixel is decoded, so a decompression bomb (a
small file that expands to gigapixels) costs nothing; truncated or non-image data and unreadable files
name where they came from.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

# 64 megapixels: far above any tower's input (the processor resizes to <= 1024 px), far below PIL's own
# bomb limit (about 179 megapixels), so a hostile image is refused before it costs memory.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be used; the message names it and says why."""


def open_image(source: bytes | str | Path, where: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """An RGB PIL image from raw bytes or a file path; ``ImageError`` when it cannot be used.

    ``where`` names the image in messages (default: the path, or "image").
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = where or str(path)
        if not path.is_file():
            raise ImageError(f"{where}: no such file" if not path.exists() else f"{where}: not a file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{where}: cannot be read ({e.strerror or e})") from None
    else:
        data, where = bytes(source), where or "image"
    if not data:
        raise ImageError(f"{where}: empty file, not an image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{where}: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,}")
            if w == 0 or h == 0:
                raise ImageError(f"{where}: empty image ({w}x{h})")
            im.load()  # decode now: a truncated file fails here, not inside the processor
            return im.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{where}: refused as a decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{where}: not an image (PIL does not recognise the data)") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL reports truncation and corrupt data as these
        raise ImageError(f"{where}: unreadable image ({e})") from None
