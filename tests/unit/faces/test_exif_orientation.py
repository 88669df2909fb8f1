"""EXIF orientation: photos decode upright, as viewers show them, for JPEG (simplejpeg and Pillow paths) and PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facelab.data import decode
from facelab.data.decode import decode_bytes
from facelab.data.orientation import apply_orientation, jpeg_orientation

# What each tag asks of the stored pixels (EXIF 2.32, table of Orientation), written independently of
# facelab.data.orientation with numpy's rotations.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1],
    5: lambda a: np.rot90(a[:, ::-1], 1),  # mirror, then 90 degrees counter-clockwise = transpose
    6: lambda a: np.rot90(a, -1),  # 90 degrees clockwise
    7: lambda a: np.rot90(a[:, ::-1], -1),
    8: lambda a: np.rot90(a, 1),
}


def _stored() -> np.ndarray:
    """(48, 64, 3): smooth gradients plus three corner patches, so every rotation and flip looks different."""
    ys, xs = np.mgrid[:48, :64]
    img = np.stack([xs * 3, ys * 4, (xs + ys) * 2], axis=2).astype(np.uint8)
    img[:12, :12] = (250, 20, 20)
    img[-12:, :16] = (20, 250, 20)
    img[:8, -20:] = (20, 20, 250)
    return img


def _encode(img: np.ndarray, fmt: str, orientation: int | None) -> bytes:
    kw = {"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt, **kw)
    return buf.getvalue()


def _close(got: np.ndarray, want: np.ndarray, tol: float) -> bool:
    return got.shape == want.shape and float(np.abs(got.astype(int) - want).mean()) < tol


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt, tol", [("JPEG", 2.0), ("PNG", 1e-9)])
def test_photos_decode_upright(fmt, tol, orientation):
    stored = _stored()
    got = decode_bytes(_encode(stored, fmt, orientation))
    want = np.ascontiguousarray(UPRIGHT[orientation](stored))
    assert _close(got, want, tol)
    others = [o for o in UPRIGHT if o != orientation and UPRIGHT[o](stored).shape == want.shape]
    assert not any(_close(got, UPRIGHT[o](stored), 20.0) for o in others)  # really that one orientation
    assert got.flags.c_contiguous


@pytest.mark.parametrize("orientation", [3, 6])
def test_jpegs_that_pillow_decodes_are_turned_too(monkeypatch, orientation):
    def refuse(*args, **kwargs):
        raise ValueError("simplejpeg refuses")  # as for CMYK JPEGs: decode_bytes falls back to Pillow

    monkeypatch.setattr(decode, "_decode_jpeg", refuse)
    stored = _stored()
    assert _close(decode_bytes(_encode(stored, "JPEG", orientation)), UPRIGHT[orientation](stored), 2.0)


def test_downscaled_jpeg_decodes_are_turned_too():
    big = np.kron(_stored(), np.ones((4, 4, 1), np.uint8))  # (192, 256, 3)
    got = decode_bytes(_encode(big, "JPEG", 6), min_side=48)  # DCT-scaled by 1/4
    assert got.shape == (64, 48, 3)
    assert _close(got, UPRIGHT[6](_stored()), 6.0)


def test_the_tag_is_read_from_the_header_without_pillow():
    assert jpeg_orientation(_encode(_stored(), "JPEG", 8)) == 8
    assert jpeg_orientation(_encode(_stored(), "JPEG", None)) == 1  # no EXIF at all


@pytest.mark.parametrize("damage", ["cut", "bad_tiff", "value_9"])
def test_a_damaged_or_odd_exif_block_leaves_the_pixels_as_stored(damage):
    data = bytearray(_encode(_stored(), "JPEG", 6))
    at = data.index(b"Exif\x00\x00") + 6  # the TIFF header
    if damage == "cut":
        data = data[: at + 10]
    elif damage == "bad_tiff":
        data[at:at + 2] = b"XX"
    else:
        little = data[at:at + 2] == b"II"
        entry = data.index(b"\x12\x01" if little else b"\x01\x12", at)  # the Orientation entry (tag 0x0112)
        data[entry + (8 if little else 9)] = 9  # its SHORT value
    assert jpeg_orientation(bytes(data)) == 1
    if damage != "cut":
        assert _close(decode_bytes(bytes(data)), _stored(), 2.0)


def test_greyscale_arrays_turn_too():
    grey = _stored()[:, :, 0]
    assert np.array_equal(apply_orientation(grey, 6), np.rot90(grey, -1))
