"""Training in several processes (DistributedDataParallel): is it right, and what does the communication cost?

  1. equivalence: 2 processes of batch B against 1 process of batch 2B on the same data order, a few steps of
     facelab's own training (``train_classifier`` / ``train_generative``): the largest absolute difference of
     any final weight. A classifier with SyncBatchNorm (and without: each process normalises over its own half,
     which is not the 2B step), and a VAE with SyncBatchNorm and its reparameterisation noise off (the only
     draw that differs between processes); with SGD, whose weights follow the gradients' rounding linearly.
     With AdamW too, next to its rounding floor: the same one-process run on 1 thread and on every core (Adam
     divides each gradient by its running size, so the rounding of near-zero gradients becomes steps of ~lr).
  2. step time: facelab's training step (``Trainer.train_step``: forward, loss, backward with DDP's gradient
     all-reduce, AdamW, the agreement all-reduce) of ``--model`` at ``--size`` px on a preloaded batch, 1
     process of batch 2B (every core) against 2 processes of batch B (the cores split between them), and
     against one of those shares alone (1 process, batch B, half the cores): the difference is DDP's cost.
  3. all-reduce alone: one all-reduce of a float32 tensor of the model's gradient size, as DDP sends it.
  4. ``--device cuda`` (or ``--throughput``): images/s of one GPU for vgg_scratch and resnet50 at 64 and 128
     px from a preloaded batch and from facelab's BatchLoader, and the loader's share of the step time.
  5. ``--metric-seeds N``: the equivalence that holds over a whole run. Section 1's weights agree only over a few
     steps: rounding differences (the gradient of a batch summed in two halves, or on another number of
     threads) grow with every step, as between any two runs. What DDP must keep is the result: a classifier
     with the default recipe (AdamW, its default rate, augmentation, dropout) on synthetic faces, trained by 1
     process of batch 2B and by 2 processes of batch B with ``--sync-bn`` (as ``--nproc 2`` runs it), for N seeds;
     the final validation and test figures of each, beside the same one-process run on 1 thread (a rounding
     change alone) and the spread between seeds. Also the relative weight difference at the end.

On the CPU the processes use gloo and meet through a file (no port); they are forked (they inherit the imports).
On CUDA they are spawned and use NCCL with one GPU each (sections 1-3 need 2 GPUs).

    nice -n 10 python benchmarks/bench_ddp.py --json
    nice -n 10 python benchmarks/bench_ddp.py --skip-equivalence --skip-step-time --metric-seeds 3 --json
    python benchmarks/bench_ddp.py --device cuda --json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers.make_store for the random stores

from facelab.data.loader import BatchLoader  # noqa: E402
from facelab.data.schema import LabelKind, LabelSpec  # noqa: E402
from facelab.data.store import Store  # noqa: E402
from facelab.models.checkpoint import read_weights  # noqa: E402
from facelab.models.classifiers import Task, create_classifier  # noqa: E402
from facelab.runs.folder import cpu_model  # noqa: E402
from facelab.train.classifier import ClassifierConfig, ClassifierObjective, train_classifier  # noqa: E402
from facelab.train.distributed import Distributed, TorchrunEnv, available_cores, init_distributed  # noqa: E402
from facelab.train.generative import GenerativeRunConfig, train_generative  # noqa: E402
from facelab.train.trainer import Trainer  # noqa: E402

B = 16  # each process's batch in the equivalence runs
SGD = {"name": "sgd", "lr": 0.05}
EXACT = {"augment": "none", "trainer": {"epochs": 2, "progress": False, "precision": "fp32", "optim": SGD}}
CLASSIFIER = {"model_kwargs": {"channels": [16, 32, 64], "drop_rate": 0.0}}
CASES = {  # name: (kind, config, SyncBatchNorm, VAE noise off)
    "classifier_sync_bn_sgd": ("classifier", CLASSIFIER, True, False),
    "classifier_plain_bn_sgd": ("classifier", CLASSIFIER, False, False),
    "classifier_sync_bn_adamw": ("classifier", {**CLASSIFIER, "trainer": {"optim": {"name": "adamw"}}}, True, False),
    "vae_sync_bn_sgd": ("generative", {"model": "vae", "model_options": {"width": 16, "latent_dim": 16},
                                       "trainer": {"optim": {"groups": {"model": {**SGD, "lr": 1e-4}}}}}, True, True),
}
FITS = {"classifier": (ClassifierConfig, train_classifier), "generative": (GenerativeRunConfig, train_generative)}


def random_store(folder: Path, n: int, size: int, seed: int = 0) -> Store:
    """A store of ``n`` random-noise images with 40 binary labels (CelebA-like shape)."""
    from tests.helpers import make_store

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    specs = [LabelSpec(f"attr_{i:02d}", LabelKind.BINARY) for i in range(40)]
    labels = (rng.random((n, 40)) < 0.3).astype(np.int32)
    return make_store(folder, images=images, label_specs=specs, labels=labels, source="random")


def start(fn: Any, nprocs: int, device: str, *args: Any) -> None:
    """``fn(rank, nprocs, *args)`` in ``nprocs`` processes: forked on the CPU, spawned for CUDA."""
    import torch._dynamo  # noqa: F401 - what the first optimizer imports: once here, not in every forked child

    mp.start_processes(fn, args=(nprocs, *args), nprocs=nprocs, join=True,
                       start_method="fork" if device == "cpu" else "spawn")


def join(rank: int, nprocs: int, rendezvous: Path, device: str) -> Distributed:
    env = TorchrunEnv(rank=rank, world_size=nprocs, local_rank=rank, local_world_size=nprocs)
    return init_distributed(env, device, init_method=f"file://{rendezvous}")


@contextlib.contextmanager
def noise_off(on: bool) -> Iterator[None]:
    """``torch.randn_like`` draws zeros (a VAE's reparameterisation noise) while ``on``."""
    saved = torch.randn_like
    if on:
        torch.randn_like = torch.zeros_like
    try:
        yield
    finally:
        torch.randn_like = saved


# ---- 1. equivalence -------------------------------------------------------------------------------------
def case_config(name: str, store: Path, batch: int, device: str) -> tuple[Any, Any, bool]:
    kind, extra, sync, noise = CASES[name]
    config_cls, fit = FITS[kind]
    data = {**EXACT, **extra, "store": str(store), "batch_size": batch, "device": device}
    data["trainer"] = {**EXACT["trainer"], **extra.get("trainer", {}), "sync_batchnorm": sync}
    return config_cls.model_validate(data), fit, noise


def equivalence_worker(rank: int, nprocs: int, rendezvous: Path, name: str, store: Path, run_dir: Path,
                       device: str) -> None:
    cfg, fit, noise = case_config(name, store, B, device)
    dist = join(rank, nprocs, rendezvous, device)
    try:
        with noise_off(noise):
            fit(cfg, run_dir=run_dir, dist=dist)
    finally:
        dist.close()


def max_abs_diff(a: Path, b: Path) -> float:
    """Largest |a - b| over every floating-point tensor of two runs' last checkpoints."""
    wa, wb = read_weights(a / "checkpoints" / "last"), read_weights(b / "checkpoints" / "last")
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].is_floating_point())


def equivalence(tmp: Path, device: str) -> dict[str, Any]:
    """Largest |w_2proc - w_1proc| over every final weight, per case; and the rounding floor of AdamW: the same
    one-process run on 1 thread and on every core (no second process at all)."""
    store = random_store(tmp / "store-32", 320, 32)
    threads = torch.get_num_threads()
    out: dict[str, Any] = {}
    for name in CASES:
        cfg, fit, noise = case_config(name, store.path, 2 * B, device)
        with noise_off(noise):
            fit(cfg, run_dir=tmp / name / "one")
        start(equivalence_worker, 2, device, tmp / name / "rendezvous", name, store.path, tmp / name / "two", device)
        steps = json.loads((tmp / name / "two" / "summary.json").read_text())["steps"]
        out[name] = {"max_abs_weight_diff": max_abs_diff(tmp / name / "one", tmp / name / "two"), "steps": steps,
                     "batch_per_process": B}
    cfg, fit, _ = case_config("classifier_sync_bn_adamw", store.path, 2 * B, device)
    torch.set_num_threads(1)
    fit(cfg, run_dir=tmp / "adamw-1-thread")
    torch.set_num_threads(threads)
    out["adamw_1proc_1_thread_vs_all_cores"] = {
        "max_abs_weight_diff": max_abs_diff(tmp / "adamw-1-thread", tmp / "classifier_sync_bn_adamw" / "one"),
        "threads": [1, threads]}
    return out


# ---- 5. the equivalence of whole runs: final metrics -------------------------------------------------------
def synthetic_store(folder: Path, n: int, size: int) -> Store:
    """facelab's built-in synthetic faces (learnable labels, official train/val/test partitions)."""
    from facelab.data.build import prepare_store
    from facelab.data.sources import create_source

    prepare_store(create_source("synthetic", None, n=n, seed=0), folder, size=size, progress=False)
    return Store.open(folder)


def metric_config(store: Path, *, batch: int, seed: int, epochs: int, sync: bool, device: str) -> ClassifierConfig:
    """The default classifier recipe (AdamW at its default rate, augmentation, dropout), quiet."""
    return ClassifierConfig.model_validate({
        "store": str(store), "batch_size": batch, "seed": seed, "device": device,
        "trainer": {"epochs": epochs, "progress": False, "sync_batchnorm": sync}})


def metric_worker(rank: int, nprocs: int, rendezvous: Path, cfg: ClassifierConfig, run_dir: Path,
                  device: str) -> None:
    from facelab.train.distributed import threads_per_process

    torch.set_num_threads(threads_per_process(nprocs))  # as --nproc shares the cores out
    dist = join(rank, nprocs, rendezvous, device)
    try:
        train_classifier(cfg, run_dir=run_dir, dist=dist)
    finally:
        dist.close()


def run_figures(run: Path, store: Path) -> dict[str, float]:
    """A finished run's last validation figures (metrics.jsonl) and its best checkpoint on the test split."""
    from facelab.eval.evaluate import evaluate_run

    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    test = evaluate_run(run, store, split="test", out_dir=run / "eval-test")["summary"]
    return {"val_mean_accuracy": last["val_mean_accuracy"], "val_loss": last["val_loss"],
            "test_mean_accuracy": test["mean_accuracy"], "test_mean_balanced_accuracy": test["mean_balanced_accuracy"]}


def relative_weight_diff(a: Path, b: Path) -> float:
    """||w_a - w_b|| / ||w_a|| over every floating-point tensor of two runs' last checkpoints."""
    wa, wb = read_weights(a / "checkpoints" / "last"), read_weights(b / "checkpoints" / "last")
    keys = [k for k in wa if wa[k].is_floating_point()]
    num = sum(float(((wa[k].double() - wb[k].double()) ** 2).sum()) for k in keys)
    return (num / sum(float((wa[k].double() ** 2).sum()) for k in keys)) ** 0.5


def metric_equivalence(tmp: Path, device: str, *, seeds: int, epochs: int, n: int, size: int,
                       batch: int) -> dict[str, Any]:
    """Per seed: the final figures of 1 process (batch 2B, every core), 2 processes (batch B, --sync-bn) and 1
    process on 1 thread. Then, per figure: the mean difference 2 processes - 1 process over the seeds (paired)
    with its 95% interval, the mean |2 processes - 1 process|, the mean |1 thread - every core| (rounding alone)
    and the mean |seed s - seed t| between the 1-process runs (what changing the seed alone does)."""
    store = synthetic_store(tmp / "synthetic", n, size)
    cores = torch.get_num_threads()
    per_seed = []
    for seed in range(seeds):
        runs = {name: tmp / f"seed{seed}" / name for name in ("one", "two", "one_1_thread")}
        train_classifier(metric_config(store.path, batch=2 * batch, seed=seed, epochs=epochs, sync=True,
                                       device=device), run_dir=runs["one"])
        cfg = metric_config(store.path, batch=batch, seed=seed, epochs=epochs, sync=True, device=device)
        start(metric_worker, 2, device, tmp / f"seed{seed}" / "rendezvous", cfg, runs["two"], device)
        torch.set_num_threads(1)
        train_classifier(metric_config(store.path, batch=2 * batch, seed=seed, epochs=epochs, sync=True,
                                       device=device), run_dir=runs["one_1_thread"])
        torch.set_num_threads(cores)
        steps = json.loads((runs["two"] / "summary.json").read_text())["steps"]
        per_seed.append({"seed": seed, "steps": steps, **{k: run_figures(v, store.path) for k, v in runs.items()},
                         "relative_weight_diff_two_vs_one": relative_weight_diff(runs["one"], runs["two"]),
                         "relative_weight_diff_1_thread_vs_one": relative_weight_diff(runs["one"], runs["one_1_thread"])})
    from facelab.eval.statistics import mean_ci

    summary = {}
    for k in per_seed[0]["one"]:
        one, two = ([s[run][k] for s in per_seed] for run in ("one", "two"))
        diff = mean_ci([b - a for a, b in zip(one, two)])
        between = [abs(one[i] - one[j]) for i in range(seeds) for j in range(i + 1, seeds)]
        summary[k] = {"mean_one": float(np.mean(one)), "mean_two": float(np.mean(two)),
                      "mean_diff_two_minus_one": diff["mean"], "ci95_diff": diff["ci95"],
                      "mean_abs_diff_two_vs_one": float(np.mean(np.abs(np.subtract(two, one)))),
                      "mean_abs_diff_1_thread_vs_one": float(np.mean([abs(s["one_1_thread"][k] - s["one"][k])
                                                                      for s in per_seed])),
                      "mean_abs_diff_between_seeds_one": float(np.mean(between)) if between else None}
    return {"store": {"source": "synthetic", "n": n, "size": size, "train_rows": int(len(store.partition_indices(0)))},
            "global_batch": 2 * batch, "epochs": epochs, "seeds": seeds, "cores": cores, "per_seed": per_seed,
            "summary": summary}


# ---- 2. step time, 3. all-reduce ----------------------------------------------------------------------------
def classifier_trainer(store: Store, *, model: str, batch: int, device: torch.device, dist: Distributed,
                       run_dir: Path) -> tuple[Trainer, Any]:
    """facelab's Trainer of ``model`` on every label of ``store`` and one preloaded batch of this process."""
    task = Task.from_labels(store.label_specs)
    net = create_classifier(model, num_outputs=task.num_logits, image_size=store.image_size)
    cfg = ClassifierConfig(store=str(store.path), device=str(device), batch_size=batch,
                           trainer={"precision": "auto", "progress": False, "epochs": 1})
    loader = BatchLoader(store, np.arange(len(store)), batch_size=batch, shuffle=True, device=device,
                         channels_last=True, rank=dist.rank, world_size=dist.world_size, prefetch=0)
    trainer = Trainer(ClassifierObjective(net, task, cfg=cfg, store=store), loader, None, config=cfg.trainer,
                      run_dir=run_dir, device=device, dist=dist)
    trainer.model.train()
    trainer._wrap_for_processes()  # what train_epoch does first: the loss behind DDP on several processes
    return trainer, next(iter(loader))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: Trainer, batch: Any, steps: int, dist: Distributed) -> list[float]:
    """Seconds of each of ``steps`` training steps after 2 warm-up steps (the processes start together)."""
    for _ in range(2):
        trainer.train_step(batch)
    times = []
    for _ in range(steps):
        dist.any(False)  # a barrier: every process starts the step together
        _sync(trainer.device)
        t0 = time.perf_counter()
        trainer.train_step(batch)
        _sync(trainer.device)
        times.append(time.perf_counter() - t0)
    return times


def allreduce_seconds(numel: int, dist: Distributed, repeats: int) -> list[float]:
    flat = torch.ones(numel, device=dist.device)  # (numel,) float32: the gradient, flattened
    for _ in range(2):
        tdist.all_reduce(flat)
    times = []
    for _ in range(repeats):
        tdist.barrier()
        _sync(dist.device)
        t0 = time.perf_counter()
        tdist.all_reduce(flat)
        _sync(dist.device)
        times.append(time.perf_counter() - t0)
    return times


def step_worker(rank: int, nprocs: int, rendezvous: Path, store: Path, model: str, batch: int, steps: int,
                out: Path, device: str) -> None:
    dist = join(rank, nprocs, rendezvous, device)
    try:
        trainer, b = classifier_trainer(Store.open(store), model=model, batch=batch, device=dist.device, dist=dist,
                                        run_dir=out / f"run{rank}")
        times = timed_steps(trainer, b, steps, dist)
        numel = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        reduce = allreduce_seconds(numel, dist, repeats=20)
        if dist.is_main:
            (out / "two.json").write_text(json.dumps({"step": times, "allreduce": reduce, "numel": numel}))
        del trainer, b  # DDP's reducer holds the process group: freed after it is destroyed, gloo's hangs
    finally:
        dist.close()


def step_time(tmp: Path, device: str, *, model: str, size: int, batch: int, steps: int,
              repeats: int) -> dict[str, Any]:
    """Median step ms of 1 process of batch 2B and of 2 processes of batch B, and of the all-reduce alone; the
    two alternate ``repeats`` times and the best median of each counts (the machine may be shared)."""
    store = random_store(tmp / f"store-{size}", 8 * batch, size)
    dev = torch.device("cuda:0" if device == "cuda" else "cpu")
    runs: dict[str, list[float]] = {"one": [], "two": [], "allreduce": [], "half": []}
    for r in range(repeats):
        start(step_worker, 2, device, tmp / f"step-rendezvous-{r}", store.path, model, batch, steps, tmp, device)
        two = json.loads((tmp / "two.json").read_text())
        runs["two"].append(float(np.median(two["step"])))
        runs["allreduce"].append(float(np.median(two["allreduce"])))
        torch.set_num_threads(available_cores())
        trainer, b = classifier_trainer(store, model=model, batch=2 * batch, device=dev, dist=Distributed(device=dev),
                                        run_dir=tmp / "run-one")
        runs["one"].append(float(np.median(timed_steps(trainer, b, steps, Distributed()))))
        torch.set_num_threads(max(1, available_cores() // 2))  # what each of the 2 processes gets
        trainer, b = classifier_trainer(store, model=model, batch=batch, device=dev, dist=Distributed(device=dev),
                                        run_dir=tmp / "run-half")
        runs["half"].append(float(np.median(timed_steps(trainer, b, steps, Distributed()))))
        torch.set_num_threads(available_cores())
    ms = {k: 1e3 * min(v) for k, v in runs.items()}
    return {
        "model": model, "size": size, "global_batch": 2 * batch, "steps": steps, "repeats": repeats,
        "step_ms_1proc_batch_2B": round(ms["one"], 1), "step_ms_2proc_batch_B": round(ms["two"], 1),
        "images_per_s_1proc": round(2 * batch / ms["one"] * 1e3, 1),
        "images_per_s_2proc": round(2 * batch / ms["two"] * 1e3, 1),
        # the 2-process step against its own share run alone (1 process, batch B, half the cores): DDP's cost
        "step_ms_1proc_batch_B_half_cores": round(ms["half"], 1),
        "ddp_overhead_ms": round(ms["two"] - ms["half"], 1),
        "allreduce": {"numel": two["numel"], "mbytes": round(4 * two["numel"] / 2**20, 2),
                      "ms": round(ms["allreduce"], 2), "share_of_2proc_step": round(ms["allreduce"] / ms["two"], 4)},
    }


# ---- 4. one GPU's throughput and the loader's share ---------------------------------------------------------
def throughput(tmp: Path, device: str, *, models: list[str], sizes: list[int], batch: int, steps: int) -> dict:
    """images/s of one device from a preloaded batch and from the BatchLoader; loader share = 1 - ratio."""
    dev = torch.device("cuda:0" if device == "cuda" else "cpu")
    out: dict[str, Any] = {}
    for size in sizes:
        store = random_store(tmp / f"tput-{size}", (steps + 4) * batch, size)
        for model in models:
            trainer, b = classifier_trainer(store, model=model, batch=batch, device=dev, dist=Distributed(device=dev),
                                            run_dir=tmp / f"tput-{model}-{size}")
            pre = float(np.median(timed_steps(trainer, b, steps, Distributed())))
            loader = trainer.train_loader
            loader.prefetch = 2
            it = iter(loader)
            for _ in range(2):
                trainer.train_step(next(it))
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(next(it))
            _sync(dev)
            full = (time.perf_counter() - t0) / steps
            out[f"{model}@{size}"] = {"images_per_s_preloaded": round(batch / pre, 1),
                                      "images_per_s_with_loader": round(batch / full, 1),
                                      "loader_share": round(max(0.0, 1 - pre / full), 3)}
    return out


def meta(device: str) -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": available_cores(), "torch": torch.__version__, "device": device,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "date": datetime.date.today().isoformat(), "nice": os.nice(0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default="vgg_scratch", help="model of the step-time section")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32, help="per-process batch B of the step-time section")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="alternations of the step-time runs (best counts)")
    ap.add_argument("--throughput", action="store_true", help="section 4 on the CPU too (slow: resnet50 at 128 px)")
    ap.add_argument("--skip-equivalence", action="store_true")
    ap.add_argument("--skip-step-time", action="store_true")
    ap.add_argument("--metric-seeds", type=int, default=0, help="section 5: seeds of whole runs compared (0: skip)")
    ap.add_argument("--metric-epochs", type=int, default=3, help="section 5: epochs of each run")
    ap.add_argument("--metric-n", type=int, default=2000, help="section 5: synthetic faces in the store")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    two_devices = args.device == "cpu" or torch.cuda.device_count() >= 2
    result: dict[str, Any] = {"meta": meta(args.device)}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as d:
        tmp = Path(d)
        if two_devices and not args.skip_equivalence:
            result["equivalence"] = equivalence(tmp / "eq", args.device)
        if two_devices and args.metric_seeds > 0:
            result["metrics"] = metric_equivalence(tmp / "metrics", args.device, seeds=args.metric_seeds,
                                                   epochs=args.metric_epochs, n=args.metric_n, size=32, batch=B * 2)
        if two_devices and not args.skip_step_time:
            result["step_time"] = step_time(tmp / "step", args.device, model=args.model, size=args.size,
                                            batch=args.batch, steps=args.steps, repeats=args.repeats)
        if args.device == "cuda" or args.throughput:
            result["throughput"] = throughput(tmp / "tput", args.device, models=["vgg_scratch", "resnet50"],
                                              sizes=[64, 128], batch=128, steps=args.steps)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for section, figures in result.items():
            print(f"{section}: {json.dumps(figures, indent=2)}")


if __name__ == "__main__":
    main()
