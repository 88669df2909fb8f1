"""Image grids and strips as PNG (no torchvision: a few lines of numpy + Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from facelab.utils.io import atomic_path

PNG_MARK_KEY, PNG_MARK = "Software", "facelab"  # the text chunk of every PNG facelab writes here


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [-1, 1] -> (N, H, W, 3) uint8."""
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid_array(images: np.ndarray, *, nrow: int = 8, pad: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, 3) mosaic."""
    n, h, w, c = images.shape
    ncol = min(nrow, n)
    rows = math.ceil(n / ncol)
    out = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = img
    return out


def _save_png(image: Image.Image, path: Path) -> None:
    """``image`` as a PNG at ``path``, atomically, marked as facelab's (:func:`is_facelab_png`)."""
    info = PngInfo()
    info.add_text(PNG_MARK_KEY, PNG_MARK)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def is_facelab_png(path: str | Path) -> bool:
    """Whether ``path`` is a PNG that facelab wrote (its text chunk says so): one that facelab may replace."""
    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get(PNG_MARK_KEY) == PNG_MARK
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, *, nrow: int = 8, scale: int = 1) -> Path:
    """Save images ((N,3,H,W) in [-1,1] or (N,H,W,3) uint8) as a PNG grid, atomically."""
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.uint8)
    mosaic = Image.fromarray(grid_array(arr, nrow=nrow))
    if scale > 1:
        mosaic = mosaic.resize((mosaic.width * scale, mosaic.height * scale), Image.NEAREST)
    path = Path(path)
    _save_png(mosaic, path)
    return path


def image_name(prefix: str, i: int) -> str:
    """The file name :func:`save_images` gives image ``i``: ``prefix_0000.png``."""
    return f"{prefix}_{i:04d}.png"


def save_images(images: torch.Tensor, folder: str | Path, *, prefix: str = "sample", start: int = 0) -> list[Path]:
    """Save each image as its own PNG, atomically: folder/prefix_0000.png ... (numbered from ``start``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(images), start=start):
        p = folder / image_name(prefix, i)
        _save_png(Image.fromarray(img), p)
        paths.append(p)
    return paths
