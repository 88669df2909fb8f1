"""Mixed precision for training: bf16 autocast where it is fast, fp32 elsewhere (``TrainerConfig.precision``)."""

from __future__ import annotations

import contextlib

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up here: CUDA with bf16 support, or a CPU with native bf16
    (AVX512-BF16/AMX). On an AVX2-only CPU bf16 is emulated and measured ~10x slower than fp32
    (benchmarks/bench_train.py), so ``auto`` keeps fp32 there."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` -> "bf16" where it is fast on ``device`` (see :func:`bf16_is_fast`), else "fp32"."""
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return precision


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when ``precision`` resolves to bf16 on ``device``, else a no-op."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
