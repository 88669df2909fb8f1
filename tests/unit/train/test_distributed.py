"""Training in several processes (DistributedDataParallel over gloo): N processes of batch B train as one of
batch N*B, every process ends with the same weights, rank 0 alone writes, and a run resumes under DDP.

The processes are forked (:func:`tests.helpers.run_processes`) and meet through a file; each test takes a few
seconds on 2 CPU cores. Weights are compared with a float tolerance, never bit for bit: the gradient of a
batch summed in two halves and averaged over processes rounds differently from the gradient of the whole batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from facelab.errors import ConfigError, FacelabError
from facelab.models.checkpoint import read_training_state, read_weights
from facelab.train.classifier import ClassifierConfig, train_classifier
from facelab.train.distributed import Distributed, TorchrunEnv, check_nproc, process_device
from facelab.train.generative import GenerativeRunConfig, train_generative
from facelab.train.sync_batchnorm import CpuSyncBatchNorm, convert_sync_batchnorm
from facelab.train.trainer import Callback
from tests.helpers import Killed, KillAtStep, join_processes, make_store, run_processes

B = 8  # each process's batch; the one-process reference trains with 2 * B
#: no augmentation and no dropout: the only differences left between 2 x B and 1 x 2B are float rounding. SGD,
#: not Adam: Adam divides each gradient by its running size, which turns the rounding of a near-zero gradient
#: into steps of about lr (one process on 1 and on 2 threads ends 5e-3 apart after 14 AdamW steps,
#: benchmarks/bench_ddp.py), so only SGD makes "the same weights" a tight test of the gradients
SGD = {"name": "sgd", "lr": 0.05}
CLASSIFIER = {"augment": "none", "device": "cpu", "model_kwargs": {"channels": [8, 16], "drop_rate": 0.0},
              "trainer": {"epochs": 2, "progress": False, "precision": "fp32", "optim": SGD}}
VAE = {"model": "vae", "augment": "none", "device": "cpu", "model_options": {"width": 8, "latent_dim": 8},
       "trainer": {"epochs": 2, "progress": False, "precision": "fp32", "optim": {"groups": {"model": {**SGD, "lr": 1e-4}}}}}
DCGAN = {"model": "dcgan", "augment": "none", "device": "cpu", "model_options": {"width": 8, "latent_dim": 8},
         "trainer": {"epochs": 2, "progress": False, "precision": "fp32", "checkpoint_every_minutes": 1e-6}}
BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
CONFIGS = {"classifier": (ClassifierConfig, train_classifier), "generative": (GenerativeRunConfig, train_generative)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "store"
    make_store(path, n=96, size=32)
    return path


def config(store: Path, base: dict[str, Any], batch_size: int, **trainer: Any) -> dict[str, Any]:
    return {**base, "store": str(store), "batch_size": batch_size, "trainer": {**base["trainer"], **trainer}}


class DumpWeights(Callback):
    """Saves this process's final weights (rank 0's are in the checkpoint; the others' only here)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_fit_end(self, trainer) -> None:
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, self.path)


def fit_worker(rank: int, nprocs: int, rendezvous: Path, kind: str, cfg: dict[str, Any], run_dir: Path,
               dumps: Path, kill_at: int | None = None, resume: bool = False, noise_free: bool = False) -> None:
    """One process of a run: join the group, train (or resume) ``cfg`` into ``run_dir``, dump its weights."""
    if noise_free:  # a VAE's one random draw (forked: this process only)
        torch.randn_like = torch.zeros_like
    config_cls, fit = CONFIGS[kind]
    dist = join_processes(rank, nprocs, rendezvous)
    callbacks: list[Callback] = [DumpWeights(dumps / f"rank{rank}.pt")]
    if kill_at is not None:
        callbacks.append(KillAtStep(kill_at))
    try:
        summary = fit(config_cls.model_validate(cfg), run_dir=run_dir, resume=resume, callbacks=callbacks, dist=dist)
        (dumps / f"summary{rank}.json").write_text(json.dumps({k: summary.get(k) for k in ("processes", "report")}))
    except Killed:
        pass
    finally:
        dist.close()


def two_processes(tmp: Path, kind: str, cfg: dict[str, Any], *, kill_at: int | None = None, resume: bool = False,
                  noise_free: bool = False) -> Path:
    """Train ``cfg`` in 2 processes into ``tmp/run``; the processes' weights are in ``tmp/rank{0,1}.pt``."""
    tmp.mkdir(parents=True, exist_ok=True)
    rendezvous = tmp / f"rendezvous-{len(list(tmp.glob('rendezvous-*')))}"  # a new file for every group
    run_processes(fit_worker, 2, rendezvous, kind, cfg, tmp / "run", tmp, kill_at, resume, noise_free)
    return tmp / "run"


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, rtol: float = 1e-4,
                        atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k  # batch-norm step counters


def assert_ranks_agree(tmp: Path, *, buffers: bool = True) -> None:
    """DDP's invariant: every process holds the same parameters after every step (the same averaged gradients).
    Batch-norm running statistics agree with SyncBatchNorm; without it each process's last step updates its
    own (DDP sends rank 0's to the others at the start of each forward, so rank 0's are the run's)."""
    a, b = (torch.load(tmp / f"rank{r}.pt") for r in (0, 1))
    if not buffers:
        a, b = ({k: v for k, v in d.items() if not k.endswith(BN_BUFFERS)} for d in (a, b))
    assert_same_weights(a, b, rtol=0, atol=0)


# ---- 2 processes of batch B = 1 process of batch 2B ------------------------------------------------
def test_classifier_with_sync_batchnorm_trains_as_one_process_of_the_whole_batch(store, tmp_path):
    one = tmp_path / "one"
    train_classifier(ClassifierConfig.model_validate(config(store, CLASSIFIER, 2 * B)), run_dir=one)
    two = two_processes(tmp_path / "two", "classifier", config(store, CLASSIFIER, B, sync_batchnorm=True))
    assert_ranks_agree(tmp_path / "two")
    assert_same_weights(read_weights(two / "checkpoints" / "last"), read_weights(one / "checkpoints" / "last"))
    a, b = ([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two))
    assert [r["step"] for r in a] == [r["step"] for r in b]  # the same steps per epoch: one global order
    for ra, rb in zip(a, b):  # rank 0 validates every row with the unwrapped model: the same figures
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-4)
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)  # the mean over both shares
    # rank 0 wrote what a one-process run writes, and said how many processes trained
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    summaries = [json.loads((tmp_path / "two" / f"summary{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["report"] and summaries[1]["report"] is None  # the report is rank 0's


def test_vae_trains_as_one_process_of_the_whole_batch(store, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # the reparameterisation noise: per process
    one = tmp_path / "one"
    train_generative(GenerativeRunConfig.model_validate(config(store, VAE, 2 * B)), run_dir=one)
    two = two_processes(tmp_path / "two", "generative", config(store, VAE, B, sync_batchnorm=True),
                        noise_free=True)
    assert_ranks_agree(tmp_path / "two")
    assert_same_weights(read_weights(two / "checkpoints" / "last"), read_weights(one / "checkpoints" / "last"))
    assert (two / "samples" / "latest.png").is_file() and not list((tmp_path / "two").glob("*.png"))


# ---- resume ---------------------------------------------------------------------------------------
def test_gan_killed_mid_epoch_resumes_under_ddp_to_the_uninterrupted_weights(store, tmp_path):
    cfg = config(store, DCGAN, B)  # two players: DDP finds the unused parameters of each step
    whole = two_processes(tmp_path / "whole", "generative", cfg)
    assert_ranks_agree(tmp_path / "whole", buffers=False)
    steps = json.loads((whole / "metrics.jsonl").read_text().splitlines()[0])["step"]
    killed = two_processes(tmp_path / "killed", "generative", cfg, kill_at=steps + 2)
    state = read_training_state(killed / "checkpoints" / "last")
    assert (state["epoch"], state["batches_done"], state["world_size"]) == (1, 1, 2)
    assert len(state["rank_rng"]) == 2  # each process's own noise stream
    resumed = tmp_path / "killed"
    two_processes(resumed, "generative", cfg, resume=True)
    assert_ranks_agree(resumed, buffers=False)
    for which in ("last", "best"):  # best = the EMA generator
        assert_same_weights(read_weights(killed / "checkpoints" / which), read_weights(whole / "checkpoints" / which),
                            rtol=0, atol=1e-6)


def test_a_mid_epoch_checkpoint_of_two_processes_refuses_one(store, tmp_path):
    cfg = config(store, CLASSIFIER, B, checkpoint_every_minutes=1e-6)
    run = two_processes(tmp_path, "classifier", cfg, kill_at=2)
    with pytest.raises(FacelabError, match="--nproc 2"):
        train_classifier(ClassifierConfig.model_validate(cfg), run_dir=run, resume=True)


# ---- SyncBatchNorm on the CPU -----------------------------------------------------------------------
def sync_bn_worker(rank: int, nprocs: int, rendezvous: Path, out: Path) -> None:
    dist = join_processes(rank, nprocs, rendezvous)
    try:
        torch.manual_seed(0)
        x = torch.randn(2 * B, 4, 3, 3, dtype=torch.float64)  # (2B, C, H, W): the whole batch, each takes half
        bn = CpuSyncBatchNorm(4).double()
        mine = x[rank * B:(rank + 1) * B].clone().requires_grad_()
        (bn(mine) * torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 4, 1, 1)).square().sum().backward()
        refused = []
        try:
            nn.SyncBatchNorm(4).train()(torch.randn(B, 4, 3, 3))  # torch's own on a CPU tensor
        except ValueError as e:
            refused.append(str(e))
        try:
            dist.wrap(nn.SyncBatchNorm(4), find_unused_parameters=False)
        except ValueError as e:
            refused.append(str(e))
        torch.save({"grad": mine.grad, "running_var": bn.running_var, "refused": refused}, out / f"rank{rank}.pt")
    finally:
        dist.close()


def test_cpu_sync_batchnorm_is_batch_norm_of_the_whole_batch_where_torchs_refuses_the_cpu(tmp_path):
    run_processes(sync_bn_worker, 2, tmp_path / "rendezvous", tmp_path)
    torch.manual_seed(0)
    x = torch.randn(2 * B, 4, 3, 3, dtype=torch.float64).requires_grad_()
    bn = nn.BatchNorm2d(4).double()
    (bn(x) * torch.arange(1.0, 5.0, dtype=torch.float64).view(1, 4, 1, 1)).square().sum().backward()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        # DDP averages parameter gradients; an input's gradient is the whole batch's, as on one process
        torch.testing.assert_close(got["grad"], x.grad[rank * B:(rank + 1) * B])
        torch.testing.assert_close(got["running_var"], bn.running_var)
        # why facelab has its own: torch's SyncBatchNorm (and DDP around one) refuses CPU tensors; when a torch
        # release accepts them, use nn.SyncBatchNorm.convert_sync_batchnorm on the CPU too and drop this module
        assert len(got["refused"]) == 2 and all("GPU" in m for m in got["refused"]), got["refused"]


def test_convert_sync_batchnorm_keeps_the_tensors_and_the_names():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm1d(2)))
    model[1].frozen = True
    before = dict(model.state_dict(keep_vars=True))
    assert convert_sync_batchnorm(model, "cpu") == 2
    assert isinstance(model[1], CpuSyncBatchNorm) and model[1].frozen
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    x = torch.randn(5, 3, 6, 6)
    ref = nn.BatchNorm2d(4)
    ref.load_state_dict(model[1].state_dict())
    torch.testing.assert_close(model[1](model[0](x)), ref(model[0](x)))  # one process: plain batch norm


# ---- what is checked before any process starts ------------------------------------------------------
def test_nproc_checks():
    with pytest.raises(ConfigError, match="--nproc 0"):
        check_nproc(0, "cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_nproc(2, "cuda") if not torch.cuda.is_available() else pytest.skip("a GPU is present")
    assert check_nproc(2, "cpu") == torch.device("cpu")


def test_more_processes_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="has 2 CUDA GPU.*--nproc 2 or fewer"):
        check_nproc(3, "cuda")
    with pytest.raises(ConfigError, match="each process takes its own GPU"):
        check_nproc(2, "cuda:1")
    assert process_device("cuda", local_rank=1, local_world_size=2) == torch.device("cuda:1")


@pytest.mark.parametrize("environ, match", [
    ({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "do not fit together"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "LOCAL_RANK=None"),
])
def test_torchrun_variables_are_checked(environ, match):
    with pytest.raises(ConfigError, match=match):
        TorchrunEnv.from_environ(environ)


def test_one_process_is_the_identity():
    d = Distributed()
    assert not d.active and d.is_main and d.rank_seed(7) == 7
    assert d.any(True, False) == (True, False) and d.mean({"a": 1.5}) == {"a": 1.5} and d.broadcast(3) == 3
    module = nn.Linear(2, 2)
    assert d.wrap(module, find_unused_parameters=True) is module


ROWS = (3, 2)  # a partial last batch: the processes hold different numbers of rows


def _views(d: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    n = sum(ROWS)
    return torch.randn(n, 5, generator=g), torch.randn(n, 5, generator=g), torch.randn(5, d, generator=g)


def nt_xent_worker(rank, nprocs, rendezvous, out):
    from facelab.train.objectives.simclr import nt_xent

    dist = join_processes(rank, nprocs, rendezvous)
    try:
        x1, x2, w = _views()
        w.requires_grad_()
        start = sum(ROWS[:rank])
        mine = slice(start, start + ROWS[rank])
        loss, hit = nt_xent(x1[mine] @ w, x2[mine] @ w, 0.5, across_processes=True)
        # what the trainer does under DDP: this process's share of the global rows, then the average over processes
        (loss * ROWS[rank] * nprocs / sum(ROWS)).backward()
        torch.distributed.all_reduce(w.grad)
        torch.save({"loss": loss.detach(), "hit": hit, "grad": w.grad / nprocs}, out / f"rank{rank}.pt")
    finally:
        dist.close()


def test_simclr_loss_of_two_processes_compares_with_every_process_s_views(tmp_path):
    from facelab.train.objectives.simclr import nt_xent

    run_processes(nt_xent_worker, 2, tmp_path / "rendezvous", tmp_path)
    x1, x2, w = _views()
    w.requires_grad_()
    z1, z2 = x1 @ w, x2 @ w
    whole, hit = nt_xent(z1, z2, 0.5)  # one process, the whole batch
    whole.backward()
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # each process's loss is its rows' mean over all 2N views; weighted by rows they make the whole batch's loss
    weighted = sum(g["loss"] * n for g, n in zip(got, ROWS)) / sum(ROWS)
    torch.testing.assert_close(weighted, whole.detach())
    # a process's hits are its rows' first views, then their second views; the whole batch's: all first views
    hits = torch.cat([g["hit"][:r] for g, r in zip(got, ROWS)] + [g["hit"][r:] for g, r in zip(got, ROWS)])
    torch.testing.assert_close(hits, hit)
    for g in got:  # gradients flow back to the process whose rows they came from: the whole batch's gradient
        torch.testing.assert_close(g["grad"], w.grad)
