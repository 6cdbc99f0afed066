"""to_rgb / open_image / check_image: 16-bit, 32-bit and float files written by PIL from numpy reach the
towers scaled by value range (not clipped white), the same way in training, chat and evaluation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cambrian.data.records import load_image
from cambrian.eval.data import DatasetFormatError, decode_image, open_image_file
from cambrian.utils import images as images_module
from cambrian.utils.images import SUPPORTED_MODES, ImageError, check_image, open_image, to_rgb

RNG = np.random.default_rng(0)


def _rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    a = np.asarray(im)  # (H, W, 3) uint8
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()  # grey replicated
    return a[..., 0]


def _save(tmp_path, name: str, array: np.ndarray) -> Image.Image:
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return path


def test_16bit_png_is_scaled_by_the_full_16bit_range_not_clipped(tmp_path):
    v = RNG.integers(0, 65536, size=(23, 31), dtype=np.uint16)
    path = _save(tmp_path, "gray16.png", v)
    with Image.open(path) as im:
        assert im.mode == "I;16"  # what PIL makes of a 16-bit PNG
        clipped = np.asarray(im.convert("RGB"))[..., 0]
        got = _rgb(to_rgb(im))
    want = np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    # The bug this replaces: PIL clips to 0..255, so nearly every pixel came out white.
    assert (clipped == 255).mean() > 0.99 and (got == 255).mean() < 0.01
    # Every entry point decodes it the same way.
    for im in (
        open_image(path),
        load_image(path),
        open_image_file(path),
        decode_image(path.read_bytes(), "x"),
    ):
        np.testing.assert_array_equal(_rgb(im), want)


def test_16bit_export_of_an_8bit_image_comes_back_exactly(tmp_path):
    p = RNG.integers(0, 256, size=(16, 20), dtype=np.uint8)
    path = _save(tmp_path, "export.png", p.astype(np.uint16) * 257)
    np.testing.assert_array_equal(_rgb(open_image(path)), p)
    # A dark 16-bit image stays dark (full scale, not stretched to its own maximum).
    dark = _save(tmp_path, "dark.png", np.full((4, 4), 1000, np.uint16))
    assert set(np.unique(_rgb(open_image(dark)))) == {4}  # round(1000 * 255 / 65535)


def test_big_endian_16bit_tiff(tmp_path):
    v = RNG.integers(0, 65536, size=(8, 9)).astype(">u2")
    path = _save(tmp_path, "be.tif", v)
    with Image.open(path) as im:
        assert im.mode == "I;16B"
    want = np.floor(v.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(open_image(path)), want)


def test_32bit_integer_images(tmp_path):
    # Within 0..65535: 16-bit data in a 32-bit container, scaled like I;16.
    v = RNG.integers(0, 65536, size=(6, 7)).astype(np.int32)
    with Image.open(_save(tmp_path, "i16.tif", v)) as im:
        assert im.mode == "I"
        got = _rgb(to_rgb(im))
    np.testing.assert_array_equal(got, _rgb(to_rgb(Image.fromarray(v.astype(np.uint16)))))
    # Outside it (signed, or wider): stretched from the minimum to the maximum.
    w = np.array([[-30000, 0], [30000, 90000]], np.int32)
    with Image.open(_save(tmp_path, "wide.tif", w)) as im:
        got = _rgb(to_rgb(im))
    want = np.floor((w - w.min()) * 255 / (w.max() - w.min()) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0 and got.max() == 255


def test_float_images(tmp_path):
    unit = RNG.random((5, 6), dtype=np.float32)
    with Image.open(_save(tmp_path, "unit.tif", unit)) as im:
        assert im.mode == "F"
        np.testing.assert_array_equal(_rgb(to_rgb(im)), np.rint(unit * 255).astype(np.uint8))
    big = np.array([[-2.0, 0.0], [2.0, 6.0]], np.float32)
    got = _rgb(to_rgb(Image.open(_save(tmp_path, "big.tif", big))))
    np.testing.assert_array_equal(got, np.array([[0, 64], [128, 255]], np.uint8))
    odd = np.array([[np.nan, np.inf], [-np.inf, 0.5]], np.float32)
    np.testing.assert_array_equal(_rgb(to_rgb(Image.fromarray(odd))), np.array([[0, 128], [128, 128]]))
    flat = _rgb(to_rgb(Image.fromarray(np.full((3, 3), 7.0, np.float32))))
    assert (flat == 0).all()  # a constant image has no range to stretch


def test_ordinary_modes_are_plain_pil_conversions():
    for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA"):
        im = Image.new(mode, (3, 2))
        assert np.array_equal(np.asarray(to_rgb(im)), np.asarray(im.convert("RGB")))
    glass = Image.new("RGBA", (2, 2), (0, 0, 255, 0))  # fully transparent blue
    assert to_rgb(glass).getpixel((0, 0)) == (0, 0, 255)  # alpha dropped, as the models were trained
    assert to_rgb(glass, background=(255, 255, 255)).getpixel((0, 0)) == (255, 255, 255)


def test_unsupported_mode_and_size_errors(tmp_path):
    im = Image.new("La", (2, 2))
    with pytest.raises(ImageError) as err:
        to_rgb(im, "x.png")
    assert str(err.value).startswith("x.png: unsupported image mode 'La'; supported: ")
    assert "I;16" in str(err.value) and err.value.kind == "unsupported mode"
    assert "La" not in SUPPORTED_MODES
    with pytest.raises(ImageError, match=r"^y: 30x30 is 900 pixels, over the limit of 100$"):
        check_image(Image.new("L", (30, 30)), "y", max_pixels=100)
    # The eval readers turn it into their own one-line error.
    path = _save(tmp_path, "g.png", np.zeros((2, 2), np.uint16))
    orig = images_module.SUPPORTED_MODES
    try:
        images_module.SUPPORTED_MODES = orig - {"I;16"}
        with pytest.raises(DatasetFormatError, match=r"^image .*g\.png: unsupported image mode 'I;16'"):
            open_image_file(path)
        with pytest.raises(DatasetFormatError, match=r"^cell 3: unsupported image mode 'I;16'"):
            decode_image(path.read_bytes(), "cell 3")
    finally:
        images_module.SUPPORTED_MODES = orig


def test_open_image_errors_keep_their_one_line_form(tmp_path):
    with pytest.raises(ImageError, match=r"^nope\.png: no such file$"):
        open_image(tmp_path / "nope.png", where="nope.png")
    with pytest.raises(ImageError, match=r"^image: not an image \(PIL does not recognise the data\)$"):
        open_image(b"hello")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "JPEG")
    with pytest.raises(ImageError, match=r"^cut: unreadable image \(.+\)$"):
        open_image(buf.getvalue()[:-200], where="cut")
