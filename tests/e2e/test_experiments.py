"""``facelab experiment imbalance`` and ``batch-schedule`` end to end, with leakage checks on every model."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from facelab.data.store import Store
from facelab.data.views import load_view, splits_for
from facelab.errors import ConfigError
from facelab.experiments import balancing, imbalance_study
from facelab.experiments.imbalance_study import STUDY_METRICS, ImbalanceStudyConfig
from facelab.train import classifier as classifier_module
from facelab.train import generative as generative_module
from facelab.train.classifier import ClassifierConfig
from tests.e2e.conftest import cli, cli_error, cli_json

METHODS = ("none", "oversample", "class_weights", "smote", "cvae")
SEEDS = (0, 1)
P = 0.3
TINY_STUDY = ("-o", "classifier.trainer.epochs=1", "-o", "classifier.batch_size=32",
              "-o", "classifier.model_kwargs={channels: [8, 16, 16]}", "-o", "generator.epochs=1",
              "-o", "generator.batch_size=32", "-o", "generator.model_options={cvae: {width: 8, latent_dim: 8}}")


def study_args(store: Path, out: Path, **over: Any) -> list[Any]:
    opts = {"--store": store, "--target": "Male", "--p": P, "--methods": ",".join(METHODS), "--seeds": len(SEEDS),
            "--out": out, **over}
    return ["experiment", "imbalance", *(x for kv in opts.items() for x in kv), *TINY_STUDY]


@dataclass
class Calls:
    """Arguments seen by the library functions the study calls (spied, then run for real)."""

    generator: list[dict[str, Any]] = field(default_factory=list)
    classifier: list[dict[str, Any]] = field(default_factory=list)
    evaluate: list[dict[str, Any]] = field(default_factory=list)


def spy(mp: pytest.MonkeyPatch, module: Any, name: str, record) -> None:
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        record(*args, **kwargs)
        return real(*args, **kwargs)

    mp.setattr(module, name, wrapper)


@dataclass
class Study:
    dir: Path
    summary: dict[str, Any]
    calls: Calls
    store: Store
    splits: dict[str, np.ndarray]


@pytest.fixture(scope="module")
def study(store, tmp_path_factory) -> Study:
    calls = Calls()
    with pytest.MonkeyPatch.context() as mp:
        spy(mp, balancing, "train_generative",
            lambda cfg, **kw: calls.generator.append({"cfg": cfg, **kw}))
        spy(mp, imbalance_study, "train_classifier",
            lambda cfg, **kw: calls.classifier.append({"cfg": cfg, **kw}))
        spy(mp, imbalance_study, "binary_scores",
            lambda run_dir, st, rows, target, minority: calls.evaluate.append(
                {"run_dir": Path(run_dir), "store": st.path, "rows": np.asarray(rows), "target": target}))
        summary = cli_json(*study_args(store, tmp_path_factory.mktemp("study")))
    st = Store.open(store)
    splits = splits_for(st, policy="auto", seed=0, stratify=["Male"])
    return Study(Path(summary["run_dir"]), summary, calls, st, splits)


def results(study_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (study_dir / "results.jsonl").read_text().splitlines()]


def view(study: Study, seed: int) -> dict[str, np.ndarray]:
    return load_view(study.dir / f"p{P:g}" / f"seed{seed}" / "rows.json", study.store)


# ---- the study's outputs ------------------------------------------------------------------------
def test_results_have_one_line_per_cell(study):
    recs = results(study.dir)
    assert sorted((r["seed"], r["method"]) for r in recs) == sorted((s, m) for s in SEEDS for m in METHODS)
    male, minority = study.store.column("Male"), study.summary["minority"]
    assert (male[study.splits["train"]] == minority).mean() <= 0.5  # the rarer value in training
    n_min = int((male[study.splits["test"]] == minority).sum())
    n = len(study.splits["test"])
    for r in recs:
        assert r["p"] == P and set(r["test"]) == set(STUDY_METRICS)
        assert all(0.0 <= r["test"][m] <= 1.0 or np.isnan(r["test"][m]) for m in STUDY_METRICS)
        # 1-epoch cells beat no baseline reliably; their figures must fit the test rows' class counts
        t = r["test"]
        other_recall = 2 * t["balanced_accuracy"] - t["minority_recall"]
        assert t["accuracy"] == pytest.approx((t["minority_recall"] * n_min + other_recall * (n - n_min)) / n)
        assert t["minority_recall"] * n_min == pytest.approx(round(t["minority_recall"] * n_min))
        assert r["epochs"] == 1
        assert (r["synthetic_rows"] > 0) == (r["method"] in ("smote", "cvae"))
    oversampled = next(r for r in recs if r["method"] == "oversample" and r["seed"] == 0)
    plain = next(r for r in recs if r["method"] == "none" and r["seed"] == 0)
    assert oversampled["train_rows"] > plain["train_rows"]


def test_summary_aggregates_mean_and_ci_per_metric(study):
    summary = json.loads((study.dir / "summary.json").read_text())
    assert summary["kind"] == "imbalance_study" and summary["target"] == "Male"
    assert summary["aggregate"] == json.loads(json.dumps(study.summary["aggregate"]))  # --json printed the same
    agg = summary["aggregate"][f"{P:g}"]
    assert set(agg) == set(METHODS)
    recs = results(study.dir)
    for method, entry in agg.items():
        assert entry["seeds"] == list(SEEDS)
        for m in STUDY_METRICS:
            stat = entry[m]
            assert {"mean", "ci95"} <= set(stat) and stat["n"] == len(SEEDS)
            vals = [r["test"][m] for r in recs if r["method"] == method]
            assert stat["mean"] == pytest.approx(np.mean(vals), nan_ok=True)
            assert ("vs_none" in stat) == (method != "none")
    assert summary["splits"] == {k: int(len(v)) for k, v in study.splits.items()}


def test_generated_samples_are_judged_by_the_baseline_classifier_of_the_same_seed(study):
    for r in results(study.dir):
        notes = r["notes"]
        if r["method"] != "cvae":
            assert "synthetic_fidelity" not in notes
            continue
        assert 0.0 <= notes["synthetic_fidelity"] <= 1.0 and 0.0 <= notes["judge_minority_recall_val"] <= 1.0
        judged = notes["synthetic_fidelity"] * 500  # a share of 500 samples; the recall one of the val minority
        val_minority = study.store.column("Male")[study.splits["val"]] == study.summary["minority"]
        recalled = notes["judge_minority_recall_val"] * int(val_minority.sum())
        assert judged == pytest.approx(round(judged)) and recalled == pytest.approx(round(recalled))
        assert Path(notes["synthetic_fidelity_judge"]) == study.dir / f"p{P:g}" / f"seed{r['seed']}" / "none"
    entry = study.summary["aggregate"][f"{P:g}"]["cvae"]
    vals = [r["notes"]["synthetic_fidelity"] for r in results(study.dir) if r["method"] == "cvae"]
    assert entry["synthetic_fidelity"]["mean"] == pytest.approx(np.mean(vals))
    assert "synthetic_fidelity" not in study.summary["aggregate"][f"{P:g}"]["none"]
    assert "| cvae | " in (study.dir / "results.md").read_text().split("synthetic_fidelity")[1]
    assert "How convincing the generated minority samples are" in (study.dir / "report.html").read_text()


def test_report_has_the_tables_and_embedded_images(study):
    html = (study.dir / "report.html").read_text()
    assert f"Results on the real test split, p = {P:g}" in html
    for method in METHODS:
        assert f"<td>{method}</td>" in html
    for metric in STUDY_METRICS:
        assert f"<th>{metric}</th>" in html
    assert "Real vs generated minority samples" in html and "Training curves (seed 0)" in html
    assert html.count("data:image/png;base64,") >= 4  # CI bars, real minority, synthetic grids, curves
    assert (study.dir / "bars.png").is_file() and (study.dir / "real_minority.png").is_file()
    assert (study.dir / f"p{P:g}" / "seed0" / "synthetic_cvae.png").is_file()
    assert "| none |" in (study.dir / "results.md").read_text()


def test_cell_classifiers_keep_the_study_defaults(study):
    """-o classifier.trainer.epochs=1 overrides one key; the study's monitor and quiet progress stay."""
    cfg = ClassifierConfig.from_yaml(study.dir / f"p{P:g}" / "seed0" / "none" / "config.yaml")
    assert cfg.trainer.epochs == 1 and cfg.trainer.monitor == "val_mean_balanced_accuracy"
    assert cfg.trainer.progress is False and cfg.labels == ["Male"]
    assert cfg.model_kwargs == {"channels": [8, 16, 16]}


# ---- no leakage ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_training_rows_never_touch_validation_or_test(study, seed):
    v = view(study, seed)
    train, val, test = v["train"], v["val"], v["test"]
    np.testing.assert_array_equal(val, study.splits["val"])
    np.testing.assert_array_equal(test, study.splits["test"])
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    ids = study.store.identities
    assert not set(ids[train]) & (set(ids[val]) | set(ids[test]))  # no person in two splits
    # only the minority of the training split was reduced, to p of it
    full = study.splits["train"]
    male = study.store.column("Male")
    assert set(train) <= set(full)
    assert set(full[male[full] == 0]) <= set(train)
    assert (male[train] == 1).sum() == int(np.floor(P * (male[full] == 1).sum() + 0.5))


def test_generators_train_only_on_the_reduced_training_rows(study):
    assert len(study.calls.generator) == len(SEEDS)  # one cvae per seed
    for call in study.calls.generator:
        seed = call["cfg"].seed
        v = view(study, seed)
        np.testing.assert_array_equal(np.sort(call["rows"]), np.sort(v["train"]))
        np.testing.assert_array_equal(call["val_rows"], v["val"])  # validation loss only, never trained on
        assert not set(call["rows"]) & set(v["test"])
        assert call["cfg"].conditions == ["Male"]
        gen_summary = json.loads((Path(call["run_dir"]) / "summary.json").read_text())
        assert gen_summary["train_rows"] == len(v["train"])


def test_classifiers_validate_on_real_rows_and_get_synthetic_rows_for_training_only(study):
    assert len(study.calls.classifier) == len(SEEDS) * len(METHODS)
    by_dir = {Path(r["run_dir"]): r for r in results(study.dir)}
    for call in study.calls.classifier:
        rec = by_dir[Path(call["run_dir"])]
        v = view(study, rec["seed"])
        np.testing.assert_array_equal(call["splits"]["val"], v["val"])
        np.testing.assert_array_equal(call["splits"]["test"], v["test"])  # recorded in the run's splits.json ...
        assert not set(call["splits"]["test"]) & (set(v["train"]) | set(v["val"]))  # ... never trained or validated on
        recorded = load_view(Path(call["run_dir"]) / "splits.json", study.store)
        assert set(recorded["train"]) == set(call["splits"]["train"])
        assert set(call["splits"]["train"]) <= set(v["train"])  # oversampling repeats rows, adds none
        extra = call["extra"]
        if rec["method"] in ("smote", "cvae"):
            images, labels = extra
            assert len(images) == rec["synthetic_rows"] > 0 and (labels == 1).all()  # synthetic minority only
        else:
            assert extra is None


def test_only_real_test_rows_are_evaluated(study):
    assert len(study.calls.evaluate) == len(SEEDS) * len(METHODS)
    for call in study.calls.evaluate:
        assert call["store"] == study.store.path and call["target"] == "Male"
        np.testing.assert_array_equal(call["rows"], study.splits["test"])


# ---- bad input fails before any training --------------------------------------------------------
@pytest.mark.parametrize("over, words", [
    ({"--target": "yaw"}, ["yaw", "binary", "Male"]),
    ({"--target": "Mustache"}, ["Mustache", "not a label", "Smiling"]),
    ({"--p": "0"}, ["p must be shares in (0, 1]"]),
    ({"--p": "0.1,1.5"}, ["p must be shares in (0, 1]", "1.5"]),
    ({"--methods": "none,magic"}, ["magic", "smote", "cvae"]),
    ({"--p": "0.05"}, ["p=0.05", "at least 20", "cvae"]),
], ids=["categorical-target", "unknown-target", "p-zero", "p-above-one", "unknown-method", "too-few-minority"])
def test_bad_study_input_is_a_config_error_before_any_training(store, tmp_path, monkeypatch, over, words):
    def no_training(*args, **kwargs):
        raise AssertionError("nothing may be trained before the study is validated")

    monkeypatch.setattr(imbalance_study, "train_classifier", no_training)
    monkeypatch.setattr(balancing, "train_generative", no_training)
    out = tmp_path / "out"
    err = cli_error(*study_args(store, out, **over))
    assert isinstance(err, ConfigError)
    for w in words:
        assert w in str(err), (w, str(err))
    assert not out.exists()


def test_study_dry_run_prints_the_config_and_trains_nothing(store, tmp_path):
    out = tmp_path / "out"
    cfg = ImbalanceStudyConfig.from_dict(yaml.safe_load(cli(*study_args(store, out), "--dry-run").stdout))
    assert cfg.methods == list(METHODS) and cfg.seeds == list(SEEDS) and cfg.p == [P]
    assert cfg.classifier["trainer"]["epochs"] == 1 and cfg.generator["model_options"]["cvae"]["width"] == 8
    assert not out.exists()


# ---- resume -------------------------------------------------------------------------------------
def test_resume_recomputes_only_the_missing_cell(study, monkeypatch, tmp_path):
    study_dir = shutil.copytree(study.dir, tmp_path / study.dir.name)  # the other tests read the module's study
    path = study_dir / "results.jsonl"
    lines = path.read_text().splitlines()
    lost = json.loads(lines[-1])
    path.write_text("\n".join(lines[:-1]) + "\n")
    ran: list[tuple[int, str]] = []
    spy(monkeypatch, imbalance_study, "run_cell", lambda cfg, ctx, method, *a: ran.append((ctx.seed, method)))
    summary = cli_json("experiment", "imbalance", "--resume", study_dir)
    assert ran == [(lost["seed"], lost["method"])]
    new = path.read_text().splitlines()
    assert new[:-1] == lines[:-1]
    redone = json.loads(new[-1])
    assert redone["test"] == pytest.approx(lost["test"], nan_ok=True)  # seeded: the same result again
    agg = summary["aggregate"][f"{P:g}"]
    assert set(agg) == set(METHODS) and all(e["seeds"] == list(SEEDS) for e in agg.values())
    # the re-run cell started fresh logs in the folders the lost attempt had left
    cell = Path(redone["run_dir"])
    assert cell.is_relative_to(study_dir) and len((cell / "metrics.jsonl").read_text().splitlines()) == 1
    if lost["method"] == "cvae":
        assert len((cell.parent / "gen-cvae" / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_refuses_options_that_would_change_the_study(study):
    """The finished cells ran with the saved config: a new --p or -o must not be silently ignored."""
    before = (study.dir / "results.jsonl").read_text()
    refused = cli("experiment", "imbalance", "--resume", study.dir, "--p", "0.5", "-o", "seeds=[7]", ok=False)
    assert refused.exit_code == 2 and "drop --p, -o" in refused.output
    assert (study.dir / "results.jsonl").read_text() == before
    err = cli_error("experiment", "imbalance", "--resume", study.dir / "nope")
    assert "no config.yaml" in str(err)


def test_runs_lists_the_study(study):
    rows = cli_json("runs", study.dir.parent)
    row = next(r for r in rows if Path(r["run"]) == study.dir)
    assert row["kind"] == "imbalance_study" and row["metric"].startswith(f"balanced acc p={P:g}")
    best = max(e["balanced_accuracy"]["mean"] for e in study.summary["aggregate"][f"{P:g}"].values())
    assert row["value"] == pytest.approx(best)


# ---- batch schedule -----------------------------------------------------------------------------
def test_batch_schedule_compares_three_variants(store, tmp_path):
    from facelab.eval.evaluate import evaluate_rows

    summary = cli_json("experiment", "batch-schedule", store, "-o", "epochs=2", "-o", "milestones=[0.5]",
                       "-o", "batch_size=32", "-o", "model_kwargs={channels: [8, 16, 16]}", "--out", tmp_path)
    run = Path(summary["run_dir"])
    res = json.loads((run / "results.json").read_text())
    assert list(res) == ["lr_decay", "batch_increase", "hybrid"]
    train_rows = len(splits_for(Store.open(store), policy="auto", seed=0, stratify=["Male"])["train"])
    per_epoch = {bs: train_rows // bs for bs in (32, 128)}  # drop_last
    assert res["lr_decay"]["parameter_updates"] == 2 * per_epoch[32]
    assert res["batch_increase"]["parameter_updates"] == per_epoch[32] + per_epoch[128]
    assert res["batch_increase"]["parameter_updates"] < res["lr_decay"]["parameter_updates"]
    assert {v: r["final_batch_size"] for v, r in res.items()} == {"lr_decay": 32, "batch_increase": 128, "hybrid": 128}
    lrs = {v: [h["lr"] for h in r["history"]] for v, r in res.items()}
    assert lrs["lr_decay"] == pytest.approx([0.05, 0.05 / 4])  # decayed at the milestone
    assert lrs["batch_increase"] == pytest.approx([0.05, 0.05])  # batch grew instead
    st = Store.open(store)
    test = splits_for(st, policy="auto", seed=0, stratify=["Male"])["test"]
    for v, r in res.items():  # 2 tiny epochs beat no baseline reliably: the figure is its checkpoint's on the test rows
        assert len(r["history"]) == 2 and summary["splits"]["test"] == len(test)
        assert r["test_mean_accuracy"] == evaluate_rows(run / v / "seed0", st, test)["summary"]["mean_accuracy"]
    assert (run / "curves.png").is_file() and "| lr_decay |" in (run / "results.md").read_text()
    html = (run / "report.html").read_text()
    assert "parameter updates" in html and "data:image/png;base64," in html
    assert summary["results"]["hybrid"]["parameter_updates"] == res["hybrid"]["parameter_updates"]
    row = next(r for r in cli_json("runs", tmp_path) if Path(r["run"]) == run)
    assert row["kind"] == "batch_schedule" and row["value"] is not None


@pytest.fixture(scope="module")
def train_val_store(tmp_path_factory) -> Path:
    """Official train and val partitions, no test partition: the CelebA subset's shape."""
    out = tmp_path_factory.mktemp("train_val") / "store"
    cli_json("data", "prepare", "synthetic", "--out", out, "--size", 32, "--workers", 1, "-o", "n=200",
             "-o", "partitions=[0.75, 0.25, 0.0]", "-o", "prevalence.Male=0.5")
    return out


def test_batch_schedule_without_a_test_partition_tests_on_the_official_val(train_val_store):
    from facelab.experiments.batch_schedule import BatchScheduleConfig, study_splits

    st = Store.open(train_val_store)
    official = splits_for(st, policy="official")
    assert official["test"].size == 0 and official["val"].size > 0
    cfg = BatchScheduleConfig(store=str(train_val_store), batch_size=16, milestones=[0.5])
    splits, how = study_splits(cfg, st)
    assert np.array_equal(splits["test"], official["val"])  # unseen people, never used for selection
    assert np.array_equal(np.sort(np.concatenate([splits["train"], splits["val"]])), official["train"])
    ids = st.identities
    assert not set(ids[splits["val"]]) & set(ids[splits["train"]])  # held out by person
    assert 0.1 < splits["val"].size / official["train"].size < 0.2
    assert "val rows are the test set" in how and "identity-disjoint" in how
    with pytest.raises(ConfigError, match=r"labels \['Nope'\] are not in"):
        study_splits(cfg.model_copy(update={"labels": ["Male", "Nope"]}), st)
    with pytest.raises(ConfigError, match=r"the batch grows to 1024 .* but training has \d+ rows"):
        study_splits(BatchScheduleConfig(store=str(train_val_store)), st)  # 64 x 4 x 4 on ~125 rows
    with pytest.raises(ConfigError, match="unknown classifier 'resnet9'"):  # before the first variant trains
        study_splits(cfg.model_copy(update={"model": "resnet9"}), st)
    with pytest.raises(ConfigError, match="not known"):
        study_splits(cfg.model_copy(update={"device": "gpu"}), st)


def test_batch_schedule_seeds_and_resume_after_a_kill(train_val_store, tmp_path, monkeypatch):
    """Two seeds give mean ± std; a study killed inside its third cell resumes from that cell's checkpoint
    without retraining the finished cells and ends with the figures of an uninterrupted study."""
    from facelab.experiments import batch_schedule
    from facelab.experiments.batch_schedule import BatchScheduleConfig, run_batch_schedule

    opts = {"store": str(train_val_store), "epochs": 2, "milestones": [0.5], "batch_size": 16, "seeds": 2,
            "variants": ["lr_decay", "batch_increase"], "model_kwargs": {"channels": [8, 16, 16]}}
    whole = run_batch_schedule(BatchScheduleConfig(**opts), run_dir=tmp_path / "whole", progress=False)
    res = whole["results"]
    assert whole["seeds"] == [0, 1] and whole["splits"]["test"] == len(splits_for(Store.open(train_val_store), policy="official")["val"])
    for r in res.values():
        assert len(r["test_mean_accuracy_per_seed"]) == 2 and r["test_mean_accuracy_std"] is not None
        assert r["test_mean_accuracy"] == pytest.approx(np.mean(r["test_mean_accuracy_per_seed"]))
    assert res["batch_increase"]["parameter_updates"] < res["lr_decay"]["parameter_updates"]
    assert "± " in (tmp_path / "whole" / "results.md").read_text()

    cfg_path = tmp_path / "config.yaml"
    BatchScheduleConfig(**opts).save(cfg_path)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text(cfg_path.read_text())
    real_start = batch_schedule.BatchSizeCallback.on_epoch_start
    starts = []

    def dying_start(self, trainer, epoch):
        starts.append(epoch)
        if len(starts) == 6:  # cells: (lr_decay, 0), (batch_increase, 0), (lr_decay, 1) -> its 2nd epoch
            raise KeyboardInterrupt
        real_start(self, trainer, epoch)

    monkeypatch.setattr(batch_schedule.BatchSizeCallback, "on_epoch_start", dying_start)
    with pytest.raises(KeyboardInterrupt):
        run_batch_schedule(BatchScheduleConfig(**opts), run_dir=killed, progress=False)
    monkeypatch.setattr(batch_schedule.BatchSizeCallback, "on_epoch_start", real_start)
    assert len((killed / "results.jsonl").read_text().splitlines()) == 2

    calls = []
    spy(monkeypatch, batch_schedule, "train_classifier", lambda cfg, **kw: calls.append((cfg.seed, kw["resume"])))
    resumed = cli_json("experiment", "batch-schedule", "--resume", killed)
    assert calls == [(1, True), (1, False)]  # the interrupted cell continues, the finished ones are kept
    for v, r in res.items():
        assert resumed["results"][v]["test_mean_accuracy_per_seed"] == r["test_mean_accuracy_per_seed"]
        assert resumed["results"][v]["parameter_updates"] == r["parameter_updates"]
    refused = cli("experiment", "batch-schedule", train_val_store, "--resume", killed, ok=False)
    assert refused.exit_code == 2 and "drop STORE" in refused.output


def test_smote_features_refits_the_head_on_training_rows_only(store, tmp_path, monkeypatch):
    """The decoupled SMOTE method: the backbone is kept, the head is refitted on SMOTE-balanced features of
    the reduced training rows (and nothing else), and the refitted checkpoint is the one evaluated."""
    import torch

    from facelab.data import loader as loader_module
    from facelab.experiments.balancing import METHODS as BALANCING, StudyContext
    from facelab.models.loading import load_model
    from facelab.train.classifier import train_classifier
    from facelab.models.checkpoint import read_weights

    st = Store.open(store)
    splits = splits_for(st, policy="auto", seed=0, stratify=["Male"])
    male = st.column("Male")
    train = splits["train"]
    keep = np.r_[train[male[train] == 0], train[male[train] == 1][:8]]  # 8 minority (Male=1) rows left
    ctx = StudyContext(store=st, target="Male", minority=1, train_rows=np.sort(keep), val_rows=splits["val"], seed=0,
                       work_dir=tmp_path, synthetic_amount=None)
    plan = BALANCING.create("smote_features", ctx)
    assert plan.post_train is not None and plan.extra is None
    cfg = ClassifierConfig.from_dict({"store": str(store), "labels": ["Male"], "trainer": {"epochs": 1, "progress": False},
                                      "batch_size": 32, "model_kwargs": {"channels": [8, 16, 16]}})
    run = tmp_path / "run"
    train_classifier(cfg, run_dir=run, splits={"train": plan.train_rows, "val": splits["val"]})
    before = read_weights(run / "checkpoints" / "best")
    seen = []
    real_loader = loader_module.BatchLoader

    def spy_loader(store_, rows, **kw):
        seen.append(np.asarray(rows))
        return real_loader(store_, rows, **kw)

    monkeypatch.setattr(balancing, "BatchLoader", spy_loader)
    notes = plan.post_train(run)
    assert notes["synthetic_features"] == int((male[keep] == 0).sum()) - 8  # balanced
    assert len(seen) == 1 and set(seen[0]) == set(keep)  # features of the reduced training rows only
    after = read_weights(run / "checkpoints" / "best")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # backbone and its batch-norm statistics untouched
    model, meta = load_model(run, kind="classifier")
    assert meta.metrics["smote_features_synthetic"] == notes["synthetic_features"]
