"""The sweep spec, its search space and the storage URL helpers: no store, no training."""

from __future__ import annotations

from pathlib import Path

import pytest

from facelab.errors import ConfigError
from facelab.sweeps.spec import CategoricalParam, SweepSpec, load_spec
from facelab.sweeps.space import config_values, encode_choice, grid, stored_params, trial_config
from facelab.sweeps.storage import StorageError, check_reachable, default_storage, strip_password, without_password
from facelab.sweeps.validate import check_field, max_epochs
from facelab.train.classifier import ClassifierConfig

SPACE = {"trainer.optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
         "model_kwargs.channels": [[8, 16, 16], [16, 32, 32]], "batch_size": {"type": "int", "low": 16, "high": 64,
                                                                              "step": 16}}


def spec(**kw) -> SweepSpec:
    return SweepSpec.from_dict({"base": {"store": "s", "trainer": {"epochs": 3}}, "space": SPACE, **kw})


def test_a_list_is_a_categorical_and_yaml_exponents_are_numbers(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("base: {store: s}\nspace:\n  trainer.optim.lr: [1e-3, 3e-3]\n  augment: [flip, geometric]\n")
    s = load_spec(f)
    assert s.space["trainer.optim.lr"] == CategoricalParam(type="categorical", choices=[1e-3, 3e-3])
    assert s.space["augment"].choices == ["flip", "geometric"]


def test_malformed_yaml_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("space:\n  lr: {type: float, low: 1\n base: x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_spec(f)


@pytest.mark.parametrize("space, message", [
    ({"trainer.optim.lr": {"low": 1, "high": 2}}, "give type: float, int or categorical"),
    ({"trainer.optim.lr": {"type": "float", "low": 2, "high": 1}}, r"low \(2.0\) must be below high"),
    ({"trainer.optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "log: true needs low > 0"),
    ({"batch_size": {"type": "int", "low": 8, "high": 64, "steps": 8}}, "steps"),
    ({}, "space"),
])
def test_bad_ranges_are_clear_errors(space: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SweepSpec.from_dict({"base": {"store": "s"}, "space": space}, where="spec.yaml")


def test_base_file_is_read_relative_to_the_spec_and_options_override_it(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("store: a\ntrainer: {epochs: 4}\n")
    f = tmp_path / "s.yaml"
    f.write_text("base: base.yaml\nspace: {augment: [flip]}\n")
    s = load_spec(f, options=["base.store=b"], flags={"n_trials": 5, "storage": None})
    assert s.base == {"store": "b", "trainer": {"epochs": 4}} and s.n_trials == 5


def test_an_option_naming_another_pruner_replaces_the_file_s(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("base: {store: s}\nspace: {augment: [flip]}\n"
                 "pruner: {name: percentile, percentile: 25.0, n_warmup_steps: 2}\n")
    median = load_spec(f, options=["pruner.name=median", "pruner.n_startup_trials=3"]).pruner
    assert median.name == "median" and median.n_startup_trials == 3 and median.n_warmup_steps == 0
    same = load_spec(f, options=["pruner.percentile=50"]).pruner  # the same kind: the file's settings stay
    assert same.name == "percentile" and same.percentile == 50 and same.n_warmup_steps == 2


def test_enqueued_trials_name_only_parameters_of_the_space() -> None:
    with pytest.raises(ConfigError, match=r"enqueue\[0\] sets \['seed'\]"):
        spec(enqueue=[{"seed": 1}])


def test_unknown_config_fields_are_named_with_the_fields_there_are() -> None:
    cfg = ClassifierConfig(store="s")
    check_field(cfg, "trainer.optim.lr", command="train")
    check_field(cfg, "model_kwargs.anything", command="train")  # free-form: the model checks it when built
    with pytest.raises(ConfigError, match=r"'trainer.optim.lrr' does not exist: trainer.optim has no field 'lrr'; "
                                          r"its fields are name, lr, weight_decay"):
        check_field(cfg, "trainer.optim.lrr", command="train")
    with pytest.raises(ConfigError, match=r"'batch_size.foo' does not exist: batch_size is a value \(64\)"):
        check_field(cfg, "batch_size.foo", command="train")


def test_trial_config_sets_the_metric_as_monitor_and_the_timeout_as_time_budget() -> None:
    s = spec(metric="val_mean_balanced_accuracy", direction="maximize", timeout=90)
    cfg = trial_config(s, {"trainer.optim.lr": 1e-3, "model_kwargs.channels": [8, 16, 16], "batch_size": 32})
    assert cfg.trainer.monitor == "val_mean_balanced_accuracy" and cfg.trainer.monitor_mode == "max"
    assert cfg.trainer.time_budget_minutes == 1.5 and cfg.trainer.epochs == 3
    assert cfg.trainer.optim.lr == 1e-3 and cfg.model_kwargs == {"channels": [8, 16, 16]} and cfg.batch_size == 32


def test_list_choices_travel_through_optuna_as_json_text() -> None:
    s = spec()
    stored = stored_params(s, {"model_kwargs.channels": [16, 32, 32], "batch_size": 32})
    assert stored == {"model_kwargs.channels": "[16, 32, 32]", "batch_size": 32}
    assert config_values(s, stored) == {"model_kwargs.channels": [16, 32, 32], "batch_size": 32}
    assert encode_choice("flip") == "flip" and encode_choice(None) is None


def test_grid_needs_steps_for_floats() -> None:
    with pytest.raises(ConfigError, match="trainer.optim.lr is a float range without step"):
        grid(spec())
    s = spec(space={"trainer.optim.lr": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1}, "batch_size": [16, 32]})
    g = grid(s)
    assert g["batch_size"] == [16, 32] and g["trainer.optim.lr"] == pytest.approx([0.1, 0.2, 0.3])


def test_pruner_resource_is_the_most_epochs_a_trial_trains() -> None:
    assert max_epochs(spec()) == 3
    assert max_epochs(spec(space={"trainer.epochs": {"type": "int", "low": 2, "high": 9}})) == 9


def test_urls_are_shown_and_recorded_without_their_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://ann:s3cret@db.example:5432/sweeps"
    assert without_password(url) == "postgresql+psycopg://ann:***@db.example:5432/sweeps"
    assert strip_password(url) == "postgresql+psycopg://ann@db.example:5432/sweeps"
    assert strip_password("sqlite:///x.db") == "sqlite:///x.db"
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"


def test_an_unreachable_database_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StorageError) as e:
        check_reachable("postgresql+psycopg://ann:s3cret@127.0.0.1:1/sweeps")
    assert "cannot reach the study database postgresql+psycopg://ann:***@127.0.0.1:1/sweeps" in str(e.value)
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("url, message", [
    ("not a url", "is not a database URL"),
    ("nosuchdb://x/y", "no driver for it"),
])
def test_malformed_urls_and_missing_drivers_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=message):
        check_reachable(url)


def test_yaml_aliases_that_expand_into_millions_of_values_are_refused_at_once(tmp_path: Path) -> None:
    lines = ["a0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 values expanded
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\nbase: {store: s, model_kwargs: {x: *a8}}\nspace: {augment: [flip]}\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: more than 200,000 values once its YAML aliases"):
        load_spec(f)


@pytest.mark.parametrize("name", ["../../etc", "a/b", ".hidden", "x" * 201, " lr"])
def test_a_study_name_must_stay_one_folder_name(name: str) -> None:
    with pytest.raises(ConfigError, match="give a plain name"):
        spec(study_name=name)
    spec(study_name="sweep-my lr.2")


def test_a_grace_period_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError, match="grace_period 15 s is shorter than two heartbeats \\(20 s\\)"):
        spec(heartbeat_interval=10, grace_period=15)
    assert spec(heartbeat_interval=10, grace_period=20).grace_seconds == 20


def test_a_categorical_of_more_choices_than_can_be_checked_is_refused() -> None:
    with pytest.raises(ConfigError, match="1001 choices, more than 1000"):
        spec(space={"batch_size": list(range(1, 1002))})


def test_a_sqlite_file_of_something_else_is_left_untouched(tmp_path: Path) -> None:
    import hashlib
    import sqlite3

    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StorageError, match="is a SQLite database of something else \\(tables notes\\)"):
        check_reachable(f"sqlite:///{path}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before and not (tmp_path / "notes.db-wal").exists()
