"""Latency of one photo through the whole path of ``facelab predict`` / ``serve``: decode, detect, align, crop,
predict; per detector and per engine (PyTorch eager against onnxruntime, run side by side on the same photos).

Photos are 640x480 JPEGs made from CelebA validation images (one face each, rotated, scaled and moved as in
``benchmarks/wild_photos.py``), or from synthetic faces when no CelebA root is given. Each configuration sees
the same photos in the same order after a warm-up; p50/p95 are over ``--photos`` photos.

    python benchmarks/bench_photo_latency.py --run runs/train-celeba --root ~/facelab-data/celeba --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor


def photos(root: Path | None, n: int, seed: int) -> list[bytes]:
    """``n`` 640x480 JPEG photos with one face each."""
    rng = np.random.default_rng(seed)
    if root is not None:
        from wild_photos import val_names, wild_transform  # benchmarks/ is on sys.path when run as a script

        from facelab.data.decode import decode_file
        from facelab.data.sources.celeba import find_layout

        names = val_names(root)[0][:n]
        faces = [decode_file(find_layout(root).images / name) for name in names]
    else:
        from facelab.data.face_params import FaceLabels, sample_face_params
        from facelab.data.render_face import render_face

        faces = [render_face(sample_face_params(int(s), FaceLabels(yaw="center")), 178) for s in rng.integers(0, 10**6, n)]
    out = []
    for face in faces:
        m = cv2.getRotationMatrix2D((face.shape[1] / 2, face.shape[0] / 2), float(rng.uniform(-20, 20)),
                                    float(rng.uniform(0.8, 1.3)))
        m[:, 2] += (rng.uniform(150, 490) - face.shape[1] / 2, rng.uniform(120, 360) - face.shape[0] / 2)
        photo = cv2.warpAffine(face, m, (640, 480), borderMode=cv2.BORDER_REPLICATE)
        out.append(cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def time_one(predictor: PhotoPredictor, data: bytes) -> tuple[float, int]:
    """Seconds for one photo through the service's path (decode as PhotoPredictor does, detect, align, predict)."""
    t0 = time.perf_counter()
    result = predictor.predict_image(predictor.decode_photo(data))
    return time.perf_counter() - t0, result.faces_found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a classifier run trained on aligned faces (e.g. CelebA)")
    ap.add_argument("--root", type=Path, default=None, help="CelebA root for real faces (default: synthetic faces)")
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--detectors", nargs="+", default=["retinaface", "mtcnn"])
    ap.add_argument("--engines", nargs="+", default=["torch", "onnx"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = photos(args.root, args.photos, args.seed)
    rows = []
    for detector in args.detectors:
        for engine in args.engines:
            options = {"threads": args.threads} if engine == "onnx" else {}
            predictor = PhotoPredictor(load_engine(args.run, engine=engine, **options), faces="detect",
                                       detector=detector, threads=args.threads)
            for d in data[:3]:
                time_one(predictor, d)  # warm-up: lazily loaded models, first-call allocations
            times, found = zip(*(time_one(predictor, d) for d in data))
            ms = np.array(times) * 1000
            rows.append({"detector": detector, "engine": engine, "p50_ms": float(np.percentile(ms, 50)),
                         "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean()),
                         "photos_with_a_face": int(sum(f > 0 for f in found)), "photos": len(data)})
    base = {r["detector"]: r["p50_ms"] for r in rows if r["engine"] == "torch"}
    for r in rows:
        r["p50_vs_torch"] = round(r["p50_ms"] / base[r["detector"]], 3) if r["detector"] in base else None
    out = {"run": str(args.run), "photo": "640x480 JPEG, one face", "faces": "real CelebA val" if args.root else
           "synthetic", "threads": args.threads, "cpus": os.cpu_count(), "target_p50_ms": 60, "results": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{'detector':11s} {'engine':6s} {'p50 ms':>7s} {'p95 ms':>7s} {'p50/torch':>9s} faces")
    for r in rows:
        print(f"{r['detector']:11s} {r['engine']:6s} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['p50_vs_torch']:9.3f} "
              f"{r['photos_with_a_face']}/{r['photos']}")


if __name__ == "__main__":
    main()
