"""ONNX export and the inference engines: parity with PyTorch for every registered classifier (contract style) and
for an ensemble, dynamic batch sizes, the metadata round trip, the onnx engine's cache of a run's export, and
clear errors for bad files.

Each architecture is built tiny, with random batch-norm statistics (so that folding them is exercised), saved as
a checkpoint and exported once per module (``exported``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelKind, LabelSpec
from facelab.deploy import (
    ENGINES,
    EXPORTERS,
    OnnxEngine,
    TorchEngine,
    check_parity,
    export_onnx,
    export_path,
    load_engine,
    read_onnx_meta,
)
import facelab.deploy.onnx as deploy_onnx
from facelab.deploy.metadata import EXPORT_KEY, META_KEY
from facelab.errors import ConfigError, FacelabError
from facelab.eval.inference import forward_logits
from facelab.models.checkpoint import WEIGHTS, CheckpointMeta, save_checkpoint
from facelab.models.classifiers import Task, create_classifier, list_classifiers
from facelab.models.classifiers.ensemble import load_classifier
from facelab.utils.io import sha256_file
from tests.helpers import make_store

SPECS = (LabelSpec("Male", LabelKind.BINARY), LabelSpec("Smiling", LabelKind.BINARY),
         LabelSpec("hair_color", LabelKind.CATEGORICAL, ("black", "blond", "brown", "gray")))
TASK = Task.from_labels(SPECS)
PRIORS = {"Male": [0.6, 0.4], "Smiling": [0.5, 0.5], "hair_color": [0.4, 0.2, 0.3, 0.1]}
SIZE = 32
#: the smallest input and options each architecture takes (inception_v3: 75 px at least)
TINY = {"vgg_scratch": (SIZE, {"channels": [8, 16, 16]}), "inception_v3": (75, {})}
TOL = 1e-4


def tiny(name: str) -> tuple[int, dict]:
    return TINY.get(name, (SIZE, {}))


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


def save_tiny(path: Path, name: str, *, seed: int = 0, store=None, priors=PRIORS) -> Path:
    """A tiny untrained ``name`` checkpoint predicting SPECS (trained on ``store`` when given)."""
    torch.manual_seed(seed)
    size, options = tiny(name)
    model = create_classifier(name, num_outputs=TASK.num_logits, image_size=size, **options)
    _randomise_norms(model, seed)
    cfg = model.pretrained_cfg
    pre = (Preprocessing.of_store(store, mean=cfg.mean, std=cfg.std) if store is not None
           else Preprocessing(image_size=size, mean=cfg.mean, std=cfg.std))
    meta = CheckpointMeta(kind="classifier", arch=name, arch_kwargs=model.arch_kwargs,
                          labels=[s.to_dict() for s in SPECS], preprocessing=pre, label_priors=priors, step=7, epoch=1,
                          config={"task": TASK.to_dict(), "store": str(store.path) if store is not None else None})
    return save_checkpoint(path, model=model, meta=meta)


def images(n: int, size: int = SIZE, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def store(root):
    return make_store(root / "store", n=24, size=SIZE, label_specs=SPECS, seed=3)


@pytest.fixture(scope="module")
def exported(root, store):
    """name -> (checkpoint, exported file, ExportReport), each architecture exported once."""
    cache = {}

    def get(name: str):
        if name not in cache:
            ckpt = save_tiny(root / name, name, store=store if tiny(name)[0] == SIZE else None)
            out = root / f"{name}.onnx"
            cache[name] = (ckpt, out, export_onnx(ckpt, out))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def ensemble(root, store):
    """Two tiny vgg_scratch members of other seeds, exported as one ensemble."""
    members = [save_tiny(root / f"member{s}", "vgg_scratch", seed=s, store=store,
                         priors={**PRIORS, "Male": [0.6 + 0.1 * s, 0.4 - 0.1 * s]}) for s in (1, 2)]
    out = root / "ensemble.onnx"
    return members, out, export_onnx(members, out)


# ---- contracts: every registered classifier -----------------------------------------------------------
#: every registered classifier; inception_v3's export alone takes 12-18 s on 2 cores, so it runs with the slow tests
ARCHITECTURES = [pytest.param(n, marks=pytest.mark.slow) if n == "inception_v3" else n for n in list_classifiers()]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_classifier_exports_within_tolerance_of_pytorch(name, exported):
    ckpt, out, report = exported(name)
    p = report.parity
    assert p.ok and p.max_abs_prob_diff <= TOL and p.batch_sizes == [8, 1, 3] and p.count == 8
    assert np.isfinite(p.max_abs_logit_diff)
    assert report.size_bytes == out.stat().st_size and report.exporter == "dynamo" and report.opset >= 17
    assert report.model == name and report.sources == [str(ckpt)] and report.labels == list(TASK.names)
    assert json.loads(json.dumps(report.to_dict()))["parity"]["ok"] is True  # JSON-able
    what = "images of the training store" if tiny(name)[0] == SIZE else "random images"
    assert what in p.images


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_exported_batch_axis_is_dynamic(name, exported):
    ckpt, out, _ = exported(name)
    size = tiny(name)[0]
    model, meta = load_classifier(ckpt)
    x = meta.preprocessing.to_input(images(17, size))
    parity = check_parity(TorchEngine(model, meta), OnnxEngine.from_file(out), x, images="17 noise images",
                          batch_sizes=(1, 3))
    assert parity.batch_sizes == [17, 1, 3] and parity.ok, parity


def test_an_ensemble_exports_its_averaged_probabilities(ensemble):
    members, out, report = ensemble
    assert report.parity.ok and report.model == "ensemble of 2 vgg_scratch"
    assert report.sources == [str(m) for m in members]
    model, meta = load_classifier(members)
    x = meta.preprocessing.to_input(images(17))
    assert check_parity(TorchEngine(model, meta), load_engine(out), x, images="noise").ok
    info = read_onnx_meta(out)
    assert [s.checkpoint for s in info.export.sources] == [str(m) for m in members]
    # the ensemble's priors are its members' mean (what its averaged probabilities carry)
    assert info.checkpoint.label_priors["Male"] == pytest.approx([0.75, 0.25])
    assert info.checkpoint.label_priors["hair_color"] == pytest.approx(PRIORS["hair_color"])


# ---- metadata ----------------------------------------------------------------------------------------
def test_metadata_round_trip_gives_the_checkpoints_typed_objects(exported, store):
    ckpt, out, report = exported("vgg_scratch")
    info = read_onnx_meta(out)
    _, meta = load_classifier(ckpt)
    assert info.task == TASK and info.labels == list(SPECS)
    assert info.preprocessing == meta.preprocessing and info.preprocessing.store_hash == store.content_hash
    assert info.checkpoint.label_priors == PRIORS and info.checkpoint.arch == "vgg_scratch"
    assert info.checkpoint.arch_kwargs == meta.arch_kwargs and info.checkpoint.path == out
    src = info.export.sources[0]
    assert (src.run, src.checkpoint, src.arch, src.step, src.epoch) == (str(ckpt), str(ckpt), "vgg_scratch", 7, 1)
    assert info.export.which == "best" and info.export.exporter == "dynamo" and info.export.opset == report.opset
    assert info.export.parity["max_abs_prob_diff"] == report.parity.max_abs_prob_diff
    # plain onnx (any deployment) reads the same labels and preprocessing from metadata_props
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    raw = json.loads(props[META_KEY])
    assert [d["name"] for d in raw["labels"]] == list(TASK.names) and raw["preprocessing"]["image_size"] == SIZE
    assert json.loads(props[EXPORT_KEY])["input"] == "images"
    session = OnnxEngine.from_file(out).session
    assert [i.name for i in session.get_inputs()] == ["images"] and session.get_outputs()[0].name == "logits"


def test_parity_images_are_random_when_the_training_store_is_gone(root, store):
    moved = make_store(root / "other-store", n=8, size=SIZE, label_specs=SPECS, seed=9)  # another content hash
    ckpt = save_tiny(root / "moved", "vgg_scratch", store=moved)
    (moved.path / "manifest.json").unlink()  # no store there any more
    report = export_onnx(ckpt, root / "moved.onnx", check_batch=5, exporter="torchscript")
    assert report.parity.ok and report.parity.count == 5 and report.exporter == "torchscript"
    assert "5 random images (seed 0; the training store" in report.parity.images


def test_parity_beyond_the_tolerance_is_an_error_and_writes_nothing(exported, monkeypatch, root):
    ckpt, _, _ = exported("vgg_scratch")

    def off_by_one(model, example, opset):  # a broken exporter: the head's bias moved by 1
        proto = EXPORTERS.get("dynamo")(model, example, opset)
        for init in proto.graph.initializer:
            if init.name.endswith("fc.bias"):
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1, init.name))
        return proto

    monkeypatch.setitem(EXPORTERS._items, "broken", off_by_one)
    out = root / "broken.onnx"
    with pytest.raises(FacelabError, match=r"disagrees with PyTorch.*tolerance 0.0001.*nothing written"):
        export_onnx(ckpt, out, exporter="broken")
    assert not out.exists()


# ---- engines -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES.names())
def test_every_engine_gives_the_pytorch_logits_with_flip_tta(engine, exported, root):
    ckpt, out, _ = exported("vgg_scratch")
    model, meta = load_classifier(ckpt)
    x = meta.preprocessing.to_input(images(5))
    with torch.no_grad():
        want = forward_logits(model, torch.from_numpy(x), tta_flip=True).numpy()
    source = out if engine == "onnx" else ckpt
    got = load_engine(source, engine=engine, tta_flip=True).logits(x)
    assert got.shape == (5, TASK.num_logits) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    probs = load_engine(source, engine=engine).probabilities(x)
    assert set(probs) == set(TASK.names) and probs["hair_color"].shape == (5, 4)


def test_engine_input_of_the_wrong_shape_or_dtype_is_a_clear_error(exported):
    _, out, _ = exported("vgg_scratch")
    engine = load_engine(out)
    x = engine.preprocessing.to_input(images(2))
    for bad in (x.astype(np.float64), x[:, :, :16, :16], x[0], x[:0]):
        with pytest.raises(FacelabError, match=r"takes \(B, 3, 32, 32\) float32.*preprocessing.to_input"):
            engine.logits(bad)


def test_onnx_engine_on_a_run_folder_exports_once_and_again_when_the_weights_change(root, store, monkeypatch,
                                                                                   caplog):
    caplog.set_level(logging.INFO, logger="facelab")
    run = root / "run-a"
    ckpt = save_tiny(run / "checkpoints" / "best", "vgg_scratch", store=store)
    save_tiny(run / "checkpoints" / "last", "vgg_scratch", store=store, seed=4)
    out = export_path(run)
    assert out == run / "export" / "model.onnx" and export_path(run, which="last") == run / "export" / "model-last.onnx"
    calls = []
    real = deploy_onnx.export_onnx
    monkeypatch.setattr(deploy_onnx, "export_onnx", lambda *a, **k: calls.append(a) or real(*a, **k))
    engine = load_engine(run, engine="onnx")
    assert engine.onnx_meta.path == out and len(calls) == 1
    assert engine.onnx_meta.export.sources[0].weights_sha256 == sha256_file(ckpt / WEIGHTS)
    os.utime(ckpt / WEIGHTS, (out.stat().st_mtime + 10,) * 2)  # a newer file with the same weights (a copy)
    load_engine(run, engine="onnx")
    assert len(calls) == 1  # current: reused
    save_tiny(run / "checkpoints" / "best", "vgg_scratch", store=store, seed=5)  # training went on
    x = engine.preprocessing.to_input(images(3))
    assert not np.allclose(load_engine(run, engine="onnx").logits(x), engine.logits(x), atol=1e-3)
    assert len(calls) == 2 and "exported from other weights" in caplog.text
    out.write_bytes(out.read_bytes()[:1000])  # damaged
    load_engine(run, engine="onnx")
    assert len(calls) == 3 and read_onnx_meta(out).task == TASK
    assert "exporting it again" in caplog.text


def test_load_engine_refuses_what_it_cannot_run(exported, ensemble):
    ckpt, out, _ = exported("vgg_scratch")
    members, ens, _ = ensemble
    with pytest.raises(FacelabError, match="runs on the onnx engine.*not torch"):
        load_engine(out, engine="torch")
    with pytest.raises(FacelabError, match="export them together"):
        load_engine([out, ens])
    with pytest.raises(FacelabError, match="export the runs together first"):
        load_engine(members, engine="onnx")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_engine(out, device="cuda")
    with pytest.raises(ConfigError, match="unknown inference engine 'tensorrt'; known inference engines: onnx, torch"):
        load_engine(ckpt, engine="tensorrt")
    with pytest.raises(ConfigError, match="threads is an option of the onnx engine"):
        load_engine(ckpt, threads=2)
    assert load_engine(out, threads=1).describe()["threads"] == 1


# ---- bad files ---------------------------------------------------------------------------------------
def _bad_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its error says)."""
    folder.mkdir(exist_ok=True)
    data = good.read_bytes()
    files = {
        "text": (b"this is not a model\n", "not a readable ONNX model|not an ONNX model"),
        "png": (b"\x89PNG\r\n\x1a\n" + bytes(200), "not a readable ONNX model|not an ONNX model"),
        "empty": (b"", "not an ONNX model"),
        "half": (data[: len(data) // 2], "not a readable ONNX model|cut short"),
        "head": (data[:64], "not a readable ONNX model|cut short"),
    }
    plain = onnx.load_from_string(data)
    del plain.metadata_props[:]
    files["plain"] = (plain.SerializeToString(), "without facelab metadata.*facelab export")
    out = {}
    for name, (content, msg) in files.items():
        (folder / f"{name}.onnx").write_bytes(content)
        out[name] = (folder / f"{name}.onnx", msg)
    out["missing"] = (folder / "missing.onnx", "no such file")
    return out


def test_bad_onnx_files_are_clear_errors_naming_the_file(exported, root):
    _, good, _ = exported("vgg_scratch")
    for name, (path, msg) in _bad_files(root / "bad", good).items():
        for read in (read_onnx_meta, OnnxEngine.from_file, load_engine):
            with pytest.raises(FacelabError, match=msg) as err:
                read(path)
            assert str(path) in str(err.value), (name, read)


def _with_props(good: Path, out: Path, **changes: str) -> Path:
    model = onnx.load(str(good))
    props = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, **changes})
    out.write_bytes(model.SerializeToString())
    return out


def test_damaged_changed_or_newer_metadata_is_a_clear_error(exported, root):
    _, good, _ = exported("vgg_scratch")
    props = {p.key: p.value for p in onnx.load(str(good)).metadata_props}
    meta, info = json.loads(props[META_KEY]), json.loads(props[EXPORT_KEY])
    cases = {
        "torn.onnx": ({META_KEY: props[META_KEY][:40]}, "facelab metadata is damaged.*export it again"),
        "nolabels.onnx": ({META_KEY: json.dumps({**meta, "config": {}})}, "facelab metadata is damaged"),
        "newer.onnx": ({EXPORT_KEY: json.dumps({**info, "format_version": 99})}, "export format 99.*upgrade facelab"),
        "resized.onnx": ({META_KEY: json.dumps({**meta, "preprocessing": {**meta["preprocessing"], "image_size": 48}})},
                         r"takes images \['batch', 3, 32, 32\].*promises images \[B, 3, 48, 48\].*changed after export"),
    }
    for name, (changes, msg) in cases.items():
        path = _with_props(good, root / name, **changes)
        with pytest.raises(FacelabError, match=msg) as err:
            load_engine(path)
        assert str(path) in str(err.value)


def test_export_refuses_a_bad_out_and_options_before_loading(exported, root):
    ckpt, _, _ = exported("vgg_scratch")
    with pytest.raises(FacelabError, match=r"name the exported model \*\.onnx"):
        export_onnx(ckpt, root / "model.bin")
    (root / "folder.onnx").mkdir()
    with pytest.raises(FacelabError, match="is a folder"):
        export_onnx(ckpt, root / "folder.onnx")
    with pytest.raises(ConfigError, match="unknown ONNX exporter 'tflite'"):
        export_onnx(ckpt, root / "x.onnx", exporter="tflite")
    with pytest.raises(ConfigError, match="check_batch"):
        export_onnx(ckpt, root / "x.onnx", check_batch=0)
    with pytest.raises(FacelabError, match="nothing-here: no such folder or file"):
        export_onnx(root / "nothing-here", root / "x.onnx")
    (root / "empty-run").mkdir()
    with pytest.raises(FacelabError, match="no checkpoint found"):
        export_onnx(root / "empty-run", root / "x.onnx")
    assert not (root / "x.onnx").exists()
