"""What a sweep's trials run: one registered :class:`SweepCommand` per training command (``train``,
``train-gen``), so that a trial is exactly the run that command would make from the same config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelab.config import StrictConfig
from facelab.data.store import Store
from facelab.errors import ConfigError
from facelab.registry import Registry
from facelab.train.trainer import Callback


@dataclass(frozen=True)
class SweepCommand:
    """A training command as a sweep runs it.

    Attributes:
        config_cls: the command's config (what ``--config`` of that command reads).
        check: everything that can fail before training, for one config: the store, labels, the model built
            with its options, the batch size against the training rows.
        train: ``(config, run_dir=, callbacks=) -> summary dict`` (with ``best``, ``epochs``, ``stop_reason``).
        paths: config fields that hold file paths, made absolute when the sweep is created (its workers may
            start elsewhere).
    """

    config_cls: type[StrictConfig]
    check: Callable[[Any], None]
    train: Callable[..., dict[str, Any]]
    paths: tuple[str, ...] = ("store",)


#: command name (as on the command line) -> how a sweep runs it
COMMANDS: Registry[SweepCommand] = Registry("sweep command")


def _check_classifier(cfg: Any) -> None:
    from facelab.models.classifiers import create_classifier
    from facelab.train.classifier import check_config

    task = check_config(cfg)
    store = Store.open(cfg.store)
    create_classifier(cfg.model, num_outputs=task.num_logits, image_size=store.image_size, **cfg.model_kwargs)


def _train_classifier(cfg: Any, *, run_dir: Path, callbacks: list[Callback]) -> dict[str, Any]:
    from facelab.train.classifier import train_classifier

    return train_classifier(cfg, run_dir=run_dir, callbacks=callbacks)


def _check_generative(cfg: Any) -> None:
    from facelab.train.generative import build_generative, check_config

    check_config(cfg)
    model = build_generative(cfg, Store.open(cfg.store))
    if not model.has_encoder:
        raise ConfigError(f"model {cfg.model!r} has no validation metric to optimise (GANs are scored by FID/KID "
                          "after training); sweep an autoencoder (vae, beta_vae, cvae, aae, acai: val_loss)")


def _train_generative(cfg: Any, *, run_dir: Path, callbacks: list[Callback]) -> dict[str, Any]:
    from facelab.train.generative import train_generative

    return train_generative(cfg, run_dir=run_dir, callbacks=callbacks)


def _register() -> None:
    from facelab.train.classifier import ClassifierConfig
    from facelab.train.generative import GenerativeRunConfig

    COMMANDS.register("train")(SweepCommand(ClassifierConfig, _check_classifier, _train_classifier,
                                            paths=("store", "pretrained")))
    COMMANDS.register("train-gen")(SweepCommand(GenerativeRunConfig, _check_generative, _train_generative))


_register()
