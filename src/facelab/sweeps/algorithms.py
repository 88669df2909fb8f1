"""The samplers and pruners a sweep spec can name, each a typed config that builds its Optuna object.

A new one is one class here plus its entry in :data:`Sampler` / :data:`Pruner` (the ``name`` field tells them
apart in YAML: ``pruner: {name: median, n_warmup_steps: 2}``).

A sampler builds the Optuna sampler of *one trial*: every trial draws with a seed of its own, derived from the
spec's ``seed`` and the trial's number (:mod:`facelab.sweeps.distinct`), so that no two trials of a study draw
from the same stream, whichever worker runs them and however often workers are started.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from facelab.config import StrictConfig
from facelab.errors import ConfigError

if TYPE_CHECKING:
    import optuna


def quiet_optuna() -> None:
    """Optuna flags heartbeats, fANOVA and its matplotlib plots as experimental, and logs every trial at INFO:
    facelab reports trials itself."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---- samplers ------------------------------------------------------------------------------------------
class TpeSampler(StrictConfig):
    """Tree-structured Parzen estimator (Optuna's default): random for ``n_startup_trials``, then modelled.

    Parallel workers use the constant liar (running trials count as bad), so they do not sample the same point.
    """

    name: Literal["tpe"] = "tpe"
    seed: int = 0  # with each trial's number, seeds that trial's draws
    n_startup_trials: int = Field(8, ge=1)
    multivariate: bool = False
    walks: ClassVar[bool] = False

    def build(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                          multivariate=self.multivariate, constant_liar=True)


class RandomSampler(StrictConfig):
    """Independent uniform (or log-uniform) draws."""

    name: Literal["random"] = "random"
    seed: int = 0  # with each trial's number, seeds that trial's draws
    walks: ClassVar[bool] = False

    def build(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)


class GridSampler(StrictConfig):
    """Every combination of the parameters' values (categorical choices, int and float ranges by ``step``), each
    once, in an order shuffled by ``seed``."""

    name: Literal["grid"] = "grid"
    seed: int = 0  # the order in which the grid is visited
    walks: ClassVar[bool] = True  # no Optuna sampler: facelab.sweeps.distinct walks the grid itself

    def build(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError("the grid is walked by facelab.sweeps.distinct.DistinctSampler")


Sampler = Annotated[TpeSampler | RandomSampler | GridSampler, Field(discriminator="name")]


# ---- pruners -------------------------------------------------------------------------------------------
def warmup_steps(epochs: int) -> int:
    """Optuna's ``n_warmup_steps`` that keeps the first ``epochs`` epochs from being pruned. Trials report the
    metric at step = epoch, counted from 1 as the run's metrics.jsonl does, and Optuna prunes at any step that is
    not below ``n_warmup_steps``: passing ``epochs`` as it is would let epoch ``epochs`` be pruned."""
    return epochs + 1


class MedianPruner(StrictConfig):
    """Stop a trial whose metric at an epoch is worse than the median of earlier trials at that epoch."""

    name: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0)  # trials that run to the end before any is pruned
    n_warmup_steps: int = Field(0, ge=0)  # epochs of every trial that are never pruned
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)  # earlier trials that must have reached the epoch

    def build(self, *, epochs: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.MedianPruner(n_startup_trials=self.n_startup_trials,
                                           n_warmup_steps=warmup_steps(self.n_warmup_steps),
                                           interval_steps=self.interval_steps, n_min_trials=self.n_min_trials)


class PercentilePruner(StrictConfig):
    """Stop a trial whose metric at an epoch is outside the best ``percentile`` % of earlier trials there."""

    name: Literal["percentile"] = "percentile"
    percentile: float = Field(25.0, gt=0, lt=100)
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)  # epochs of every trial that are never pruned
    interval_steps: int = Field(1, ge=1)
    n_min_trials: int = Field(1, ge=1)

    def build(self, *, epochs: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.PercentilePruner(self.percentile, n_startup_trials=self.n_startup_trials,
                                               n_warmup_steps=warmup_steps(self.n_warmup_steps),
                                               interval_steps=self.interval_steps, n_min_trials=self.n_min_trials)


class HyperbandPruner(StrictConfig):
    """Successive halving in brackets (Li et al. 2018); the resource is the epoch, up to the trials' epochs."""

    name: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(1, ge=1)  # epochs every trial trains before it can be stopped
    reduction_factor: int = Field(3, ge=2)
    bootstrap_count: int = Field(0, ge=0)

    def build(self, *, epochs: int) -> optuna.pruners.BasePruner:
        import optuna

        if self.min_resource >= epochs:
            raise ConfigError(f"pruner hyperband: min_resource {self.min_resource} must be below the trials' "
                              f"{epochs} epochs, or nothing can be pruned")
        return optuna.pruners.HyperbandPruner(min_resource=self.min_resource, max_resource=epochs,
                                              reduction_factor=self.reduction_factor,
                                              bootstrap_count=self.bootstrap_count)


class NoPruner(StrictConfig):
    """Every trial trains all its epochs."""

    name: Literal["none"] = "none"

    def build(self, *, epochs: int) -> optuna.pruners.BasePruner:
        import optuna

        return optuna.pruners.NopPruner()


Pruner = Annotated[MedianPruner | PercentilePruner | HyperbandPruner | NoPruner, Field(discriminator="name")]
