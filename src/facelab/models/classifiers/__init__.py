"""Attribute classifiers: one registry, one interface (see ``base.py``), pretrained loading (``transfer.py``).

>>> import torch
>>> model = create_classifier("resnet18", num_outputs=40, image_size=64, stem="small")
>>> model(torch.zeros(2, 3, 64, 64)).shape
torch.Size([2, 40])

A new architecture is one file that subclasses ``Classifier`` and registers a factory in
``CLASSIFIERS``, plus its import below.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from facelab.errors import ConfigError
from facelab.models.classifiers import inception, resnet, vgg_scratch  # noqa: F401  (register the models)
from facelab.models.classifiers.base import CLASSIFIERS, Classifier, PretrainedCfg
from facelab.models.classifiers.heads import Task, TaskOutput, task_decode, task_loss, task_predict
from facelab.models.classifiers.transfer import (
    LoadReport,
    check_pretrained_fits,
    freeze_backbone,
    load_pretrained,
    unfreeze,
)

__all__ = [
    "CLASSIFIERS",
    "Classifier",
    "LoadReport",
    "PretrainedCfg",
    "Task",
    "TaskOutput",
    "check_pretrained_fits",
    "classifier_arch_kwargs",
    "create_classifier",
    "freeze_backbone",
    "list_classifiers",
    "load_pretrained",
    "task_decode",
    "task_loss",
    "task_predict",
    "unfreeze",
]


def list_classifiers() -> list[str]:
    """Registered classifier names, sorted."""
    return CLASSIFIERS.names()


def _check_options(name: str, options: dict[str, Any]) -> None:
    params = inspect.signature(CLASSIFIERS.get(name)).parameters
    accepted = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"classifier {name!r} has no option(s) {unknown}; its options are: {', '.join(accepted)}")
    if not isinstance(options["num_outputs"], int) or options["num_outputs"] < 0:
        raise ConfigError(f"num_outputs must be an integer >= 0, got {options['num_outputs']!r}")
    if not isinstance(options["in_chans"], int) or options["in_chans"] < 1:
        raise ConfigError(f"in_chans must be an integer >= 1, got {options['in_chans']!r}")


def _json_ready(options: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in options.items():
        try:
            json.dumps(v)
        except TypeError:
            continue  # e.g. a norm_layer callable: the checkpoint cannot rebuild it, names can
        out[k] = v
    return out


def _constructor_defaults(factory: Any) -> dict[str, Any]:
    """Keyword defaults of a model class's constructor that are plain data (callables are left out)."""
    import inspect

    params = inspect.signature(factory).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
            and p.kind is not inspect.Parameter.VAR_KEYWORD and not callable(p.default)}


def _options(num_outputs: int, in_chans: int, image_size: int | None, drop_rate: float | None,
             kwargs: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"num_outputs": num_outputs, "in_chans": in_chans, **kwargs}
    if image_size is not None:
        options["image_size"] = image_size
    if drop_rate is not None:
        options["drop_rate"] = drop_rate
    return options


def classifier_arch_kwargs(name: str, *, num_outputs: int, in_chans: int = 3, image_size: int | None = None,
                           drop_rate: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """The ``arch_kwargs`` a checkpoint of ``create_classifier(name, ...)`` records (every constructor option,
    defaults included), without building the network."""
    options = _options(num_outputs, in_chans, image_size, drop_rate, kwargs)
    _check_options(name, options)
    return _json_ready({**_constructor_defaults(CLASSIFIERS.get(name)), **options})


def create_classifier(
    name: str,
    *,
    num_outputs: int,
    in_chans: int = 3,
    image_size: int | None = None,
    drop_rate: float | None = None,
    pretrained: str | Path | None = None,
    **kwargs: Any,
) -> Classifier:
    """Build a registered classifier, optionally loading pretrained weights.

    Args:
        name: one of :func:`list_classifiers` (vgg_scratch, resnet18, resnet34, resnet50, inception_v3).
        num_outputs: number of logits (``Task.num_logits``); 0 builds no head.
        in_chans: input channels (pretrained first convolutions are adapted).
        image_size: input size (default: the model's own: 64, inception_v3 299).
        drop_rate: dropout before the head (default: the model's own).
        pretrained: torchvision-format state dict (.pth/.pt/.safetensors) or facelab checkpoint folder;
            a head of another size is left freshly initialised (see ``transfer.load_pretrained``).
        **kwargs: model options, e.g. ``stem="small"`` (resnet), ``aux_logits=True`` (inception_v3),
            ``channels=...`` (vgg_scratch), ``norm_layer``/``act_layer`` names.

    Raises:
        ConfigError: unknown name or option, bad value.
        FacelabError: the pretrained file is missing, unreadable or of another architecture.
    """
    options = _options(num_outputs, in_chans, image_size, drop_rate, kwargs)
    _check_options(name, options)
    model = CLASSIFIERS.create(name, **options)
    model.arch_name = name
    # every constructor option, defaults included: a checkpoint must rebuild the same network even after
    # a default changes (vgg_scratch's layout did once)
    model.arch_kwargs = _json_ready({**_constructor_defaults(CLASSIFIERS.get(name)), **options})
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model
