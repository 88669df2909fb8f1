"""Several trained classifiers of one task as one model: their probabilities averaged.

An ensemble returns logits in its members' task layout (the logit of the mean probability of each binary
label, the log of the mean class probabilities of each categorical one), so everything that takes a
classifier (``facelab eval``, ``facelab predict``, flip TTA, the task loss) takes an ensemble unchanged.
Members may be different architectures; they must predict the same labels from the same preprocessing.

>>> import torch
>>> from facelab.models.classifiers import Task, create_classifier
>>> task = Task.multilabel(["Male", "Smiling"])
>>> members = [create_classifier("vgg_scratch", num_outputs=2).eval() for _ in range(2)]
>>> ClassifierEnsemble(members, task)(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facelab.data.schema import LabelKind
from facelab.errors import FacelabError
from facelab.models.classifiers.heads import Task
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.loading import load_model

#: the preprocessing every member must share (the source store's hash may differ)
SHARED_PREPROCESSING = ("image_size", "crop", "mean", "std")


def _pre(meta: CheckpointMeta, key: str) -> Any:
    return getattr(meta.preprocessing, key) if meta.preprocessing is not None else None
_EPS = 1e-7


class ClassifierEnsemble(nn.Module):
    """Mean of the members' probabilities, returned as logits of ``task``'s layout."""

    def __init__(self, members: Sequence[nn.Module], task: Task, member_metas: Sequence[CheckpointMeta] = ()) -> None:
        super().__init__()
        if len(members) < 2:
            raise FacelabError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.task = task
        #: the members' checkpoint metadata (their split policies decide which rows none of them trained on)
        self.member_metas = list(member_metas)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(x).float() for m in self.members]  # each (B, num_logits)
        out = []
        for o, s in zip(self.task.outputs, self.task.slices):
            if o.kind is LabelKind.BINARY:
                p = torch.stack([torch.sigmoid(z[:, s]) for z in logits]).mean(0)
                out.append(torch.logit(p, eps=_EPS))
            else:
                p = torch.stack([torch.softmax(z[:, s], dim=1) for z in logits]).mean(0)
                out.append(torch.log(p.clamp_min(_EPS)))
        return torch.cat(out, dim=1)


def _check_compatible(paths: Sequence[Path], metas: Sequence[CheckpointMeta]) -> None:
    first, ref = paths[0], metas[0]
    for path, meta in zip(paths[1:], metas[1:]):
        if meta.config.get("task") != ref.config.get("task") or meta.labels != ref.labels:
            names = [o["name"] for o in meta.config["task"]["outputs"]]
            ref_names = [o["name"] for o in ref.config["task"]["outputs"]]
            raise FacelabError(f"{path} predicts {names}, {first} predicts {ref_names}: ensemble members must "
                               "predict the same labels, in the same order and with the same classes")
        diff = [k for k in SHARED_PREPROCESSING if _pre(meta, k) != _pre(ref, k)]
        a, b = _pre(meta, "align"), _pre(ref, "align")
        if a is not None and b is not None and a != b:  # older checkpoints record no alignment: not a difference
            diff.append("align")
        if diff:
            detail = "; ".join(f"{k} {_pre(meta, k)!r} against {_pre(ref, k)!r}" for k in diff)
            raise FacelabError(f"{path} was trained with other preprocessing than {first} ({detail}): ensemble "
                               "members must see the same images")


def ensemble_meta(paths: Sequence[Path], metas: Sequence[CheckpointMeta]) -> CheckpointMeta:
    """Metadata of an ensemble: the members' labels and preprocessing, their architectures and folders."""
    ref = metas[0]
    pre = ref.preprocessing
    if pre is not None and len({_pre(m, "store_hash") for m in metas}) > 1:
        pre = pre.model_copy(update={"store_hash": None})  # trained on different stores: no single "own store"
    archs = [m.arch for m in metas]
    arch = f"ensemble of {len(metas)} {archs[0]}" if len(set(archs)) == 1 else f"ensemble of {len(metas)} ({', '.join(archs)})"
    return CheckpointMeta(kind="classifier", arch=arch, arch_kwargs={"members": [str(p) for p in paths], "archs": archs},
                          labels=ref.labels, preprocessing=pre,
                          config={"task": ref.config["task"], "tta_flip": all(m.tta_flip for m in metas)},
                          label_priors=_mean_priors(metas))


def _mean_priors(metas: Sequence[CheckpointMeta]) -> dict[str, list[float]]:
    """The priors an ensemble's averaged probabilities carry: the mean of its members' (none when a member's
    checkpoint records none)."""
    names = [d["name"] for d in metas[0].labels]
    if not all(n in m.label_priors for m in metas for n in names):
        return {}
    return {n: [sum(v) / len(metas) for v in zip(*(m.label_priors[n] for m in metas))] for n in names}


def load_classifier(paths: str | Path | Sequence[str | Path], *, which: str = "best",
                    device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """One classifier run, or several averaged into a :class:`ClassifierEnsemble`, in eval mode.

    Args:
        paths: a run folder / checkpoint, or a list of them (one path gives the plain model).
        which: checkpoint of each run folder: "best" or "last".

    Raises:
        FacelabError: a path is not a classifier checkpoint, or the members predict other labels or were
            trained on other preprocessing.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise FacelabError("no classifier run given")
    if len(set(p.resolve() for p in paths)) < len(paths):
        raise FacelabError(f"a run is listed twice: {', '.join(map(str, paths))}")
    loaded = [load_model(p, kind="classifier", which=which, device=device) for p in paths]
    if len(loaded) == 1:
        return loaded[0]
    metas = [m for _, m in loaded]
    _check_compatible(paths, metas)
    meta = ensemble_meta(paths, metas)
    model = ClassifierEnsemble([m for m, _ in loaded], Task.from_dict(meta.config["task"]), metas)
    return model.to(device).eval(), meta


def member_metas(model: nn.Module, meta: CheckpointMeta) -> list[CheckpointMeta]:
    """The checkpoint metadata behind a loaded classifier: its members' for an ensemble, else its own."""
    return list(getattr(model, "member_metas", None) or [meta])


def describe(meta: CheckpointMeta) -> dict[str, Any]:
    """What a report says about the model: its architecture and, for an ensemble, its members."""
    out: dict[str, Any] = {"model": meta.arch}
    if "members" in meta.arch_kwargs:
        out["members"] = meta.arch_kwargs["members"]
    return out
