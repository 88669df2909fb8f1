"""Batch norm over the global batch when several processes train (``--sync-bn``, ``trainer.sync_batchnorm``).

With plain batch norm each process normalises over its own share of a step's batch, so N processes with batch
B see other statistics than one process with batch N*B. :func:`convert_sync_batchnorm` replaces every batch
norm of a model by a synchronised one, which computes them over every process's share: on CUDA torch's own
``nn.SyncBatchNorm`` (NCCL, fused kernels); on CPU :class:`CpuSyncBatchNorm`, the same statistics from two
differentiable all-reduces over gloo. Parameters, buffers and their names stay those of the batch norms
(checkpoints do not change); in eval mode, or on one process, either is plain batch norm.

Why a module of facelab's own on the CPU: torch's cannot be used there (torch 2.13). In a process group its
``forward`` raises ``ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU ...`` for a CPU tensor,
and DistributedDataParallel refuses to wrap a CPU module that holds one (``SyncBatchNorm layers only work with GPU
modules``). tests/unit/train/test_distributed.py checks both refusals: when a torch release lifts them, that test
fails, and ``nn.SyncBatchNorm.convert_sync_batchnorm`` should replace this module on the CPU too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm


class CpuSyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of every process's share of the batch (gloo, CPU).

    The gradient is exact: each all-reduce's backward sums the gradients of the statistics over processes (as
    torch's CUDA SyncBatchNorm does), so with DistributedDataParallel's averaging, N processes of batch B
    compute the gradient of one process with batch N*B. Running statistics follow batch norm's rule (the
    unbiased variance of the whole step, ``momentum`` or a cumulative average).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training and _world_size() > 1:
            return self._synced_forward(input)
        return super().forward(input)

    def _synced_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, c] + [1] * (x.dim() - 2)
        # (B, C, ...): statistics in fp32 at least, as batch norm computes them under autocast (fp64 stays fp64)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = xf.new_tensor([xf.numel() / c])
        totals = _AllReduceSum.apply(torch.cat([xf.sum(dims), count]))  # (C + 1,) summed over processes
        n = totals[c]
        mean = totals[:c] / n  # (C,)
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply(centred.square().sum(dims)) / n  # (C,) biased, the one batch norm divides by
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp(min=1))
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, differentiable: the gradient of a sum of every process's tensors is every process's
    gradient summed (one more all-reduce in backward)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _world_size() -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def convert_sync_batchnorm(module: nn.Module, device: torch.device | str) -> int:
    """Replace every batch norm below ``module`` (in place) by a synchronised one for ``device``: torch's
    ``nn.SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` elsewhere; returns how many were replaced.

    The new layers take over the old ones' parameters and buffers (the same tensors: optimizers and EMA copies
    that hold them stay valid), their train/eval mode and any attribute set on them (a frozen backbone's
    batch norms stay frozen).
    """
    cls = nn.SyncBatchNorm if torch.device(device).type == "cuda" else CpuSyncBatchNorm
    replaced = 0
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, (nn.SyncBatchNorm, CpuSyncBatchNorm)):
            module.add_module(name, _synced(child, cls))
            replaced += 1
        else:
            replaced += convert_sync_batchnorm(child, device)
    return replaced


def _synced(bn: _BatchNorm, cls: type[_BatchNorm]) -> _BatchNorm:
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    if bn.track_running_stats:
        new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    for key, value in vars(bn).items():  # custom flags (e.g. frozen statistics) and the training mode
        if key not in vars(new) or key == "training":
            setattr(new, key, value)
    return new
