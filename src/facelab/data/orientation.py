"""EXIF orientation: read the tag cheaply from a JPEG's header bytes, and turn decoded pixels upright.

Cameras store pixels as the sensor saw them and record in the EXIF Orientation tag (0x0112) how to show
them; every viewer applies it, so a portrait photo taken with the phone held upright has tag 6 and pixels
lying on their side. :func:`jpeg_orientation` reads the tag by walking the JPEG's marker segments up to
the first scan (no pixel is decoded, no Pillow involved); :func:`apply_orientation` rotates or flips the
decoded (H, W[, C]) array the way Pillow's ``ImageOps.exif_transpose`` does.

    tag  stored pixels -> upright             tag  stored pixels -> upright
    1    as they are                          5    transpose (mirror along the main diagonal)
    2    mirror left-right                    6    rotate 90 degrees clockwise
    3    rotate 180 degrees                   7    transverse (mirror along the other diagonal)
    4    mirror top-bottom                    8    rotate 90 degrees counter-clockwise
"""

from __future__ import annotations

import struct

import numpy as np

ORIENTATION_TAG = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"
_SOS, _EOI, _APP1 = 0xDA, 0xD9, 0xE1
_STANDALONE = {0x01, *range(0xD0, 0xD9)}  # markers without a length field (TEM, RSTn, SOI)


def jpeg_orientation(data: bytes) -> int:
    """The EXIF Orientation (1..8) of JPEG ``data``; 1 when the file has none or it cannot be read.

    Reads only the marker segments before the first scan (a few hundred bytes to a few kB).
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return 1  # not at a marker: a damaged header, leave the pixels as stored
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (_SOS, _EOI):
            return 1
        length = struct.unpack_from(">H", data, i + 2)[0]
        if marker == _APP1 and data[i + 4:i + 10] == _EXIF_HEADER:
            return tiff_orientation(data[i + 10:i + 2 + length])
        i += 2 + length
    return 1


def tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag of IFD0 of a TIFF-structured EXIF block (what follows ``Exif\\0\\0``); 1 if absent."""
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", tiff, 4)[0]
    if ifd + 2 > len(tiff):
        return 1
    count = struct.unpack_from(order + "H", tiff, ifd)[0]
    for k in range(count):
        entry = ifd + 2 + 12 * k
        if entry + 12 > len(tiff):
            return 1
        tag, kind = struct.unpack_from(order + "HH", tiff, entry)
        if tag == ORIENTATION_TAG:
            value = struct.unpack_from(order + "H", tiff, entry + 8)[0] if kind == 3 else 1  # 3: SHORT
            return value if 1 <= value <= 8 else 1
    return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """``img`` ((H, W) or (H, W, C)) turned upright for EXIF ``orientation`` (1..8; others: unchanged).

    Returns a C-contiguous array (a copy unless the orientation is 1).
    """
    if orientation == 2:
        out = img[:, ::-1]
    elif orientation == 3:
        out = img[::-1, ::-1]
    elif orientation == 4:
        out = img[::-1]
    elif orientation == 5:
        out = img.swapaxes(0, 1)
    elif orientation == 6:
        out = img.swapaxes(0, 1)[:, ::-1]  # 90 degrees clockwise
    elif orientation == 7:
        out = img.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        out = img.swapaxes(0, 1)[::-1]  # 90 degrees counter-clockwise
    else:
        return img
    return np.ascontiguousarray(out)
