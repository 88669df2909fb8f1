"""``facelab data sources | prepare | stats`` (dataset stores) and ``facelab align`` (aligned faces from photos)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from facelab.cli.common import JSON_OPT, console, emit_json
from facelab.config import parse_options
from facelab.errors import FacelabError
from facelab.utils.console import stdout_console

data_app = typer.Typer(help="Prepare dataset stores and inspect them.", no_args_is_help=True)
DETECTOR_OPT = typer.Option(None, "--detector", help="Face detector: mtcnn (default; landmarks trained on CelebA) "
                            "| retinaface (faster, coarser landmarks).")
MIN_SCORE_OPT = typer.Option(None, "--min-score", min=0.0, max=1.0,
                             help="Detections scored below this are not faces (default: the detector's, 0.9).")


@data_app.command("sources")
def data_sources(as_json: bool = JSON_OPT) -> None:
    """List the registered dataset sources and their options (on stdout; whole lines when not on a terminal)."""
    import inspect

    from facelab.data.sources import SOURCES

    rows = {}
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        rows[name] = {
            "doc": " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split()),  # its first paragraph
            "options": {k: f.get_default(call_default_factory=True) for k, f in cls.Options.model_fields.items()},
            "default_crop": cls.default_crop.model_dump(),
        }
    if as_json:
        emit_json(rows)
        return
    from rich.text import Text

    out = stdout_console(highlight=False)
    for name, r in rows.items():
        out.print(Text.assemble((name, "bold"), f": {r['doc']}"))
        if r["options"]:
            out.print("   options: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r["options"].items()), markup=False)


@data_app.command("prepare")
def data_prepare(
    source: str = typer.Argument(..., help="celeba | utkface | cifar10 | folder | synthetic"),
    root: Optional[Path] = typer.Argument(None, help="Dataset folder as downloaded (not needed for synthetic)."),
    out: Path = typer.Option(..., "--out", help="Store folder to write."),
    size: int = typer.Option(64, "--size", min=8, max=1024, help="Side of the square store images (px)."),
    crop: Optional[str] = typer.Option(None, help="Crop mode: center | box | none (default: the source's)."),
    crop_scale: Optional[float] = typer.Option(None, help="Centre crop side as a share of the short side (0-1]."),
    crop_offset_y: Optional[float] = typer.Option(None, help="Shift the centre crop down by this share of the height."),
    crop_box: Optional[str] = typer.Option(None, help="left,top,right,bottom in source pixels (mode box)."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: all cores)."),
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Source option KEY=VALUE (repeatable), "
                                                                              "e.g. -o attributes=Male,Smiling."),
    overwrite: bool = typer.Option(False, help="Replace a different store already in --out."),
    align: bool = typer.Option(False, "--align", help="Detect each image's faces and store the best one aligned "
                               "into CelebA's frame (then cropped as celeba is); images without a face are skipped."),
    detector: Optional[str] = DETECTOR_OPT,
    min_score: Optional[float] = MIN_SCORE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Decode a dataset once into a fast store (resumable; re-run to finish an interrupted build)."""
    from facelab.data.build import default_crop, prepare_store
    from facelab.data.sources import create_source

    if not align and (detector is not None or min_score is not None):
        raise typer.BadParameter("--detector and --min-score choose how --align finds faces; add --align")
    spec = _align_spec(detector, min_score) if align else None
    src = create_source(source, root, **parse_options(option))
    crop_spec = _crop_spec(default_crop(src, align=align), crop, crop_scale, crop_offset_y, crop_box)
    report = prepare_store(src, out, size=size, crop=crop_spec, align=spec, workers=workers, overwrite=overwrite,
                           progress=True)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_build_report(report)


def _align_spec(detector: str | None, min_score: float | None):
    from facelab.faces import AlignSpec

    given = {k: v for k, v in {"detector": detector, "min_score": min_score}.items() if v is not None}
    spec = AlignSpec.from_dict(given, where="alignment options")
    spec.check_installed()  # before any folder is made or worker started
    return spec


def _crop_spec(default, mode, scale, offset_y, box):
    from facelab.data.schema import CropSpec

    d = default.model_dump()
    for k, v in {"mode": mode, "scale": scale, "offset_y": offset_y}.items():
        if v is not None:
            d[k] = v
    if box is not None:
        try:
            d["box"] = tuple(int(v) for v in box.split(","))
        except ValueError:
            raise FacelabError(f"--crop-box {box!r}: expected four integers left,top,right,bottom") from None
        d["mode"] = mode or "box"
    return CropSpec.from_dict(d, where="crop options")


def _print_build_report(report) -> None:
    d = report.to_dict()
    console.print(f"[bold green]store ready[/]: {d.get('path')}")
    for k in ("count", "skipped_count", "seconds", "images_per_s", "status"):
        if k in d:
            console.print(f"  {k}: {d[k]}")
    if d.get("align") is not None:
        console.print(f"  aligned: {d['aligned']} faces re-detected ({d['align']['detector']}, min score "
                      f"{d['align']['min_score']:g}); {d['no_face']} images without a face")
    for note in d.get("notes", []):
        console.print(f"  note: {note}")
    skipped = d.get("skipped", [])
    for s in skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}", markup=False)
    if len(skipped) > 10:
        console.print(f"  ... {len(skipped) - 10} more skipped files listed in manifest.json")


@data_app.command("stats")
def data_stats(
    store: Path = typer.Argument(..., help="A store folder made by `facelab data prepare`."),
    plots: Optional[Path] = typer.Option(None, help="Folder for correlation.png and prevalence.png (default STORE/stats)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Counts per split, per-label prevalence, and the label correlation heatmap."""
    from facelab.data import stats as st
    from facelab.data.store import Store

    figures = st.stats_with_plots(Store.open(store), plots)
    if as_json:
        emit_json(figures)
        return
    stdout_console().print(st.format_stats_table(figures))
    console.print(f"plots written to {Path(figures['plots']['prevalence']).parent}")


# ---- faces -----------------------------------------------------------------------------------------
def align(
    photos: Path = typer.Argument(..., help="A folder of photos (searched recursively) or one image file."),
    out: Path = typer.Option(..., "--out", help="Folder to write <photo>.face<i>.png and faces.csv into."),
    detector: Optional[str] = DETECTOR_OPT,
    min_score: Optional[float] = MIN_SCORE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Detect every face in photos and write each aligned into CelebA's 178x218 frame, plus faces.csv."""
    from facelab.data.align_folder import align_folder

    report = align_folder(photos, out, spec=_align_spec(detector, min_score), progress=True)
    for s in report.skipped:
        console.print(f"  skipped {s['file']}: {s['reason']}", markup=False, highlight=False, soft_wrap=True)
    for c in report.capped:
        console.print(f"  {c['file']}: {c['note']}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        emit_json(report.to_dict())
        return
    console.print(f"[bold green]wrote[/] {report.faces} aligned faces from {report.read} of {report.photos} photos "
                  f"to {report.out} (list: {report.csv})")
    if report.removed:
        console.print(f"  removed {report.removed} face files of an earlier run that no photo gives any more")
