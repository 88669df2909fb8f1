"""Learning-rate schedules: the lr factor of every schedule at known points, and PlateauTracker."""

from __future__ import annotations

import math
import typing

import pytest

from facelab.errors import ConfigError
from facelab.train.schedules import SCHEDULES, PlateauTracker, ScheduleConfig, lr_factor_fn, milestone_epochs


def factor(epochs: int = 10, **cfg) -> typing.Callable[[float], float]:
    return lr_factor_fn(ScheduleConfig(**cfg), epochs=epochs)


def test_every_configurable_name_is_registered():
    names = typing.get_args(ScheduleConfig.model_fields["name"].annotation)
    assert set(names) == set(SCHEDULES.names()) == {"constant", "step", "cosine", "onecycle", "plateau"}
    with pytest.raises(ConfigError, match="name"):
        ScheduleConfig.from_dict({"name": "exponential"})


# ---- warm-up --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["constant", "plateau"])
def test_constant_and_plateau_are_one_after_a_linear_warm_up(name):
    f = factor(name=name)
    assert [f(t) for t in (0.0, 0.5, 3.0, 10.0)] == [1.0] * 4
    w = factor(name=name, warmup_epochs=2)
    assert w(0.0) == pytest.approx(0.0, abs=1e-8)  # starts from (almost) zero
    assert w(0.5) == pytest.approx(0.25) and w(1.0) == pytest.approx(0.5)
    assert w(2.0) == 1.0 and w(7.5) == 1.0  # warm-up end and after


# ---- step -----------------------------------------------------------------------------------------
def test_milestones_up_to_one_are_fractions_larger_ones_epochs():
    assert milestone_epochs([0.5, 0.75], epochs=8) == [4.0, 6.0]
    assert milestone_epochs([0.25, 1, 3], epochs=10) == [2.5, 10, 3]  # 1 is the end of the run, not epoch 1
    assert milestone_epochs([2, 5.5], epochs=10) == [2, 5.5]


def test_step_multiplies_by_gamma_at_each_fractional_milestone():
    f = factor(8, name="step")  # default milestones 0.5, 0.75 of 8 epochs: epochs 4 and 6; gamma 0.1
    assert f(0.0) == 1.0 and f(3.99) == 1.0
    assert f(4.0) == pytest.approx(0.1) and f(5.99) == pytest.approx(0.1)
    assert f(6.0) == pytest.approx(0.01) and f(8.0) == pytest.approx(0.01)


def test_step_milestone_that_is_not_a_whole_epoch():
    f = factor(10, name="step", milestones=[0.25], gamma=0.5)  # epoch 2.5: in the middle of the third epoch
    assert f(2.49) == 1.0 and f(2.5) == 0.5 and f(9.9) == 0.5


def test_step_milestone_is_reached_despite_rounding():
    # 0.7 * 10 = 7.000000000000001 and 0.3 * 10 = 3.0000000000000004 in binary floating point
    f = factor(10, name="step", milestones=[0.3, 0.7], gamma=0.5)
    assert f(3.0) == 0.5 and f(7.0) == 0.25
    assert f(2.999) == 1.0 and f(6.999) == 0.5


def test_step_with_milestones_in_epochs_and_a_warm_up():
    f = factor(10, name="step", milestones=[2, 5], gamma=0.2, warmup_epochs=1)
    assert f(0.5) == pytest.approx(0.5)  # warm-up
    assert f(1.0) == 1.0 and f(1.99) == 1.0
    assert f(2.0) == pytest.approx(0.2) and f(5.0) == pytest.approx(0.04) and f(10.0) == pytest.approx(0.04)


# ---- cosine ---------------------------------------------------------------------------------------
def test_cosine_from_one_to_the_minimum_at_the_end():
    f = factor(10, name="cosine")
    assert f(0.0) == 1.0
    assert f(2.5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(5.0) == pytest.approx(0.5)
    assert f(10.0) == pytest.approx(0.0, abs=1e-12) and f(12.0) == pytest.approx(0.0, abs=1e-12)  # stays there
    m = factor(10, name="cosine", min_lr_ratio=0.1)
    assert m(0.0) == pytest.approx(1.0) and m(5.0) == pytest.approx(0.55) and m(10.0) == pytest.approx(0.1)


def test_cosine_after_a_warm_up_spans_the_remaining_epochs():
    f = factor(10, name="cosine", warmup_epochs=2)
    assert f(1.0) == pytest.approx(0.5)  # warm-up
    assert f(2.0) == pytest.approx(1.0)  # warm-up end: the peak
    assert f(6.0) == pytest.approx(0.5)  # half-way through the 8 cosine epochs
    assert f(10.0) == pytest.approx(0.0, abs=1e-12)
    values = [f(t / 10) for t in range(20, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotonically down after the warm-up


# ---- onecycle -------------------------------------------------------------------------------------
ONECYCLE_FLOOR = 1e-3  # onecycle never anneals below this share of the peak (nor below min_lr_ratio)


def test_onecycle_rises_linearly_to_the_peak_then_anneals():
    f = factor(8, name="onecycle")  # pct_start 0.25: the peak at epoch 2
    assert f(0.0) == pytest.approx(0.04)  # starts at 1/25 of the peak
    assert f(1.0) == pytest.approx(0.04 + 0.96 / 2)
    assert f(2.0) == pytest.approx(1.0)  # the peak is the configured lr, not above it
    assert f(5.0) == pytest.approx(0.5)  # half-way through the 6 annealing epochs
    assert f(8.0) == pytest.approx(ONECYCLE_FLOOR)  # ~0 at the end, never exactly 0
    up = [f(t / 10) for t in range(0, 20)]
    down = [f(t / 10) for t in range(20, 81)]
    assert all(a < b for a, b in zip(up, up[1:])) and all(a >= b for a, b in zip(down, down[1:]))
    assert all(a > b for a, b in zip(down, down[1:]) if b > ONECYCLE_FLOOR)  # strictly, until the floor


def test_onecycle_with_another_start_share_and_a_minimum():
    f = factor(10, name="onecycle", pct_start=0.5, min_lr_ratio=0.2)
    assert f(2.5) == pytest.approx(0.04 + 0.96 / 2) and f(5.0) == pytest.approx(1.0)
    assert f(10.0) == pytest.approx(0.2) and f(12.0) == f(10.0)  # down to the minimum, not below


# ---- plateau --------------------------------------------------------------------------------------
def test_plateau_tracker_cuts_the_lr_after_patience_epochs_without_improvement():
    p = PlateauTracker(ScheduleConfig(name="plateau", patience=2, gamma=0.5), mode="max")
    for value, expected in [(0.50, 1.0),   # first value: the best
                            (0.40, 1.0),   # 1 bad epoch
                            (0.50, 1.0),   # equal is not better: 2 bad epochs (= patience)
                            (0.45, 0.5),   # 3 > patience: cut, count restarts
                            (0.48, 0.5),   # 1 bad epoch
                            (0.55, 0.5),   # better: new best, count restarts
                            (0.54, 0.5), (0.53, 0.5),
                            (0.52, 0.25)]:  # fmt: skip
        p.update(value)
        assert p.factor == expected, (value, p.state_dict())
    assert p.best == 0.55 and p.bad_epochs == 0


def test_plateau_tracker_in_min_mode_and_with_zero_patience():
    p = PlateauTracker(ScheduleConfig(name="plateau", patience=0, gamma=0.1), mode="min")
    p.update(1.0)
    p.update(0.8)  # lower is better
    assert p.factor == 1.0 and p.best == 0.8
    p.update(0.9)  # patience 0: every epoch without improvement cuts
    assert p.factor == pytest.approx(0.1)
    p.update(0.8)
    assert p.factor == pytest.approx(0.01) and p.best == 0.8


def test_plateau_tracker_never_cuts_below_the_minimum():
    p = PlateauTracker(ScheduleConfig(name="plateau", patience=0, gamma=0.1, min_lr_ratio=0.05), mode="max")
    for v in (0.5, 0.4, 0.4, 0.4):
        p.update(v)
    assert p.factor == pytest.approx(0.05)  # 0.1 then 0.01 -> held at 0.05


def test_plateau_tracker_does_nothing_for_other_schedules():
    p = PlateauTracker(ScheduleConfig(name="cosine", patience=0), mode="max")
    for v in (0.5, 0.4, 0.3, 0.2):
        p.update(v)
    assert p.factor == 1.0 and p.best is None and p.bad_epochs == 0


def test_plateau_tracker_state_dict_round_trip_continues_identically():
    cfg = ScheduleConfig(name="plateau", patience=1, gamma=0.3)
    a = PlateauTracker(cfg, mode="max")
    for v in (0.6, 0.5, 0.4, 0.58):  # a cut, then one bad epoch pending
        a.update(v)
    state = a.state_dict()
    assert state == {"best": 0.6, "bad_epochs": 1, "factor": pytest.approx(0.3)}
    b = PlateauTracker(cfg, mode="max")
    b.load_state_dict(dict(state))
    for v in (0.59, 0.7, 0.65, 0.64):
        a.update(v)
        b.update(v)
        assert a.state_dict() == b.state_dict()
    assert b.factor == pytest.approx(0.3 * 0.3 * 0.3)
