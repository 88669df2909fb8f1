"""Face alignment accuracy and speed, per detector, on CelebA's validation faces pasted into larger photos.

Each of CelebA's official validation images (partition 1 of list_eval_partition.txt; 780 in the development
copy) is already a face aligned into CelebA's 178 x 218 frame. It is pasted into a 400 x 400 photo by a
known similarity T (rotation uniform in +-30 degrees, scale uniform in 0.5-1.5, the face centre uniform in
the middle 200 x 200; outside the pasted image: its edge pixels repeated, then blurred), once in colour and
once in grey. Then, per detector (default settings):

- detection rate: photos where the detector finds a face (the best-scored one is used);
- landmark error: |T^-1(landmarks found in the photo) - landmarks found in the original image|, in pixels
  of the 178 x 218 frame, averaged over the 5 landmarks: does the detector see the same points whatever
  the pose?
- crop error: the alignment M (photo -> frame) composed with T maps the original image into the frame; it
  should be the identity (the original IS a CelebA-aligned face). Mean distance, in frame pixels, between
  the template points and where M.T sends them. "original" is the same measure when the unpasted image is
  aligned directly: the floor set by how far each face's landmarks lie from the detector's median template.
  The same error with cv2.estimateAffinePartial2D(LMEDS) in place of the least-squares fit is shown beside,
  and the fits' residual: mean distance of the aligned landmarks from the template (least squares minimises
  it; LMEDS fits a subset of the points).
- latency of detect + align (FacePipeline.find) on a 640 x 480 photo holding one pasted face: p50 / p95
  over ``--latency-photos`` photos, with the detector on 1 and 2 threads (one process).

    python benchmarks/face_alignment.py --root ~/facelab-data/celeba [--detector mtcnn retinaface]
        [--limit N] [--workers 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from facelab.data.decode import decode_file
from facelab.faces import AlignSpec, FacePipeline, similarity_transform, transform_points
from facelab.runs.folder import cpu_model

CANVAS = 400
LATENCY_SIZE = (640, 480)  # width, height
_STATE: dict = {}


def val_files(root: Path) -> list[Path]:
    """CelebA's official validation images (partition 1) present under root/img_align_celeba, sorted."""
    folder = root / "img_align_celeba"
    names = [line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines() if line.strip()]
    return sorted(folder / n for n, p in names if p == "1" and (folder / n).is_file())


def random_pose(rng: np.random.Generator, canvas: int = CANVAS) -> np.ndarray:
    """(2, 3) frame -> photo similarity: rotation +-30 degrees, scale 0.5-1.5, face centre in the middle half."""
    angle, scale = rng.uniform(-30.0, 30.0), rng.uniform(0.5, 1.5)
    centre = rng.uniform(canvas * 0.25, canvas * 0.75, size=2)
    m = cv2.getRotationMatrix2D((88.5, 108.5), angle, scale)  # about the frame's centre
    m[:, 2] += centre - (88.5, 108.5)
    return m


def paste(image: np.ndarray, pose: np.ndarray, size: tuple[int, int], *, grey: bool = False) -> np.ndarray:
    """``image`` warped by ``pose`` into a (height, width) photo; outside it, its edges repeated and blurred."""
    w, h = size
    sharp = cv2.warpAffine(image, pose, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.full(image.shape[:2], 255, np.uint8), pose, (w, h), flags=cv2.INTER_NEAREST)
    photo = np.where(inside[:, :, None] > 0, sharp, cv2.GaussianBlur(sharp, (0, 0), 6))
    if grey:
        photo = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    return np.ascontiguousarray(photo)


def _init(detector: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    _STATE["pipeline"] = FacePipeline(AlignSpec(detector=detector), threads=1)


def _crop_error(matrix: np.ndarray, pose: np.ndarray, template: np.ndarray) -> float:
    """Mean distance between the template points and where (photo -> frame) o (frame -> photo) sends them."""
    return float(np.linalg.norm(transform_points(transform_points(template, pose), matrix) - template, axis=1).mean())


def _residual(matrix: np.ndarray, found: np.ndarray, template: np.ndarray) -> float:
    """Mean distance between the aligned landmarks and the template points (what least squares minimises)."""
    return float(np.linalg.norm(transform_points(found, matrix) - template, axis=1).mean())


def measure(job: tuple[str, int]) -> dict:
    """Every figure of one validation image: the original, then the colour and the grey photo."""
    path, seed = job
    pipeline: FacePipeline = _STATE["pipeline"]
    template = pipeline.spec.template_points
    image = decode_file(path)
    pose = random_pose(np.random.default_rng(seed))
    inverse = cv2.invertAffineTransform(pose)
    ref = pipeline.detect(image)
    out: dict = {"original": ref[0].landmarks.tolist() if ref else None}
    if ref:
        out["crop_original"] = _crop_error(similarity_transform(ref[0].landmarks, template),
                                           np.array([[1.0, 0, 0], [0, 1.0, 0]]), template)
    for variant, grey in (("colour", False), ("grey", True)):
        faces = pipeline.detect(paste(image, pose, (CANVAS, CANVAS), grey=grey))
        if not faces:
            out[variant] = None
            continue
        found = faces[0].landmarks
        lmeds, _ = cv2.estimateAffinePartial2D(found.astype(np.float32), template.astype(np.float32),
                                               method=cv2.LMEDS)
        fitted = similarity_transform(found, template)
        out[variant] = {
            "landmark": (float(np.linalg.norm(transform_points(found, inverse) - np.asarray(ref[0].landmarks),
                                              axis=1).mean()) if ref else None),
            "crop": _crop_error(fitted, pose, template),
            "crop_lmeds": _crop_error(lmeds, pose, template) if lmeds is not None else None,
            "residual": _residual(fitted, found, template),
            "residual_lmeds": _residual(lmeds, found, template) if lmeds is not None else None,
        }
    return out


def _stats(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "p95": None}
    return {"n": int(v.size), "mean": round(float(v.mean()), 2), "median": round(float(np.median(v)), 2),
            "p95": round(float(np.percentile(v, 95)), 2)}


def accuracy(files: list[Path], detector: str, workers: int) -> dict:
    t0 = time.perf_counter()
    jobs = [(str(p), i) for i, p in enumerate(files)]  # image i gets pose seed i: every detector, same photos
    with mp.get_context("fork").Pool(workers, initializer=_init, initargs=(detector,)) as pool:
        rows = pool.map(measure, jobs, chunksize=8)
    result: dict = {"images": len(files), "found_original": sum(r["original"] is not None for r in rows),
                    "crop_original": _stats([r.get("crop_original") for r in rows])}
    for variant in ("colour", "grey"):
        found = [r[variant] for r in rows if r[variant] is not None]
        result[variant] = {
            "detection_rate": round(len(found) / len(rows), 4),
            "landmark": _stats([f["landmark"] for f in found]),
            "crop": _stats([f["crop"] for f in found]),
            "crop_lmeds": _stats([f["crop_lmeds"] for f in found]),
            "residual": _stats([f["residual"] for f in found]),
            "residual_lmeds": _stats([f["residual_lmeds"] for f in found]),
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def latency(files: list[Path], detector: str, photos: int) -> dict:
    """p50/p95 milliseconds of FacePipeline.find on 640 x 480 photos, 1 and 2 threads, in this process."""
    rng = np.random.default_rng(12345)
    images = []
    for path in files[:photos]:
        pose = random_pose(rng, canvas=LATENCY_SIZE[1])
        pose[0, 2] += (LATENCY_SIZE[0] - LATENCY_SIZE[1]) / 2  # centre the square pose range in the wide photo
        images.append(paste(decode_file(path), pose, LATENCY_SIZE))
    out = {}
    for threads in (1, 2):
        pipeline = FacePipeline(AlignSpec(detector=detector), threads=threads)
        pipeline.find(images[0])  # load the model
        times = []
        for image in images:
            t = time.perf_counter()
            pipeline.find(image)
            times.append((time.perf_counter() - t) * 1000)
        out[f"threads_{threads}"] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                                     "p95_ms": round(float(np.percentile(times, 95)), 1), "photos": len(times)}
    cv2.setNumThreads(1)
    return out


def print_table(info: dict) -> None:
    print(f"{info['images']} CelebA val images from {info['root']}; {info['cpu']}, {info['cores']} cores, "
          f"{info['workers']} workers, {info['date']}")
    head = f"{'detector':<11} {'photo':<7} {'found':>7} {'landmark px mean/med/p95':>25} {'crop px mean/med/p95':>22}" \
           f" {'LMEDS crop mean/med':>20} {'residual LSQ/LMEDS':>19}"
    print(head)
    fmt = lambda s, keys=("mean", "median", "p95"): " / ".join(f"{s[k]:.2f}" for k in keys)  # noqa: E731
    for name, r in info["results"].items():
        for variant in ("colour", "grey"):
            v = r[variant]
            print(f"{name:<11} {variant:<7} {v['detection_rate']:>7.1%} {fmt(v['landmark']):>25} {fmt(v['crop']):>22}"
                  f" {fmt(v['crop_lmeds'], ('mean', 'median')):>20}"
                  f" {v['residual']['mean']:>9.2f} / {v['residual_lmeds']['mean']:.2f}")
        print(f"{name:<11} {'orig.':<7} {r['found_original'] / r['images']:>7.1%} {'':>25} "
              f"{fmt(r['crop_original']):>22}")
    print(f"\nlatency of detect + align on a {LATENCY_SIZE[0]}x{LATENCY_SIZE[1]} photo (ms, p50 / p95)")
    for name, r in info["results"].items():
        lat = r["latency"]
        print(f"{name:<11} 1 thread {lat['threads_1']['p50_ms']:7.1f} / {lat['threads_1']['p95_ms']:7.1f}"
              f"   2 threads {lat['threads_2']['p50_ms']:7.1f} / {lat['threads_2']['p95_ms']:7.1f}")


def main() -> None:
    default_root = Path(os.environ.get("FACELAB_DATA", "~/facelab-data")).expanduser() / "celeba"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=default_root, help="CelebA folder (img_align_celeba/, partitions)")
    ap.add_argument("--detector", nargs="+", default=["mtcnn", "retinaface"])
    ap.add_argument("--limit", type=int, default=None, help="only the first N validation images")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the accuracy part")
    ap.add_argument("--latency-photos", type=int, default=60)
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    ap.add_argument("--table", type=Path, default=None, help="only print the table of a saved --json output")
    args = ap.parse_args()
    if args.table is not None:
        print_table(json.loads(args.table.read_text()))
        return
    root = args.root.expanduser()
    files = val_files(root)[: args.limit]
    if not files:
        sys.exit(f"no validation images under {root}")
    results = {}
    for name in args.detector:
        results[name] = accuracy(files, name, args.workers)
        results[name]["latency"] = latency(files, name, args.latency_photos)
        print(f"{name}: done in {results[name]['seconds']} s", file=sys.stderr)
    info = {"root": str(root), "images": len(files), "cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "date": date.today().isoformat(), "workers": args.workers,
            "canvas": CANVAS, "results": results}
    print(json.dumps(info, indent=2) if args.json else "", end="\n" if args.json else "")
    if not args.json:
        print_table(info)


if __name__ == "__main__":
    main()
