"""Decode one image file to RGB uint8, whatever its real format, and crop/resize it for the store.

Only the formats of :data:`IMAGE_FORMATS` are decoded, recognised from their first bytes (never from the name):
Pillow is asked for that one format, so a file of any other kind it could read (PostScript, which it hands
to Ghostscript; PDF, ICO, PSD, PCX...) never reaches its decoder, whatever it is called.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from facelab.data.orientation import ORIENTATION_TAG, apply_orientation, jpeg_orientation
from facelab.data.schema import CropSpec
from facelab.errors import ImageDecodeError

cv2.setNumThreads(1)  # parallelism comes from worker processes; avoid oversubscription

_JPEG_MAGIC = b"\xff\xd8\xff"
# Largest image (width x height) decoded, on every path: Pillow's own default decompression-bomb limit
# (~89.5 megapixels, 256 MiB of 24-bit pixels). Bigger files are refused with an ImageDecodeError before
# any pixel is decoded; a face image is never that large.
MAX_PIXELS = 89_478_485
_UINT16_MAX = 65535
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # the size in Pillow's DecompressionBombError message
_BMP_DIB_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})  # the DIB header sizes Pillow reads


def _bmp_header(data: bytes) -> bool:
    """"BM", then a DIB header size Pillow reads (OS/2 12 and 64, Windows 40/52/56/108/124) after the 14-byte
    file header: text that starts with "BM" has letters there."""
    return data[:2] == b"BM" and len(data) >= 18 and struct.unpack_from("<I", data, 14)[0] in _BMP_DIB_SIZES


def _tiff_header(data: bytes) -> bool:
    """A TIFF byte order mark and 42 (classic) or 43 (BigTIFF, with its offset size 8), and the first IFD's
    offset past the header."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8:
        return False
    version = struct.unpack_from(order + "H", data, 2)[0]
    if version == 42:
        return struct.unpack_from(order + "I", data, 4)[0] >= 8
    return (version == 43 and len(data) >= 16 and struct.unpack_from(order + "HH", data, 4) == (8, 0)
            and struct.unpack_from(order + "Q", data, 8)[0] >= 16)


@dataclass(frozen=True)
class ImageFormat:
    """A format facelab decodes: its name, Pillow's name for it, its file suffixes and a test of its first bytes."""

    name: str
    pillow: str
    suffixes: tuple[str, ...]
    header: Callable[[bytes], bool]


#: The formats facelab decodes (the only ones: any other file is refused before a decoder sees it).
IMAGE_FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("JPEG", "JPEG", (".jpg", ".jpeg"), lambda d: d[:3] == _JPEG_MAGIC),  # Pillow reads MPO as JPEG
    ImageFormat("PNG", "PNG", (".png",), lambda d: d[:8] == b"\x89PNG\r\n\x1a\n"),
    ImageFormat("BMP", "BMP", (".bmp",), _bmp_header),
    ImageFormat("WebP", "WEBP", (".webp",),
                lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP" and d[12:16] in (b"VP8 ", b"VP8L", b"VP8X")),
    ImageFormat("GIF", "GIF", (".gif",), lambda d: d[:6] in (b"GIF87a", b"GIF89a")),
    ImageFormat("TIFF", "TIFF", (".tif", ".tiff"), _tiff_header),
)
IMAGE_SUFFIXES = frozenset(s for f in IMAGE_FORMATS for s in f.suffixes)
_NOT_AN_IMAGE = ("not a known image format: facelab reads "
                 + ", ".join(f.name for f in IMAGE_FORMATS[:-1]) + f" and {IMAGE_FORMATS[-1].name} files")


def sniff_format(data: bytes) -> ImageFormat | None:
    """The format of :data:`IMAGE_FORMATS` whose header ``data`` starts with; None for anything else."""
    return next((f for f in IMAGE_FORMATS if f.header(data)), None)


def looks_like_an_image(data: bytes) -> bool:
    """Whether ``data`` starts like a file of a format facelab decodes (a damaged one rather than something else)."""
    return sniff_format(data) is not None


def decode_bytes(data: bytes, *, name: str = "<bytes>", min_side: int | None = None,
                 max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to an (H, W, 3) RGB uint8 array.

    The format is sniffed from the first bytes (:func:`sniff_format`), never taken from a name, so a PNG named
    ``.jpg`` decodes correctly and a PostScript file named ``.jpg`` is refused without running anything.
    JPEGs go through libjpeg-turbo (simplejpeg), using DCT downscaling when ``min_side`` allows it;
    the other formats, and JPEGs simplejpeg refuses (CMYK, progressive oddities), go through Pillow's decoder
    of that one format.

    The EXIF Orientation tag is honoured (:mod:`facelab.data.orientation`): a photo taken with the camera held
    sideways comes back upright, as every viewer shows it (JPEG: the tag is read from the header bytes; other
    formats: from the file Pillow already opened). Images larger than ``max_pixels`` (at most :data:`MAX_PIXELS`;
    a service takes a lower limit) are refused from their header, before decoding. High-bit-depth
    images (16-bit grey PNG/TIFF, 32-bit TIFF) are scaled to 8 bits, never clipped (see :func:`_to_rgb`).

    Raises:
        ImageDecodeError: empty data, another format than :data:`IMAGE_FORMATS`, a truncated, unreadable or
            too large image, or pixel values it cannot scale; nothing else, whatever the bytes.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)", name=name)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageDecodeError(f"cannot decode image ({_NOT_AN_IMAGE})", name=name)
    jpeg_error = None
    if data[:3] == _JPEG_MAGIC:
        try:
            return _decode_jpeg(data, name=name, min_side=min_side, max_pixels=max_pixels)
        except ValueError as e:
            jpeg_error = e  # fall back to Pillow (CMYK, unusual sampling) which also reports truncation
    return _decode_pillow(data, fmt, name=name, max_pixels=max_pixels, jpeg_error=jpeg_error)


#: what Pillow's decoders raise on damaged data, besides its own errors (struct.error: a header cut short)
_PILLOW_FAILURES = (OSError, SyntaxError, ValueError)


def _decode_pillow(data: bytes, fmt: ImageFormat, *, name: str, max_pixels: int,
                   jpeg_error: Exception | None) -> np.ndarray:
    """Decode ``data`` with Pillow's decoder of ``fmt`` alone; every failure is an ImageDecodeError."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its limit and raises above twice it; MAX_PIXELS is checked here instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # damaged metadata ("Corrupt EXIF data", "Tag data larger than file"): the outcome says what counts
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(io.BytesIO(data), formats=[fmt.pillow]) as im:
                _check_pixels(im.width, im.height, name=name, limit=max_pixels)
                im.load()  # raises on truncated data
                return apply_orientation(_to_rgb(im, name=name), _pillow_orientation(im))
    except Image.DecompressionBombError as e:  # Pillow's open() refuses twice its limit, before facelab's check
        raise ImageDecodeError(_pillow_refused(e), name=name) from None
    except UnidentifiedImageError:
        what = (f"a JPEG header libjpeg cannot read: {jpeg_error}" if jpeg_error
                else f"a {fmt.name} header Pillow cannot read")
        raise ImageDecodeError(f"cannot decode image ({what}; corrupt or cut off?)", name=name) from None
    except _PILLOW_FAILURES as e:
        raise ImageDecodeError(f"cannot decode image ({fmt.name}: {e.__class__.__name__}: {e})", name=name) from None


def _pillow_orientation(im: Image.Image) -> int:
    """The EXIF Orientation (1..8) of a loaded Pillow image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001  a damaged EXIF block must not lose an image whose pixels decoded fine
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_pixels(width: int, height: int, *, name: str, limit: int = MAX_PIXELS) -> None:
    """ImageDecodeError when a header announces more than ``limit`` pixels (a decompression bomb)."""
    if width * height > min(limit, MAX_PIXELS):
        raise ImageDecodeError(_too_large(f"{width}x{height} = {width * height:,} pixels", min(limit, MAX_PIXELS)),
                               name=name)


def _pillow_refused(error: Exception) -> str:
    """The reason for a DecompressionBombError: facelab's limit message when the size is above it, else
    Pillow's own message (its limit, PIL.Image.MAX_IMAGE_PIXELS, was lowered by the program)."""
    found = _BOMB_PIXELS.search(str(error))
    if found and int(found.group(1)) > MAX_PIXELS:
        return _too_large(f"{int(found.group(1)):,} pixels")
    return f"image too large for Pillow ({error}; PIL.Image.MAX_IMAGE_PIXELS is {Image.MAX_IMAGE_PIXELS:,})"


def _too_large(size: str, limit: int = MAX_PIXELS) -> str:
    return (f"image too large: {size}, above the limit of {limit:,} pixels (a decompression bomb?); downscale "
            "the file if it is a real image")


def _decode_jpeg(data: bytes, *, name: str, min_side: int | None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """libjpeg-turbo decode after checking the header's size; ValueError when libjpeg cannot read it."""
    h, w, _, _ = simplejpeg.decode_jpeg_header(data)
    _check_pixels(w, h, name=name, limit=max_pixels)
    kw = _dct_scale(h, w, min_side) if min_side else {}
    img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True, **kw)
    return apply_orientation(img, jpeg_orientation(data))


def _to_rgb(im: Image.Image, *, name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a loaded Pillow image, scaling high-bit-depth pixels instead of clipping them.

    Pillow's ``convert("RGB")`` clips 16- and 32-bit grey values at 255 (a white image), so those modes are
    scaled here: ``I;16*`` (16-bit grey PNG/TIFF) and ``I`` (32-bit integers; Pillow's mode for some
    16-bit files) as 16-bit data, value / 257 rounded to nearest (exact integer maths), ``I`` values
    outside 0..65535 refused; ``F`` (32-bit float TIFF) as intensities in 0..1 (x 255, rounded), other
    ranges refused. 16-bit RGB(A) and grey+alpha PNGs arrive as 8-bit ``RGB``/``RGBA`` (Pillow keeps the
    high byte, so nothing clips); every other mode (L, LA, P, 1, CMYK, YCbCr, RGBA...) goes through
    ``convert("RGB")`` (alpha dropped).
    """
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = _scale_16bit(np.asarray(im), mode=im.mode, name=name)
    elif im.mode == "F":
        grey = _scale_float(np.asarray(im), name=name)
    else:
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8).copy()
    return np.repeat(grey[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)


def _scale_16bit(values: np.ndarray, *, mode: str, name: str) -> np.ndarray:
    """(H, W) 16-bit grey values -> uint8, value / 257 rounded to nearest (65535 -> 255)."""
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > _UINT16_MAX):
        raise ImageDecodeError(f"cannot decode image (mode {mode} pixel values {values.min()}..{values.max()} "
                               f"are outside 0..{_UINT16_MAX}; save it as an 8- or 16-bit image)", name=name)
    return ((2 * values + 257) // 514).astype(np.uint8)  # floor(v / 257 + 1/2)


def _scale_float(values: np.ndarray, *, name: str) -> np.ndarray:
    """(H, W) float grey intensities in 0..1 -> uint8 (x 255, rounded)."""
    values = values.astype(np.float64)
    if values.size and not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
        raise ImageDecodeError(f"cannot decode image (float pixel values {values.min():g}..{values.max():g}"
                               " are not intensities in 0..1; save it as an 8- or 16-bit image)", name=name)
    return np.round(values * 255).astype(np.uint8)


def _dct_scale(h: int, w: int, min_side: int) -> dict[str, int]:
    """Decoder size hints for the strongest power-of-two DCT reduction (1/2, 1/4, 1/8) of an ``h`` x ``w``
    JPEG keeping both sides >= ``min_side``. Fractional scales such as 3/4 are avoided: on small JPEGs they
    decode slower than full size and shift the crop (measured in benchmarks/bench_store.py)."""
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
