"""``facelab train / eval / predict`` end to end: run folders, resume after a kill, transfer, errors."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.errors import ConfigError, FacelabError
from facelab.runs.folder import create_run_dir
from facelab.train import classifier as classifier_module
from facelab.models.checkpoint import STATE, WEIGHTS, read_meta, read_training_state, read_weights
from facelab.train.classifier import ClassifierConfig, train_classifier
from tests.e2e.conftest import EVERY_BATCH, TINY_CLASSIFIER, TINY_CLASSIFIER_CFG, cli, cli_error, cli_json
from tests.helpers import KillAtEpochStart, Killed, KillAtStep, make_store, near_decision_boundary


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_weights(a), read_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")


def bn_stats(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return {k: v.clone() for k, v in state.items() if k.endswith(stats)}


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


def _csv_hits(rows: list[dict[str, str]], spec: LabelSpec, y: np.ndarray) -> tuple[int, int]:
    """Right decisions of predict CSV ``rows`` on label ``spec`` against ``y``, and how many sit within float noise
    (plus the CSV's 5-decimal rounding) of the threshold or of a tie: another batch may decide those otherwise."""
    binary = spec.kind is LabelKind.BINARY
    cols = [f"p_{spec.name}"] if binary else [f"p_{spec.name}={c}" for c in spec.classes]
    p = np.array([[float(r[c]) for c in cols] for r in rows])  # (N, 1) or (N, K)
    decided = [r[f"pred_{spec.name}"] for r in rows]
    pred = np.array([int(v) if binary else spec.classes.index(v) for v in decided])
    return int((pred == y).sum()), int(near_decision_boundary(p[:, 0] if binary else p, 3e-5).sum())


# ---- facelab train ----------------------------------------------------------------------------
def test_train_writes_a_complete_self_describing_run(clf_run, store):
    run, summary = clf_run
    st = Store.open(store)
    for name in ("config.yaml", "env.json", "metrics.jsonl", "curves.png", "summary.json", "report.html"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "best" / WEIGHTS).is_file()
    assert (run / "checkpoints" / "last" / STATE).is_file()  # resumable
    # --json printed the same figures as summary.json
    assert summary["kind"] == "classifier" and summary["epochs"] == 2 and summary["stop_reason"] == "completed"
    assert summary["labels"] == st.label_names
    assert json.loads((run / "summary.json").read_text())["best"] == summary["best"]
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert summary["best"] == max(h["val_mean_accuracy"] for h in history)
    # 2 epochs of a tiny net do not beat the majority baseline reliably (6 seeds: at or just below it); the final
    # figures are the last epoch's, a mean of counts of the official val rows, next to those rows' baseline
    final, val = summary["final"], st.partition_indices(Partition.VAL)
    assert final["val_mean_accuracy"] == history[-1]["val_mean_accuracy"] and summary["val_rows"] == len(val)
    shares = [np.bincount(st.column(n)[val]).max() / len(val) for n in st.label_names]
    assert final["val_mean_majority_accuracy"] == pytest.approx(np.mean(shares))
    right = final["val_mean_accuracy"] * len(val) * len(shares)  # right decisions over every label
    assert right == pytest.approx(round(right))
    # the checkpoint describes itself: labels and preprocessing
    meta = read_meta(run / "checkpoints" / "best")
    assert meta.kind == "classifier" and meta.arch == "vgg_scratch"
    assert [d["name"] for d in meta.labels] == st.label_names
    assert {d["name"]: d["kind"] for d in meta.labels}["yaw"] == "categorical"
    assert meta.preprocessing.image_size == 32 and meta.preprocessing.store_hash == st.content_hash
    assert len(meta.preprocessing.mean) == 3 and len(meta.preprocessing.std) == 3
    assert meta.preprocessing.crop == st.manifest.crop
    # config round trip and environment
    cfg = ClassifierConfig.from_yaml(run / "config.yaml")
    assert cfg.trainer.epochs == 2 and cfg.batch_size == 32 and cfg.trainer.monitor == "val_mean_accuracy"
    assert json.loads((run / "env.json").read_text())["torch"] == torch.__version__
    html = (run / "report.html").read_text()
    assert "Training curves" in html and "data:image/png;base64," in html


def test_train_multiclass_single_label(store, tmp_path):
    summary = cli_json("train", store, "--labels", "yaw", "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path)
    run = Path(summary["run_dir"])
    assert summary["labels"] == ["yaw"]
    meta = read_meta(run)
    assert meta.arch_kwargs["num_outputs"] == 3  # softmax over left/center/right
    assert meta.labels == [Store.open(store).spec("yaw").to_dict()]
    report = cli_json("eval", run, "--data", store)
    assert list(report["per_label"]) == ["yaw"] and list(report["confusion"]) == ["yaw"]
    assert np.array(report["confusion"]["yaw"]).sum() == report["count"]


def test_dry_run_prints_the_resolved_config_and_creates_nothing(store, tmp_path):
    out = tmp_path / "runs"
    result = cli("train", store, "--labels", "Male,yaw", "--epochs", 3, "--lr", 0.01, "--dry-run", "--out", out)
    cfg = ClassifierConfig.from_dict(yaml.safe_load(result.stdout))
    assert cfg.labels == ["Male", "yaw"] and cfg.trainer.epochs == 3 and cfg.trainer.optim.lr == 0.01
    assert cfg.trainer.monitor == "val_mean_accuracy"
    assert not out.exists()


def test_partial_trainer_options_keep_the_classifier_defaults(store, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  epochs: 4\n")
    cfg = ClassifierConfig.from_dict(yaml.safe_load(cli("train", store, "--config", config, "--dry-run").stdout))
    assert cfg.trainer.epochs == 4
    assert (cfg.trainer.monitor, cfg.trainer.monitor_mode) == ("val_mean_accuracy", "max")


def test_unknown_label_is_a_clear_error_before_any_run_folder(store, tmp_path):
    err = cli_error("train", store, "--labels", "Male,Mustache", "--out", tmp_path / "runs")
    assert "Mustache" in str(err) and "Eyeglasses" in str(err)  # names the bad label and lists the real ones
    assert not (tmp_path / "runs").exists()


def test_unknown_model_is_a_clear_error_listing_models(store, tmp_path):
    err = cli_error("train", store, "--model", "resnet9", "--dry-run", "--out", tmp_path / "runs")
    assert isinstance(err, ConfigError)
    assert "resnet9" in str(err) and "vgg_scratch" in str(err) and "resnet18" in str(err)
    assert not (tmp_path / "runs").exists()


def test_main_prints_user_errors_and_exits_2(store, tmp_path, monkeypatch, capsys):
    from facelab.cli import main

    monkeypatch.setattr(sys, "argv", ["facelab", "train", str(store), "--labels", "Nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Nope" in err and "Traceback" not in err


# ---- resume after a kill ------------------------------------------------------------------------
def test_train_identities_keeps_every_photo_of_that_many_people(store, tmp_path):
    from facelab.data.views import splits_for

    st = Store.open(store)
    train = splits_for(st, policy="official")["train"]
    people = np.unique(st.identities[train])
    summary = cli_json("train", store, "--epochs", 1, *TINY_CLASSIFIER, "-o", "batch_size=4",
                       "--train-identities", 3, "--out", tmp_path, "--name", "three")
    assert summary["train_identities"] == 3 and summary["steps"] > 0
    run = Path(summary["run_dir"])
    assert yaml.safe_load((run / "config.yaml").read_text())["train_identities"] == 3
    from facelab.runs.splits import load_run_splits
    from facelab.train.classifier import make_splits

    rows = load_run_splits(run, st).rows("train")  # what the run recorded ...
    cfg = ClassifierConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    np.testing.assert_array_equal(rows, make_splits(cfg, st, classifier_module.build_task(st, None))[0]["train"])
    kept = np.unique(st.identities[rows])
    assert len(kept) == 3 and set(kept) <= set(people)
    for person in kept:  # all of their training photos, none of anyone else's
        np.testing.assert_array_equal(np.sort(rows[st.identities[rows] == person]),
                                      np.sort(train[st.identities[train] == person]))
    assert summary["train_rows"] == len(rows)


def test_train_identities_beyond_the_people_of_the_split_is_a_config_error(store, tmp_path):
    err = cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--train-identities", 100000,
                    "--out", tmp_path, "--name", "many")
    assert isinstance(err, ConfigError) and "training split holds" in str(err)
    assert not (tmp_path / "train-many").exists()


def test_train_identities_on_a_store_without_identities_is_a_config_error(tmp_path):
    bare = make_store(tmp_path / "bare", n=40, size=32)
    err = cli_error("train", bare.path, "--epochs", 1, *TINY_CLASSIFIER, "--train-identities", 2,
                    "--out", tmp_path, "--name", "bare")
    assert isinstance(err, ConfigError) and "records no identities" in str(err) and "train_limit" in str(err)


def test_resume_after_a_kill_between_epochs_matches_the_uninterrupted_run(clf_run, tmp_path):
    reference, _ = clf_run
    cfg = ClassifierConfig.from_yaml(reference / "config.yaml")
    run = create_run_dir("train", name="killed", root=tmp_path, config=cfg)
    with pytest.raises(Killed):
        train_classifier(cfg, run_dir=run, callbacks=[KillAtEpochStart(1)])
    assert read_training_state(run / "checkpoints" / "last")["epoch"] == 1
    summary = cli_json("train", "--resume", run)
    assert summary["epochs"] == 2
    assert_same_weights(run / "checkpoints" / "last", reference / "checkpoints" / "last")
    assert_same_weights(run / "checkpoints" / "best", reference / "checkpoints" / "best")
    ours = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    theirs = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in ours] == [1, 2]
    assert [h["val_loss"] for h in ours] == pytest.approx([h["val_loss"] for h in theirs], abs=1e-6)


def test_a_run_killed_before_its_first_checkpoint_is_no_dead_end(store, tmp_path):
    """Nothing was saved before the kill: --resume trains it from the start with its saved config, and the
    same --name may be used again (nothing in the folder would be lost)."""
    cfg = ClassifierConfig.from_dict({"store": str(store), "trainer": {"epochs": 1, "progress": False},
                                      **TINY_CLASSIFIER_CFG})
    run = create_run_dir("train", name="empty", root=tmp_path, config=cfg)
    summary = cli_json("train", "--resume", run)
    assert summary["epochs"] == 1 and (run / "checkpoints" / "last" / STATE).is_file()
    again = create_run_dir("train", name="again", root=tmp_path, config=cfg)  # killed before training, too
    summary = cli_json("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path, "--name", "again")
    assert summary["run_dir"] == str(again) and summary["epochs"] == 1
    err = cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path, "--name", "again")
    assert "already holds a run" in str(err)  # now it has trained: never mixed with a new run


# ---- facelab eval -------------------------------------------------------------------------------
def test_eval_reports_per_label_metrics_baseline_and_confusion_plots(clf_run, store, store_predictions):
    run, _ = clf_run
    report = cli_json("eval", run, "--data", store, "--split", "test")
    st = Store.open(store)
    assert report["rows"] == "the run's own test split"
    assert report["count"] == st.manifest.partitions["test"]
    assert set(report["per_label"]) == set(st.label_names)
    test = st.partition_indices(Partition.TEST)
    csv_rows = [store_predictions[str(k)] for k in st.keys[test]]  # the same best checkpoint's predictions
    for name, m in report["per_label"].items():
        assert set(m) >= {"accuracy", "balanced_accuracy", "f1_macro", "auroc", "majority_accuracy"}, name
        y = st.column(name)[test]  # a 2-epoch tiny net is no match for the baseline; its figures must be these rows'
        assert m["majority_accuracy"] == pytest.approx(np.bincount(y).max() / len(y)), name
        hits, flippable = _csv_hits(csv_rows, st.spec(name), y)
        assert abs(m["accuracy"] * len(y) - hits) <= flippable + 1e-9, name
    assert report["summary"]["mean_majority_accuracy"] == pytest.approx(
        np.mean([m["majority_accuracy"] for m in report["per_label"].values()]))
    categorical = {"hair_color", "yaw", "light"}
    assert set(report["confusion"]) == categorical
    for name in categorical:
        png = Path(report["plots"][f"confusion_{name}"])
        assert png.is_file() and Image.open(png).format == "PNG"
    assert Path(report["plots"]["per_label"]).is_file()
    assert json.loads((run / "eval" / f"{st.path.name}-test" / "report.json").read_text())["count"] == report["count"]
    html = Path(report["report"]).read_text()  # the run's report now lists this evaluation, with its mean row
    assert report["report"] == str(run / "report.html")
    assert f"Evaluation: {st.path.name}-test" in html and f"<td>MEAN</td><td>{report['summary']['mean_accuracy']:.4f}" in html


def test_eval_on_a_store_with_other_labels_names_them(clf_run, tmp_path):
    run, _ = clf_run
    other = tmp_path / "other"
    make_store(other, n=20, size=32)  # labels Male, Smiling, hair_color(black, blond, brown, gray)
    err = cli_error("eval", run, "--data", other)
    msg = str(err)
    assert "'Eyeglasses' is missing" in msg and "'yaw' is missing" in msg
    assert "Male, Smiling, Eyeglasses" in msg  # the labels the model needs


def test_eval_on_a_store_of_another_size_says_which_size_to_prepare(clf_run, store, tmp_path):
    run, _ = clf_run
    small = tmp_path / "small"
    make_store(small, n=20, size=16, label_specs=Store.open(store).label_specs)
    err = cli_error("eval", run, "--data", small)
    assert "--size 32" in str(err) and "16px" in str(err)


def test_eval_rejects_an_unknown_split(clf_run, store):
    err = cli_error("eval", clf_run[0], "--data", store, "--split", "holdout")
    assert "holdout" in str(err)


# ---- facelab predict ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store_predictions(clf_run, store, tmp_path_factory) -> dict[str, dict[str, str]]:
    out = tmp_path_factory.mktemp("pred") / "store.csv"
    report = cli_json("predict", clf_run[0], store, "--out", out)
    assert report["count"] == len(Store.open(store)) and report["skipped_count"] == 0
    header, rows = read_csv(out)
    return {r[0]: dict(zip(header, r)) for r in rows}


def test_predict_a_store_writes_one_row_per_image(store_predictions, store):
    st = Store.open(store)
    assert list(store_predictions) == [str(k) for k in st.keys]
    row = next(iter(store_predictions.values()))
    assert row["pred_yaw"] in ("left", "center", "right") and row["pred_Male"] in ("0", "1")
    probs = [float(row[f"p_yaw={c}"]) for c in ("left", "center", "right")]
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_predict_a_folder_skips_and_reports_bad_files(clf_run, store, store_predictions, tmp_path):
    st = Store.open(store)
    folder = tmp_path / "faces"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.asarray(st.images[i])).save(folder / f"face{i}.png")  # lossless: same pixels as the store
    Image.fromarray(np.asarray(st.images[3])).resize((64, 64)).save(folder / "sub" / "big.jpg", quality=95)
    Image.fromarray(np.asarray(st.images[4])).save(folder / "face4.jpeg", quality=95)
    (folder / "notes.txt").write_text("not a face\n")
    buf = io.BytesIO()
    Image.fromarray(np.asarray(st.images[5])).save(buf, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])

    out = tmp_path / "x.csv"
    report = cli_json("predict", clf_run[0], folder, "--out", out)
    assert report["count"] == 5 and report["skipped_count"] == 2
    reasons = {s["key"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"notes.txt", "truncated.jpg"}
    assert "not an image" in reasons["notes.txt"] and "decode" in reasons["truncated.jpg"]
    header, rows = read_csv(out)
    labels = st.label_names
    assert header[0] == "key"
    assert [c for c in header if c.startswith("pred_")] == [f"pred_{n}" for n in labels]
    assert {c.split("=")[0] for c in header if c.startswith("p_")} == {f"p_{n}" for n in labels}
    assert sorted(r[0] for r in rows) == ["face0.png", "face1.png", "face2.png", "face4.jpeg", "sub/big.jpg"]
    # a PNG of a store image is predicted exactly like that store row (same preprocessing from the checkpoint)
    got = dict(zip(header, next(r for r in rows if r[0] == "face0.png")))
    want = store_predictions[str(st.keys[0])]
    for col in header[1:]:
        if col.startswith("p_"):
            assert float(got[col]) == pytest.approx(float(want[col]), abs=2e-5), col
        else:  # another batch may flip a decision whose probabilities sit within that noise of a tie
            p = [float(want[c]) for c in header if c.split("=")[0] == f"p_{col[5:]}"]
            assert got[col] == want[col] or near_decision_boundary(p if len(p) == 1 else [p], 3e-5).all(), col


def test_predict_an_empty_folder_is_a_clear_error(clf_run, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    err = cli_error("predict", clf_run[0], tmp_path / "empty", "--out", tmp_path / "x.csv")
    assert "no image files" in str(err)
    assert not (tmp_path / "x.csv").exists()


def test_predict_a_folder_of_unreadable_images_is_an_error_not_an_empty_csv(clf_run, store, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(Store.open(store).images[0])).save(buf, format="JPEG")
    (folder / "header_only.jpg").write_bytes(buf.getvalue()[:300])  # cut inside the JPEG header
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a face")
    err = str(cli_error("predict", clf_run[0], folder, "--out", tmp_path / "x.csv"))
    assert "none of its 3 files could be read" in err
    assert "header_only.jpg: cannot decode image (" in err
    assert "empty.png: empty file" in err and "notes.txt" in err
    assert "BytesIO" not in err  # no Python object reprs in a user-facing reason
    assert not (tmp_path / "x.csv").exists()


def test_predict_tta_flip_averages_the_logits_of_each_image_and_its_mirror(clf_run, store, store_predictions, tmp_path):
    st = Store.open(store)
    mirrored = make_store(tmp_path / "mirrored", images=np.ascontiguousarray(np.asarray(st.images)[:, :, ::-1]),
                          label_specs=st.label_specs, labels=np.asarray(st.labels), keys=[str(k) for k in st.keys])
    cli_json("predict", clf_run[0], mirrored.path, "--out", tmp_path / "mirrored.csv")
    cli_json("predict", clf_run[0], store, "--out", tmp_path / "tta.csv", "--tta-flip")
    header, rows = read_csv(tmp_path / "mirrored.csv")
    flipped = {r[0]: dict(zip(header, r)) for r in rows}
    header, rows = read_csv(tmp_path / "tta.csv")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    for row in rows[:50]:
        got = dict(zip(header, row))
        plain, mirror = store_predictions[row[0]], flipped[row[0]]
        want = 1 / (1 + np.exp(-(logit(float(plain["p_Male"])) + logit(float(mirror["p_Male"]))) / 2))
        assert float(got["p_Male"]) == pytest.approx(want, abs=1e-4), row[0]


# ---- ensembles: several runs given to eval / predict ----------------------------------------------
@pytest.fixture(scope="module")
def seed1_run(store, tmp_path_factory) -> Path:
    """A second run of ``clf_run``'s recipe with another seed (an ensemble member)."""
    summary = cli_json("train", store, "--epochs", 2, *TINY_CLASSIFIER, "-o", "seed=1",
                       "--out", tmp_path_factory.mktemp("runs"), "--name", "seed1")
    return Path(summary["run_dir"])


def test_predict_with_several_runs_writes_their_mean_probabilities(clf_run, seed1_run, store, store_predictions, tmp_path):
    single = tmp_path / "seed1.csv"
    cli_json("predict", seed1_run, store, "--out", single)
    header, rows = read_csv(single)
    seed1 = {r[0]: dict(zip(header, r)) for r in rows}
    report = cli_json("predict", clf_run[0], seed1_run, store, "--out", tmp_path / "ens.csv")
    assert report["count"] == len(Store.open(store)) and report["skipped_count"] == 0
    header, rows = read_csv(tmp_path / "ens.csv")
    assert header == list(next(iter(seed1.values())))  # the same columns as one model's CSV
    for row in rows:
        got = dict(zip(header, row))
        for col in header:
            if col.startswith("p_"):
                want = (float(store_predictions[row[0]][col]) + float(seed1[row[0]][col])) / 2
                assert float(got[col]) == pytest.approx(want, abs=2e-5), (row[0], col)
        probs = {c: float(got[f"p_yaw={c}"]) for c in ("left", "center", "right")}
        assert probs[got["pred_yaw"]] == max(probs.values())  # (two may tie once rounded to 5 decimals)
        p_male = float(got["p_Male"])  # rounded: 0.50000 may be a 0.499996 predicted 0
        assert got["pred_Male"] == str(int(p_male >= 0.5)) or p_male == 0.5


def test_eval_with_several_runs_scores_the_ensemble(clf_run, seed1_run, store):
    run = clf_run[0]
    one = cli_json("eval", run, "--data", store)
    report = cli_json("eval", run, seed1_run, "--data", store)
    assert report["model"] == "ensemble of 2 vgg_scratch"
    assert report["members"] == [str(run), str(seed1_run)] and report["run"] == report["members"]
    assert report["rows"] == one["rows"] == "the run's own test split" and report["count"] == one["count"]
    assert report["summary"]["mean_majority_accuracy"] == one["summary"]["mean_majority_accuracy"]
    saved = list((run / "eval").glob(f"ensemble-of-2-*-{Path(store).name}-test/report.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["summary"] == report["summary"]
    assert f"members (probabilities averaged): {run}, {seed1_run}" in (run / "report.html").read_text()
    other = cli_json("eval", seed1_run, run, "--data", store)  # other first member: its own folder
    assert (seed1_run / "eval").is_dir() and other["summary"] == report["summary"]
    assert set(report["confusion"]) == {"hair_color", "yaw", "light"}


def test_eval_of_runs_with_different_random_splits_uses_the_rows_none_trained_on(store, tmp_path):
    from facelab.data.views import splits_for

    runs = [Path(cli_json("train", store, "--epochs", 1, *TINY_CLASSIFIER, "-o", "split=random", "-o", f"seed={s}",
                          "--out", tmp_path, "--name", f"r{s}")["run_dir"]) for s in (0, 1)]
    st = Store.open(store)
    held = [splits_for(st, policy="random", seed=s, stratify=["Male"]) for s in (0, 1)]
    assert not np.array_equal(held[0]["test"], held[1]["test"])
    report = cli_json("eval", *runs, "--data", store, "--split", "test")
    assert report["count"] == len(np.intersect1d(held[0]["test"], held[1]["test"])) > 0
    assert "all 2 runs' test splits" in report["rows"]
    trained = np.union1d(held[0]["train"], held[1]["train"])
    assert len(np.intersect1d(np.intersect1d(held[0]["test"], held[1]["test"]), trained)) == 0


def test_eval_chooses_the_last_checkpoint_on_request(clf_run, store):
    from facelab.eval.inference import predict_rows
    from facelab.eval.evaluate import eval_rows
    from facelab.models.classifiers.ensemble import load_classifier

    run = clf_run[0]
    best = cli_json("eval", run, "--data", store, "--split", "val")
    last = cli_json("eval", run, "--data", store, "--split", "val", "--checkpoint", "last")
    assert best["checkpoint"] == "best" and last["checkpoint"] == "last"
    assert "optimistic" in best["note"] and "note" not in last  # best was chosen on these very rows
    assert "note" not in cli_json("eval", run, "--data", store, "--split", "test")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_epoch = [m for m in metrics if "val_mean_accuracy" in m][-1]
    # the trainer's channels_last model vs eval's: only a decision within float noise of a tie may differ
    model, meta = load_classifier(run, which="last")
    st = Store.open(store)
    probs, _, _ = predict_rows(model, meta, st, eval_rows(meta, st, "val").rows)
    flippable = sum(int(near_decision_boundary(p, 1e-5).sum()) for p in probs.values())
    tolerance = flippable / (last["count"] * len(probs)) + 1e-9
    assert last["summary"]["mean_accuracy"] == pytest.approx(last_epoch["val_mean_accuracy"], abs=tolerance)
    assert "worst" in str(cli_error("eval", run, "--data", store, "--checkpoint", "worst"))


def test_an_ensemble_of_a_classifier_and_a_generator_is_a_clear_error(clf_run, cvae_run, store, tmp_path):
    err = str(cli_error("predict", clf_run[0], cvae_run, store, "--out", tmp_path / "x.csv"))
    assert "generative" in err and "not a classifier" in err
    assert not (tmp_path / "x.csv").exists()


def test_an_ensemble_of_runs_with_other_labels_names_them(clf_run, store, tmp_path):
    other = Path(cli_json("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--labels", "Male,Smiling",
                          "--out", tmp_path, "--name", "two")["run_dir"])
    err = str(cli_error("eval", clf_run[0], other, "--data", store))
    assert "['Male', 'Smiling']" in err and "same labels" in err


# ---- eval --adapt-priors: label shift ------------------------------------------------------------
def test_a_checkpoint_records_the_priors_of_its_training_rows(clf_run, store):
    from facelab.data.views import splits_for

    meta = read_meta(clf_run[0] / "checkpoints" / "last")
    st = Store.open(store)
    train = splits_for(st, policy="official")["train"]
    assert set(meta.label_priors) == set(st.label_names)
    male = st.column("Male")[train]
    assert meta.label_priors["Male"] == pytest.approx([np.mean(male == 0), np.mean(male == 1)])
    yaw = st.column("yaw")[train]
    assert meta.label_priors["yaw"] == pytest.approx([np.mean(yaw == k) for k in range(3)])


def test_eval_adapt_priors_reports_both_figures_and_the_estimated_priors(clf_run, store):
    run = clf_run[0]
    plain = cli_json("eval", run, "--data", store)
    report = cli_json("eval", run, "--data", store, "--adapt-priors")
    shift = report["label_shift"]
    assert shift["unadapted_summary"] == plain["summary"]
    assert shift["train_priors_from"] == "the checkpoints"
    assert set(shift["priors"]) == set(plain["per_label"])
    for name, d in shift["priors"].items():
        assert sum(d["estimated"]) == pytest.approx(1, abs=1e-4) and len(d["estimated"]) == len(d["train"]), name
    assert report["summary"]["mean_majority_accuracy"] == plain["summary"]["mean_majority_accuracy"]
    assert (run / "eval" / f"{Path(store).name}-test-adapted" / "report.json").is_file()
    assert json.loads((run / "eval" / f"{Path(store).name}-test" / "report.json").read_text())["summary"] == plain["summary"]


def test_adapt_priors_refuses_a_run_trained_with_class_weights(store, tmp_path):
    run = cli_json("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--balance", "class_weights",
                   "--out", tmp_path, "--name", "cw")["run_dir"]
    err = str(cli_error("eval", run, "--data", store, "--adapt-priors"))
    assert "balance=class_weights" in err and "without it" in err


def test_adapt_priors_of_an_old_checkpoint_needs_its_own_store(clf_run, store, tmp_path):
    from facelab.eval.evaluate import training_priors

    meta = read_meta(clf_run[0] / "checkpoints" / "last")
    meta.label_priors = {}  # as written before priors were recorded
    own, source = training_priors([meta], Store.open(store))
    recorded = read_meta(clf_run[0] / "checkpoints" / "last").label_priors
    assert set(own) == set(recorded) and all(own[n] == pytest.approx(recorded[n]) for n in own)
    assert "train split of this store" in source
    other = make_store(tmp_path / "other", n=20, size=32, label_specs=Store.open(store).label_specs)
    with pytest.raises(FacelabError, match="records no training priors"):
        training_priors([meta], other)


# ---- transfer: pretrained backbone, frozen, then unfrozen with a lower lr --------------------------
@pytest.fixture(scope="module")
def yaw_folder_store(store, tmp_path_factory) -> Path:
    """A ``folder`` store made from class folders left/center/right of the synthetic faces (label ``yaw``)."""
    root = tmp_path_factory.mktemp("yaw_folders")
    st = Store.open(store)
    classes = st.spec("yaw").classes
    for i, value in enumerate(st.column("yaw")):
        d = root / "faces" / classes[value]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(st.images[i])).save(d / f"{i:04d}.png")
    out = root / "store"
    report = cli_json("data", "prepare", "folder", root / "faces", "--out", out, "--size", 32, "--workers", 1,
                      "-o", "label_name=yaw", "-o", "classes=[left, center, right]")
    assert report["count"] == len(st)
    return out


class RecordingUnfreeze(classifier_module.UnfreezeCallback):
    """The real UnfreezeCallback, plus a record of BN statistics, weights and lrs around each epoch."""

    records: list[dict[str, Any]] = []

    def on_epoch_start(self, trainer, epoch: int) -> None:
        rec = {"epoch": epoch, "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}}
        super().on_epoch_start(trainer, epoch)
        rec["base_lrs"] = list(trainer.base_lrs["model"])
        rec["groups"] = len(trainer.optimizers["model"].param_groups)
        rec["step_lrs"] = []
        self.records.append(rec)

    def on_step_end(self, trainer, logs) -> None:
        self.records[-1]["step_lrs"].append([g["lr"] for g in trainer.optimizers["model"].param_groups])


@pytest.fixture(scope="module")
def transfer_run(clf_run, yaw_folder_store, tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("transfer")
    RecordingUnfreeze.records = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(classifier_module, "UnfreezeCallback", RecordingUnfreeze)
        summary = cli_json("train", yaw_folder_store, "--labels", "yaw", "--epochs", 2,
                           "--pretrained", clf_run[0], "--freeze", "--unfreeze-at", 1,  # a run folder: its best
                           *TINY_CLASSIFIER, "-o", EVERY_BATCH, "--out", out, "--name", "transfer")
    assert summary["epochs"] == 2 and summary["labels"] == ["yaw"]
    # the run says what it loaded: every backbone tensor, the other task's head left out
    assert "checkpoints/best" in summary["pretrained"] and "skipped head (2): fc.bias, fc.weight" in summary["pretrained"]
    return Path(summary["run_dir"]), RecordingUnfreeze.records


def test_transfer_keeps_the_frozen_backbone_and_its_bn_statistics(transfer_run, clf_run):
    run, records = transfer_run
    pretrained = read_weights(clf_run[0] / "checkpoints" / "best")
    start0, start1 = records[0]["state"], records[1]["state"]
    backbone = [k for k in pretrained if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone)
    for k in backbone:  # epoch 0 was frozen: weights and BN running stats are the pretrained ones, bit for bit
        assert torch.equal(start0[k], pretrained[k]), k
        assert torch.equal(start1[k], pretrained[k]), k
    assert not torch.equal(start0["fc.weight"], start1["fc.weight"])  # the new 3-class head did train
    assert start0["fc.weight"].shape[0] == 3
    final = read_weights(run / "checkpoints" / "last")
    changed = [k for k in bn_stats(final) if "running_mean" in k and not torch.equal(final[k], pretrained[k])]
    assert changed, "after unfreezing, the backbone's BN statistics should update"


def test_unfreezing_adds_the_backbone_with_a_scaled_learning_rate(transfer_run):
    run, records = transfer_run
    scale = ClassifierConfig.from_yaml(run / "config.yaml").backbone_lr_scale
    assert records[0]["groups"] == 1  # frozen: the optimizer holds the head only
    assert records[1]["groups"] == 2
    base = records[1]["base_lrs"]
    assert base[1] == pytest.approx(base[0] * scale)
    for head_lr, backbone_lr in records[1]["step_lrs"]:  # the schedule scales both groups alike
        assert backbone_lr == pytest.approx(head_lr * scale)


def test_resume_mid_epoch_after_unfreezing_matches_the_uninterrupted_run(transfer_run, tmp_path):
    reference, records = transfer_run
    cfg = ClassifierConfig.from_yaml(reference / "config.yaml")
    steps_per_epoch = len(records[0]["step_lrs"])
    run = create_run_dir("train", name="killed", root=tmp_path, config=cfg)
    with pytest.raises(Killed):  # in the middle of epoch 1, after the backbone was unfrozen
        train_classifier(cfg, run_dir=run, callbacks=[KillAtStep(steps_per_epoch + 2)])
    state = read_training_state(run / "checkpoints" / "last")
    assert (state["epoch"], state["batches_done"]) == (1, 1)
    cli_json("train", "--resume", run)
    assert_same_weights(run / "checkpoints" / "last", reference / "checkpoints" / "last")


def test_pretrained_file_that_does_not_exist_is_a_clear_error(store, tmp_path):
    err = cli_error("train", store, "--pretrained", tmp_path / "nope.safetensors", "--epochs", 1, *TINY_CLASSIFIER,
                    "--out", tmp_path / "runs")
    assert isinstance(err, FacelabError) and "nope.safetensors" in str(err)
    runs = tmp_path / "runs"  # refused before any run folder is made: the run that never started leaves none
    assert not runs.exists() or not list(runs.iterdir())


def test_a_new_run_never_reuses_an_existing_run_folder(clf_run, store):
    run, _ = clf_run
    metrics = (run / "metrics.jsonl").read_bytes()
    config = (run / "config.yaml").read_bytes()
    err = cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", run.parent, "--name", "clf")
    assert "already holds a run" in str(err) and "--resume" in str(err)
    assert (run / "metrics.jsonl").read_bytes() == metrics and (run / "config.yaml").read_bytes() == config
