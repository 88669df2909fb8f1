"""``facelab export`` and ``facelab predict --engine onnx`` end to end on the shared tiny classifier run.

The run folder is copied before anything exports into it (``RUN/export/``), so the shared run stays as it was.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.data.store import Store
from facelab.deploy import read_onnx_meta
from tests.e2e.conftest import cli, cli_error, cli_json
from tests.helpers import near_decision_boundary

TOL = 1e-4


def squash(text: str) -> str:
    return "".join(text.split())


def read_csv(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    return header, {r[0]: r[1:] for r in rows}


def assert_same_predictions(a: Path, b: Path) -> None:
    """Two predict CSVs agree: the same columns and keys, probabilities within TOL, the same decisions except
    where a probability sits within TOL of the threshold (or of a tie between classes)."""
    header, rows_a = read_csv(a)
    header_b, rows_b = read_csv(b)
    assert header == header_b and list(rows_a) == list(rows_b)
    p_cols = [i for i, c in enumerate(header[1:]) if c.startswith("p_")]
    for key, ra in rows_a.items():
        rb = rows_b[key]
        pa, pb = np.array([float(ra[i]) for i in p_cols]), np.array([float(rb[i]) for i in p_cols])
        np.testing.assert_allclose(pa, pb, atol=TOL, rtol=0, err_msg=key)
        for i, col in enumerate(header[1:]):
            if col.startswith("pred_") and ra[i] != rb[i]:
                label = col[len("pred_"):]
                p = [float(ra[j]) for j, c in enumerate(header[1:]) if c.split("=")[0] == f"p_{label}"]
                assert near_decision_boundary(p if len(p) == 1 else [p], TOL).all(), (key, col)


@pytest.fixture(scope="module")
def run(clf_run, tmp_path_factory) -> Path:
    """A copy of the shared classifier run (exports write into the run folder)."""
    copy = tmp_path_factory.mktemp("export") / clf_run[0].name
    shutil.copytree(clf_run[0], copy)
    return copy


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return out, cli_json("export", run, "--format", "onnx", "--out", out)


@pytest.fixture(scope="module")
def faces(store, tmp_path_factory) -> Path:
    """A folder of 6 store images as lossless PNGs."""
    folder = tmp_path_factory.mktemp("faces")
    st = Store.open(store)
    for i in range(6):
        Image.fromarray(np.asarray(st.images[i * 7])).save(folder / f"face{i}.png")
    return folder


def test_export_writes_a_checked_model_with_the_runs_labels_and_preprocessing(exported, run, store):
    out, report = exported
    st = Store.open(store)
    assert report["out"] == str(out) and report["size_bytes"] == out.stat().st_size > 0
    assert report["exporter"] == "dynamo" and report["opset"] >= 17 and report["sources"] == [str(run)]
    parity = report["parity"]
    assert parity["ok"] and parity["max_abs_prob_diff"] <= TOL and parity["batch_sizes"] == [8, 1, 3]
    assert parity["images"].startswith("8 images of the training store")  # real images: the store is here
    meta = read_onnx_meta(out)
    assert [s.name for s in meta.labels] == st.label_names == report["labels"]
    assert meta.preprocessing.image_size == st.image_size and meta.preprocessing.store_hash == st.content_hash
    assert set(meta.checkpoint.label_priors) == set(st.label_names)


def test_export_prints_the_parity_figures_and_the_size(run, tmp_path):
    out = tmp_path / "m.onnx"
    result = cli("export", run, "--out", out, "--exporter", "torchscript", "--check-batch", 4)
    text = squash(result.stderr)  # the console wraps long lines wherever the terminal ends
    for part in (f"exported vgg_scratch to {out}: ", " MB, opset ", "torchscript exporter",
                 "parity PyTorch vs onnxruntime on 4 images of the training store", "batch sizes 4, 1, 3",
                 "max |difference| of logits", "of probabilities", "(tolerance 0.0001)"):
        assert squash(part) in text, part
    assert out.is_file()


def test_export_without_out_writes_the_file_the_onnx_engine_runs(run, faces, tmp_path, caplog):
    report = cli_json("export", run, "--checkpoint", "last")
    assert report["out"] == str(run / "export" / "model-last.onnx") and report["which"] == "last"
    caplog.set_level(logging.INFO, logger="facelab")
    cli_json("predict", run, faces, "--engine", "onnx", "--checkpoint", "last", "--out", tmp_path / "p.csv")
    assert "exporting" not in caplog.text  # the same weights: the file is reused


@pytest.mark.parametrize("tta", [False, True])
def test_predict_on_onnx_writes_the_torch_csv(run, exported, store, tmp_path, tta):
    flag = ["--tta-flip"] if tta else []
    torch_csv, onnx_csv, file_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv", tmp_path / "file.csv"
    cli_json("predict", run, store, "--out", torch_csv, *flag)
    report = cli_json("predict", run, store, "--out", onnx_csv, "--engine", "onnx", *flag)
    assert report["count"] == len(Store.open(store))
    assert (run / "export" / "model.onnx").is_file()  # the run's own export, made on first use
    assert_same_predictions(torch_csv, onnx_csv)
    cli_json("predict", exported[0], store, "--out", file_csv, *flag)  # the exported file given directly
    assert_same_predictions(torch_csv, file_csv)


def test_predict_a_folder_with_an_exported_file_alone(exported, run, faces, tmp_path):
    cli_json("predict", run, faces, "--out", tmp_path / "torch.csv")
    report = cli_json("predict", exported[0], faces, "--out", tmp_path / "onnx.csv")
    assert report["count"] == 6 and report["skipped_count"] == 0
    assert_same_predictions(tmp_path / "torch.csv", tmp_path / "onnx.csv")


def test_bad_model_files_are_clear_errors(exported, faces, tmp_path):
    data = exported[0].read_bytes()
    cases = {"notes.onnx": b"not a model at all\n", "cut.onnx": data[: len(data) // 3]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        err = str(cli_error("predict", tmp_path / name, faces, "--out", tmp_path / "x.csv"))
        assert str(tmp_path / name) in err and ("not a readable ONNX model" in err or "cut short" in err), err
    err = str(cli_error("predict", tmp_path / "missing.onnx", faces, "--out", tmp_path / "x.csv"))
    assert "missing.onnx: no such file" in err
    assert not (tmp_path / "x.csv").exists()


def test_export_refuses_generative_runs_and_bad_options(cvae_run, run, tmp_path):
    err = str(cli_error("export", cvae_run, "--out", tmp_path / "g.onnx"))
    assert str(cvae_run) in err and "holds a model of kind generative" in err and "pass a classifier run" in err
    assert "facelab exports onnx only" in str(cli_error("export", run, "--format", "tflite", "--out", tmp_path / "a.onnx"))
    assert "name the .onnx file to write (--out ensemble.onnx)" in str(cli_error("export", run, run))
    assert "name the exported model *.onnx" in str(cli_error("export", run, "--out", tmp_path / "model.bin"))
    assert "unknown ONNX exporter 'jit'" in str(cli_error("export", run, "--out", tmp_path / "a.onnx", "--exporter", "jit"))
    assert "choose best or last" in str(cli_error("export", run, "--checkpoint", "first"))
    assert not list(tmp_path.iterdir())


def test_predict_engine_errors(exported, run, faces, tmp_path):
    assert "unknown inference engine 'trt'" in str(cli_error("predict", run, faces, "--engine", "trt",
                                                             "--out", tmp_path / "x.csv"))
    err = str(cli_error("predict", exported[0], faces, "--engine", "torch", "--out", tmp_path / "x.csv"))
    assert "runs on the onnx engine" in err
