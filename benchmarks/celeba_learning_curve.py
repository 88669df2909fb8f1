"""How CelebA attribute accuracy grows with training data, and how much data the 0.915 target would take.

The runs of docs/results.md on the 2-vCPU AMD EPYC (2026-11-23 and 2026-11-24) found every recipe, model
and trick ending at 0.903-0.907 mean accuracy on the official val
partition with the subset's 4,560 training images (152 people). This script trains the default recipe on
a share of them and fits how the error falls with the number of training images:

* ``--by identities``: keep a random share of the training *people*, with all their images (more people);
* ``--by images``: keep a random share of the training *images*, from every person (more photos per person).

The validation partition (26 other people) is the same in every run. The fit is the power law
``error = b * n^-c`` over the mean error at each size, with no error floor: an optimistic law (real learning
curves flatten), so the number of images it says 0.915 needs is a lower bound.

    python benchmarks/celeba_learning_curve.py --by identities --fractions 0.25 0.5 --seeds 0 1 \\
        --reference 4560=0.9043,0.9030,0.9066 --json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from facelab.data.store import Store
from facelab.data.views import official_splits
from facelab.train.classifier import ClassifierConfig

from celeba_common import train_and_score  # benchmarks/ is on sys.path when this runs as a script

TARGET = 0.915


def subset_config(store: Store, *, by: str, fraction: float, seed: int, epochs: int) -> ClassifierConfig:
    """The default recipe on a ``fraction`` of the official training partition: that share of the training
    people with all their photos (``train_identities``) or of the photos (``train_limit``), drawn with ``seed``
    by facelab itself; the run records the rows it kept in its splits.json."""
    train = official_splits(store)["train"]
    if by == "identities":
        if not store.has_identities:
            raise SystemExit(f"{store.path}: no identities; use --by images")
        subset = {"train_identities": max(1, round(fraction * len(np.unique(store.identities[train]))))}
    else:
        subset = {"train_limit": max(1, round(fraction * len(train)))}
    return ClassifierConfig.from_dict({"store": str(store.path), "split": "official", "seed": seed,
                                       "trainer": {"epochs": epochs}, **subset}, where="learning-curve run")


def fit_power_law(sizes: list[float], accuracies: list[float]) -> dict:
    """``error = b * n^-c`` by least squares in log-log; the n at which accuracy reaches TARGET."""
    x, y = np.log(sizes), np.log(1 - np.asarray(accuracies))
    slope, intercept = np.polyfit(x, y, 1)
    c, b = -slope, math.exp(intercept)
    needed = (b / (1 - TARGET)) ** (1 / c) if c > 0 else math.inf
    return {"b": b, "c": c, "images_for_target": needed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--out", type=Path, default=Path("bench-out/celeba-learning-curve"))
    ap.add_argument("--by", choices=["identities", "images"], default="identities")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--reference", action="append", default=[], metavar="N=ACC[,ACC..]",
                    help="finished runs of the default recipe on N training images (e.g. the whole subset)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not all(0 < f <= 1 for f in args.fractions):
        raise SystemExit("--fractions must lie in (0, 1]")

    store = Store.open(args.store)
    runs = []
    for fraction in args.fractions:
        for seed in args.seeds:
            run = args.out / f"{args.by}-{fraction:g}-s{seed}-e{args.epochs}"
            result_file = run / "result.json"
            if result_file.is_file():  # finished earlier: a rerun adds sizes or seeds without retraining
                runs.append(json.loads(result_file.read_text()))
                continue
            run.mkdir(parents=True, exist_ok=True)
            cfg = subset_config(store, by=args.by, fraction=fraction, seed=seed, epochs=args.epochs)
            train_dir = run / f"train-{time.strftime('%H%M%S')}"
            result = {"by": args.by, "fraction": fraction, "seed": seed, **train_and_score(cfg, train_dir)}
            result_file.write_text(json.dumps(result, indent=2))
            runs.append(result)

    by_size: dict[int, list[float]] = {}
    for r in runs:
        by_size.setdefault(r["train_images"], []).append(r["val_mean_accuracy_last_epoch"])
    for ref in args.reference:
        n, accs = ref.split("=")
        by_size.setdefault(int(n), []).extend(float(a) for a in accs.split(","))
    sizes = sorted(by_size)
    points = [{"train_images": n, "runs": len(by_size[n]), "val_mean_accuracy": float(np.mean(by_size[n]))}
              for n in sizes]
    fit = fit_power_law(sizes, [p["val_mean_accuracy"] for p in points]) if len(sizes) >= 2 else None
    out = {"store": str(store.path), "by": args.by, "epochs": args.epochs, "target": TARGET, "runs": runs,
           "points": points, "power_law": fit}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for r in runs:
        print(f"{r['by']} {r['fraction']:g} seed {r['seed']}: {r['train_images']} images of {r['train_identities']} "
              f"people, val mean accuracy {r['val_mean_accuracy_last_epoch']:.4f} ({r['train_minutes']} min)")
    for p in points:
        print(f"{p['train_images']:6d} images: {p['val_mean_accuracy']:.4f} (mean of {p['runs']})")
    if fit:
        print(f"error = {fit['b']:.3f} * n^-{fit['c']:.3f}: {TARGET} at about {fit['images_for_target']:,.0f} "
              "training images (no error floor: a lower bound)")


if __name__ == "__main__":
    main()
