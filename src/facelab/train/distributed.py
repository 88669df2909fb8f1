"""Training in several processes (torchrun + DistributedDataParallel): where a process stands, its device, and
the few collectives the Trainer needs.

A process learns its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). :func:`init_distributed` joins the process group:
gloo on CPU (the processes share the cores: each gets ``cores // processes`` torch threads), NCCL on CUDA with
one GPU per process (``cuda:LOCAL_RANK``). :class:`Distributed` is what trainers, loaders and run code take;
``Distributed()`` is the single process, for which every collective returns its input, so one code path
serves both.

Rank 0 is the *main* process: it alone validates, writes the run folder and prints; the others train their
share of every batch and receive what rank 0 decided (validation figures, the run folder's path).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from facelab.errors import ConfigError
from facelab.utils.device import resolve_device

log = logging.getLogger("facelab")

#: how long a collective waits for the other processes before it fails (instead of hanging for ever); rank 0's
#: validation runs while the others wait, so it must fit in this time
DEFAULT_TIMEOUT = timedelta(minutes=30)
_CUDA_INDEX = re.compile(r"^cuda:\d+$")


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
        """The launch described by torchrun's variables, or None outside torchrun (or for a world of one).

        Raises:
            ConfigError: the variables are present but incomplete or not integers.
        """
        env = os.environ if environ is None else environ
        if "RANK" not in env and "WORLD_SIZE" not in env:
            return None
        values = {}
        for name, default in (("RANK", None), ("WORLD_SIZE", None), ("LOCAL_RANK", None),
                              ("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE"))):
            text = env.get(name, default)
            try:
                values[name] = int(text)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ConfigError(f"distributed launch: environment variable {name}={text!r} is not an integer; "
                                  "start the processes with torchrun (or facelab ... --nproc N), which sets "
                                  "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE") from None
        me = cls(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], values["LOCAL_WORLD_SIZE"])
        if not (0 <= me.rank < me.world_size and 0 <= me.local_rank < me.local_world_size <= me.world_size):
            raise ConfigError(f"distributed launch: RANK={me.rank}, WORLD_SIZE={me.world_size}, LOCAL_RANK="
                              f"{me.local_rank}, LOCAL_WORLD_SIZE={me.local_world_size} do not fit together")
        return me if me.world_size > 1 else None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_per_process(local_world_size: int) -> int:
    """Torch threads of each of ``local_world_size`` CPU processes on this machine: the cores split evenly."""
    return max(1, available_cores() // max(1, local_world_size))


def process_device(name: str, *, local_rank: int, local_world_size: int) -> torch.device:
    """The device of process ``local_rank`` of ``local_world_size`` on this machine for ``--device name``.

    ``cpu`` (and ``auto`` without a GPU): every process on the CPU. ``cuda`` (and ``auto`` with GPUs): one GPU
    per process, ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: more processes than GPUs, CUDA without a GPU, or a fixed ``cuda:N`` (every process would
            share that GPU).
    """
    text = str(name).strip().lower()
    if _CUDA_INDEX.match(text):
        raise ConfigError(f"--device {name} with {local_world_size} processes: each process takes its own GPU "
                          "(cuda:LOCAL_RANK); use --device cuda, and CUDA_VISIBLE_DEVICES to choose the GPUs")
    device = resolve_device(text)  # unknown names and CUDA without GPUs are errors here
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_world_size > count:
        raise ConfigError(f"--nproc {local_world_size} with --device {name}: this machine has {count} CUDA GPU(s) "
                          f"and each process needs its own; use --nproc {count} or fewer (or --device cpu)")
    return torch.device(f"cuda:{local_rank}")


def check_nproc(nproc: int, device: str) -> torch.device:
    """Check a ``--nproc`` launch on this machine before any process starts; returns the device type's device.

    Raises:
        ConfigError: ``nproc`` < 1, or more processes than GPUs for a CUDA device (see :func:`process_device`).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc}: give the number of training processes on this machine (1 or more)")
    dev = process_device(device, local_rank=0, local_world_size=nproc)
    if dev.type == "cpu" and nproc > available_cores():
        log.warning(f"--nproc {nproc} on {available_cores()} CPU core(s): the processes will compete for the cores; "
                    "a run on one process would be faster")
    return dev


class Distributed:
    """The process group as the trainer sees it; ``Distributed()`` is one process (every collective is the identity).

    Args:
        rank: this process's rank (0 is the main process: it validates and writes the run folder).
        world_size: number of processes.
        local_rank: rank on this machine (the GPU index on CUDA).
        device: where this process trains.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1, local_rank: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world_size={self.world_size}, device={self.device})"

    @property
    def active(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates, writes into the run folder and prints."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.active else None

    # ---- collectives (identity on one process) ---------------------------------------------------------
    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over every process (one all-reduce), so all of them take the same decision."""
        if not self.active:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """The mean over processes of each value (every process must pass the same keys)."""
        if not self.active or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def sum(self, value: float) -> float:
        """``value`` summed over processes."""
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable objects; what the others pass is ignored)."""
        if not self.active:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def wrap(self, module: nn.Module, *, find_unused_parameters: bool) -> nn.Module:
        """``module`` in DistributedDataParallel (its gradients averaged over processes in backward); on one
        process, ``module`` itself. Parameters that do not require grad now are left out of the sync."""
        if not self.active:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None,
                                                   find_unused_parameters=find_unused_parameters)

    def close(self) -> None:
        """Leave the process group (after every process finished its collectives)."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

    # ---- per-process randomness -------------------------------------------------------------------------
    def rank_seed(self, base: int) -> int:
        """A seed for this rank derived from ``base``: rank 0 keeps ``base`` (a 1-process run's stream), the
        others draw their own (their dropout masks and latent noise must not copy rank 0's)."""
        if self.rank == 0:
            return int(base)
        return int(np.random.SeedSequence([int(base), self.rank]).generate_state(1, np.uint64)[0] >> 1)


class LossModule(nn.Module):
    """A loss function as a module's forward, for DistributedDataParallel to wrap.

    DDP prepares its gradient sync in ``forward``, but facelab's objectives compute their losses outside the
    model's own forward (a GAN's players through ``model.loss(group, batch)``, a classifier's mixup), so DDP
    wraps this module around the whole model instead: one DDP whichever player steps. ``forward(group, batch)``
    returns ``(loss, logs)``: plain tensors and floats, which DDP routes through its backward bookkeeping.

    Args:
        loss: ``loss(group, batch) -> StepOutput`` (an objective's ``loss``).
        model: the module whose parameters the loss trains (registered here, so DDP syncs them).
    """

    def __init__(self, loss: Callable[[str, Any], Any], model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, group: str, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        out = self._loss(group, batch)
        return out.loss, out.logs


def init_distributed(env: TorchrunEnv, device: str, *, timeout: timedelta | None = None,
                     init_method: str | None = None) -> Distributed:
    """Join the process group of a torchrun launch: gloo on CPU (torch threads: this machine's cores split
    between its processes), NCCL with ``cuda:LOCAL_RANK`` on CUDA.

    Args:
        env: this process's place (``TorchrunEnv.from_environ()`` under torchrun).
        device: the run's ``--device`` (cpu, cuda or auto).
        timeout: how long a collective waits for the others (default :data:`DEFAULT_TIMEOUT`, read at call
            time).
        init_method: where the processes meet when they were not started by torchrun, e.g.
            ``file:///tmp/x/rendezvous`` for processes a test or benchmark starts itself (no port to pick);
            None: torchrun's MASTER_ADDR and MASTER_PORT.

    Raises:
        ConfigError: a device the processes cannot share (see :func:`process_device`), or a launch without
            torchrun's rendezvous variables (MASTER_ADDR, MASTER_PORT) and no ``init_method``.
    """
    dev = process_device(device, local_rank=env.local_rank, local_world_size=env.local_world_size)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
        threads = threads_per_process(env.local_world_size)
        torch.set_num_threads(threads)
        if env.rank == 0:
            log.info(f"{env.world_size} processes (gloo, CPU): {env.local_world_size} on this machine share its "
                     f"{available_cores()} cores, {threads} torch thread(s) each")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing and init_method is None:
        raise ConfigError(f"distributed launch: {' and '.join(missing)} not set; start the processes with torchrun "
                          "(or facelab ... --nproc N), which sets them")
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method, rank=env.rank, world_size=env.world_size,
                                timeout=timeout or DEFAULT_TIMEOUT)
    return Distributed(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, device=dev)
