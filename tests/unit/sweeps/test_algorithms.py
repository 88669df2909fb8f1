"""Samplers and pruners built from the spec: the epochs a pruner leaves alone are the ones the spec says."""

from __future__ import annotations

import optuna
import pytest

from facelab.errors import ConfigError
from facelab.sweeps.algorithms import HyperbandPruner, MedianPruner, PercentilePruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("pruner", [MedianPruner(n_startup_trials=1, n_warmup_steps=2),
                                    PercentilePruner(percentile=50.0, n_startup_trials=1, n_warmup_steps=2)])
def test_warmup_epochs_are_never_pruned(pruner) -> None:
    study = optuna.create_study(direction="maximize", pruner=pruner.build(epochs=5))
    good = study.ask()
    for epoch in range(1, 6):  # trials report at step = epoch, counted from 1
        good.report(1.0, epoch)
    study.tell(good, 1.0)
    bad = study.ask()
    verdicts = []
    for epoch in (1, 2, 3):
        bad.report(0.0, epoch)
        verdicts.append(bad.should_prune())
    assert verdicts == [False, False, True]


def test_hyperband_needs_room_below_the_trials_epochs() -> None:
    with pytest.raises(ConfigError, match="min_resource 3 must be below the trials' 3 epochs"):
        HyperbandPruner(min_resource=3).build(epochs=3)
    assert isinstance(HyperbandPruner(min_resource=1).build(epochs=3), optuna.pruners.HyperbandPruner)
