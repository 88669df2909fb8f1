"""decode_bytes on hostile or unusual input: high bit depths are scaled (never clipped to white), and images
above the pixel limit are one ImageDecodeError (never a Pillow DecompressionBomb warning or error)."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

import facelab.data.decode as decode
from facelab.data.decode import MAX_PIXELS, decode_bytes
from facelab.errors import ImageDecodeError
from tests.fixtures.bad_images import jpeg_claiming, png_bytes

# 16-bit grey values and what they must become (value / 257, rounded): 0, 128 -> 0, 129 -> 1, mid, max.
GREY16 = np.array([[0, 128, 129, 257], [32896, 40000, 65279, 65535]], dtype=np.uint16)
GREY8 = np.array([[0, 0, 1, 1], [128, 156, 254, 255]], dtype=np.uint8)


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def _expect_grey(img: np.ndarray, grey: np.ndarray) -> None:
    assert img.dtype == np.uint8 and img.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(img, np.repeat(grey[:, :, None], 3, axis=2))


# ---- high bit depths ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_is_scaled_not_clipped_to_white(fmt):
    _expect_grey(decode_bytes(_encoded(Image.fromarray(GREY16), fmt)), GREY8)


def test_16bit_big_endian_grey_is_scaled():
    im = Image.frombytes("I;16B", (4, 2), GREY16.astype(">u2").tobytes())
    assert Image.open(io.BytesIO(_encoded(im, "TIFF"))).mode == "I;16B"
    _expect_grey(decode_bytes(_encoded(im, "TIFF")), GREY8)


def test_32bit_integer_image_holding_16bit_values_is_scaled():
    im = Image.fromarray(GREY16.astype(np.int32))
    assert im.mode == "I"
    _expect_grey(decode_bytes(_encoded(im, "TIFF")), GREY8)


def test_32bit_integer_values_beyond_16_bits_are_refused():
    im = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    with pytest.raises(ImageDecodeError, match=r"mode I pixel values 0\.\.70000 are outside 0\.\.65535"):
        decode_bytes(_encoded(im, "TIFF"), name="deep.tif")


def test_float_image_in_0_1_is_scaled():
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    _expect_grey(decode_bytes(_encoded(im, "TIFF")), np.array([[0, 128, 255]], np.uint8))


def test_float_image_outside_0_1_is_refused():
    im = Image.fromarray(np.array([[0.0, 300.0]], dtype=np.float32))
    with pytest.raises(ImageDecodeError, match=r"float.*0\.\.300 are not intensities in 0\.\.1"):
        decode_bytes(_encoded(im, "TIFF"), name="hdr.tif")


@pytest.mark.parametrize("colour_type,channels", [(2, 3), (6, 4), (4, 2)])  # RGB, RGBA, grey + alpha
def test_16bit_colour_png_is_not_clipped(colour_type, channels):
    px = np.full((2, 2, channels), 40000, dtype=">u2")  # 40000 / 257 = 155.6
    rows = b"".join(b"\x00" + px[y].tobytes() for y in range(2))
    img = decode_bytes(png_bytes(2, 2, rows, bit_depth=16, colour_type=colour_type))
    assert img.shape == (2, 2, 3) and 155 <= img.min() and img.max() <= 156


# ---- the pixel limit ----------------------------------------------------------------------------
def test_limit_is_pillows_default():
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485


@pytest.mark.parametrize("side", [10_000, 20_000])  # above Pillow's warning and above its error threshold
def test_huge_png_header_is_one_decode_error(side):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning must not escape either
        with pytest.raises(ImageDecodeError) as e:
            decode_bytes(png_bytes(side, side), name="bomb.png")
    # (above twice its limit, Pillow refuses the file before facelab sees its width and height)
    assert str(e.value).startswith("bomb.png: image too large: ")
    assert f"{side * side:,} pixels, above the limit of {MAX_PIXELS:,}" in str(e.value)


def test_huge_jpeg_header_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match=r"20000x20000 = 400,000,000 pixels, above the limit of 89,478,485"):
        decode_bytes(jpeg_claiming(20_000, 20_000), name="big.jpg")


def test_limit_applies_to_both_paths(monkeypatch):
    monkeypatch.setattr(decode, "MAX_PIXELS", 100)
    rgb = Image.fromarray(np.zeros((11, 10, 3), np.uint8))
    for fmt in ("JPEG", "PNG"):
        with pytest.raises(ImageDecodeError, match=r"10x11 = 110 pixels, above the limit of 100"):
            decode_bytes(_encoded(rgb, fmt))
    assert decode_bytes(_encoded(rgb.resize((10, 10)), "PNG")).shape == (10, 10, 3)  # at the limit: fine


def test_pillows_own_bomb_error_becomes_a_decode_error(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # someone lowered Pillow's limit below facelab's
    pillow = r"image too large for Pillow \(Image size \(64 pixels\) exceeds .*MAX_IMAGE_PIXELS is 10\)"
    with pytest.raises(ImageDecodeError, match=pillow):
        decode_bytes(_encoded(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "PNG"))


def test_a_header_pillow_refuses_itself_quotes_the_callers_own_limit():
    """Above twice Pillow's limit Pillow refuses the file before facelab reads its size: the message must
    still quote the limit the caller set (a service's own), not the decoder's ceiling."""
    with pytest.raises(ImageDecodeError, match=r"400,000,000 pixels, above the limit of 52,000,000 pixels"):
        decode_bytes(png_bytes(20_000, 20_000), name="bomb.png", max_pixels=52_000_000)
