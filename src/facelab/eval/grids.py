"""Image grids and strips as PNG (no torchvision: a few lines of numpy + Pillow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


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


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, *, nrow: int = 8, scale: int = 1) -> Path:
    """Save images ((N,3,H,W) in [-1,1] or (N,H,W,3) uint8) as a PNG grid, atomically."""
    arr = to_uint8(images) if isinstance(images, torch.Tensor) else np.asarray(images, dtype=np.uint8)
    mosaic = Image.fromarray(grid_array(arr, nrow=nrow))
    if scale > 1:
        mosaic = mosaic.resize((mosaic.width * scale, mosaic.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    mosaic.save(tmp, format="PNG")
    tmp.replace(path)
    return path


def save_images(images: torch.Tensor, folder: str | Path, *, prefix: str = "sample") -> list[Path]:
    """Save each image as its own PNG: folder/prefix_0000.png ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(images)):
        p = folder / f"{prefix}_{i:04d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths
