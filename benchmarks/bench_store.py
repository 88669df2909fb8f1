"""Store build speed: facelab ``prepare_store`` against a one-process PIL loop, on real CelebA images.

The baseline is what a notebook would do: for each file ``Image.open(p).convert("RGB")``, the centred
square crop (178x178 at top=20 for CelebA's 178x218), ``resize((S, S), BILINEAR)``, appended to a list
and stacked. facelab is the whole ``prepare_store`` call: index, parallel decode (simplejpeg DCT
downscaling + cv2 INTER_AREA), fsynced memmap writes, content hash, manifest, atomic rename.

Runs alternate (baseline, facelab, then facelab, baseline, ...) after one warm-up read of every file, so
both see a warm page cache; the table shows the best and the median of ``--repeats`` runs.

    python benchmarks/bench_store.py --root ~/facelab-data/celeba --sizes 64 128 [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image

from facelab.data.build import prepare_store
from facelab.data.schema import CropSpec, Record, SourceIndex
from facelab.data.sources.base import Source
from facelab.runs.folder import cpu_model

FILTERS = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}


class BenchFiles(Source):
    """The first ``limit`` JPEGs of a folder, sorted, without labels (the builder, not annotation parsing)."""

    name: ClassVar[str] = "bench-files"
    default_crop = CropSpec(mode="center")  # 178x178 at top=20 on 178x218, like the baseline

    def __init__(self, root: Path, files: list[Path]) -> None:
        super().__init__(root)
        self.files = files

    def index(self) -> SourceIndex:
        records = [Record(key=p.name, ref=str(p), labels=()) for p in self.files]
        return SourceIndex(source=self.name, root=str(self.root), labels=[], records=records)


def baseline(files: list[Path], size: int, resample: int) -> np.ndarray:
    """One process, PIL decode + centre crop + resize, stacked: (N, S, S, 3) uint8."""
    out = []
    for p in files:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        out.append(np.asarray(im.crop((left, top, left + side, top + side)).resize((size, size), resample)))
    return np.stack(out)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_facelab(root: Path, files: list[Path], size: int, workers: int | None, tmp: Path) -> tuple[float, float, Path]:
    out = tmp / f"store{size}"
    shutil.rmtree(out, ignore_errors=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    prepare_store(BenchFiles(root, files), out, size=size, workers=workers, progress=False)
    return time.perf_counter() - t0, cpu_seconds() - c0, out


def bench_size(root: Path, files: list[Path], size: int, args: argparse.Namespace, tmp: Path) -> dict:
    base_t, fl_t, base_cpu, fl_cpu = [], [], [], []
    for r in range(args.repeats):
        order = ("baseline", "facelab") if r % 2 == 0 else ("facelab", "baseline")
        for who in order:
            if who == "baseline":
                t0, c0 = time.perf_counter(), cpu_seconds()
                ref = baseline(files, size, FILTERS[args.filter])
                base_t.append(time.perf_counter() - t0)
                base_cpu.append(cpu_seconds() - c0)
            else:
                seconds, cpu, out = run_facelab(root, files, size, args.workers, tmp)
                fl_t.append(seconds)
                fl_cpu.append(cpu)
    images = np.load(out / "images.npy", mmap_mode="r")
    assert images.shape == ref.shape, (images.shape, ref.shape)
    mad = float(np.abs(images.astype(np.int16) - ref.astype(np.int16)).mean())
    n = len(files)
    row = {"size": size, "images": n,
           "baseline_best_s": min(base_t), "baseline_median_s": statistics.median(base_t),
           "facelab_best_s": min(fl_t), "facelab_median_s": statistics.median(fl_t),
           "baseline_cpu_ms_per_image": 1e3 * min(base_cpu) / n, "facelab_cpu_ms_per_image": 1e3 * min(fl_cpu) / n,
           "mean_abs_diff_vs_baseline": round(mad, 2)}
    row["baseline_img_s"] = n / row["baseline_best_s"]
    row["facelab_img_s"] = n / row["facelab_best_s"]
    row["speedup_best"] = row["baseline_best_s"] / row["facelab_best_s"]
    row["speedup_median"] = row["baseline_median_s"] / row["facelab_median_s"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv: list[str] | None = None) -> int:
    default_root = Path(os.environ.get("FACELAB_DATA", "~/facelab-data")).expanduser() / "celeba"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=default_root, help="CelebA folder (or any folder of JPEGs)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="facelab processes (default: all cores)")
    ap.add_argument("--filter", choices=sorted(FILTERS), default="bilinear", help="baseline resize filter")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args(argv)
    root = args.root.expanduser()
    folder = root / "img_align_celeba" if (root / "img_align_celeba").is_dir() else root
    files = sorted(p for p in folder.glob("*.jpg"))[: args.limit]
    if not files:
        print(f"no .jpg files under {folder}; pass --root", file=sys.stderr)
        return 2
    for p in files:  # warm the page cache for both contenders
        p.read_bytes()
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        rows = [bench_size(folder, files, s, args, Path(tmp)) for s in args.sizes]
    result = {"machine": machine, "root": str(folder), "repeats": args.repeats, "workers": args.workers or os.cpu_count(),
              "baseline_filter": args.filter, "results": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{len(files)} images from {folder} | {machine['cpu']}, {machine['cores']} cores | "
          f"best (median) of {args.repeats}")
    print(f"{'size':>5} {'baseline img/s':>15} {'facelab img/s':>14} {'speedup':>16} {'CPU ms/img (b/f)':>17} "
          f"{'mean |diff|':>12}")
    for r in rows:
        cpu = f"{r['baseline_cpu_ms_per_image']:.3f}/{r['facelab_cpu_ms_per_image']:.3f}"
        print(f"{r['size']:>5} {r['baseline_img_s']:>15,.0f} {r['facelab_img_s']:>14,.0f} "
              f"{r['speedup_best']:>7.2f}x ({r['speedup_median']:.2f}x) {cpu:>17} {r['mean_abs_diff_vs_baseline']:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
