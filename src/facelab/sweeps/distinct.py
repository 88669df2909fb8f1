"""Every trial a point the study has not tried: per-trial seeds and a guard against exact repeats.

A sampler seeded once per worker process repeats itself: two workers with the same seed, or a worker started
again by ``--resume``, draw the same points as before. Here every trial draws with its own seed, derived from
the spec's seed and the trial's number, which the database hands out once per study. Any number of workers, on
any machines, started any number of times, draw from distinct streams, and a sweep run by one worker is
reproducible.

On top of that, a point is drawn whole (:meth:`DistinctSampler.sample_relative`) and compared with every point
the study holds: finished (COMPLETE, PRUNED, or FAILED in training), running in another worker, or queued. A
repeat is drawn again with the next seed; after :data:`MAX_DRAWS` repeats an untried point is looked for
directly (every point of a finite space, in a random order). Only a finite space that has no untried point left
is *exhausted*: the trial is then given up (:mod:`facelab.sweeps.failures`), never trained. The grid sampler walks
its points in the seeded order, each once. A point that a person enqueued is run as given.

Two workers that draw at the same moment can still pick the same point before either has recorded it;
:func:`repeat_of`, run once the trial's parameters are stored, finds that, and the trial is given up unrun.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna

from facelab.sweeps.failures import takes_its_point
from facelab.sweeps.space import distributions, grid, space_size
from facelab.sweeps.spec import SweepSpec

MAX_DRAWS = 8  # draws of the spec's sampler (each with its own seed) before an untried point is looked for directly
ENUMERABLE = 1_000_000  # a finite space up to this many points is searched point by point for an untried one
RANDOM_DRAWS = 10_000  # a larger (or continuous) space: uniform draws before it is taken as exhausted
Key = tuple[Any, ...]


def trial_seed(seed: int, number: int, draw: int = 0) -> int:
    """The sampler's seed for draw ``draw`` of trial ``number``: distinct for every trial of a study."""
    return int(np.random.SeedSequence([seed % 2**64, number, draw]).generate_state(1)[0])


class PointSpace:
    """The search space as points: one key per point (equal keys, equal configs) and, when it has at most
    :data:`ENUMERABLE` points, every point by its index."""

    def __init__(self, spec: SweepSpec) -> None:
        self.names = list(spec.space)
        self.dists = distributions(spec)
        self.size = space_size(spec)  # None: infinitely many points
        enumerable = self.size is not None and self.size <= ENUMERABLE
        self.values: dict[str, list[Any]] | None = grid(spec) if enumerable else None

    def key(self, params: dict[str, Any]) -> Key | None:
        """The point's key; None when ``params`` lack a parameter or hold a value outside the space."""
        out = []
        for name in self.names:
            value = self.value_key(name, params[name]) if name in params else None
            if value is None:
                return None
            out.append(value)
        return tuple(out)

    def value_key(self, name: str, value: Any) -> Any:
        """What tells values of parameter ``name`` apart: a choice's index, a step's index, a float itself
        (None for a value outside the space)."""
        dist = self.dists[name]
        try:
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                return dist.to_internal_repr(value)
            if dist.step is not None:  # an int, or a float on a grid: the grid index (a value off it: itself)
                index = (float(value) - dist.low) / dist.step
                return round(index) if abs(index - round(index)) < 1e-6 else float(value)
            return float(value)
        except (ValueError, TypeError):
            return None

    def point(self, index: int) -> dict[str, Any]:
        """Point ``index`` (0 <= index < size) of a finite space, as Optuna stores its parameters."""
        assert self.values is not None
        out = {}
        for name in reversed(self.names):
            values = self.values[name]
            index, i = divmod(index, len(values))
            out[name] = values[i]
        return {name: out[name] for name in self.names}


def taken_points(study: optuna.Study, space: PointSpace, *, exclude: int | None = None) -> dict[Key, int]:
    """Key -> trial number of every point the study holds: COMPLETE, PRUNED, FAILED in training, RUNNING or
    WAITING (queued), except trial ``exclude``. A trial that was interrupted or given up unrun holds none."""
    out: dict[Key, int] = {}
    # (the Study method itself: the hyperband pruner hands samplers a view of the study that shows only the
    # trials of one bracket, and a point held in another bracket is held all the same)
    for t in optuna.Study.get_trials(study, deepcopy=False):
        if t.number == exclude or not takes_its_point(t):
            continue
        waiting = t.state == optuna.trial.TrialState.WAITING
        key = space.key({**t.system_attrs.get("fixed_params", {}), **t.params} if waiting else t.params)
        if key is not None:
            out.setdefault(key, t.number)
    return out


def repeat_of(study: optuna.Study, space: PointSpace, trial: optuna.trial.BaseTrial) -> int | None:
    """The number of another trial that holds the point of ``trial`` (whose parameters are all stored), if any."""
    return taken_points(study, space, exclude=trial.number).get(space.key(trial.params))


class DistinctSampler(optuna.samplers.BaseSampler):
    """An Optuna sampler that draws every trial's point whole, with the trial's own seed, and never a point the
    study already holds (see the module docstring).

    Args:
        spec: the sweep (its space; ``spec.sampler.seed`` seeds every trial's draws).
        build: seed -> the Optuna sampler that proposes points (TPE, random ...), or None to walk a finite space
            in the seeded order (the grid).
    """

    def __init__(self, spec: SweepSpec, build: Callable[[int], optuna.samplers.BaseSampler] | None) -> None:
        self.space = PointSpace(spec)
        self.seed = spec.sampler.seed
        self.build = build
        self.drawn: set[int] = set()  # trials whose point this sampler drew (not enqueued whole)
        self.exhausted: set[int] = set()  # trials drawn when no untried point was left
        self._inner: tuple[int, optuna.samplers.BaseSampler] | None = None
        self._order: np.ndarray | None = None  # the grid's walk

    # ---- Optuna's sampler interface --------------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return dict(self.space.dists)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        fixed = trial.system_attrs.get("fixed_params", {})
        if all(name in fixed for name in self.space.names):
            return {}  # enqueued whole: run as given
        self.drawn.add(trial.number)
        taken = taken_points(study, self.space, exclude=trial.number)
        point = self._walk(trial.number, fixed, taken) if self.build is None else self._draw(study, trial, fixed, taken)
        if point is None:  # no untried point left: the trial repeats one, and is given up unrun
            self.exhausted.add(trial.number)
            point = self._walk(trial.number, fixed, {}) if self.build is None else \
                self._sampled(self._sampler(trial.number), study, trial, fixed)
        return {name: v for name, v in point.items() if name not in fixed}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return optuna.samplers.RandomSampler(seed=trial_seed(self.seed, trial.number)).sample_independent(
            study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self.build is not None:
            self._sampler(trial.number).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        if self.build is not None:
            self._sampler(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Nothing to do: every trial draws with a seed of its own."""

    # ---- drawing ---------------------------------------------------------------------------------------
    def _sampler(self, number: int, draw: int = 0) -> optuna.samplers.BaseSampler:
        assert self.build is not None
        if draw:
            return self.build(trial_seed(self.seed, number, draw))
        if self._inner is None or self._inner[0] != number:
            self._inner = (number, self.build(trial_seed(self.seed, number)))
        return self._inner[1]

    def _sampled(self, sampler: optuna.samplers.BaseSampler, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                 fixed: dict[str, Any]) -> dict[str, Any]:
        """One whole point from ``sampler`` (its relative draw, then each remaining parameter on its own)."""
        relative_space = {n: d for n, d in sampler.infer_relative_search_space(study, trial).items()
                          if n in self.space.dists and n not in fixed}
        point = dict(sampler.sample_relative(study, trial, relative_space)) if relative_space else {}
        for name, dist in self.space.dists.items():
            if name not in point and name not in fixed:
                point[name] = sampler.sample_independent(study, trial, name, dist)
        return {name: fixed[name] if name in fixed else point[name] for name in self.space.names}

    def _draw(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, fixed: dict[str, Any],
              taken: dict[Key, int]) -> dict[str, Any] | None:
        for draw in range(MAX_DRAWS):
            point = self._sampled(self._sampler(trial.number, draw), study, trial, fixed)
            if self.space.key(point) not in taken:
                return point
        return self._untried(study, trial, fixed, taken)

    def _untried(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, fixed: dict[str, Any],
                 taken: dict[Key, int]) -> dict[str, Any] | None:
        """An untried point chosen uniformly (seeded by the trial): by index in a finite space small enough to
        search, else by uniform draws."""
        seed = trial_seed(self.seed, trial.number, MAX_DRAWS)
        if self.space.values is not None:
            return self._first_untried(np.random.default_rng(seed).permutation(self.space.size), 0, fixed, taken)
        uniform = optuna.samplers.RandomSampler(seed=seed)
        for _ in range(RANDOM_DRAWS):
            point = self._sampled(uniform, study, trial, fixed)
            if self.space.key(point) not in taken:
                return point
        return None

    def _walk(self, number: int, fixed: dict[str, Any], taken: dict[Key, int]) -> dict[str, Any] | None:
        """The grid: the seeded order of all points, trial ``number`` starting at place ``number`` (workers drawing
        at once start at different places) and taking the first untried point from there."""
        assert self.space.size is not None and self.space.values is not None
        if self._order is None:
            self._order = np.random.default_rng(self.seed % 2**64).permutation(self.space.size)
        return self._first_untried(self._order, number % self.space.size, fixed, taken)

    def _first_untried(self, order: np.ndarray, start: int, fixed: dict[str, Any],
                       taken: dict[Key, int]) -> dict[str, Any] | None:
        fixed_keys = {n: self.space.value_key(n, v) for n, v in fixed.items() if n in self.space.dists}
        for i in np.concatenate([order[start:], order[:start]]):
            point = self.space.point(int(i))
            if all(self.space.value_key(n, point[n]) == k for n, k in fixed_keys.items()) \
                    and self.space.key(point) not in taken:
                return point
        return None
