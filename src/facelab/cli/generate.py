"""``facelab sample``, ``interpolate`` and ``blend``: images from generative runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import DEVICE_OPT, JSON_OPT, console, emit_json
from facelab.errors import FacelabError


def sample(
    run: Path = typer.Argument(..., help="A generative run folder (or checkpoint)."),
    n: int = typer.Option(64, min=1),
    grid: Optional[Path] = typer.Option(None, help="PNG grid to write (8 per row; default RUN/samples/)."),
    images: Optional[Path] = typer.Option(None, help="Also save each image as a PNG in this folder."),
    cond: Optional[str] = typer.Option(None, help='Condition, e.g. "Male=1,Eyeglasses=1" or "horse".'),
    seed: int = typer.Option(0),
    temperature: float = typer.Option(1.0, min=0.01),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Sample images from a generative run."""
    from facelab.eval.sampling import sample_run

    res = sample_run(run, n=n, cond=cond, grid=grid, images_dir=images, seed=seed, temperature=temperature, device=device)
    emit_json(res) if as_json else console.print(f"grid: {res['grid']}")


def interpolate(
    run: Path = typer.Argument(..., help="A generative run folder."),
    out: Path = typer.Option(Path("interpolation.png"), "--out"),
    steps: int = typer.Option(10, min=2),
    rows: int = typer.Option(4, min=1, help="Strips between random latent pairs."),
    data: Optional[Path] = typer.Option(None, "--data", help="Store of the real images for --pair."),
    pair: Optional[str] = typer.Option(None, help="I,J: interpolate between store rows I and J through the encoder."),
    cond: Optional[str] = typer.Option(None),
    linear: bool = typer.Option(False, help="Linear instead of spherical interpolation."),
    seed: int = typer.Option(0),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """A strip between two latent points, or between two real images (autoencoders)."""
    from facelab.eval.sampling import interpolate_run

    pr = None
    if pair:
        try:
            a, b = (int(v) for v in pair.split(","))
        except ValueError:
            raise FacelabError(f"--pair {pair!r}: expected two store rows I,J") from None
        pr = (a, b)
    res = interpolate_run(run, out=out, steps=steps, rows=rows, seed=seed, cond=cond, store=data, pair=pr,
                          spherical=not linear, device=device)
    emit_json(res) if as_json else console.print(f"strip: {res['strip']}")


def blend(
    run: Path = typer.Argument(..., help="A generative run (conditional on a class label, or an autoencoder)."),
    classes: str = typer.Option(..., help="Two classes, e.g. bird,horse"),
    weight: float = typer.Option(0.5, help="0 = first class, 1 = second class."),
    sweep: Optional[int] = typer.Option(None, help="K weights from 0 to 1 as columns, one latent per row "
                                        "(bird -> pegasus -> horse); replaces --weight."),
    n: Optional[int] = typer.Option(None, min=1, help="Images (default 64); with --sweep, rows (default 8)."),
    out: Path = typer.Option(Path("blend.png"), "--out"),
    data: Optional[Path] = typer.Option(None, "--data", help="Store for class latent means (unconditional autoencoders)."),
    seed: int = typer.Option(0),
    device: str = DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Blend two classes (the pegasus from CIFAR-10 birds and horses)."""
    from facelab.eval.sampling import blend_run

    parts = [c.strip() for c in classes.split(",") if c.strip()]
    if len(parts) != 2:
        raise FacelabError(f"--classes {classes!r}: give exactly two classes, e.g. bird,horse")
    rows = n if n is not None else (8 if sweep else 64)
    res = blend_run(run, classes=(parts[0], parts[1]), weight=weight, n=rows, out=out, store=data, seed=seed,
                    device=device, sweep=sweep)
    emit_json(res) if as_json else console.print(f"blend: {res['grid']}")
