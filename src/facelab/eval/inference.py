"""Running a classifier: logits (with flip TTA), probabilities per label over a loader or store rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from facelab.data.loader import BatchLoader
from facelab.eval.metrics import score
from facelab.models.classifiers.heads import Task, flip_permutation, task_loss, task_predict
from facelab.utils.device import resolve_device


def forward_logits(model: torch.nn.Module, x: torch.Tensor, *, tta_flip: bool = False,
                   flip_perm: list[int] | None = None) -> torch.Tensor:
    """(B, num_logits) fp32 logits of images ``x`` (B, C, H, W); with ``tta_flip`` the mean of the logits of
    the image and of its mirror image, the mirror's left/right classes swapped back (``flip_perm``, from
    :func:`facelab.models.classifiers.heads.flip_permutation`)."""
    logits = model(x).float()
    if tta_flip:
        mirrored = model(torch.flip(x, dims=[3])).float()
        logits = 0.5 * (logits + (mirrored if flip_perm is None else mirrored[:, flip_perm]))
    return logits


@torch.no_grad()
def collect_predictions(
    model: torch.nn.Module, loader: Any, task: Task, *, tta_flip: bool = False, flip_perm: list[int] | None = None,
    mirror: bool = False, progress: Any = None
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, float]:
    """Probabilities per label for every batch of ``loader`` (with ``mirror``: of the mirror images, the
    labels' left and right swapped by ``flip_perm`` so that they stay the truth).

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
        x, y = batch.x, batch.y
        if mirror:
            x, y = torch.flip(x, dims=[3]), mirror_labels(y, task, flip_perm)
        logits = forward_logits(model, x, tta_flip=tta_flip, flip_perm=flip_perm)  # (B, num_logits)
        losses.append(float(task_loss(logits, y, task)) * len(y))
        for name, p in task_predict(logits, task).items():
            probs[name].append(p.cpu().numpy())
        ys.append(y.cpu().numpy())
        idx.append(batch.index.cpu().numpy() if torch.is_tensor(batch.index) else np.asarray(batch.index))
        if progress is not None:
            progress(len(batch.y))
    n = sum(len(v) for v in ys)
    return ({k: np.concatenate(v) for k, v in probs.items()}, np.concatenate(ys), np.concatenate(idx),
            float(sum(losses) / max(1, n)))


def mirror_labels(y: torch.Tensor, task: Task, flip_perm: list[int] | None) -> torch.Tensor:
    """(B, L) label values of the mirror images: each categorical label's classes mapped as the logit
    permutation ``flip_perm`` maps its logits (left <-> right); unknown (-1) stays unknown."""
    if flip_perm is None:
        return y
    y = y.clone()
    for i, sl in enumerate(task.slices):
        if task.outputs[i].num_logits == 1:
            continue
        lut = torch.tensor([flip_perm[sl.start + k] - sl.start for k in range(sl.stop - sl.start)], device=y.device)
        known = y[:, i] >= 0
        y[known, i] = lut[y[known, i]]
    return y


def predict_rows(model: torch.nn.Module, meta: Any, store: Any, rows: np.ndarray, *, batch_size: int = 256,
                 device: str | torch.device = "cpu", tta_flip: bool = False, mirror: bool = False,
                 **loader_kwargs: Any) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """A loaded classifier's probabilities on store ``rows``, with the preprocessing its checkpoint carries.

    Args:
        model, meta: what :func:`facelab.models.loading.load_model` returns.
        loader_kwargs: passed to :class:`facelab.data.loader.BatchLoader` (e.g. ``prefetch``).

    Returns:
        probs: {label: (N,) or (N, K)} as in :func:`collect_predictions`; y: (N, L) true values; loss.
        With ``mirror``, of the mirror images of the rows (their left/right labels swapped).
    """
    task = Task.from_dict(meta.config["task"])
    flip_perm = flip_permutation(task, meta.labels)
    pre = meta.preprocessing
    loader = BatchLoader(store, rows, batch_size=batch_size, labels=list(task.names), shuffle=False,
                         mean=pre.mean, std=pre.std, device=resolve_device(device), **loader_kwargs)
    probs, y, _, loss = collect_predictions(model, loader, task, tta_flip=tta_flip, flip_perm=flip_perm, mirror=mirror)
    return probs, y, loss


def evaluate_model(model: torch.nn.Module, loader: Any, task: Task, *, tta_flip: bool = False,
                   flip_perm: list[int] | None = None) -> dict[str, float]:
    """Flat validation metrics for the Trainer: loss and the mean metrics over labels."""
    probs, y, _, loss = collect_predictions(model, loader, task, tta_flip=tta_flip, flip_perm=flip_perm)
    out = score(task, y, probs)["summary"]
    out["loss"] = loss
    return out
