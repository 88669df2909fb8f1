"""Generative models side by side under one training-time budget: FID/KID, CAS, conditional fidelity, grids.

Every model is trained on the same store with the same wall-clock budget of training time
(``trainer.time_budget_minutes``; evaluation and grids excluded), then scored:

- FID and KID in the feature space of a facelab classifier trained on the real training split
  (``--feature-run``; the metric names carry the extractor, e.g. ``fid_2k_test_facelab-vgg_scratch-cifar1032-...``),
  against the real rows of ``--split``;
- for the conditional models (``--cond-models``, conditioned on ``--cond``): the Classification Accuracy Score
  on ``--cas-label`` (a classifier trained on generated images only, tested on real ones, next to the same recipe
  trained on as many real images) and the conditional fidelity of every condition, judged by the feature
  classifier (independent of the generators).

Each model's 8x8 grid is copied to ``OUT/grids/<model>.png``. Results are appended model by model to
``OUT/results.json``, so a killed benchmark resumes with the models still missing.

    python benchmarks/bench_generative.py --store ~/facelab-stores/cifar32 --feature-run runs/cifar-clf \\
        --cond label --cas-label label --minutes 3 --split test --out bench-out/gen-cifar32 --json
    python benchmarks/bench_generative.py --store ~/facelab-stores/celeba64 --feature-run runs/celeba-clf \\
        --cond Male,Eyeglasses --cas-label Male --minutes 3 --split val --out bench-out/gen-celeba64 --json
    # a named variant beside the plain model, with its options:
    python benchmarks/bench_generative.py ... --models "" --cond-models cvae,cvae-consistency=cvae \
        --model-options '{"cvae-consistency": {"consistency_weight": 50}}'
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from facelab.eval.generative_metrics import conditional_fidelity, score_generator
from facelab.experiments.cas import classification_accuracy_score
from facelab.train.generative import GenerativeRunConfig, train_generative
from facelab.utils.io import atomic_write_json


def split_entry(entry: str) -> tuple[str, str]:
    """``name=model`` (a named variant, e.g. ``cvae-consistency=cvae``) or ``model`` -> (name, model)."""
    name, _, model = entry.partition("=")
    return (name, model) if model else (name, name)


def train(args: argparse.Namespace, model: str, conditional: bool) -> Path:
    name, arch = split_entry(model)
    run = args.out / "runs" / name
    if (run / "summary.json").is_file():
        return run
    cfg = GenerativeRunConfig.from_dict({
        "store": str(args.store), "model": arch, "model_options": args.model_options.get(name, {}),
        "batch_size": args.batch, "seed": args.seed,
        "conditions": args.cond if conditional else None, "grid_every_epochs": 5,
        "trainer": {"epochs": 100_000, "time_budget_minutes": args.minutes, "progress": False,
                    "checkpoint_every_minutes": 2.0},
    })
    resume = (run / "checkpoints" / "last").is_dir()
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    train_generative(cfg, run_dir=run, resume=resume)
    return run


def score(args: argparse.Namespace, model: str, run: Path, conditional: bool) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    rec: dict = {"model": model, "conditional": conditional, "params": summary["params"],
                 "epochs": summary["epochs"], "steps": summary["steps"], "train_rows": summary["train_rows"],
                 "train_minutes": round(summary["fit_seconds"] / 60, 2), "stop_reason": summary["stop_reason"]}
    t0 = time.monotonic()
    fk = score_generator(run, data=args.store, feature_run=args.feature_run, split=args.split, n=args.n_fid,
                         seed=args.seed, cache_dir=args.out / "feature-cache")
    rec.update({"fid": fk["fid"], "kid_mean": fk["kid_mean"], "kid_std": fk["kid_std"], "metrics": fk["metrics"],
                "extractor": fk["extractor"], "warnings": fk.get("warnings", [])})
    if conditional:
        fid = conditional_fidelity(run, args.feature_run, n_per_value=args.n_fidelity, data=args.store, seed=args.seed)
        rec["fidelity"] = {"mean": fid["mean"], "per_label": fid["per_label"], "metric_name": fid["metric_name"]}
        if args.cas_label:
            cas = classification_accuracy_score(run, data=args.store, label=args.cas_label, run_dir=args.out / "cas" / model,
                                                n_train=args.cas_n, epochs=args.cas_epochs, seed=args.seed,
                                                model_kwargs=args.cas_model_kwargs)
            rec.update({"cas": cas["cas"], "cas_real_accuracy": cas["real_accuracy"], "cas_metrics": cas["metrics"]})
    rec["score_minutes"] = round((time.monotonic() - t0) / 60, 2)
    grids = args.out / "grids"
    grids.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "samples" / "latest.png", grids / f"{model}.png")
    rec["grid"] = str(grids / f"{model}.png")
    return rec


def markdown_table(results: dict) -> str:
    """One row per model: budget use, FID/KID, CAS with its real-data reference, conditional fidelity."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| model | params | epochs (steps) | FID | KID x 1000 | CAS (real-data acc.) | conditional fidelity |",
             "|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        cas = f"{r['cas']:.3f} ({r['cas_real_accuracy']:.3f})" if "cas" in r else "n/a (unconditional)"
        fid = r.get("fidelity")
        fidelity = "n/a (unconditional)" if fid is None else f"{fid['mean']:.3f} (" + ", ".join(
            f"{k} {np.mean(list(v.values())):.2f}" for k, v in fid["per_label"].items()) + ")"
        lines.append(f"| {m} | {r['params'] / 1e6:.2f} M | {r['epochs']} ({r['steps']}) | {f(r['fid'], '.1f')} | "
                     f"{f(r['kid_mean'] * 1000, '.1f')} ± {f(r['kid_std'] * 1000, '.1f')} | {cas} | {fidelity} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--feature-run", type=Path, required=True, help="facelab classifier run trained on the store's training split")
    ap.add_argument("--models", default="vae,beta_vae,dcgan,wgan_gp,sngan")
    ap.add_argument("--cond-models", default="cvae,cgan",
                    help="conditional models; NAME=MODEL runs a named variant, e.g. cvae-consistency=cvae")
    ap.add_argument("--model-options", type=json.loads, default={},
                    help='JSON options per entry name, e.g. \'{"cvae-consistency": {"consistency_weight": 50}}\'')
    ap.add_argument("--cond", default="label", help="labels the conditional models are conditioned on")
    ap.add_argument("--cas-label", default=None)
    ap.add_argument("--cas-n", type=int, default=5000)
    ap.add_argument("--cas-epochs", type=int, default=3)
    ap.add_argument("--cas-model-kwargs", type=json.loads, default=None)
    ap.add_argument("--minutes", type=float, default=3.0, help="training-time budget of every model")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n-fid", type=int, default=2000)
    ap.add_argument("--n-fidelity", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench-out/generative"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--markdown", action="store_true", help="print the results as a markdown table")
    args = ap.parse_args()
    args.store, args.out = args.store.expanduser(), args.out.expanduser()
    args.cond = [c for c in args.cond.split(",") if c]
    if args.threads:
        torch.set_num_threads(args.threads)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    plan = [(m, False) for m in args.models.split(",") if m] + [(m, True) for m in args.cond_models.split(",") if m]
    for model, conditional in plan:
        name = split_entry(model)[0]
        if name in results:
            continue
        run = train(args, model, conditional)
        results[name] = {**score(args, name, run, conditional), "options": args.model_options.get(name, {})}
        atomic_write_json(results_path, results)
        print(json.dumps({k: v for k, v in results[name].items() if k not in ("metrics", "cas_metrics")}), flush=True)
    out = {"store": str(args.store), "feature_run": str(args.feature_run), "minutes_per_model": args.minutes,
           "split": args.split, "n_fid": args.n_fid, "threads": torch.get_num_threads(), "results": results}
    atomic_write_json(args.out / "summary.json", out)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    if args.markdown:
        print(markdown_table(results))
        return
    print(f"{'model':10s} {'FID':>8s} {'KID':>8s} {'CAS':>6s} {'fidelity':>8s}  epochs")
    for m, r in results.items():
        cas = f"{r['cas']:.3f}" if "cas" in r else "-"
        fid = f"{r['fidelity']['mean']:.3f}" if "fidelity" in r else "-"
        print(f"{m:10s} {r['fid']:8.2f} {r['kid_mean']:8.4f} {cas:>6s} {fid:>8s}  {r['epochs']}")


if __name__ == "__main__":
    main()
