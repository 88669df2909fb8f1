"""Training objectives, by name: what a run optimises, chosen in its config (``objective: simclr``).

An objective is one file that registers an :class:`ObjectiveSpec` in :data:`OBJECTIVES`:

- ``supervised`` (:mod:`.supervised`): the task loss of a classifier on labelled rows (``facelab train``);
- ``simclr`` (:mod:`.simclr`): contrastive learning from two augmented views of unlabelled images
  (``facelab pretrain``), whose encoder a classifier then fine-tunes (``facelab train --pretrained``);
- ``distill`` (:mod:`.distill`): a trained classifier's (or ensemble's) probabilities on unlabelled images,
  learnt by a fresh backbone from noisy views (``facelab pretrain``), fine-tuned the same way.

Every objective gives the :class:`~facelab.train.trainer.Trainer` the same interface (its ``Objective``
protocol); ``labelled`` says which command runs it. Its options (``objective_kwargs`` in the config) are a
typed config of its own, validated before a run folder is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from facelab.config import StrictConfig
from facelab.errors import ConfigError
from facelab.registry import Registry


@dataclass(frozen=True)
class ObjectiveSpec:
    """What a run needs to know about an objective before it builds one.

    Attributes:
        factory: builds the objective (signature: :class:`~.supervised.ClassifierObjective` for labelled
            objectives, :class:`~.simclr.SimCLRObjective` for unlabelled ones).
        labelled: whether it learns from labels (``facelab train``) or from images alone (``facelab pretrain``).
        options: the typed config of its ``objective_kwargs``.
        monitor, monitor_mode: the validation metric that picks the best checkpoint and stops early.
        doc: one line for listings and error messages.
        check: optional; called with the parsed options and the run's preprocessing before a run folder is
            made (e.g. that a teacher takes the stores' images), raising ConfigError.
        trainer_defaults: loop settings this objective trains best with, over the command's defaults (a run's
            own settings still win).
        inputs: optional; the files its options make a run read (e.g. a distillation's teachers), as
            :class:`~facelab.runs.inputs.RunInput`s: recorded by hash with the run and checked on resume.
    """

    factory: Callable[..., Any]
    labelled: bool
    options: type[StrictConfig]
    monitor: str
    monitor_mode: Literal["min", "max"]
    doc: str
    check: Callable[[Any, Any], None] | None = None
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    inputs: Callable[[Any], list[Any]] | None = None

    def parse_options(self, name: str, kwargs: dict[str, Any]) -> StrictConfig:
        """``kwargs`` validated against the objective's options (ConfigError naming each bad key)."""
        return self.options.from_dict(kwargs, where=f"objective_kwargs of objective {name!r}")


#: objective name -> a function returning its :class:`ObjectiveSpec` (imports stay lazy)
OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective")


def objective_spec(name: str, *, labelled: bool) -> ObjectiveSpec:
    """The registered objective ``name``, checked to fit the command (labelled or not).

    Raises:
        ConfigError: unknown name (listing the known ones), or an objective of the other kind, with the
            command that runs it.
    """
    spec = OBJECTIVES.create(name)
    if spec.labelled != labelled:
        fits = [n for n in OBJECTIVES.names() if OBJECTIVES.create(n).labelled == labelled]
        other = ("`facelab train STORE --labels ...` (it learns from labels)" if spec.labelled
                 else "`facelab pretrain STORE [STORE ...]` (it learns from images without labels)")
        kind = "labelled" if labelled else "unlabelled"
        raise ConfigError(f"objective {name!r} runs with {other}; {kind} objectives: {', '.join(fits)}")
    return spec


from facelab.train.objectives import distill, simclr, supervised  # noqa: E402,F401  (register the objectives)

__all__ = ["OBJECTIVES", "ObjectiveSpec", "objective_spec"]
