"""Build any facelab model back from its checkpoint, through the registry its metadata names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from facelab.errors import FacelabError
from facelab.models.checkpoint import CheckpointMeta, read_meta, read_weights, resolve_checkpoint
from facelab.registry import Registry
from facelab.utils.device import resolve_device


@dataclass(frozen=True)
class ModelKind:
    """How to rebuild the models of one checkpoint kind: the registry of its architectures and the builder."""

    architectures: Registry[Any]
    create: Callable[..., torch.nn.Module]

    def model_class(self, arch: str) -> Any:
        """The class behind a registered architecture (the function of a registered ``functools.partial``)."""
        factory = self.architectures.get(arch)
        return getattr(factory, "func", factory)


#: kind (as written in checkpoint metadata) -> its ModelKind (imported lazily: the model packages are heavy)
MODEL_KINDS: Registry[ModelKind] = Registry("model kind")


@MODEL_KINDS.register("classifier")
def _classifier() -> ModelKind:
    from facelab.models.classifiers import CLASSIFIERS, create_classifier

    return ModelKind(CLASSIFIERS, create_classifier)


@MODEL_KINDS.register("generative")
def _generative() -> ModelKind:
    from facelab.models.generative import GENERATIVE, create_generative

    return ModelKind(GENERATIVE, create_generative)


def load_model(path: str | Path, *, kind: str | None = None, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """Load the model of a run folder / checkpoint in eval mode.

    Args:
        path: run folder, checkpoint folder or model.safetensors file.
        kind: expected kind ("classifier", "generative"); a different one is a FacelabError.
        which: checkpoint of a run folder: "best" (default) or "last".
        device: where the model goes ("cpu", "cuda:1", "auto"; checked to exist here).
    """
    device = resolve_device(device)
    ckpt = resolve_checkpoint(path, which)
    meta = read_meta(ckpt)
    if kind is not None and meta.kind != kind:
        hint = " (a pretrained backbone: fine-tune it with `facelab train STORE --pretrained RUN`)" \
            if meta.kind == "encoder" else ""
        raise FacelabError(f"{path} holds a model of kind {meta.kind} ({meta.arch}), not a {kind}{hint}; "
                           f"pass a {kind} run")
    weights = read_weights(ckpt)
    model_kind = MODEL_KINDS.create(meta.kind)
    kwargs = {**model_kind.model_class(meta.arch).legacy_options(weights), **meta.arch_kwargs}  # unrecorded options
    model = model_kind.create(meta.arch, **kwargs)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise FacelabError(f"{ckpt}: weights do not match {meta.arch} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), meta
