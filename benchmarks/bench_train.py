"""Training throughput (images/s) of every registered classifier at 64 px: fp32 vs bf16 + channels_last.

Runs the variants interleaved (A B A B ...) and reports the best of ``--repeats`` for each, since this
machine is shared and noisy. One training step = forward + BCE loss over 40 labels + backward + AdamW.

    python benchmarks/bench_train.py --models vgg_scratch resnet18 --batch 64 --json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from facelab.models.classifiers import create_classifier, list_classifiers

VARIANTS = {"fp32": (False, False), "fp32+channels_last": (False, True), "bf16+channels_last": (True, True)}


def step_fn(model: torch.nn.Module, *, batch: int, size: int, bf16: bool, channels_last: bool):
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch, 40)).float()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(step, *, steps: int, batch: int) -> float:
    step()  # warm-up (allocations, oneDNN kernel selection)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = args.models or [m for m in list_classifiers() if m != "inception_v3" or args.size >= 75]
    results: dict[str, dict[str, float]] = {}
    for name in models:
        steps = {}
        for v, (bf16, cl) in VARIANTS.items():
            torch.manual_seed(0)
            m = create_classifier(name, num_outputs=40, image_size=args.size)
            steps[v] = step_fn(m, batch=args.batch, size=args.size, bf16=bf16, channels_last=cl)
        best = {v: 0.0 for v in VARIANTS}
        for _ in range(args.repeats):
            for v, s in steps.items():
                best[v] = max(best[v], measure(s, steps=args.steps, batch=args.batch))
        best["bf16_speedup_vs_fp32"] = best["bf16+channels_last"] / best["fp32"]
        best["channels_last_speedup_vs_fp32"] = best["fp32+channels_last"] / best["fp32"]
        results[name] = best
        if not args.json:
            print(f"{name:14s} " + "  ".join(f"{k} {v:8.1f}" for k, v in best.items()), flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), "size": args.size, "batch": args.batch}
    if args.json:
        print(json.dumps({"meta": meta, "images_per_s": results}, indent=2))


if __name__ == "__main__":
    main()
