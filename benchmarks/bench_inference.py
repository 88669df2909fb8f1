"""Inference speed of an exported classifier: onnxruntime against PyTorch eager, side by side, as ratios.

For each model (trained runs given with ``--run``, else untrained models of the default config: 40 outputs at
64 px), the model is exported with ``facelab.deploy.export_onnx`` (parity checked) and both engines run the same
images through ``Engine.logits`` (the path ``facelab predict`` takes), at each batch size and thread count.
Calls of the two engines alternate, so background load hits both alike. Per-image latency is the call time
divided by the batch size (p50, p95 over the calls); throughput is images per second over all calls.

    python benchmarks/bench_inference.py                                  # vgg_scratch and resnet18, untrained
    python benchmarks/bench_inference.py --run runs/train-a --run runs/train-b --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from rich.console import Console
from rich.table import Table

from facelab.data.preprocessing import Preprocessing
from facelab.deploy import Engine, OnnxEngine, TorchEngine, export_onnx
from facelab.deploy.onnx import parity_images
from facelab.models.checkpoint import WEIGHTS, CheckpointMeta, resolve_checkpoint, save_checkpoint
from facelab.models.classifiers import Task, create_classifier
from facelab.models.classifiers.ensemble import load_classifier, member_metas
from facelab.runs.folder import cpu_model

DEFAULT_LABELS = 40  # the default config trains every CelebA attribute


def untrained_checkpoint(folder: Path, name: str, size: int) -> Path:
    """A checkpoint of an untrained ``name`` of the default config (DEFAULT_LABELS binary labels at ``size`` px)."""
    torch.manual_seed(0)
    task = Task.multilabel([f"attr_{i:02d}" for i in range(DEFAULT_LABELS)])
    model = create_classifier(name, num_outputs=task.num_logits, image_size=size)
    cfg = model.pretrained_cfg
    labels = [{"name": n, "kind": "binary", "classes": ["no", "yes"]} for n in task.names]
    meta = CheckpointMeta(kind="classifier", arch=name, arch_kwargs=model.arch_kwargs, labels=labels,
                          preprocessing=Preprocessing(image_size=size, mean=cfg.mean, std=cfg.std),
                          config={"task": task.to_dict()})
    return save_checkpoint(folder / name, model=model, meta=meta)


def timed_calls(engines: dict[str, Engine], x: np.ndarray, calls: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of each of ``calls`` calls of every engine on ``x``, the engines taking turns (first in turn too)."""
    for engine in engines.values():
        for _ in range(warmup):
            engine.logits(x)
    times: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    for i in range(calls):
        for name in order if i % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            engines[name].logits(x)
            times[name].append(time.perf_counter() - t0)
    return times


def figures(seconds: list[float], batch: int) -> dict[str, float]:
    per_image_ms = 1e3 * np.asarray(seconds) / batch
    return {"p50_ms": float(np.percentile(per_image_ms, 50)), "p95_ms": float(np.percentile(per_image_ms, 95)),
            "images_per_s": batch * len(seconds) / float(np.sum(seconds))}


def bench_model(source: Path, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    ckpt = resolve_checkpoint(source)
    report = export_onnx(source, tmp / f"{source.name}.onnx", exporter=args.exporter)
    model, meta = load_classifier(source)
    pre = meta.preprocessing
    pool, what = parity_images(member_metas(model, meta), pre, max(args.batch_sizes))
    cells = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        engines = {"torch": TorchEngine(model, meta), "onnx": OnnxEngine.from_file(report.out, threads=threads)}
        for batch in args.batch_sizes:
            x = pre.to_input(pool[np.arange(batch) % len(pool)])
            calls = max(args.min_calls, args.images // batch)
            times = timed_calls(engines, x, calls, args.warmup)
            t, o = figures(times["torch"], batch), figures(times["onnx"], batch)
            cells.append({"threads": threads, "batch": batch, "calls": calls, "torch": t, "onnx": o,
                          "speedup_p50": t["p50_ms"] / o["p50_ms"], "speedup_p95": t["p95_ms"] / o["p95_ms"],
                          "throughput_ratio": o["images_per_s"] / t["images_per_s"]})
    weights = ckpt / WEIGHTS if ckpt.is_dir() else ckpt
    return {"model": meta.arch, "source": str(source), "image_size": pre.image_size,
            "num_logits": Task.from_dict(meta.config["task"]).num_logits, "images": what,
            "onnx_bytes": report.size_bytes, "weights_bytes": weights.stat().st_size,
            "export_seconds": report.seconds["total"], "parity": report.parity.to_dict(), "cells": cells}


def table(result: dict[str, Any]) -> Table:
    m = result["machine"]
    t = Table(title=f"onnxruntime {result['onnxruntime']} vs PyTorch {result['torch']} eager, per-image latency "
                    f"p50/p95 (ms) and throughput | {m['cpu']}, {m['cores']} cores")
    for c in ("model", "threads", "batch", "torch p50/p95", "onnx p50/p95", "torch img/s", "onnx img/s",
              "speed-up p50", "throughput x"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for r in result["models"]:
        name = f"{r['model']} {r['image_size']}px"
        for c in r["cells"]:
            tt, oo = c["torch"], c["onnx"]
            t.add_row(name, str(c["threads"]), str(c["batch"]), f"{tt['p50_ms']:.2f}/{tt['p95_ms']:.2f}",
                      f"{oo['p50_ms']:.2f}/{oo['p95_ms']:.2f}", f"{tt['images_per_s']:,.0f}",
                      f"{oo['images_per_s']:,.0f}", f"{c['speedup_p50']:.2f}x", f"{c['throughput_ratio']:.2f}x")
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append", default=[], help="a trained classifier run (repeatable)")
    ap.add_argument("--models", default="vgg_scratch,resnet18", help="untrained models when no --run is given")
    ap.add_argument("--size", type=int, default=64, help="image size of the untrained models")
    ap.add_argument("--batch-sizes", type=lambda s: [int(v) for v in s.split(",")], default=[1, 32])
    ap.add_argument("--threads", type=lambda s: [int(v) for v in s.split(",")], default=[1, 2])
    ap.add_argument("--images", type=int, default=640, help="images per engine and cell (calls = images / batch)")
    ap.add_argument("--min-calls", type=int, default=30, help="at least this many calls per engine and cell")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per engine and cell")
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args(argv)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        sources = args.run or [untrained_checkpoint(Path(tmp), n, args.size) for n in args.models.split(",")]
        for s in sources:
            print(f"benchmarking {s} ...", file=sys.stderr)
        models = [bench_model(Path(s), args, Path(tmp)) for s in sources]
    result = {"machine": machine, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
              "exporter": args.exporter, "trained": bool(args.run), "models": models}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console(width=160).print(table(result))
        for r in models:
            print(f"{r['model']}: ONNX file {r['onnx_bytes'] / 1e6:.2f} MB (weights {r['weights_bytes'] / 1e6:.2f} MB), "
                  f"export {r['export_seconds']:.1f}s, parity on {r['parity']['images']}: max |dp| "
                  f"{r['parity']['max_abs_prob_diff']:.1e}, max |dlogit| {r['parity']['max_abs_logit_diff']:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
