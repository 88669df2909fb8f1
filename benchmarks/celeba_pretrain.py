"""Does a backbone pretrained on other faces beat training from scratch on the CelebA subset?

Each *condition* fine-tunes the same recipe on the CelebA subset's official training partition from one
starting point: ``scratch`` (random weights, today's default) or a pretraining run (``NAME=RUN_DIR``, e.g.
supervised on UTKFace, self-supervised on unlabelled faces). Every condition gets the same number of
fine-tuning epochs (equal fine-tuning time: the backbones are the same architecture), and is scored on the
official validation partition (40-attribute mean accuracy of the last epoch), for each seed and each number
of training people (``--people``; all 152 by default). Pretraining time is read from each pretraining run's
summary and reported apart: it is paid once.

Each cell is a run folder under ``--out`` with a ``result.json``: a rerun adds seeds, people or conditions
without retraining the finished ones.

    python benchmarks/celeba_pretrain.py --store ~/stores/celeba64 --condition scratch \\
        --condition utk=runs/train-utk --condition ssl=runs/pretrain-ssl --seeds 0 1 2 --epochs 12 --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from facelab.train.classifier import ClassifierConfig

from celeba_common import train_and_score  # benchmarks/ is on sys.path when this runs as a script


def finetune_config(store: Path, *, pretrained: str | None, seed: int, epochs: int, people: int | None,
                    overrides: dict[str, Any]) -> ClassifierConfig:
    """The fine-tuning recipe: the default classifier recipe, from ``pretrained`` when given."""
    d: dict[str, Any] = {"store": str(store), "split": "official", "seed": seed, "trainer": {"epochs": epochs},
                         "pretrained": pretrained, "train_identities": people}
    for key, value in overrides.items():  # dotted keys: trainer.optim.lr=...
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return ClassifierConfig.from_dict(d, where="fine-tuning run")


def pretraining_cost(run: str | None) -> dict[str, Any] | None:
    if run is None:
        return None
    s = json.loads((Path(run) / "summary.json").read_text())
    return {"run": run, "seconds": s.get("seconds"), "train_rows": s.get("train_rows"), "model": s.get("model")}


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in items)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--out", type=Path, default=Path("bench-out/celeba-pretrain"))
    ap.add_argument("--condition", action="append", required=True, metavar="scratch|NAME=RUN_DIR")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--people", type=int, nargs="+", default=[0], help="training people (0: all)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("-o", "--option", action="append", default=[], help="recipe override KEY=VALUE (dotted)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    conditions = {c.split("=", 1)[0]: (c.split("=", 1)[1] if "=" in c else None) for c in args.condition}
    overrides = _parse_overrides(args.option)
    tag = "-".join(f"{k}={v}" for k, v in sorted(overrides.items())).replace("/", "_") or "default"
    cells = []
    for name, run in conditions.items():
        for people in args.people:
            for seed in args.seeds:
                cell = args.out / f"{name}-p{people or 'all'}-s{seed}-e{args.epochs}-{tag}"
                done = cell / "result.json"
                if done.is_file():
                    cells.append(json.loads(done.read_text()))
                    continue
                cell.mkdir(parents=True, exist_ok=True)
                cfg = finetune_config(args.store, pretrained=run, seed=seed, epochs=args.epochs,
                                      people=people or None, overrides=overrides)
                result = {"condition": name, "pretrained": run, "people": people or None, "seed": seed,
                          **train_and_score(cfg, cell / f"train-{time.strftime('%H%M%S')}")}
                done.write_text(json.dumps(result, indent=2))
                cells.append(result)
    table = []
    for name in conditions:
        for people in args.people:
            accs = [c["val_mean_accuracy_last_epoch"] for c in cells
                    if c["condition"] == name and (c["people"] or 0) == people]
            mins = [c["train_minutes"] for c in cells if c["condition"] == name and (c["people"] or 0) == people]
            table.append({"condition": name, "people": people or "all", "seeds": len(accs),
                          "val_mean_accuracy_mean": round(float(np.mean(accs)), 4),
                          "val_mean_accuracy_std": round(float(np.std(accs, ddof=1)), 4) if len(accs) > 1 else None,
                          "min": round(min(accs), 4), "max": round(max(accs), 4),
                          "finetune_minutes_mean": round(float(np.mean(mins)), 2)})
    out = {"store": str(args.store), "epochs": args.epochs, "recipe_overrides": overrides, "table": table,
           "pretraining": {k: pretraining_cost(v) for k, v in conditions.items()}, "cells": cells}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for row in table:
        print(f"{row['condition']:>10} people {row['people']}: {row['val_mean_accuracy_mean']:.4f} "
              f"(sd {row['val_mean_accuracy_std']}, {row['seeds']} seeds, {row['finetune_minutes_mean']} min)")


if __name__ == "__main__":
    main()
