"""How far trained CelebA attribute models are from the CelebA 0.915 target, and what kind of gap it is.

Scores finished classifier runs on the official validation partition of their store and asks three
questions of their probabilities:

* **Ensembles.** Mean accuracy of every ensemble (probabilities averaged) of up to ``--max-ensemble``
  of the runs: what training more models would buy.
* **Label shift.** The validation partition holds 26 people whose attribute priors differ from the 152
  training people (Big_Lips 15% against 34%). Each model's probabilities are re-weighted from the
  training priors to (a) the priors estimated from the unlabelled validation images by EM
  (Saerens et al. 2002, a legitimate transductive correction) and (b) the *true* validation priors
  (an oracle: it reads the validation labels), which bounds what any prior correction could give.
* **Thresholds.** Each attribute's threshold chosen on the validation labels themselves (an oracle
  again): the best any calibration or threshold rule could reach with this model's ranking of the
  images. Above it, only a model that ranks the images better helps.

The oracle figures read the validation labels and are diagnostics, never results.

    python benchmarks/celeba_ceiling.py bench-out/celeba-attributes/RUN1 bench-out/celeba-ideas/RUN2 ... --json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from facelab.data.sources.celeba import find_layout, read_attributes, read_int_table
from facelab.data.store import Store
from facelab.data.views import official_splits
from facelab.eval.evaluate import check_labels
from facelab.eval.inference import predict_rows
from facelab.eval.label_shift import em_priors, reweight
from facelab.models.loading import load_model

EPS = 1e-6


def val_probabilities(run: Path, store: Store, which: str = "last") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, L) P(attribute) on the official val partition, (N, L) labels, label names."""
    model, meta = load_model(run, kind="classifier", device="cpu", which=which)
    check_labels(meta, store)
    probs, y, _ = predict_rows(model, meta, store, official_splits(store)["val"])
    names = list(probs)  # task order
    return np.stack([probs[n] for n in names], 1), y, names


def accuracy(p: np.ndarray, y: np.ndarray, threshold: float | np.ndarray = 0.5) -> float:
    return float(((p > threshold) == y).mean())


def _two_classes(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], 1)  # (N,) P(1) -> (N, 2)


def shift_prior(p: np.ndarray, train_prior: np.ndarray, new_prior: np.ndarray) -> np.ndarray:
    """(N, L) P(attribute) under new priors (L,) instead of the training priors (L,): facelab's label-shift
    re-weighting (:func:`facelab.eval.label_shift.reweight`), attribute by attribute."""
    cols = [reweight(_two_classes(p[:, j]), _two_classes(np.array([t]))[0], _two_classes(np.array([n]))[0])[:, 1]
            for j, (t, n) in enumerate(zip(train_prior, new_prior))]
    return np.stack(cols, 1)


def em_prior(p: np.ndarray, train_prior: np.ndarray) -> np.ndarray:
    """(L,) the Saerens-Latinne-Decaestecker EM estimate of each attribute's prior in the unlabelled images
    (:func:`facelab.eval.label_shift.em_priors`, as ``facelab eval --adapt-priors`` uses it)."""
    return np.array([em_priors(_two_classes(p[:, j]), _two_classes(np.array([t]))[0])[1][1]
                     for j, t in enumerate(train_prior)])


def full_train_labels(root: Path, names: list[str]) -> np.ndarray:
    """(N, L) 0/1 labels of every image of the official train partition in a CelebA root's annotation files."""
    layout = find_layout(root)
    if layout.partitions is None:
        raise SystemExit(f"{root}: no list_eval_partition file; --annotations needs it")
    attrs = read_attributes(layout.attributes)
    part = read_int_table(layout.partitions, n_values=1, what="partition", names_hint=attrs.raw_names)
    partition, found = part.select(attrs, list(range(len(attrs.names))))
    missing = [n for n in names if n not in attrs.attributes]
    if missing:
        raise SystemExit(f"{layout.attributes}: no column for {missing}")
    cols = [attrs.attributes.index(n) for n in names]
    return attrs.values[(partition[:, 0] == 0) & found][:, cols]


def joint_posterior(p: np.ndarray, train_prior: np.ndarray, support: np.ndarray, counts: np.ndarray,
                    tau: float) -> np.ndarray:
    """Per-attribute marginals of the posterior over label vectors, the prior being the observed vectors
    ``support`` (K, L) seen ``counts`` (K,) times (``np.unique(vectors, axis=0, return_counts=True)``)."""
    support = support.astype(np.float64)
    log_pos, log_neg = np.log(p / train_prior), np.log((1 - p) / (1 - train_prior))
    score = tau * (log_pos @ support.T + log_neg @ (1 - support).T) + np.log(counts)
    score -= score.max(1, keepdims=True)
    w = np.exp(score)
    return (w @ support) / w.sum(1, keepdims=True)


def oracle_thresholds(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-attribute accuracy at the best threshold on (p, y) itself."""
    grid = np.linspace(0.02, 0.98, 97)
    return np.array([max(((p[:, j] > t) == y[:, j]).mean() for t in grid) for j in range(y.shape[1])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="classifier run folders trained on the same store")
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--max-ensemble", type=int, default=3)
    ap.add_argument("--which", choices=["last", "best"], default="last",
                    help="checkpoint of each run: last epoch (the figures of docs/results.md) or best val loss")
    ap.add_argument("--annotations", type=Path, default=None,
                    help="CelebA root whose complete annotation files give the full train partition's labels")
    ap.add_argument("--tau", type=float, nargs="+", default=[0.3, 0.5, 1.0],
                    help="temperatures of the joint label-vector posterior (with --annotations)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    store = Store.open(args.store)
    probs, y, names = {}, None, None
    for run in args.runs:
        p, y_run, names_run = val_probabilities(run, store, args.which)
        if y is not None and (names_run != names or not np.array_equal(y_run, y)):
            raise SystemExit(f"{run}: not scored on the same labels and images as {args.runs[0]}")
        probs[run.name], y, names = np.clip(p, EPS, 1 - EPS), y_run, names_run
    assert y is not None and names is not None
    train_rows = official_splits(store)["train"]
    train_prior = np.array([store.column(n)[train_rows].mean() for n in names])
    val_prior = y.mean(0)
    majority = float(np.maximum(val_prior, 1 - val_prior).mean())

    full = None if args.annotations is None else full_train_labels(args.annotations, names)
    if full is not None:
        support, counts = np.unique(full, axis=0, return_counts=True)  # once: about a second on 162,770 rows

    models = {}
    for name, p in probs.items():
        models[name] = {
            "accuracy": accuracy(p, y),
            "em_prior": accuracy(shift_prior(p, train_prior, em_prior(p, train_prior)), y),
            "oracle_prior": accuracy(shift_prior(p, train_prior, val_prior), y),
            "oracle_thresholds": float(oracle_thresholds(p, y).mean()),
        }
        if full is not None:
            models[name]["full_train_prior"] = accuracy(shift_prior(p, train_prior, full.mean(0)), y)
            for tau in args.tau:
                models[name][f"joint_tau{tau:g}"] = accuracy(joint_posterior(p, train_prior, support, counts, tau), y)
    ensembles = []
    for k in range(2, min(args.max_ensemble, len(probs)) + 1):
        for combo in itertools.combinations(probs, k):
            p = np.mean([probs[c] for c in combo], 0)
            ensembles.append({"runs": list(combo), "accuracy": accuracy(p, y),
                              "oracle_thresholds": float(oracle_thresholds(p, y).mean())})
    shift = sorted(zip(names, train_prior, val_prior), key=lambda t: -abs(t[1] - t[2]))[:8]
    out = {"store": str(store.path), "checkpoint": args.which, "val_images": int(len(y)), "majority_baseline": majority, "target": 0.915,
           "full_train_rows": None if full is None else int(len(full)),
           "models": models, "ensembles": ensembles,
           "largest_prior_shifts": [{"label": n, "train": float(a), "val": float(b)} for n, a, b in shift]}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{len(y)} val images, majority baseline {majority:.4f}, target 0.915")
    extra = [] if full is None else ["full_train_prior"] + [f"joint_tau{t:g}" for t in args.tau]
    print(f"{'run':48s} {'acc':>7s} {'EM prior':>9s} {'true prior*':>11s} {'thresholds*':>11s}"
          + "".join(f" {k:>16s}" for k in extra))
    for name, m in models.items():
        print(f"{name[:48]:48s} {m['accuracy']:7.4f} {m['em_prior']:9.4f} {m['oracle_prior']:11.4f} {m['oracle_thresholds']:11.4f}"
              + "".join(f" {m[k]:16.4f}" for k in extra))
    for e in sorted(ensembles, key=lambda e: -e["accuracy"])[:10]:
        print(f"ensemble of {len(e['runs'])}: {e['accuracy']:.4f} (thresholds* {e['oracle_thresholds']:.4f})  "
              + " + ".join(r[:28] for r in e["runs"]))
    print("* oracle: reads the validation labels; a bound, not a result")
    print("largest prior shifts (train -> val): "
          + ", ".join(f"{d['label']} {d['train']:.2f}->{d['val']:.2f}" for d in out["largest_prior_shifts"]))


if __name__ == "__main__":
    main()
