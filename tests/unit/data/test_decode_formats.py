"""Only the formats of ``IMAGE_FORMATS`` are decoded, recognised from real headers: every other file, whatever its
name, is an ImageDecodeError before any decoder (Pillow's PostScript reader runs Ghostscript) sees it, and no
bytes at all make the decoder raise anything else."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facelab.data.decode import IMAGE_FORMATS, IMAGE_SUFFIXES, decode_bytes, looks_like_an_image, sniff_format
from facelab.errors import ImageDecodeError
from tests.fixtures.foreign_files import PILLOW_READS, PIXELS, fake_ghostscript, foreign_files

NOT_AN_IMAGE = "not a known image format: facelab reads JPEG, PNG, BMP, WebP, GIF and TIFF files"


def _saved(fmt: str, mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(PIXELS).convert(mode).save(buf, format=fmt, **kw)
    return buf.getvalue()


#: (format facelab names, Pillow's name, encoded bytes, lossless) for each format and variant facelab reads
ALLOWED = [
    ("JPEG", "JPEG", _saved("JPEG", quality=95), False),
    ("JPEG", "JPEG", _saved("JPEG", "CMYK"), False),  # libjpeg-turbo refuses CMYK: Pillow's JPEG decoder
    ("JPEG", "MPO", _saved("MPO", save_all=True, append_images=[Image.fromarray(PIXELS[::-1])]), False),
    ("PNG", "PNG", _saved("PNG"), True),
    ("BMP", "BMP", _saved("BMP"), True),
    ("BMP", "BMP", _saved("BMP", "P"), False),  # a palette: the pixel data starts after it
    ("WebP", "WEBP", _saved("WEBP", lossless=True), True),
    ("WebP", "WEBP", _saved("WEBP", quality=90), False),
    ("GIF", "GIF", _saved("GIF"), False),
    ("TIFF", "TIFF", _saved("TIFF"), True),
    ("TIFF", "TIFF", _saved("TIFF", compression="tiff_lzw"), True),
    ("TIFF", "TIFF", _saved("TIFF", big_tiff=True), True),
]
ALLOWED_IDS = ["jpeg", "cmyk-jpeg", "mpo", "png", "bmp", "palette-bmp", "webp-lossless", "webp", "gif", "tiff",
               "lzw-tiff", "bigtiff"]


@pytest.mark.parametrize("name, pillow, data, lossless", ALLOWED, ids=ALLOWED_IDS)
def test_every_format_facelab_reads_decodes(name, pillow, data, lossless):
    assert Image.open(io.BytesIO(data)).format == pillow
    assert sniff_format(data).name == name and looks_like_an_image(data)
    img = decode_bytes(data)
    assert img.shape == PIXELS.shape and img.dtype == np.uint8
    if lossless:
        np.testing.assert_array_equal(img, PIXELS)


def test_the_suffixes_are_those_of_the_formats():
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}
    assert [f.name for f in IMAGE_FORMATS] == ["JPEG", "PNG", "BMP", "WebP", "GIF", "TIFF"]


def test_files_of_other_formats_never_reach_a_decoder_whatever_their_name(tmp_path, monkeypatch):
    log = fake_ghostscript(tmp_path, monkeypatch)
    for name, data in foreign_files().items():
        with pytest.raises(ImageDecodeError) as e:
            decode_bytes(data, name=name)
        assert e.value.reason == f"cannot decode image ({NOT_AN_IMAGE})", name
        assert not looks_like_an_image(data)
    assert not log.exists(), log.read_text()
    # the files are what they claim, and the trap works: Pillow, free to try every format, opens them and
    # runs "Ghostscript" for the PostScript one
    for name, fmt in PILLOW_READS.items():
        assert Image.open(io.BytesIO(foreign_files()[name])).format == fmt, name
    with pytest.raises(Exception):
        Image.open(io.BytesIO(foreign_files()["holiday.jpg"])).load()
    assert log.exists()


# ---- sniffing: real headers, not two letters ----------------------------------------------------
def _bmp_header(dib_size: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 1000, 0, 0, 14 + dib_size) + struct.pack("<I", dib_size) + b"\x00" * 40


@pytest.mark.parametrize("data", [
    b"BM is how this text file starts, and it goes on for a while with letters only.",
    b"BMW 320i, 2004: service history attached",
    b"II* not a tiff, just a line of notes",
    b"II*\x00\x04\x00\x00\x00",  # the first IFD inside the 8-byte header
    b"RIFF\x10\x00\x00\x00WAVEfmt ",  # a WAV: RIFF, not WebP
    b"RIFF\x10\x00\x00\x00WEBPJUNK",  # no VP8 chunk
    b"\x89PNG\r\n",  # a PNG signature cut short
    b"GIF",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
    b"%PDF-1.7\n",
], ids=["BM-text", "BMW", "II*-text", "tiff-ifd-in-header", "wav", "riff-webp-no-vp8", "short-png",
        "GIF", "eps", "pdf"])
def test_text_and_other_files_that_start_like_an_image_are_not_one(data):
    assert not looks_like_an_image(data)
    with pytest.raises(ImageDecodeError, match="not a known image format"):
        decode_bytes(data)


@pytest.mark.parametrize("dib_size", [12, 40, 52, 56, 64, 108, 124])
def test_every_bmp_header_pillow_reads_is_recognised(dib_size):
    assert sniff_format(_bmp_header(dib_size)).name == "BMP"


@pytest.mark.parametrize("dib_size", [0, 13, 41, 0x20202020])
def test_a_bm_without_a_known_dib_header_is_not_a_bmp(dib_size):
    assert sniff_format(_bmp_header(dib_size)) is None


@pytest.mark.parametrize("name, pillow, data, lossless", ALLOWED, ids=ALLOWED_IDS)
def test_a_damaged_image_still_looks_like_one(name, pillow, data, lossless):
    cut = data[:max(40, len(data) // 3)]
    assert sniff_format(cut).name == name
    with pytest.raises(ImageDecodeError) as e:
        decode_bytes(cut)
    assert NOT_AN_IMAGE not in e.value.reason


# ---- no bytes make the decoder raise anything but ImageDecodeError -------------------------------
PROPERTY = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SIGNATURES = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
              b"RIFF\x00\x00\x00\x00WEBPVP8L", b"BM" + b"\x00" * 12 + b"(\x00\x00\x00", b"II*\x00\x08\x00\x00\x00",
              b"MM\x00+\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10"]


def _decodes_or_refuses(data: bytes) -> None:
    try:
        img = decode_bytes(data, name="fuzz")
    except ImageDecodeError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


@PROPERTY
@given(st.sampled_from(SIGNATURES), st.binary(max_size=600))
def test_any_bytes_decode_or_raise_an_image_decode_error(signature, tail):
    _decodes_or_refuses(signature + tail)


@PROPERTY
@given(st.sampled_from([d for _, _, d, _ in ALLOWED]), st.data())
def test_damaged_real_images_decode_or_raise_an_image_decode_error(data, draw):
    buf = bytearray(data[:draw.draw(st.integers(1, len(data)))])
    for at, value in draw.draw(st.lists(st.tuples(st.integers(0, len(buf) - 1), st.integers(0, 255)), max_size=8)):
        buf[at] = value
    _decodes_or_refuses(bytes(buf))
