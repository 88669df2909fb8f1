"""Build any facelab model back from its checkpoint, through the registry its metadata names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facelab.errors import FacelabError
from facelab.registry import Registry
from facelab.train.checkpoint import CheckpointMeta, read_meta, read_weights, resolve_checkpoint

#: kind (as written in checkpoint metadata) -> factory(arch, **arch_kwargs) -> nn.Module
MODEL_KINDS: Registry[torch.nn.Module] = Registry("model kind")


@MODEL_KINDS.register("classifier")
def _classifier(arch: str, **kwargs: Any) -> torch.nn.Module:
    from facelab.models.classifiers import create_classifier

    return create_classifier(arch, **kwargs)


@MODEL_KINDS.register("generative")
def _generative(arch: str, **kwargs: Any) -> torch.nn.Module:
    from facelab.models.generative import create_generative

    return create_generative(arch, **kwargs)


def load_model(path: str | Path, *, kind: str | None = None, which: str = "best",
               device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """Load the model of a run folder / checkpoint in eval mode.

    Args:
        path: run folder, checkpoint folder or model.safetensors file.
        kind: expected kind ("classifier", "generative"); a different one is a FacelabError.
        which: checkpoint of a run folder: "best" (default) or "last".
    """
    ckpt = resolve_checkpoint(path, which)
    meta = read_meta(ckpt)
    if kind is not None and meta.kind != kind:
        raise FacelabError(f"{path} holds a {meta.kind} ({meta.arch}), not a {kind}; pass a {kind} run")
    weights = read_weights(ckpt)
    kwargs = dict(meta.arch_kwargs)
    if meta.kind == "classifier" and meta.arch == "vgg_scratch" and "channels" not in kwargs:
        from facelab.models.classifiers.vgg_scratch import layout_from_state

        kwargs = {**layout_from_state(weights), **kwargs}  # a checkpoint from before layouts were recorded
    if meta.kind == "generative":
        from facelab.models.generative import GENERATIVE

        kwargs = {**GENERATIVE.get(meta.arch).legacy_options(weights), **kwargs}  # options it did not record
    model = MODEL_KINDS.create(meta.kind, meta.arch, **kwargs)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise FacelabError(f"{ckpt}: weights do not match {meta.arch} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.to(device).eval(), meta
