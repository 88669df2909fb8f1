"""``facelab sweep`` refuses bad input with a clear error before any trial starts (and before any folder is made)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from facelab.errors import ConfigError
from facelab.sweeps import StorageError, create_sweep, load_spec
from tests.e2e.conftest import cli_error, write_sweep_spec
from tests.fixtures.postgres import free_port


def _refused(spec: Path, tmp_path: Path, *args: object) -> Exception:
    out = tmp_path / "runs"
    error = cli_error("sweep", spec, "--out", out, "--name", "bad", *args)
    assert not (out / "sweep-bad").exists()  # nothing was made, nothing ran
    return error


def test_a_space_key_that_is_no_config_field(store: Path, tmp_path: Path) -> None:
    spec = write_sweep_spec(tmp_path / "s.yaml", store, space={"trainer.optim.learning_rate": [1.0e-3, 1.0e-2]})
    error = _refused(spec, tmp_path)
    assert isinstance(error, ConfigError)
    assert "'trainer.optim.learning_rate' does not exist: trainer.optim has no field 'learning_rate'" in str(error)
    assert "lr, weight_decay" in str(error)  # the fields there are


@pytest.mark.parametrize("choices, field, shown", [
    (["32", "64"], "batch_size", "'32' (str)"),  # quoted numbers: a YAML slip that would train another value
    ([1, 2], "augment", "augment"),  # a preset name is text
    ([0.5, 0.7], "trainer.epochs", "0.5"),
])
def test_a_categorical_of_the_wrong_type_for_its_field(store: Path, tmp_path: Path, choices: list, field: str,
                                                       shown: str) -> None:
    spec = write_sweep_spec(tmp_path / "s.yaml", store, space={field: choices})
    error = _refused(spec, tmp_path)
    assert isinstance(error, ConfigError) and f"search space: {field} = " in str(error) and shown in str(error)


def test_an_unreachable_database(store: Path, tmp_path: Path) -> None:
    url = f"postgresql+psycopg://ann:s3cret@127.0.0.1:{free_port()}/sweeps"  # nothing listens there
    error = _refused(write_sweep_spec(tmp_path / "s.yaml", store), tmp_path, "--storage", url)
    assert isinstance(error, StorageError)
    assert f"cannot reach the study database postgresql+psycopg://ann:***@127.0.0.1" in str(error)
    assert "s3cret" not in str(error)


def test_a_study_name_that_exists_with_another_space(store: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = write_sweep_spec(tmp_path / "a.yaml", store, storage=url, study_name="lr")
    create_sweep(load_spec(first), out=tmp_path / "first", name="a")
    other = write_sweep_spec(tmp_path / "b.yaml", store, storage=url, study_name="lr",
                             space={"trainer.optim.lr": [1.0e-3, 3.0e-3, 1.0e-2, 3.0e-2]})
    error = _refused(other, tmp_path)
    assert isinstance(error, ConfigError)
    assert "study 'lr' already exists in sqlite:///" in str(error) and "with another search space" in str(error)
    assert "trainer.optim.lr: {'type': 'float'" in str(error) and "it also varies augment" in str(error)
    study = optuna.load_study(study_name="lr", storage=url)
    assert study.trials == []  # the existing study is untouched


def test_a_name_too_long_for_a_study_is_refused_before_any_folder(store: Path, tmp_path: Path) -> None:
    name = "x" * 220  # a folder name the disk takes, but the study's name (sweep-NAME) must stay under 200
    error = cli_error("sweep", write_sweep_spec(tmp_path / "s.yaml", store), "--out", tmp_path / "runs", "--name", name)
    assert isinstance(error, ConfigError) and "give a shorter --name or a study_name" in str(error)
    assert not (tmp_path / "runs").exists()
