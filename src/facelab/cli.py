"""The ``facelab`` command: thin typer verbs over library functions (no logic of its own)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console

from facelab.errors import FacelabError

app = typer.Typer(
    help="facelab: face-attribute datasets, classifiers, generative models and augmentation studies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare dataset stores and inspect them.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
JSON_OPT = typer.Option(False, "--json", help="Print the figures as JSON on stdout.")


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (the machine-readable channel; progress goes to stderr)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``-o key=value`` pairs; values are parsed as YAML (numbers, lists, mappings); dotted keys nest."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise FacelabError(f"option {item!r} is not KEY=VALUE (e.g. -o n=5000 -o prevalence.Male=0.1)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# ---- data ------------------------------------------------------------------------------------
@data_app.command("sources")
def data_sources(as_json: bool = JSON_OPT) -> None:
    """List the registered dataset sources and their options."""
    from facelab.data.sources import SOURCES

    rows = {}
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        rows[name] = {
            "doc": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
            "options": {k: str(f.default) for k, f in cls.Options.model_fields.items()},
            "default_crop": cls.default_crop.model_dump(),
        }
    if as_json:
        emit_json(rows)
        return
    for name, r in rows.items():
        console.print(f"[bold]{name}[/]: {r['doc']}")
        if r["options"]:
            console.print("   options: " + ", ".join(f"{k}={v}" for k, v in r["options"].items()))


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
    option: Optional[list[str]] = typer.Option(None, "-o", "--option", help="Source option KEY=VALUE (repeatable)."),
    overwrite: bool = typer.Option(False, help="Replace a different store already in --out."),
    as_json: bool = JSON_OPT,
) -> None:
    """Decode a dataset once into a fast store (resumable; re-run to finish an interrupted build)."""
    from facelab.data.build import prepare_store
    from facelab.data.sources import create_source

    src = create_source(source, root, **parse_options(option))
    crop_spec = _crop_spec(type(src).default_crop, crop, crop_scale, crop_offset_y, crop_box)
    report = prepare_store(src, out, size=size, crop=crop_spec, workers=workers, overwrite=overwrite, progress=True)
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_build_report(report)


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
        d.setdefault("mode", "box")
        d["mode"] = mode or "box"
    return CropSpec.from_dict(d, where="crop options")


def _print_build_report(report) -> None:
    d = report.to_dict()
    console.print(f"[bold green]store ready[/]: {d.get('path')}")
    for k in ("count", "skipped_count", "seconds", "images_per_s", "status"):
        if k in d:
            console.print(f"  {k}: {d[k]}")
    for note in d.get("notes", []):
        console.print(f"  note: {note}")
    skipped = d.get("skipped", [])
    for s in skipped[:10]:
        console.print(f"  skipped {s['key']}: {s['reason']}")
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

    s = Store.open(store)
    figures = st.dataset_stats(s)
    plots = plots or (s.path / "stats")
    plots.mkdir(parents=True, exist_ok=True)
    names, matrix = st.correlation_matrix(s)
    if len(names) >= 2:
        st.plot_correlation(plots / "correlation.png", names, matrix)
    st.plot_prevalence(plots / "prevalence.png", figures)
    figures["plots"] = {"correlation": str(plots / "correlation.png") if len(names) >= 2 else None,
                        "prevalence": str(plots / "prevalence.png")}
    if as_json:
        emit_json(figures)
        return
    Console().print(st.format_stats_table(figures))
    console.print(f"plots written to {plots}")


# ---- demo ------------------------------------------------------------------------------------
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs"), help="Folder under which the demo run folder is created."),
    n: int = typer.Option(3000, help="Number of synthetic faces."),
    size: int = typer.Option(64, help="Image size of the synthetic store."),
    as_json: bool = JSON_OPT,
) -> None:
    """The main job, end to end on built-in synthetic faces (no download needed)."""
    from facelab.experiments.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(n=n, size=size), runs_root=out)
    if as_json:
        emit_json(summary)
    else:
        console.print_json(data=summary, default=_json_default)


def main() -> None:
    """Entry point with friendly errors: user mistakes print one clear line and exit 2."""
    try:
        app()
    except FacelabError as e:
        console.print(f"[bold red]error:[/] {e}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
