"""``facelab sweep`` on SQLite: two local worker processes share one study, every trial is a run folder, the
report writes best.yaml and the plots, optuna-dashboard opens the study, --resume continues it, and pruning
stops a run through the trainer's own callback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from facelab.config import read_yaml
from facelab.sweeps import PruningCallback
from facelab.sweeps.worker import PRUNED, TRIAL_FILE
from facelab.train.classifier import ClassifierConfig, train_classifier
from tests.e2e.conftest import TINY_CLASSIFIER_CFG, cli, cli_json, write_sweep_spec

DONE = ("COMPLETE", "PRUNED")


@pytest.fixture(scope="module")
def sqlite_sweep(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(sweep folder, the --json result) of a 4-trial sweep run by 2 local workers."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = write_sweep_spec(tmp / "spec.yaml", store)
    result = cli_json("sweep", spec, "--workers", 2, "--out", tmp / "runs", "--name", "lite")
    return Path(result["run_dir"]), result


def test_two_workers_finish_the_study_and_every_trial_is_a_run_folder(sqlite_sweep) -> None:
    sweep_dir, result = sqlite_sweep
    assert [w["returncode"] for w in result["launch"]["workers"]] == [0, 0]
    done = [t for t in result["trials"] if t["state"] in DONE]
    assert len(done) == 4 and result["storage"] == f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    assert result["states"].get("COMPLETE", 0) >= 2  # the median pruner waits for 2 complete trials
    for t in done:
        run_dir = Path(t["run_dir"])
        assert run_dir.parent == sweep_dir.resolve() and run_dir.name == f"trial-{t['number']:04d}"
        link = json.loads((run_dir / TRIAL_FILE).read_text())
        assert link["trial"] == t["number"] and link["study"] == result["study_name"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["kind"] == "classifier" and summary["epochs"] == t["epochs"]
        assert (summary["stop_reason"] == PRUNED) == (t["state"] == "PRUNED")
        config = read_yaml(run_dir / "config.yaml")
        assert config["trainer"]["optim"]["lr"] == t["params"]["trainer.optim.lr"]
        assert config["augment"] == t["params"]["augment"]


def test_report_writes_best_config_and_plots(sqlite_sweep, tmp_path: Path) -> None:
    sweep_dir, _ = sqlite_sweep
    report = cli_json("sweep", "report", sweep_dir)
    best = next(t for t in report["trials"] if t["number"] == report["best_trial"])
    values = [t["value"] for t in report["trials"] if t["state"] == "COMPLETE"]
    assert best["state"] == "COMPLETE" and report["best_value"] == max(values) == best["value"]
    assert set(report["plots"]) >= {"optimization_history", "param_importances", "parallel_coordinate"}
    assert all(Path(p).is_file() for p in report["plots"].values())
    assert set(report["importances"]) == {"trainer.optim.lr", "augment"}
    html = (sweep_dir / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and f"Trial {best['number']}" in html
    # best.yaml is the best trial's config, ready for facelab train --config
    best_cfg = read_yaml(sweep_dir / "best.yaml")
    assert best_cfg == read_yaml(Path(best["run_dir"]) / "config.yaml")
    run = cli_json("train", "--config", sweep_dir / "best.yaml", "--epochs", 1, "--out", tmp_path, "--name", "best")
    trained = read_yaml(Path(run["run_dir"]) / "config.yaml")
    assert trained["trainer"]["optim"]["lr"] == best_cfg["trainer"]["optim"]["lr"]
    assert "best: trial" in cli("sweep", "report", sweep_dir).stderr


def _get(app: Any, path: str) -> Any:
    """GET ``path`` from a WSGI app; its JSON body (the status must be 200)."""
    from wsgiref.util import setup_testing_defaults

    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def test_optuna_dashboard_opens_the_study(sqlite_sweep) -> None:
    import optuna_dashboard

    sweep_dir, result = sqlite_sweep
    app = optuna_dashboard.wsgi(f"sqlite:///{sweep_dir / 'study.db'}")
    (study,) = _get(app, "/api/studies")["study_summaries"]
    assert study["study_name"] == result["study_name"] and study["directions"] == ["maximize"]
    detail = _get(app, f"/api/studies/{study['study_id']}")
    assert len(detail["trials"]) >= len(result["trials"])


def test_resume_continues_to_more_trials(sqlite_sweep) -> None:
    sweep_dir, first = sqlite_sweep
    before = len([t for t in first["trials"] if t["state"] in DONE])
    result = cli_json("sweep", "--resume", sweep_dir, "--n-trials", before + 1, "--workers", 1)
    assert len([t for t in result["trials"] if t["state"] in DONE]) == before + 1
    assert read_yaml(sweep_dir / "config.yaml")["n_trials"] == before + 1


class _AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def _train_under_a_pruner_that_always_prunes(store: Path, run_dir: Path, epochs: int):
    study = optuna.create_study(direction="maximize", pruner=_AlwaysPrune())
    callback = PruningCallback(study.ask(), "val_mean_accuracy")
    cfg = ClassifierConfig.from_dict({"store": str(store), **TINY_CLASSIFIER_CFG,
                                      "trainer": {"epochs": epochs, "progress": False}})
    return study, callback, train_classifier(cfg, run_dir=run_dir, callbacks=[callback])


def test_a_pruned_trial_is_an_ordinary_run_that_stopped_after_the_epoch(store: Path, tmp_path: Path) -> None:
    study, callback, summary = _train_under_a_pruner_that_always_prunes(store, tmp_path / "run", 3)
    assert callback.pruned_at == 1 and summary["epochs"] == 1 and summary["stop_reason"] == PRUNED
    assert list(study.trials[0].intermediate_values) == [1]
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()


def test_a_trial_that_reached_its_last_epoch_is_not_pruned(store: Path, tmp_path: Path) -> None:
    _, callback, summary = _train_under_a_pruner_that_always_prunes(store, tmp_path / "run", 1)
    # pruning it now would save nothing and throw its value away
    assert callback.pruned_at is None and summary["stop_reason"] == "completed"
