"""Sampling from trained generative runs: grids, latent interpolation strips and class blends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facelab.data.store import Store
from facelab.errors import FacelabError
from facelab.eval.grids import image_name, is_facelab_png, save_grid, save_images
from facelab.eval.outputs import check_output
from facelab.models.generative import blend_conditions, class_latent_means, grid_conditions, interpolate_latents
from facelab.models.generative.base import eval_mode
from facelab.models.loading import load_model

CHUNK = 1024  # images made at once by sample_run, and the most a grid shows


def parse_cond(text: str | None, model: torch.nn.Module) -> dict[str, Any] | None:
    """``"Male=1,Eyeglasses=1"`` -> {"Male": 1, "Eyeglasses": 1}; a bare ``horse`` names a class of the
    model's single categorical condition. Values may be indices or value names."""
    if text is None or not text.strip():
        return None
    if not model.is_conditional:
        raise FacelabError("this model is unconditional; drop --cond (conditional models: cvae, cgan, aae with conditions)")
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" in part:
            k, v = (s.strip() for s in part.split("=", 1))
            out[k] = int(v) if v.lstrip("-").isdigit() else v
            continue
        cats = [c for c in model.config.conditions or [] if c.kind == "categorical"]
        if len(cats) != 1:
            raise FacelabError(f"--cond {part!r}: write NAME=VALUE (the model has {len(cats)} categorical conditions)")
        out[cats[0].name] = part
    return out


def sample_run(run: str | Path, *, n: int = 64, cond: str | None = None, grid: str | Path | None = None,
               images_dir: str | Path | None = None, seed: int = 0, temperature: float = 1.0,
               device: str = "cpu") -> dict[str, Any]:
    """Sample ``n`` images (conditioned on ``cond``) into an 8-wide grid and/or individual PNGs.

    Images are made :data:`CHUNK` at a time (each chunk's grid conditions start again at the first row), so
    memory stays bounded whatever ``n``: the grid shows the first chunk, ``images_dir`` receives every image
    as it is made (the result lists the first chunk's paths). Without ``images_dir``, ``n`` is at most
    :data:`CHUNK`.

    Raises:
        FacelabError: ``n`` above :data:`CHUNK` without ``images_dir``; a ``grid`` or ``images_dir`` facelab may
            not write (:func:`facelab.eval.outputs.check_output`; a PNG already there that facelab did not write).
    """
    if n > CHUNK and images_dir is None:
        raise FacelabError(f"--n {n}: a grid shows at most {CHUNK} images; write them all as PNGs with --images "
                           f"FOLDER (made {CHUNK} at a time), or lower --n")
    if grid is not None:
        check_output(Path(grid), option="--grid", inputs=[Path(run)], ours=is_facelab_png)
    if images_dir is not None:
        _check_images_dir(Path(images_dir), Path(run), n)
    model, meta = load_model(run, kind="generative", device=device)
    labels = parse_cond(cond, model)
    fixed = model.make_cond(labels) if labels is not None else None
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"run": str(run), "model": meta.arch, "n": n, "cond": labels}
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        c = fixed if fixed is not None or not model.is_conditional else grid_conditions(model, size)
        images = model.sample(size, c, generator=g, temperature=temperature)  # (size, 3, S, S)
        if start == 0:
            out["grid"] = str(save_grid(images, grid or Path(run) / "samples" / f"sample_{seed}.png"))
        if images_dir is not None:
            written = save_images(images, images_dir, start=start)
            if start == 0:
                out["images"] = [str(p) for p in written]
        del images
    if images_dir is not None:
        out.update(images_dir=str(images_dir), images_written=n)
    return out


def _check_images_dir(folder: Path, run: Path, n: int) -> None:
    """``--images FOLDER`` may be written: not in a store or run folder, and no PNG of a name it would write
    there that facelab did not write."""
    check_output(folder, option="--images", inputs=[run], folder=True)
    if not folder.is_dir():
        return
    theirs = [e.name for e in os.scandir(folder) if _image_index(e.name, n) and not is_facelab_png(e.path)]
    if theirs:
        shown = ", ".join(sorted(theirs)[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
        raise FacelabError(f"--images {folder} holds files this run would replace that facelab did not write: "
                           f"{shown}; move them away or choose another folder")


def _image_index(name: str, n: int) -> bool:
    """Whether ``name`` is the file name of one of the ``n`` images (``sample_0000.png`` ...)."""
    stem, dot, suffix = name.rpartition(".")
    prefix, _, number = stem.rpartition("_")
    return dot == "." and suffix == "png" and prefix == "sample" and number.isdigit() and \
        image_name("sample", int(number)) == name and int(number) < n


def interpolate_run(run: str | Path, *, out: str | Path, steps: int = 10, rows: int = 4, seed: int = 0,
                    cond: str | None = None, store: str | Path | None = None, pair: tuple[int, int] | None = None,
                    spherical: bool = True, device: str = "cpu") -> dict[str, Any]:
    """Strips from one latent point to another; with ``store`` and ``pair`` (autoencoders), between two real images."""
    check_output(Path(out), option="--out", inputs=[Path(run), *([Path(store)] if store else [])],
                 ours=is_facelab_png)
    model, meta = load_model(run, kind="generative", device=device)
    labels = parse_cond(cond, model)
    c = model.make_cond(labels) if labels is not None else None
    if c is None and model.is_conditional:
        c = grid_conditions(model, 1)
    g = torch.Generator().manual_seed(seed)
    real = None
    if pair is not None:
        if not model.has_encoder:
            raise FacelabError(f"{meta.arch} has no encoder: interpolate between real images with vae, beta_vae, cvae, aae or acai")
        real = _real_pair_images(store, pair, model)  # (2, 3, S, S)
        with torch.no_grad():
            ends = model.encode(real, None if c is None else c[:1].expand(2, -1))  # (2, D)
        strips = [interpolate_latents(ends[0], ends[1], steps, spherical=spherical)]
    else:
        zs = model.sample_latent(2 * rows, generator=g)  # (2*rows, D)
        strips = [interpolate_latents(zs[2 * i], zs[2 * i + 1], steps, spherical=spherical) for i in range(rows)]
    z = torch.cat(strips)  # (rows*steps, D)
    with torch.no_grad():
        images = model.generate(z, None if c is None else c[:1].expand(len(z), -1))
    if real is not None:
        images = torch.cat([real[:1], images, real[1:]])  # real A | decoded path | real B
    path = save_grid(images, out, nrow=steps + (2 if pair is not None else 0))
    return {"run": str(run), "model": meta.arch, "strip": str(path), "steps": steps, "between_real_images": pair is not None}


def _real_pair_images(store_path, pair, model) -> torch.Tensor:
    if store_path is None:
        raise FacelabError("interpolating between real images needs --data STORE and --pair I,J (store rows)")
    store = Store.open(store_path)
    if store.image_size != model.image_size:
        raise FacelabError(f"{store.path} is {store.image_size}px but the model makes {model.image_size}px images")
    for i in pair:
        if not 0 <= i < len(store):
            raise FacelabError(f"--pair row {i} is outside the store (0..{len(store) - 1})")
    imgs = np.asarray(store.images[list(pair)])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # (2, 3, S, S) in [-1, 1]
    return x.to(model.device)


def blend_run(run: str | Path, *, classes: tuple[str, str], weight: float = 0.5, n: int = 64, out: str | Path,
              store: str | Path | None = None, seed: int = 0, device: str = "cpu",
              sweep: int | None = None) -> dict[str, Any]:
    """Blend two classes (the pegasus: bird + horse).

    Conditional models sample with the interpolated condition ``(1-w)*a + w*b``; unconditional
    autoencoders decode latents around the interpolated class latent means (needs ``store``).

    Args:
        weight: the blend weight (0: the first class, 1: the second); ignored with ``sweep``.
        n: images (with ``sweep``: rows, one latent each).
        sweep: K >= 2 gives a grid of ``n`` rows by K columns, the weights 0..1 from left to right with one
            latent per row: each row turns the first class into the second through the blends between.
    """
    if sweep is not None and sweep < 2:
        raise FacelabError(f"--sweep {sweep}: a sweep needs at least 2 weights (0 and 1)")
    if sweep is None and not 0.0 <= weight <= 1.0:
        raise FacelabError(f"--weight {weight}: the blend weight must be in [0, 1]")
    weights = np.linspace(0.0, 1.0, sweep).tolist() if sweep else [weight]
    check_output(Path(out), option="--out", inputs=[Path(run), *([Path(store)] if store else [])],
                 ours=is_facelab_png)
    model, meta = load_model(run, kind="generative", device=device)
    g = torch.Generator().manual_seed(seed)
    if model.is_conditional:
        images = _condition_blend(model, classes, weights, n, g)
        how = "condition blend"
    else:
        images = _latent_mean_blend(model, meta, store, classes, weights, n, g)
        how = "class latent-mean blend"
    path = save_grid(images, out, nrow=len(weights) if sweep else 8)
    return {"run": str(run), "model": meta.arch, "classes": list(classes), "weight": None if sweep else weight,
            "weights": weights, "rows": n, "method": how, "grid": str(path)}


def _condition_blend(model, classes, weights: list[float], n: int, g) -> torch.Tensor:
    """(n * len(weights), 3, S, S): latent i with every weight, row by row."""
    cats = [c for c in model.config.conditions if c.kind == "categorical"]
    if len(cats) != 1:
        raise FacelabError("blending classes needs a model conditioned on one categorical label (e.g. CIFAR-10 label)")
    ca, cb = (model.make_cond({cats[0].name: c}) for c in classes)
    cond = blend_conditions(ca, cb, weights).repeat(n, 1)  # (n * K, cond_dim)
    z = model.sample_latent(n, generator=g).repeat_interleave(len(weights), dim=0)  # (n * K, latent_dim)
    with torch.no_grad(), eval_mode(model):  # the draws of model.sample(n, ...): the end columns are the classes
        return model.generate(z, cond).clamp(-1, 1)


def _latent_mean_blend(model, meta, store_path, classes, weights: list[float], n, g) -> torch.Tensor:
    if not model.has_encoder:
        raise FacelabError(f"{meta.arch} is unconditional and has no encoder: blend with a conditional model or an autoencoder")
    if store_path is None:
        raise FacelabError("blending with an unconditional autoencoder needs --data STORE to find the class latent means")
    store = Store.open(store_path)
    specs = [s for s in store.label_specs if s.classes and set(classes) <= set(s.classes)]
    if not specs:
        raise FacelabError(f"{store.path}: no label has both classes {classes}")
    spec = specs[0]
    col = store.column(spec.name)
    ids = [spec.classes.index(c) for c in classes]

    def batches():
        for cls_id in ids:
            rows = np.flatnonzero(col == cls_id)[:512]
            x = torch.from_numpy(np.asarray(store.images[rows])).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            yield x.to(model.device), torch.full((len(rows),), ids.index(cls_id), dtype=torch.long)

    means = class_latent_means(model, batches(), num_classes=2)  # (2, D)
    centers = torch.stack([torch.lerp(means[0], means[1], w) for w in weights])  # (K, D)
    offsets = 0.5 * torch.randn(n, model.latent_dim, generator=g).to(centers)  # (n, D): one per row
    z = (offsets[:, None, :] + centers[None, :, :]).reshape(-1, model.latent_dim)  # (n * K, D), row by row
    with torch.no_grad():
        return model.decode(z)
