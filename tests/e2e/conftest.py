"""Shared setup of the end-to-end tests: every expensive artefact is built once per session, through the CLI.

- ``store``: a synthetic face store (240 images, 32 px, Male at 50% so the augmentation study keeps
  enough minority rows), made by ``facelab data prepare synthetic``;
- ``clf_run``: a 2-epoch multi-label classifier on every label of ``store`` (``facelab train``);
- ``cvae_run``: a 1-epoch cVAE conditioned on Male; ``dcgan_run``: a 2-epoch DCGAN checkpointing after
  every batch (the uninterrupted reference of the GAN resume test) (``facelab train-gen``).

Models are tiny (vgg_scratch with 8-16-16 channels, generators of width 8 and 8 latent dimensions), so
each training takes about a second on one CPU thread. Helpers :func:`cli`, :func:`cli_json` and
:func:`cli_error` run ``facelab`` in-process with typer's CliRunner.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from facelab.cli import app
from facelab.errors import FacelabError

STORE_SIZE = 32
STORE_N = 240
#: options that make a classifier run tiny and quiet
TINY_CLASSIFIER = ("--batch-size", "32", "-o", "trainer.progress=false", "-o", "model_kwargs={channels: [8, 16, 16]}")
#: the same as config keys (library calls and experiment configs)
TINY_CLASSIFIER_CFG: dict[str, Any] = {"batch_size": 32, "model_kwargs": {"channels": [8, 16, 16]}}
#: options that make a generative run tiny and quiet
TINY_GEN = ("--batch-size", "32", "-o", "trainer.progress=false", "-o", "model_options.width=8",
            "-o", "model_options.latent_dim=8")
#: options that make a self-supervised pretraining run tiny and quiet
TINY_SSL = ("--batch-size", "32", "-o", "trainer.progress=false", "-o", "model_kwargs={channels: [8, 16, 16]}",
            "-o", "objective_kwargs={proj_hidden: 32, proj_dim: 16}")
EVERY_BATCH = "trainer.checkpoint_every_minutes=0.000001"  # a mid-epoch checkpoint after every batch


def cli(*args: Any, ok: bool = True) -> Result:
    """Run ``facelab ARGS`` in-process; with ``ok`` assert it exited 0 (showing its output when not)."""
    argv = [str(a) for a in args]
    result = CliRunner().invoke(app, argv)
    if ok and result.exit_code != 0:
        import traceback

        tb = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        pytest.fail(f"facelab {' '.join(argv)} exited {result.exit_code}\nstdout:\n{result.stdout}\n"
                    f"stderr:\n{result.stderr}\n{tb}")
    return result


def cli_json(*args: Any) -> Any:
    """Run ``facelab ARGS --json`` and parse its stdout (which must be nothing but the JSON document)."""
    return json.loads(cli(*args, "--json").stdout)


def cli_error(*args: Any) -> FacelabError:
    """Run ``facelab ARGS`` expecting a user error; return the FacelabError (``main`` prints it and exits 2)."""
    result = cli(*args, ok=False)
    assert isinstance(result.exception, FacelabError), (
        f"expected a FacelabError, got exit {result.exit_code} {result.exception!r}\n{result.output}")
    return result.exception


@pytest.fixture(scope="session")
def e2e_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def runs_root(e2e_root: Path) -> Path:
    """Where the shared runs live (tests put their own runs in their tmp_path)."""
    return e2e_root / "runs"


@pytest.fixture(scope="session")
def store(e2e_root: Path) -> Path:
    out = e2e_root / "store"
    report = cli_json("data", "prepare", "synthetic", "--out", out, "--size", STORE_SIZE, "--workers", 1,
                      "-o", f"n={STORE_N}", "-o", "prevalence.Male=0.5")
    assert report["count"] == STORE_N and report["skipped_count"] == 0
    return out


@pytest.fixture(scope="session")
def clf_run(store: Path, runs_root: Path) -> tuple[Path, dict[str, Any]]:
    """(run folder, the --json summary) of a 2-epoch classifier on every label of ``store``."""
    summary = cli_json("train", store, "--epochs", 2, *TINY_CLASSIFIER, "--out", runs_root, "--name", "clf")
    return Path(summary["run_dir"]), summary


@pytest.fixture(scope="session")
def cvae_run(store: Path, runs_root: Path) -> Path:
    summary = cli_json("train-gen", store, "--model", "cvae", "--cond", "Male", "--epochs", 1, *TINY_GEN,
                       "--out", runs_root, "--name", "cvae")
    return Path(summary["run_dir"])


@pytest.fixture(scope="session")
def dcgan_run(store: Path, runs_root: Path) -> Path:
    summary = cli_json("train-gen", store, "--model", "dcgan", "--epochs", 2, *TINY_GEN, "-o", EVERY_BATCH,
                       "--out", runs_root, "--name", "dcgan")
    return Path(summary["run_dir"])


#: a sweep of tiny classifier trials on ``store`` (two parameters, 2 epochs, heartbeats every second; a trial
#: silent for 20 s is failed, far more than any pause of a live worker on a busy machine)
TINY_SWEEP: dict[str, Any] = {
    "command": "train",
    "base": {**TINY_CLASSIFIER_CFG, "trainer": {"epochs": 2, "progress": False}},
    "space": {"trainer.optim.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
              "augment": ["flip", "geometric"]},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "n_trials": 4,
    "heartbeat_interval": 1,
    "grace_period": 20,
}


def write_sweep_spec(path: Path, store: Path, **changes: Any) -> Path:
    """:data:`TINY_SWEEP` on ``store`` with top-level ``changes``, written as YAML to ``path``."""
    import yaml

    spec = {**TINY_SWEEP, **changes}
    spec["base"] = {**spec["base"], "store": str(store)}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
