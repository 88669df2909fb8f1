"""Derive a detector's 5-point alignment template from CelebA's own aligned images.

CelebA's ``img_align_celeba`` images (178 x 218) are faces already aligned by the dataset's authors. Running
a detector over them and taking, per landmark, the median position over every image where the detector
finds exactly one face gives where *that detector's* landmarks sit in CelebA's frame: the template that
aligning a photo with that detector must reproduce (facelab/faces/template.py holds the results).

    python benchmarks/face_template.py --root ~/facelab-data/celeba --detector mtcnn [--limit N] [--json]

Images are decoded with facelab's decoder and detected with the detector's default settings (min score,
min face size), in ``--workers`` processes of one thread each. Printed: the template (x, y per landmark),
how many images were used out of how many, and the spread of each landmark (median absolute deviation).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from facelab.data.decode import decode_file
from facelab.errors import ImageDecodeError
from facelab.faces import LANDMARK_NAMES, create_detector
from facelab.runs.folder import cpu_model

_DETECTOR = {}


def _init(name: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    _DETECTOR["d"] = create_detector(name, threads=1)


def _landmarks(path: str) -> tuple[str, int, list[list[float]] | None]:
    """(file name, number of faces found, the landmarks when exactly one face was found)."""
    try:
        image = decode_file(path)
    except ImageDecodeError:
        return Path(path).name, -1, None
    faces = _DETECTOR["d"].detect(image)
    return Path(path).name, len(faces), faces[0].landmarks.tolist() if len(faces) == 1 else None


def derive(files: list[Path], detector: str, workers: int, progress: bool = True) -> dict:
    """Run ``detector`` over ``files``; the median landmarks over the images with exactly one face."""
    t0 = time.perf_counter()
    points, counts = [], {"no_face": 0, "several_faces": 0, "unreadable": 0}
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(detector,)) as pool:
        for i, (_, n, lm) in enumerate(pool.imap(_landmarks, [str(f) for f in files], chunksize=16)):
            if lm is not None:
                points.append(lm)
            else:
                counts["unreadable" if n < 0 else "no_face" if n == 0 else "several_faces"] += 1
            if progress and (i + 1) % 500 == 0:
                print(f"  {detector}: {i + 1}/{len(files)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    pts = np.asarray(points, dtype=np.float64)  # (N, 5, 2)
    median = np.median(pts, axis=0)
    mad = np.median(np.abs(pts - median), axis=0)
    return {
        "detector": detector, "images": len(files), "used": len(points), **counts,
        "template": np.round(median, 2).tolist(), "mad": np.round(mad, 2).tolist(),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    default_root = Path(os.environ.get("FACELAB_DATA", "~/facelab-data")).expanduser() / "celeba"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=default_root, help="CelebA folder holding img_align_celeba/")
    ap.add_argument("--detector", nargs="+", default=["mtcnn", "retinaface"], help="detectors to derive")
    ap.add_argument("--limit", type=int, default=None, help="use every k-th image so that about N are used")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args()
    folder = args.root.expanduser() / "img_align_celeba"
    files = sorted(folder.glob("*.jpg"))
    if not files:
        sys.exit(f"no JPEG files in {folder}")
    if args.limit and args.limit < len(files):
        files = files[:: -(-len(files) // args.limit)]  # an even sample across the folder, not the first N
    results = [derive(files, name, args.workers, progress=not args.json) for name in args.detector]
    info = {"folder": str(folder), "cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "date": date.today().isoformat(), "workers": args.workers, "results": results}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{folder}: {len(files)} images; {info['cpu']}, {args.workers} workers, {info['date']}")
    for r in results:
        print(f"\n{r['detector']}: median over the {r['used']} of {r['images']} images with exactly one face "
              f"({r['no_face']} none, {r['several_faces']} several, {r['unreadable']} unreadable; {r['seconds']} s)")
        print(f"  {'landmark':<12} {'x':>8} {'y':>8}   {'MAD x':>6} {'MAD y':>6}")
        for name, (x, y), (mx, my) in zip(LANDMARK_NAMES, r["template"], r["mad"]):
            print(f"  {name:<12} {x:8.2f} {y:8.2f}   {mx:6.2f} {my:6.2f}")


if __name__ == "__main__":
    main()
