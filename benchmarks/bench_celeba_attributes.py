"""CelebA attribute accuracy from scratch at 64 px on the official validation partition.

Prepares the store from the CelebA folder if needed, trains the given model with facelab's default
recipe (``facelab train STORE --epochs N``, which trains on the store's official partitions when it has
them; every option below defaults to the library's default) or overrides and reports the mean accuracy
over the 40 attributes next to the majority-class baseline, with the per-attribute table and the
training wall time.

    python benchmarks/bench_celeba_attributes.py --root ~/facelab-data/celeba --store ~/facelab-stores/celeba64 \
        --model vgg_scratch --epochs 15 --json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from facelab.data.build import prepare_store
from facelab.data.sources import create_source
from facelab.eval.evaluate import evaluate_run
from facelab.train.classifier import ClassifierConfig, train_classifier
from facelab.train.trainer import OptimConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("~/facelab-data/celeba").expanduser())
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--out", type=Path, default=Path("bench-out/celeba-attributes"))
    ap.add_argument("--model", default="vgg_scratch")
    ap.add_argument("--epochs", type=int, default=15)
    defaults, optim = ClassifierConfig.model_fields, OptimConfig()
    ap.add_argument("--batch", type=int, default=defaults["batch_size"].default)
    ap.add_argument("--lr", type=float, default=optim.lr)
    ap.add_argument("--augment", default=defaults["augment"].default)
    ap.add_argument("--wd", type=float, default=optim.weight_decay)
    ap.add_argument("--random-erasing", type=float, default=0.0, help="random-erasing probability")
    ap.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    ap.add_argument("--ema", type=float, default=None, help="EMA decay of the weights (evaluated model)")
    ap.add_argument("--model-kwargs", type=json.loads, default={}, help='JSON, e.g. \'{"drop_rate": 0.3}\'')
    ap.add_argument("--pretrained", default=None, help="facelab run/checkpoint or torchvision-format file to start from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--tta", action="store_true", help="also report flip test-time augmentation")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.store / "manifest.json").is_file():
        prepare_store(create_source("celeba", args.root), args.store, size=64)
    cfg = ClassifierConfig.from_dict({
        "store": str(args.store), "model": args.model, "model_kwargs": args.model_kwargs, "batch_size": args.batch, "augment": args.augment,
        "random_erasing": args.random_erasing, "mixup_alpha": args.mixup,
        "split": "official", "pretrained": args.pretrained, "seed": args.seed,
        "trainer": {"epochs": args.epochs, "optim": {"lr": args.lr, "weight_decay": args.wd}, "ema_decay": args.ema},
    })
    run = args.out / f"{args.model}{args.tag}-e{args.epochs}-{time.strftime('%H%M%S')}"
    run.mkdir(parents=True)
    cfg.save(run / "config.yaml")
    t0 = time.monotonic()
    summary = train_classifier(cfg, run_dir=run)
    train_s = time.monotonic() - t0
    last = evaluate_run(run / "checkpoints" / "last", args.store, split="val", out_dir=run / "eval-last")
    out = {"model": args.model, "model_kwargs": args.model_kwargs, "augment": args.augment, "random_erasing": args.random_erasing, "ema": args.ema,
           "mixup_alpha": args.mixup, "pretrained": args.pretrained, "seed": args.seed,
           "threads": torch.get_num_threads(), "params": summary["params"], "epochs": args.epochs, "train_rows": summary["train_rows"],
           "val_rows": summary["val_rows"], "train_minutes": round(train_s / 60, 2),
           "val_mean_accuracy_last_epoch": last["summary"]["mean_accuracy"],
           "val_majority_baseline": last["summary"]["mean_majority_accuracy"],
           "val_mean_balanced_accuracy": last["summary"]["mean_balanced_accuracy"],
           "best_epoch_val_mean_accuracy": summary["best"],
           "per_attribute": {k: {"accuracy": v["accuracy"], "majority": v["majority_accuracy"]} for k, v in last["per_label"].items()},
           "run_dir": str(run)}
    if args.tta:
        tta = evaluate_run(run / "checkpoints" / "last", args.store, split="val", out_dir=run / "eval-tta", tta_flip=True)
        out["val_mean_accuracy_last_epoch_tta_flip"] = tta["summary"]["mean_accuracy"]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for k, v in out["per_attribute"].items():
        print(f"{k:22s} {v['accuracy']:.4f}  (majority {v['majority']:.4f})")
    print({k: v for k, v in out.items() if k != "per_attribute"})


if __name__ == "__main__":
    main()
