"""Decode one image file to RGB uint8, whatever its real format, and crop/resize it for the store."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from facelab.data.schema import CropSpec
from facelab.errors import ImageDecodeError

cv2.setNumThreads(1)  # parallelism comes from worker processes; avoid oversubscription

_JPEG_MAGIC = b"\xff\xd8\xff"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


def decode_bytes(data: bytes, *, name: str = "<bytes>", min_side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) RGB uint8 array.

    JPEGs go through libjpeg-turbo (simplejpeg), using DCT downscaling when ``min_side`` allows it;
    anything else, and JPEGs simplejpeg refuses (CMYK, progressive oddities), go through Pillow.
    The format is sniffed from the bytes, so a PNG named ``.jpg`` decodes correctly.

    Raises:
        ImageDecodeError: empty, truncated or unreadable data.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)", name=name)
    jpeg_error = None
    if data[:3] == _JPEG_MAGIC:
        try:
            kw = _dct_scale(data, min_side) if min_side else {}
            return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True, **kw)
        except ValueError as e:
            jpeg_error = e  # fall back to Pillow (CMYK, unusual sampling) which also reports truncation
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # raises on truncated data
            if im.mode != "RGB":
                im = im.convert("RGB")  # grayscale, CMYK, palette, RGBA -> RGB
            return np.asarray(im, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        what = f"a JPEG header libjpeg cannot read: {jpeg_error}" if jpeg_error else "not a known image format"
        raise ImageDecodeError(f"cannot decode image ({what}; corrupt or cut off?)", name=name) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"cannot decode image ({e.__class__.__name__}: {e})", name=name) from None


def _dct_scale(data: bytes, min_side: int) -> dict[str, int]:
    """Decoder size hints for the strongest power-of-two DCT reduction (1/2, 1/4, 1/8) keeping both sides
    >= ``min_side``. Fractional scales such as 3/4 are avoided: on small JPEGs they decode slower than
    full size and shift the crop (measured in benchmarks/bench_store.py)."""
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    for f in (8, 4, 2):
        if min(h, w) // f >= min_side:
            return {"min_height": -(-h // f), "min_width": -(-w // f)}
    return {}


def decode_file(path: str | Path, *, min_side: int | None = None) -> np.ndarray:
    """Read and decode one image file; see :func:`decode_bytes`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageDecodeError(f"cannot read file ({e.strerror})", name=str(path)) from None
    return decode_bytes(data, name=str(path), min_side=min_side)


def crop_box(height: int, width: int, crop: CropSpec) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box that ``crop`` selects in an image of this size."""
    if crop.mode == "none":
        return 0, 0, width, height
    if crop.mode == "box":
        if crop.box is None:
            raise ValueError("crop mode 'box' needs crop.box = (left, top, right, bottom)")
        l, t, r, b = crop.box
        return max(0, l), max(0, t), min(width, r), min(height, b)
    side = int(round(min(height, width) * crop.scale))
    left = (width - side) // 2
    top = min(max(0, (height - side) // 2 + int(round(crop.offset_y * height))), height - side)
    return left, top, left + side, top + side


def decode_min_side(crop: CropSpec, size: int) -> int | None:
    """Smallest decoded side that still gives a full-resolution ``size`` crop (None: decode full size)."""
    if crop.mode == "box":
        return None
    return int(np.ceil(size / crop.scale))


def crop_resize(img: np.ndarray, crop: CropSpec, size: int) -> np.ndarray:
    """Crop ``img`` (H, W, 3) as ``crop`` says and resize to (size, size, 3) (area when shrinking)."""
    l, t, r, b = crop_box(img.shape[0], img.shape[1], crop)
    if r <= l or b <= t:
        raise ImageDecodeError(f"crop box {(l, t, r, b)} is empty for an image of {img.shape[1]}x{img.shape[0]}")
    patch = img[t:b, l:r]
    if patch.shape[0] == size and patch.shape[1] == size:
        return np.ascontiguousarray(patch)
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)
