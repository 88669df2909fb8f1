"""The CLI under bad input: clear errors, no lost data, no orphan run folders, no silent zero-step training.

Each test replays one finding of a robustness probe of the commands (and a few inputs like it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from facelab.config import ConfigError
from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.errors import FacelabError
from facelab.models.checkpoint import WEIGHTS
from tests.e2e.conftest import TINY_CLASSIFIER, TINY_GEN, cli, cli_error, cli_json
from tests.fixtures.layouts import make_celeba
from tests.helpers import make_store


def strict_json(text: str):
    """Parse JSON the way jq and JavaScript do: a bare NaN or Infinity is an error."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ---- data is never lost -------------------------------------------------------------------------
def test_cas_with_out_dot_keeps_every_prepared_store(cvae_run, store, tmp_path, monkeypatch):
    """`metrics cas ... --out .` used to rmtree(./stores) before and after training."""
    mine = make_store(tmp_path / "stores" / "celeba64", n=8, size=8)
    (tmp_path / "stores" / "README").write_text("my stores")
    monkeypatch.chdir(tmp_path)
    res = cli_json("metrics", "cas", cvae_run, "--data", store, "--label", "Male", "--n-train", 16, "--epochs", 1,
                   "--out", ".", "--name", "check")
    assert Store.open(tmp_path / "stores" / "celeba64").content_hash == mine.content_hash
    assert (tmp_path / "stores" / "README").read_text() == "my stores"
    run = tmp_path / "cas-check"
    assert Path(res["run_dir"]).resolve() == run.resolve() and (run / "cas.json").is_file()
    assert (run / "config.yaml").is_file() and not list(run.glob("cas-stores-*"))
    assert 0 <= res["cas"] <= 1 and res["n_train"] == 16


# ---- training that would not train ----------------------------------------------------------------
@pytest.mark.parametrize("args", [("--train-limit", "1"), ("-o", "batch_size=1000")], ids=["train-limit-1", "batch-1000"])
def test_train_refuses_a_batch_larger_than_the_training_rows(store, tmp_path, args):
    err = cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, *args, "--out", tmp_path)
    assert isinstance(err, ConfigError) and "fewer than one batch" in str(err) and "--batch-size" in str(err)
    assert not list(tmp_path.iterdir())  # refused before any run folder


def test_train_gen_refuses_a_batch_larger_than_the_training_rows(store, tmp_path):
    err = cli_error("train-gen", store, "--model", "vae", "--epochs", 1, *TINY_GEN, "--batch-size", 5000, "--out", tmp_path)
    assert isinstance(err, ConfigError) and "fewer than one batch of 5000" in str(err)
    assert not list(tmp_path.iterdir())


def test_one_class_labels_warn_and_summary_is_strict_json(tmp_path):
    specs = [LabelSpec("Male", LabelKind.BINARY), LabelSpec("Smiling", LabelKind.BINARY)]
    labels = np.c_[np.zeros(60, int), np.arange(60) % 2]  # nobody is Male
    st = make_store(tmp_path / "s", n=60, size=16, label_specs=specs, labels=labels)
    summary = cli_json("train", st.path, "--epochs", 1, *TINY_CLASSIFIER, "--out", tmp_path, "--name", "one")
    assert any("'Male'" in w and "every training row is [0]" in w for w in summary["warnings"])
    text = (Path(summary["run_dir"]) / "summary.json").read_text()
    assert "NaN" not in text and strict_json(text)["warnings"] == summary["warnings"]
    report = cli_json("eval", summary["run_dir"], "--data", st.path, "--split", "val")
    assert report["per_label"]["Male"]["auroc"] is None  # undefined, and said so in strict JSON
    saved = next((Path(summary["run_dir"]) / "eval").glob("*/report.json")).read_text()
    assert strict_json(saved)["per_label"]["Male"]["auroc"] is None


# ---- names, configs, devices --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x/../../escaped", "../up", "/abs", ".hidden", "a/b", ".."])
def test_name_cannot_leave_out(store, tmp_path, name):
    out = tmp_path / "out"
    err = cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", out, "--name", name)
    assert isinstance(err, ConfigError) and "--name" in str(err)
    assert list(tmp_path.iterdir()) == []  # nothing made, inside --out or anywhere above it


@pytest.mark.parametrize("content, words", [
    (None, ["does not exist"]),
    ("epochs: [1\n", ["not valid YAML"]),
    ("- epochs: 3\n- model: resnet18\n", ["mapping", "list"]),
    ("epochz: 3\n", ["epochz", "Extra inputs"]),
    (b"\xff\xfe\x00bad", ["cannot read"]),
], ids=["missing", "invalid", "list", "unknown-key", "not-text"])
@pytest.mark.parametrize("command", ["train", "train-gen"])
def test_bad_config_files_are_clear_errors(store, tmp_path, content, words, command):
    path = tmp_path / "cfg.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    err = cli_error(command, store, "--config", path, "--out", out)
    assert isinstance(err, ConfigError) and str(path) in str(err)
    for w in words:
        assert w in str(err), (w, str(err))
    assert not out.exists()


@pytest.mark.parametrize("device, words", [("gpu", ["not known", "cuda:N"]), ("cuda:7", ["CUDA GPU"]),
                                            ("cuda", ["CUDA GPU"])])
def test_unknown_or_absent_devices_are_clear_errors_everywhere(clf_run, cvae_run, store, tmp_path, device, words):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    out = tmp_path / "out"
    for args in (("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--out", out, "--device", device),
                 ("train-gen", store, "--model", "vae", *TINY_GEN, "--out", out, "--device", device),
                 ("eval", clf_run[0], "--data", store, "--device", device),
                 ("predict", clf_run[0], store, "--out", tmp_path / "p.csv", "--device", device),
                 ("sample", cvae_run, "--n", 2, "--grid", tmp_path / "g.png", "--device", device)):
        err = cli_error(*args)
        assert isinstance(err, ConfigError) and all(w in str(err) for w in words), (args[0], str(err))
    assert not out.exists() and not (tmp_path / "p.csv").exists()


# ---- damaged checkpoints ------------------------------------------------------------------------------
def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


@pytest.mark.parametrize("damage", ["truncated", "not-safetensors", "empty"])
def test_damaged_checkpoints_are_clear_errors(clf_run, cvae_run, store, tmp_path, damage):
    def spoil(weights: Path) -> None:
        data = weights.read_bytes()
        weights.write_bytes({"truncated": data[: len(data) // 2], "not-safetensors": b"<html>not a model</html>",
                             "empty": b""}[damage])

    clf = _copy_run(clf_run[0], tmp_path / "clf")
    spoil(clf / "checkpoints" / "best" / WEIGHTS)
    gen = _copy_run(cvae_run, tmp_path / "gen")
    spoil(gen / "checkpoints" / "best" / WEIGHTS)
    for args in (("eval", clf, "--data", store), ("predict", clf, store, "--out", tmp_path / "p.csv"),
                 ("sample", gen, "--n", 2, "--grid", tmp_path / "g.png")):
        err = cli_error(*args)
        assert isinstance(err, FacelabError) and WEIGHTS in str(err), (args[0], str(err))
        assert "damaged" in str(err) or "not a readable" in str(err) or "cut short" in str(err)


# ---- failed starts leave nothing; killed starts can go on ---------------------------------------------
def test_a_failed_start_leaves_no_run_folder(store, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_text("<html>not weights</html>")
    out = tmp_path / "out"
    cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--pretrained", bad, "--out", out)
    cli_error("train", store, "--epochs", 1, *TINY_CLASSIFIER, "--pretrained", bad, "--out", out, "--name", "named")
    assert not out.exists() or not list(out.iterdir())


# ---- one option parser ----------------------------------------------------------------------------------
def test_list_options_take_comma_text_for_every_source_and_config(tmp_path):
    celeba = make_celeba(tmp_path / "celeba", 12)
    report = cli_json("data", "prepare", "celeba", celeba.root, "--out", tmp_path / "c", "--size", 16,
                      "--workers", 1, "-o", "attributes=Male,Smiling")
    assert report["count"] == 12 and Store.open(tmp_path / "c").label_names == ["Male", "Smiling"]
    same = cli_json("data", "prepare", "celeba", celeba.root, "--out", tmp_path / "c2", "--size", 16,
                    "--workers", 1, "-o", "attributes=[Male, Smiling]")  # the YAML list form still works
    assert same["content_hash"] == report["content_hash"]
    dry = cli("train", tmp_path / "c", "-o", "labels=Smiling,Male", "-o", "batch_size=4", "--dry-run", "--out", tmp_path / "runs").stdout
    assert "- Smiling\n- Male" in dry


def test_bad_option_syntax_is_a_clear_error(store, tmp_path):
    for opt, words in (("epochs", "KEY=VALUE"), ("trainer..epochs=2", "empty key"), ("x=[1", "not valid YAML")):
        err = cli_error("train", store, "-o", opt, "--out", tmp_path, "--dry-run")
        assert isinstance(err, ConfigError) and words in str(err), (opt, str(err))


# ---- listings ------------------------------------------------------------------------------------------
def test_data_sources_prints_real_defaults():
    out = cli("data", "sources").stdout
    assert "PydanticUndefined" not in out and "prevalence={}" in out
    rows = cli_json("data", "sources")
    assert rows["synthetic"]["options"]["prevalence"] == {} and rows["celeba"]["options"]["attributes"] is None


def test_runs_on_a_missing_folder_is_an_error_not_an_empty_table(tmp_path):
    err = cli_error("runs", tmp_path / "nope")
    assert "no such folder" in str(err)
    assert cli_json("runs", tmp_path) == []  # an existing, empty folder is an empty list


def test_a_damaged_summary_is_listed_as_unreadable(clf_run, tmp_path):
    run = _copy_run(clf_run[0], tmp_path / "train-damaged")
    (run / "summary.json").write_text('{"kind": "classifier", "run_dir": 1')
    rows = {Path(r["run"]).name: r for r in cli_json("runs", tmp_path)}
    assert rows["train-damaged"]["kind"] == "unreadable" and "JSON" in rows["train-damaged"]["metric"]


# ---- eval scores the rows the run held out ------------------------------------------------------------------
def test_eval_split_val_reproduces_the_runs_own_validation_figure(tmp_path):
    """A store without a val partition (train/test, like CIFAR-10), a --train-limit and a seed: eval must score
    the very val rows the run held out of train, so its figure equals the run's last validation figure."""
    n = 200
    st = make_store(tmp_path / "s", n=n, size=16, seed=3,
                    partitions=np.where(np.arange(n) < 160, int(Partition.TRAIN), int(Partition.TEST)))
    summary = cli_json("train", st.path, "--epochs", 2, *TINY_CLASSIFIER, "--train-limit", 64, "--seed", 5,
                       "--out", tmp_path, "--name", "held")
    run = Path(summary["run_dir"])
    recorded = json.loads((run / "splits.json").read_text())
    assert recorded["counts"]["train"] == 64 and recorded["counts"]["val"] > 0 and recorded["counts"]["test"] == 40
    assert not set(recorded["splits"]["val"]) & set(recorded["splits"]["test"])
    report = cli_json("eval", run, "--data", st.path, "--split", "val", "--checkpoint", "last")
    assert report["count"] == recorded["counts"]["val"] and report["rows"] == "the run's own val split"
    for key in ("mean_accuracy", "mean_balanced_accuracy", "mean_f1_macro"):
        assert report["summary"][key] == pytest.approx(summary["final"][f"val_{key}"], abs=1e-9), key
    assert report["loss"] == pytest.approx(summary["final"]["val_loss"], rel=1e-5)
    assert "note" not in report  # the last checkpoint was not chosen on these rows
    best = cli_json("eval", run, "--data", st.path, "--split", "val")
    assert "optimistic" in best["note"]
    assert math.isclose(best["summary"]["mean_accuracy"], summary["best"], abs_tol=1e-9)
