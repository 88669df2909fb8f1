"""Accuracy of a CelebA-trained classifier on photos in the wild: aligned crops vs wild photos, with and
without the face pipeline.

Wild versions of the CelebA validation images are made with a known transform: each aligned 178x218 image is
rotated by a random angle in +-``--max-rotation`` degrees, scaled by a random factor in ``--scale``, moved by a
random offset and placed in a larger ``--canvas`` photo whose surroundings continue the image's own border
(``BORDER_REPLICATE``: no second face appears); a greyscale copy of every photo is made too. The transforms are
written to ``wild.csv`` beside the photos.

The same classifier then predicts, label by label against CelebA's annotations:

* ``aligned``: the original aligned images (what the model was trained on);
* ``wild, as before``: the wild photos with ``facelab predict --faces aligned``, i.e. the checkpoint's crop of
  the whole photo, which is what ``predict`` did before it could find faces;
* ``wild, face pipeline``: the wild photos with ``--faces detect``: detected, aligned into CelebA's frame, then
  cropped as in training;

and the greyscale variants of both wild rows. The target: through the pipeline within 1.5 points of the
aligned original on the 40-attribute mean.

    python benchmarks/wild_photos.py --root ~/facelab-data/celeba --run runs/train-celeba --out bench-out/wild --json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

from facelab.data.decode import decode_file
from facelab.data.sources.celeba import find_layout, read_attributes, read_int_table
from facelab.eval.metrics import label_metrics
from facelab.eval.predict import predict_to_csv

SHOWN = ("Male", "Smiling", "Eyeglasses")


def val_names(root: Path) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    """The official val partition's image names that exist under ``root``, their 0/1 labels, attribute names."""
    layout = find_layout(root)
    attrs = read_attributes(layout.attributes)
    part = read_int_table(layout.partitions, n_values=1, what="partition", names_hint=attrs.raw_names)
    partition, found = part.select(attrs, list(range(len(attrs.names))))
    images = layout.images
    keep = [i for i, n in enumerate(attrs.names)
            if found[i] and partition[i, 0] == 1 and (images / n).is_file()]
    names = [attrs.names[i] for i in keep]
    values = {n: attrs.values[i] for n, i in zip(names, keep)}
    return names, values, list(attrs.attributes)


def wild_transform(rng: np.random.Generator, size: tuple[int, int], canvas: int, max_rotation: float,
                   scale: tuple[float, float]) -> tuple[np.ndarray, dict[str, float]]:
    """A (2, 3) affine matrix placing an image of ``size`` (w, h) rotated, scaled and moved inside the canvas."""
    w, h = size
    angle = float(rng.uniform(-max_rotation, max_rotation))
    s = float(rng.uniform(*scale))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, s)  # about the image centre
    half = 0.5 * s * max(w, h)
    cx, cy = (float(rng.uniform(half, canvas - half)) if canvas > 2 * half else canvas / 2 for _ in range(2))
    m[:, 2] += (cx - w / 2, cy - h / 2)
    return m, {"angle": angle, "scale": s, "cx": cx, "cy": cy}


def make_wild(root: Path, names: list[str], out: Path, *, canvas: int, max_rotation: float,
              scale: tuple[float, float], seed: int) -> dict[str, Path]:
    """Write the wild photos (colour and greyscale) of ``names``; returns the two folders."""
    color, gray = out / "wild", out / "wild-gray"
    if (out / "wild.csv").is_file() and len(list(color.glob("*.jpg"))) == len(names):
        return {"color": color, "gray": gray}  # made earlier with the same names
    color.mkdir(parents=True, exist_ok=True)
    gray.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = find_layout(root).images
    rows = []
    for name in names:
        img = decode_file(images / name)  # (218, 178, 3) RGB
        m, info = wild_transform(rng, (img.shape[1], img.shape[0]), canvas, max_rotation, scale)
        photo = cv2.warpAffine(img, m, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cv2.imwrite(str(color / name), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(str(gray / name), cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), [cv2.IMWRITE_JPEG_QUALITY, 92])
        rows.append({"file": name, **{k: round(v, 3) for k, v in info.items()}})
    with open(out / "wild.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {"color": color, "gray": gray}


def scores(pred_csv: Path, values: dict[str, np.ndarray], attributes: list[str]) -> dict[str, object]:
    """Per-attribute accuracy and balanced accuracy of a predictions CSV against CelebA's labels; a photo with
    several faces counts its first (best-scored) face, a photo without one counts as wrong everywhere."""
    with open(pred_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    key = "file" if rows and "file" in rows[0] else "key"
    first: dict[str, dict[str, str]] = {}
    for r in rows:
        first.setdefault(Path(r[key]).name, r)
    names = sorted(values)
    found = [n in first for n in names]
    per = {}
    for j, a in enumerate(attributes):
        if f"p_{a}" not in (rows[0] if rows else {}):
            continue
        y = np.array([int(values[n][j] > 0) for n in names])
        p = np.array([float(first[n][f"p_{a}"]) if n in first else float(1 - y[i]) for i, n in enumerate(names)])
        m = label_metrics(y, p)
        per[a] = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"]}
    mean = float(np.mean([m["accuracy"] for m in per.values()]))
    return {"mean_accuracy": mean, "faces_found": int(sum(found)), "photos": len(names),
            **{a: per[a] for a in SHOWN if a in per}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("~/facelab-data/celeba").expanduser())
    ap.add_argument("--run", type=Path, nargs="+", required=True, help="classifier run(s) trained on aligned CelebA")
    ap.add_argument("--out", type=Path, default=Path("bench-out/wild"))
    ap.add_argument("--canvas", type=int, default=400)
    ap.add_argument("--max-rotation", type=float, default=30.0)
    ap.add_argument("--scale", type=float, nargs=2, default=(0.5, 1.5))
    ap.add_argument("--limit", type=int, default=None, help="use the first N val images (quick runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    names, values, attributes = val_names(args.root)
    names = names[: args.limit] if args.limit else names
    values = {n: values[n] for n in names}
    folders = make_wild(args.root, names, args.out, canvas=args.canvas, max_rotation=args.max_rotation,
                        scale=tuple(args.scale), seed=args.seed)
    aligned = args.out / "aligned"
    aligned.mkdir(parents=True, exist_ok=True)
    images = find_layout(args.root).images
    for n in names:  # the originals, as a folder of photos that are already aligned
        target = aligned / n
        if not target.exists():
            target.symlink_to(images / n)
    runs = args.run if len(args.run) > 1 else args.run[0]
    conditions = {"aligned": (aligned, "aligned"),
                  "wild, as before": (folders["color"], "aligned"),
                  "wild, face pipeline": (folders["color"], "detect"),
                  "wild greyscale, as before": (folders["gray"], "aligned"),
                  "wild greyscale, face pipeline": (folders["gray"], "detect")}
    results = {}
    for label, (folder, faces) in conditions.items():
        csv_path = args.out / f"pred-{label.replace(' ', '_').replace(',', '')}.csv"
        t0 = time.monotonic()
        predict_to_csv(runs, folder, csv_path, faces=faces, progress=False)
        results[label] = {**scores(csv_path, values, attributes), "seconds": round(time.monotonic() - t0, 1)}
    base = results["aligned"]["mean_accuracy"]
    out = {"run": [str(r) for r in args.run], "images": len(names), "canvas": args.canvas,
           "max_rotation": args.max_rotation, "scale": list(args.scale), "seed": args.seed,
           "target_points_below_aligned": 1.5, "results": results,
           "pipeline_points_below_aligned": round(100 * (base - results["wild, face pipeline"]["mean_accuracy"]), 2)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{len(names)} CelebA val images; wild: rotation +-{args.max_rotation:g} deg, scale {args.scale}, "
          f"{args.canvas}px canvas")
    print(f"{'condition':32s} {'faces':>9s} {'mean acc':>9s} " + " ".join(f"{a + ' bal':>16s}" for a in SHOWN))
    for label, r in results.items():
        cells = " ".join(f"{r[a]['balanced_accuracy']:16.4f}" if a in r else f"{'-':>16s}" for a in SHOWN)
        print(f"{label:32s} {r['faces_found']:4d}/{r['photos']:<4d} {r['mean_accuracy']:9.4f} {cells}")


if __name__ == "__main__":
    main()
