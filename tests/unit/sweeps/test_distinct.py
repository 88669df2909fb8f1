"""Every trial of a study draws a point of its own, whichever worker draws it and however often workers start:
the samplers seeded per trial, and the guard against repeats (no training: trials are asked and told by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import optuna
import pytest

from facelab.errors import ConfigError
from facelab.sweeps.algorithms import Sampler
from facelab.sweeps.distinct import DistinctSampler, PointSpace, repeat_of, trial_seed
from facelab.sweeps.failures import INTERRUPTED, SKIPPED, note_trial, takes_its_point
from facelab.sweeps.space import suggest
from facelab.sweeps.spec import SweepSpec
from facelab.sweeps.storage import open_storage
from facelab.sweeps.study import count_trials, create_study, load_study
from facelab.sweeps.validate import check_algorithms
from facelab.sweeps.worker import Skipped, TrialRunner

optuna.logging.set_verbosity(optuna.logging.WARNING)

SAMPLERS = [cls.model_fields["name"].default for cls in get_args(get_args(Sampler)[0])]  # every registered one
#: a space with a finite grid (for the grid sampler) of 5 x 2 x 3 = 30 points
SPACE = {"trainer.optim.lr": {"type": "float", "low": 1.0e-3, "high": 5.0e-3, "step": 1.0e-3},
         "augment": ["flip", "geometric"], "batch_size": {"type": "int", "low": 16, "high": 48, "step": 16}}


def make_spec(sampler: str, *, space: dict[str, Any] | None = None, n_trials: int = 8, **kw: Any) -> SweepSpec:
    return SweepSpec.from_dict({"base": {"store": "s", "trainer": {"epochs": 2}}, "space": space or SPACE,
                                "sampler": {"name": sampler, "seed": 0, **kw}, "n_trials": n_trials,
                                "pruner": {"name": "none"}, "study_name": "s", "metric": "m", "direction": "maximize"})


def new_study(spec: SweepSpec, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_study(open_storage(url), spec, tmp_path)
    return url


def run_trials(url: str, spec: SweepSpec, n: int) -> list[dict[str, Any]]:
    """A worker process as ``facelab sweep worker`` starts one (a fresh sampler): ``n`` trials, each told a value
    (after one epoch's report to the pruner)."""
    study = load_study(open_storage(url), spec)
    points = []
    for _ in range(n):
        trial = study.ask()
        values = suggest(trial, spec)
        trial.report(float(trial.number), 1)
        trial.should_prune()
        study.tell(trial, float(trial.number))
        points.append(values)
    return points


def keys(points: list[dict[str, Any]]) -> list[str]:
    return [repr(sorted(p.items())) for p in points]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_restarted_and_second_workers_never_repeat_a_point(sampler: str, tmp_path: Path) -> None:
    spec = make_spec(sampler, n_startup_trials=2) if sampler == "tpe" else make_spec(sampler)
    url = new_study(spec, tmp_path)
    first = run_trials(url, spec, 3)  # facelab sweep
    resumed = run_trials(url, spec, 3)  # facelab sweep --resume: a new worker with the same spec
    second = run_trials(url, spec, 3)  # facelab sweep worker, as docs/sweeps.md shows it
    points = keys(first + resumed + second)
    assert len(set(points)) == len(points) == 9, points


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_sweep_is_reproducible(sampler: str, tmp_path: Path) -> None:
    spec = make_spec(sampler)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_trials(new_study(spec, tmp_path / "a"), spec, 4) == run_trials(new_study(spec, tmp_path / "b"), spec, 4)


def test_trial_seeds_differ_by_trial_and_draw() -> None:
    seeds = {trial_seed(0, n, d) for n in range(50) for d in range(3)}
    assert len(seeds) == 150 and trial_seed(0, 7) == trial_seed(0, 7) != trial_seed(1, 7)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_small_space_is_covered_without_repeats_then_is_exhausted(sampler: str, tmp_path: Path) -> None:
    # 2 x 2 points: the samplers' own draws repeat themselves quickly here, the guard does not let them
    space = {"augment": ["flip", "geometric"], "batch_size": [16, 32]}
    spec = make_spec(sampler, space=space, n_trials=4)
    url = new_study(spec, tmp_path)
    points = run_trials(url, spec, 4)
    assert len(set(keys(points))) == 4
    study = load_study(open_storage(url), spec)
    trial = study.ask()
    suggest(trial, spec)
    assert isinstance(study.sampler, DistinctSampler) and trial.number in study.sampler.exhausted


def test_running_and_queued_points_are_not_drawn_again(tmp_path: Path) -> None:
    space = {"augment": ["flip", "geometric"], "batch_size": [16, 32]}
    spec = make_spec("random", space=space, n_trials=4)
    url = new_study(spec, tmp_path)
    study = load_study(open_storage(url), spec)
    study.enqueue_trial({"augment": "flip", "batch_size": 16})  # WAITING
    running = load_study(open_storage(url), spec).ask({"augment": optuna.distributions.CategoricalDistribution(
        ["flip", "geometric"]), "batch_size": optuna.distributions.CategoricalDistribution([16, 32])})  # RUNNING
    drawn = study.ask()
    assert drawn.number == 1  # (trial 0 is the queued one, waiting for a worker)
    values = suggest(drawn, spec)
    held = {("flip", 16), (running.params["augment"], running.params["batch_size"])}
    assert (values["augment"], values["batch_size"]) not in held


def test_an_interrupted_trial_gives_its_point_back(tmp_path: Path) -> None:
    space = {"augment": ["flip", "geometric"]}
    spec = make_spec("random", space=space, n_trials=2)
    url = new_study(spec, tmp_path)
    study = load_study(open_storage(url), spec)
    first = study.ask()
    suggest(first, spec)
    note_trial(first, "stopped: SIGTERM", INTERRUPTED)
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    assert not takes_its_point(study.trials[0]) and count_trials(study).failed == 0  # not a failure of training
    assert count_trials(study).interrupted == 1
    points = run_trials(url, spec, 2)
    assert {p["augment"] for p in points} == {"flip", "geometric"}  # the interrupted point was run after all


def test_two_workers_drawing_at_once_cannot_both_run_one_point(tmp_path: Path) -> None:
    # the grid, 2 points: trial 0 holds one; trials 1 and 2 are asked at once and both find only the other free
    spec = make_spec("grid", space={"augment": ["flip", "geometric"]}, n_trials=2)
    url = new_study(spec, tmp_path)
    run_trials(url, spec, 1)
    a, b = load_study(open_storage(url), spec), load_study(open_storage(url), spec)
    ta, tb = a.ask(), b.ask()
    assert ta.relative_params == tb.relative_params  # drawn before either stored its parameters
    suggest(ta, spec)
    suggest(tb, spec)
    space = PointSpace(spec)
    assert repeat_of(a, space, ta) == tb.number and repeat_of(b, space, tb) == ta.number
    runner = TrialRunner(spec, b, tmp_path, url)
    with pytest.raises(Skipped, match=f"trial {ta.number} has the same parameters"):
        runner._draw(tb)
    b.tell(tb, state=optuna.trial.TrialState.FAIL)
    assert b.trials[tb.number].user_attrs["failure"] == SKIPPED
    assert repeat_of(a, space, ta) is None  # a trial given up holds no point: the other runs


def test_an_enqueued_point_runs_as_given(tmp_path: Path) -> None:
    space = {"augment": ["flip", "geometric", "standard"]}
    spec = make_spec("random", space=space, n_trials=3)
    url = new_study(spec, tmp_path)
    done = run_trials(url, spec, 1)[0]
    study = load_study(open_storage(url), spec)
    study.enqueue_trial(done)  # a person asks for that point again
    trial = study.ask()
    assert suggest(trial, spec) == done
    TrialRunner(spec, study, tmp_path, url)._draw(trial)  # not given up


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_finite_space_needs_n_trials_points(sampler: str) -> None:
    with pytest.raises(ConfigError, match=f"sampler {sampler}: the (grid|search space) has 30 points, fewer than "
                                          "n_trials 31"):
        check_algorithms(make_spec(sampler, n_trials=31))
    check_algorithms(make_spec(sampler, n_trials=30))


def test_a_grid_too_large_to_walk_is_refused() -> None:
    space = {"batch_size": {"type": "int", "low": 1, "high": 2_000_000}}
    with pytest.raises(ConfigError, match="the grid has 2,000,000 points, more than the 1,000,000"):
        check_algorithms(make_spec("grid", space=space))
    check_algorithms(make_spec("random", space=space))  # drawn at random: no need to list the points


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_hyperband_brackets_do_not_hide_other_trials_points(sampler: str, tmp_path: Path) -> None:
    # the hyperband pruner shows the sampler only the trials of its bracket; repeats are looked for in all of them
    space = {"augment": ["flip", "geometric", "standard"], "batch_size": [16, 32, 48, 64]}
    spec = make_spec(sampler, space=space, n_trials=12).model_copy(update={
        "base": {"store": "s", "trainer": {"epochs": 27}},  # 27 epochs: 4 brackets
        "pruner": SweepSpec.from_dict({"space": space, "pruner": {"name": "hyperband"}}).pruner})
    url = new_study(spec, tmp_path)
    assert len(set(keys(run_trials(url, spec, 12)))) == 12


def test_values_on_a_grid_are_told_apart_by_their_step_and_off_it_by_themselves() -> None:
    space = PointSpace(make_spec("grid"))
    point = {"augment": "flip", "batch_size": 32}
    assert space.key({**point, "trainer.optim.lr": 0.003}) == space.key({**point, "trainer.optim.lr": 0.001 + 2 * 0.001})
    assert space.key({**point, "trainer.optim.lr": 0.0035}) not in {space.key({**point, "trainer.optim.lr": v})
                                                                    for v in (0.003, 0.004)}  # enqueued off the grid
