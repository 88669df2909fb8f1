"""Save a grid of synthetic faces (with their labels in a text file beside it) and time the renderer.

Usage: python tools/synthetic_preview.py OUT.png [--size 64] [--rows 8] [--seed 0] [--bench 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from facelab.data.render_face import render_face
from facelab.data.sources import create_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ipi", type=int, default=1, help="images per identity")
    ap.add_argument("--bench", type=int, default=0, help="also time this many renders")
    args = ap.parse_args()
    n = args.rows * args.rows
    src = create_source("synthetic", n=max(n, args.bench), seed=args.seed, images_per_identity=args.ipi)
    index = src.index()
    imgs = [src.load(r, min_side=args.size) for r in index.records[:n]]
    s = imgs[0].shape[0]
    grid = np.stack(imgs).reshape(args.rows, args.rows, s, s, 3).transpose(0, 2, 1, 3, 4).reshape(args.rows * s, -1, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    names = [spec.name for spec in index.labels]
    lines = [f"{r.key} id={r.identity} " + " ".join(f"{k}={v}" for k, v in zip(names, r.labels))
             for r in index.records[:n]]
    args.out.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    if args.bench:
        params = [src.face_params(r) for r in index.records[: args.bench]]
        t0 = time.perf_counter()
        for p in params:
            render_face(p, args.size)
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in index.records[: args.bench]:
            src.load(r, min_side=args.size)
        dt_load = time.perf_counter() - t0
        rate, rate_load = args.bench / dt, args.bench / dt_load
        print(f"{args.size} px: {rate:.0f} img/s rendering, {rate_load:.0f} img/s with sampling (load)")


if __name__ == "__main__":
    main()
