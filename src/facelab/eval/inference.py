"""Running a classifier: logits (with flip TTA), probabilities per label over a loader or store rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facelab.data.loader import BatchLoader
from facelab.eval.metrics import score
from facelab.models.classifiers.heads import Task, task_loss, task_predict
from facelab.utils.device import resolve_device


def forward_logits(model: torch.nn.Module, x: torch.Tensor, *, tta_flip: bool = False) -> torch.Tensor:
    """(B, num_logits) fp32 logits of images ``x`` (B, C, H, W); with ``tta_flip`` the mean of the logits of
    the image and of its mirror image."""
    logits = model(x).float()
    if tta_flip:
        logits = 0.5 * (logits + model(torch.flip(x, dims=[3])).float())
    return logits


@torch.no_grad()
def collect_predictions(
    model: torch.nn.Module, loader: Any, task: Task, *, tta_flip: bool = False, progress: Any = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, float]:
    """Probabilities per label for every batch of ``loader``.

    Returns:
        probs: {label: (N,) P(1) for binary or (N, K) class probabilities}.
        y: (N, L) true label values (task order).
        index: (N,) store rows.
        loss: mean task loss over the batches.
    """
    model.eval()
    probs: dict[str, list[np.ndarray]] = {n: [] for n in task.names}
    ys, idx, losses = [], [], []
    for batch in loader:
        logits = forward_logits(model, batch.x, tta_flip=tta_flip)  # (B, num_logits)
        losses.append(float(task_loss(logits, batch.y, task)) * len(batch.y))
        for name, p in task_predict(logits, task).items():
            probs[name].append(p.cpu().numpy())
        ys.append(batch.y.cpu().numpy())
        idx.append(batch.index.cpu().numpy() if torch.is_tensor(batch.index) else np.asarray(batch.index))
        if progress is not None:
            progress(len(batch.y))
    n = sum(len(v) for v in ys)
    return ({k: np.concatenate(v) for k, v in probs.items()}, np.concatenate(ys), np.concatenate(idx),
            float(sum(losses) / max(1, n)))


def predict_rows(model: torch.nn.Module, meta: Any, store: Any, rows: np.ndarray, *, batch_size: int = 256,
                 device: str | torch.device = "cpu", tta_flip: bool = False,
                 **loader_kwargs: Any) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """A loaded classifier's probabilities on store ``rows``, with the preprocessing its checkpoint carries.

    Args:
        model, meta: what :func:`facelab.models.loading.load_model` returns.
        loader_kwargs: passed to :class:`facelab.data.loader.BatchLoader` (e.g. ``prefetch``).

    Returns:
        probs: {label: (N,) or (N, K)} as in :func:`collect_predictions`; y: (N, L) true values; loss.
    """
    task = Task.from_dict(meta.config["task"])
    pre = meta.preprocessing
    loader = BatchLoader(store, rows, batch_size=batch_size, labels=list(task.names), shuffle=False,
                         mean=pre.mean, std=pre.std, device=resolve_device(device), **loader_kwargs)
    probs, y, _, loss = collect_predictions(model, loader, task, tta_flip=tta_flip)
    return probs, y, loss


def evaluate_model(model: torch.nn.Module, loader: Any, task: Task, *, tta_flip: bool = False) -> dict[str, float]:
    """Flat validation metrics for the Trainer: loss and the mean metrics over labels."""
    probs, y, _, loss = collect_predictions(model, loader, task, tta_flip=tta_flip)
    out = score(task, y, probs)["summary"]
    out["loss"] = loss
    return out
