"""Is the batch loader ever the bottleneck? Loader throughput vs the time of a small CNN's training step.

Measures, on the same batch size:
  1. loader alone: augmented batches/s from the store (memmap gather + uint8 -> float + kornia + normalise);
     also the gather alone (background-thread part) and with augmentation off;
  2. training alone: steps/s of facelab's own training step (``Trainer.train_step`` of the default
     ``vgg_scratch`` classifier on every label, AdamW, the precision ``--precision`` resolves to, channels_last)
     on a preloaded batch;
  3. both together: an epoch slice of loader + training vs the same number of steps on preloaded tensors
     (the loader's prefetch thread competes with training for the cores).
The ratio loader batches/s / train steps/s must be > 1 for the loader never to be the bottleneck.

    python benchmarks/bench_loader.py                    # random 64 px store of 20k images in a temp dir
    python benchmarks/bench_loader.py --store stores/celeba-64 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers.make_store for the random store

from facelab.data.augment import BatchAugment  # noqa: E402
from facelab.data.loader import BatchLoader  # noqa: E402
from facelab.data.schema import LabelKind, LabelSpec  # noqa: E402
from facelab.data.store import Store  # noqa: E402
from facelab.models.classifiers import Task, create_classifier  # noqa: E402
from facelab.train.classifier import ClassifierConfig, ClassifierObjective  # noqa: E402
from facelab.train.precision import resolve_precision  # noqa: E402
from facelab.train.trainer import Trainer  # noqa: E402


def random_store(folder: Path, n: int, size: int, seed: int = 0) -> Store:
    """A store of ``n`` random-noise images with 40 binary labels (CelebA-like shape)."""
    from tests.helpers import make_store

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    specs = [LabelSpec(f"attr_{i:02d}", LabelKind.BINARY) for i in range(40)]
    labels = (rng.random((n, 40)) < 0.3).astype(np.int32)
    return make_store(folder / "bench-store", images=images, label_specs=specs, labels=labels, source="random")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], count: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over ``count`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(count):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / count


def library_trainer(store: Store, loader: BatchLoader, device: torch.device, precision: str, run_dir: Path) -> Trainer:
    """facelab's Trainer with the default classifier recipe on every label of ``store`` (what `facelab train`
    runs), so the benchmark times the real training step."""
    task = Task.from_labels(store.label_specs)
    model = create_classifier("vgg_scratch", num_outputs=task.num_logits, image_size=store.image_size)
    cfg = ClassifierConfig(store=str(store.path), device=str(device),
                           trainer={"precision": precision, "progress": False, "epochs": 1})
    return Trainer(ClassifierObjective(model, task, cfg=cfg, store=store), loader, None, config=cfg.trainer,
                   run_dir=run_dir, device=device)


def _cycle(loader: BatchLoader):
    while True:
        yield from loader


def run(args: argparse.Namespace, store: Store, run_dir: Path) -> dict[str, float | int | str]:
    device = torch.device(args.device)
    rows = np.arange(len(store))
    augment = BatchAugment.from_preset(args.preset)

    def loader(**kw) -> BatchLoader:
        opts = dict(batch_size=args.batch_size, seed=0, device=device, channels_last=True, augment=augment)
        return BatchLoader(store, rows, **{**opts, **kw})

    gather = loader()
    positions = iter(_cycle_positions(gather))
    t_gather = _timed(lambda: gather._gather(next(positions)), args.batches, 2, device)
    plain_it = _cycle(loader(augment=None))
    t_plain = _timed(lambda: next(plain_it), args.batches, 2, device)
    aug_it_loader = loader()
    aug_it = _cycle(aug_it_loader)
    t_loader = _timed(lambda: next(aug_it), args.batches, 2, device)

    trainer = library_trainer(store, aug_it_loader, device, args.precision, run_dir)
    batch = next(aug_it)
    t_train = _timed(lambda: trainer.train_step(batch), args.steps, 1, device)

    both_it = _cycle(loader(seed=1))

    def both() -> None:
        trainer.train_step(next(both_it))
    t_both = _timed(both, args.steps, 1, device)

    bs = args.batch_size
    return {
        "device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count() or 0,
        "store": str(store.path), "images": len(store), "image_size": store.image_size, "batch_size": bs,
        "preset": args.preset, "model_params": sum(p.numel() for p in trainer.model.parameters()),
        "precision": resolve_precision(device, args.precision),
        "gather_images_per_s": bs / t_gather,
        "loader_no_augment_images_per_s": bs / t_plain,
        "loader_images_per_s": bs / t_loader,
        "loader_batches_per_s": 1 / t_loader,
        "train_steps_per_s": 1 / t_train,
        "train_images_per_s": bs / t_train,
        "ratio_loader_to_train": t_train / t_loader,
        "combined_s_per_step": t_both,
        "pure_train_s_per_step": t_train,
        "combined_overhead": t_both / t_train - 1.0,
    }


def _cycle_positions(loader: BatchLoader):
    epoch = 0
    while True:
        order = loader.epoch_order(epoch)
        for i in range(len(loader)):
            yield order[i * loader.batch_size : (i + 1) * loader.batch_size]
        epoch += 1


def table(r: dict[str, float | int | str]) -> Table:
    t = Table(
        title=f"loader vs training step: {r['images']:,} images of {r['image_size']} px, batch {r['batch_size']}, "
        f"{r['device']} ({r['threads']} threads / {r['cpus']} cpus)"
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [
        ("gather only (memmap -> host batch)", f"{r['gather_images_per_s']:,.0f} img/s"),
        ("loader, no augmentation", f"{r['loader_no_augment_images_per_s']:,.0f} img/s"),
        (
            f"loader, '{r['preset']}' augmentation",
            f"{r['loader_images_per_s']:,.0f} img/s = {r['loader_batches_per_s']:.2f} batch/s",
        ),
        (f"train step alone ({r['model_params']:,} params, {r['precision']}, channels_last)",
         f"{r['train_images_per_s']:,.0f} img/s = {r['train_steps_per_s']:.3f} step/s"),
        ("ratio loader batch/s : train step/s (must be > 1)", f"{r['ratio_loader_to_train']:.1f}x"),
        ("loader + train, s/step", f"{r['combined_s_per_step']:.3f}"),
        ("train on preloaded tensors, s/step", f"{r['pure_train_s_per_step']:.3f}"),
        ("overhead of loading while training", f"{100 * r['combined_overhead']:+.1f}%"),
    ]
    for row in rows:
        t.add_row(*row)
    return t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, help="an existing store (default: a random 64 px store in a temp dir)")
    p.add_argument("--n", type=int, default=20_000, help="images in the random store")
    p.add_argument("--size", type=int, default=64, help="image side of the random store")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--preset", default="standard", help="augmentation preset")
    p.add_argument("--batches", type=int, default=20, help="timed loader batches")
    p.add_argument("--steps", type=int, default=3, help="timed training steps (alone, and with the loader)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="precision of the train step (auto: bf16 where it is fast here, as `facelab train` does)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="facelab-bench-") as tmp:
        store = Store.open(args.store) if args.store else random_store(Path(tmp), args.n, args.size)
        result = run(args, store, Path(tmp) / "run")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        Console(width=110).print(table(result))
    return 0 if result["ratio_loader_to_train"] > 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
