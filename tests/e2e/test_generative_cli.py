"""``facelab train-gen / sample / interpolate / blend`` end to end, and a GAN resumed after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from facelab.data.store import Store
from facelab.runs.folder import create_run_dir
from facelab.models.checkpoint import STATE, WEIGHTS, read_meta, read_training_state, read_weights
from facelab.train.generative import GenerativeRunConfig, train_generative
from tests.e2e.conftest import TINY_GEN, cli, cli_error, cli_json
from tests.helpers import KillAtStep

TILE = 32 + 2  # grid cell: image side + padding


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def grid_shape(n: int, ncol: int = 8) -> tuple[int, int]:
    """(height, width) of a grid of n 32-px images, ncol per row."""
    cols = min(ncol, n)
    rows = -(-n // cols)
    return rows * TILE + 2, cols * TILE + 2


@pytest.fixture(scope="module")
def hair_cvae_run(store, tmp_path_factory) -> Path:
    """A cVAE conditioned on the categorical hair_color (black, blond, brown, gray)."""
    out = tmp_path_factory.mktemp("hair")
    summary = cli_json("train-gen", store, "--model", "cvae", "--cond", "hair_color", "--epochs", 1, *TINY_GEN,
                       "--out", out, "--name", "hair")
    return Path(summary["run_dir"])


# ---- train-gen ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cvae_run", "dcgan_run"])
def test_train_gen_writes_samples_report_and_checkpoints(which, request, store):
    run = request.getfixturevalue(which)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["kind"] == "generative"
    epochs = summary["epochs"]
    for name in ("config.yaml", "env.json", "metrics.jsonl", "curves.png", "report.html"):
        assert (run / name).is_file(), name
    latest = run / "samples" / "latest.png"
    assert png(latest).shape == (*grid_shape(64), 3)
    assert (run / "samples" / f"epoch_{epochs:03d}.png").read_bytes() == latest.read_bytes()
    assert (run / "checkpoints" / "best" / WEIGHTS).is_file() and (run / "checkpoints" / "last" / STATE).is_file()
    meta = read_meta(run)
    assert meta.kind == "generative" and meta.preprocessing.image_size == 32
    assert meta.preprocessing.store_hash == Store.open(store).content_hash
    html = (run / "report.html").read_text()
    assert "Samples" in html and html.count("data:image/png;base64,") >= 2


def test_cvae_run_is_conditioned_on_its_labels(cvae_run, store):
    summary = json.loads((cvae_run / "summary.json").read_text())
    assert summary["conditions"] == ["Male"] and summary["model"] == "cvae"
    assert read_meta(cvae_run).labels == [Store.open(store).spec("Male").to_dict()]
    history = [json.loads(line) for line in (cvae_run / "metrics.jsonl").read_text().splitlines()]
    assert "val_loss" in history[-1] and np.isfinite(history[-1]["val_loss"])


def test_gan_keeps_its_generative_defaults_when_epochs_are_given(dcgan_run):
    """--epochs must not replace the generative trainer defaults (constant lr, no val monitor)."""
    cfg = GenerativeRunConfig.from_yaml(dcgan_run / "config.yaml")
    assert cfg.trainer.schedule.name == "constant" and cfg.trainer.epochs == 2
    history = [json.loads(line) for line in (dcgan_run / "metrics.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == [pytest.approx(2e-4)] * 2  # dcgan's recommended Adam lr, unscheduled


def test_train_gen_errors_come_before_any_run_folder(store, tmp_path):
    out = tmp_path / "runs"
    err = cli_error("train-gen", store, "--model", "stylegan9", "--out", out)
    assert "stylegan9" in str(err) and "cvae" in str(err)
    err = cli_error("train-gen", store, "--model", "cvae", "--cond", "Mustache", "--out", out)
    assert "Mustache" in str(err) and "Smiling" in str(err)
    err = cli_error("train-gen", store, "--model", "dcgan", "--cond", "Male", "--out", out)
    assert "unconditional" in str(err)
    assert not out.exists()


def test_train_gen_dry_run(store, tmp_path):
    result = cli("train-gen", store, "--model", "cvae", "--cond", "Male,hair_color", "--dry-run",
                 "--out", tmp_path / "r")
    cfg = GenerativeRunConfig.from_dict(yaml.safe_load(result.stdout))
    assert cfg.conditions == ["Male", "hair_color"] and cfg.model == "cvae"
    assert not (tmp_path / "r").exists()


# ---- sample -------------------------------------------------------------------------------------
def test_sample_a_conditioned_grid(cvae_run, tmp_path):
    res = cli_json("sample", cvae_run, "--n", 16, "--grid", tmp_path / "g.png", "--cond", "Male=1",
                   "--images", tmp_path / "each")
    assert res["cond"] == {"Male": 1} and res["n"] == 16
    grid = png(tmp_path / "g.png")
    assert grid.shape == (*grid_shape(16), 3)
    assert len(res["images"]) == 16 and png(Path(res["images"][0])).shape == (32, 32, 3)
    # the first tile of the grid is the first image
    np.testing.assert_array_equal(grid[2:34, 2:34], png(Path(res["images"][0])))
    # same seed -> same images; the condition changes them
    cli("sample", cvae_run, "--n", 16, "--grid", tmp_path / "again.png", "--cond", "Male=1")
    np.testing.assert_array_equal(png(tmp_path / "again.png"), grid)
    cli("sample", cvae_run, "--n", 16, "--grid", tmp_path / "female.png", "--cond", "Male=0")
    assert not np.array_equal(png(tmp_path / "female.png"), grid)


def test_sample_rejects_a_condition_the_model_does_not_have(cvae_run, tmp_path):
    err = cli_error("sample", cvae_run, "--n", 4, "--grid", tmp_path / "g.png", "--cond", "Eyeglasses=1")
    assert "Eyeglasses" in str(err) and "Male (binary" in str(err)
    err = cli_error("sample", cvae_run, "--n", 4, "--grid", tmp_path / "g.png", "--cond", "Male=2")
    assert "invalid value 2" in str(err)
    assert not (tmp_path / "g.png").exists()


def test_sample_rejects_classifier_runs_and_conditions_on_unconditional_models(clf_run, dcgan_run, tmp_path):
    err = cli_error("sample", clf_run[0], "--n", 4, "--grid", tmp_path / "g.png")
    assert "classifier" in str(err) and "generative" in str(err)
    err = cli_error("sample", dcgan_run, "--n", 4, "--grid", tmp_path / "g.png", "--cond", "Male=1")
    assert "unconditional" in str(err)
    res = cli_json("sample", dcgan_run, "--n", 4, "--grid", tmp_path / "g.png")
    assert png(Path(res["grid"])).shape == (*grid_shape(4), 3)


# ---- interpolate --------------------------------------------------------------------------------
def test_interpolate_between_latents(cvae_run, tmp_path):
    res = cli_json("interpolate", cvae_run, "--out", tmp_path / "s.png", "--steps", 6, "--rows", 2)
    assert res["between_real_images"] is False
    assert png(tmp_path / "s.png").shape == (2 * TILE + 2, 6 * TILE + 2, 3)


def test_interpolate_between_two_real_images(cvae_run, store, tmp_path):
    res = cli_json("interpolate", cvae_run, "--out", tmp_path / "s.png", "--data", store, "--pair", "0,1",
                   "--steps", 5, "--cond", "Male=1")
    assert res["between_real_images"] is True
    strip = png(tmp_path / "s.png")
    assert strip.shape == (TILE + 2, 7 * TILE + 2, 3)  # real A | 5 decoded | real B
    images = np.asarray(Store.open(store).images[[0, 1]])
    np.testing.assert_array_equal(strip[2:34, 2:34], images[0])
    np.testing.assert_array_equal(strip[2:34, 2 + 6 * TILE: 2 + 6 * TILE + 32], images[1])


def test_interpolate_errors(cvae_run, dcgan_run, store, tmp_path):
    err = cli_error("interpolate", dcgan_run, "--out", tmp_path / "s.png", "--data", store, "--pair", "0,1")
    assert "no encoder" in str(err)
    err = cli_error("interpolate", cvae_run, "--out", tmp_path / "s.png", "--data", store, "--pair", "0,100000")
    assert "100000" in str(err) and "outside the store" in str(err)
    err = cli_error("interpolate", cvae_run, "--out", tmp_path / "s.png", "--pair", "0,1")
    assert "--data" in str(err)
    err = cli_error("interpolate", cvae_run, "--out", tmp_path / "s.png", "--pair", "zero,one")
    assert "--pair" in str(err)


# ---- blend --------------------------------------------------------------------------------------
def test_blend_two_classes_of_a_categorical_condition(hair_cvae_run, tmp_path):
    res = cli_json("blend", hair_cvae_run, "--classes", "black,blond", "--n", 8, "--out", tmp_path / "b.png")
    assert res["method"] == "condition blend" and res["classes"] == ["black", "blond"]
    blend = png(tmp_path / "b.png")
    assert blend.shape == (*grid_shape(8), 3)
    # the end points of the blend are the two classes themselves (same seed, same latents)
    for weight, cls in ((0, "black"), (1, "blond")):
        cli("blend", hair_cvae_run, "--classes", "black,blond", "--n", 8, "--weight", weight,
            "--out", tmp_path / "e.png")
        cli("sample", hair_cvae_run, "--n", 8, "--cond", f"hair_color={cls}", "--grid", tmp_path / "c.png")
        np.testing.assert_array_equal(png(tmp_path / "e.png"), png(tmp_path / "c.png"))
    assert not np.array_equal(png(tmp_path / "e.png"), blend)


def tile(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The 32-px image at (row, col) of a grid."""
    y, x = 2 + row * TILE, 2 + col * TILE
    return grid[y:y + TILE - 2, x:x + TILE - 2]


def test_blend_sweep_keeps_one_latent_per_row_from_one_class_to_the_other(hair_cvae_run, tmp_path):
    res = cli_json("blend", hair_cvae_run, "--classes", "black,blond", "--sweep", 3, "--n", 4,
                   "--out", tmp_path / "s.png")
    assert res["weights"] == [0.0, 0.5, 1.0] and res["rows"] == 4 and res["weight"] is None
    sweep = png(tmp_path / "s.png")
    assert sweep.shape == (4 * TILE + 2, 3 * TILE + 2, 3)
    for col, cls in ((0, "black"), (2, "blond")):  # the end columns: the classes themselves, the same latents
        cli("sample", hair_cvae_run, "--n", 4, "--cond", f"hair_color={cls}", "--grid", tmp_path / "c.png")
        same = png(tmp_path / "c.png")
        for row in range(4):  # a batch of 12 vs one of 4: float noise may move a pixel across a rounding step
            np.testing.assert_allclose(tile(sweep, row, col).astype(int), tile(same, 0, row).astype(int), atol=1, rtol=0)
    assert not np.array_equal(tile(sweep, 0, 1), tile(sweep, 0, 0))
    assert cli_json("blend", hair_cvae_run, "--classes", "black,blond", "--sweep", 5,
                    "--out", tmp_path / "d.png")["rows"] == 8  # default rows with --sweep
    err = cli_error("blend", hair_cvae_run, "--classes", "black,blond", "--sweep", 1, "--out", tmp_path / "x.png")
    assert "at least 2 weights" in str(err)


def test_unconditional_autoencoder_blends_class_latent_means(store, tmp_path):
    vae = cli_json("train-gen", store, "--model", "vae", "--epochs", 1, *TINY_GEN, "--out", tmp_path, "--name", "vae")
    run = Path(vae["run_dir"])
    res = cli_json("blend", run, "--classes", "black,blond", "--data", store, "--sweep", 3, "--n", 2,
                   "--out", tmp_path / "m.png")
    assert res["method"] == "class latent-mean blend" and png(tmp_path / "m.png").shape == (2 * TILE + 2, 3 * TILE + 2, 3)
    grid = png(tmp_path / "m.png")
    assert not np.array_equal(tile(grid, 0, 0), tile(grid, 0, 2)) and not np.array_equal(tile(grid, 0, 0), tile(grid, 1, 0))
    err = cli_error("blend", run, "--classes", "black,blond", "--out", tmp_path / "x.png")
    assert "needs --data STORE" in str(err)


def test_blend_errors(hair_cvae_run, cvae_run, tmp_path):
    err = cli_error("blend", hair_cvae_run, "--classes", "black,purple", "--out", tmp_path / "b.png")
    assert "purple" in str(err) and "blond" in str(err)
    err = cli_error("blend", cvae_run, "--classes", "black,blond", "--out", tmp_path / "b.png")
    assert "categorical" in str(err)
    err = cli_error("blend", hair_cvae_run, "--classes", "black", "--out", tmp_path / "b.png")
    assert "exactly two" in str(err)
    err = cli_error("blend", hair_cvae_run, "--classes", "black,blond", "--weight", 1.5, "--out", tmp_path / "b.png")
    assert "[0, 1]" in str(err)


# ---- resume a GAN after a kill in the middle of an epoch -------------------------------------------
def test_gan_resumes_mid_epoch_to_the_same_weights(dcgan_run, tmp_path):
    cfg = GenerativeRunConfig.from_yaml(dcgan_run / "config.yaml")
    run = create_run_dir(f"gen-{cfg.model}", name="killed", root=tmp_path, config=cfg)
    steps_per_epoch = json.loads((dcgan_run / "metrics.jsonl").read_text().splitlines()[0])["step"]
    with pytest.raises(KeyboardInterrupt):
        train_generative(cfg, run_dir=run, callbacks=[KillAtStep(steps_per_epoch + 3, exc=KeyboardInterrupt)])
    state = read_training_state(run / "checkpoints" / "last")
    assert (state["epoch"], state["batches_done"]) == (1, 2)
    summary = cli_json("train-gen", "--resume", run)
    assert summary["epochs"] == 2 and summary["steps"] == 2 * steps_per_epoch
    for which in ("last", "best"):  # best = the EMA generator
        a, b = read_weights(run / "checkpoints" / which), read_weights(dcgan_run / "checkpoints" / which)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(png(run / "samples" / "latest.png"), png(dcgan_run / "samples" / "latest.png"))


# ---- extend a finished run -----------------------------------------------------------------------
def test_resume_with_more_epochs_extends_a_finished_run_to_the_uninterrupted_weights(store, dcgan_run, tmp_path):
    one = cli_json("train-gen", store, "--model", "dcgan", "--epochs", 1, *TINY_GEN, "-o",
                   "trainer.checkpoint_every_minutes=0.000001", "--out", tmp_path, "--name", "short")
    run = Path(one["run_dir"])
    assert one["epochs"] == 1 and one["stop_reason"] == "completed"
    summary = cli_json("train-gen", "--resume", run, "--epochs", 2)
    assert summary["epochs"] == 2 and GenerativeRunConfig.from_yaml(run / "config.yaml").trainer.epochs == 2
    a, b = read_weights(run / "checkpoints" / "last"), read_weights(dcgan_run / "checkpoints" / "last")
    for k in a:  # 1 epoch + 1 more = the 2-epoch run (same seed, data order and optimizer state)
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_resume_with_more_minutes_trains_on_after_a_time_budget_stop(store, tmp_path):
    first = cli_json("train-gen", store, "--model", "dcgan", "--epochs", 3, *TINY_GEN, "-o",
                     "trainer.time_budget_minutes=0.00001", "-o", "trainer.checkpoint_every_minutes=0.000001",
                     "--out", tmp_path, "--name", "budget")
    run = Path(first["run_dir"])
    assert first["stop_reason"].startswith("time budget") and first["steps"] == 1
    again = cli_json("train-gen", "--resume", run, "--minutes", 60)
    assert again["stop_reason"] == "completed" and again["epochs"] == 3 and again["steps"] > first["steps"]
    unchanged = cli_json("train-gen", "--resume", run)  # nothing raised: nothing to do
    assert unchanged["steps"] == again["steps"]


def test_minutes_alone_is_the_only_limit(store, tmp_path):
    result = cli("train-gen", store, "--model", "dcgan", "--minutes", 5, "--dry-run", "--out", tmp_path)
    trainer = GenerativeRunConfig.from_dict(yaml.safe_load(result.stdout)).trainer
    assert trainer.time_budget_minutes == 5 and trainer.epochs == 1_000_000  # not the default 20 epochs
    result = cli("train-gen", store, "--model", "dcgan", "--minutes", 5, "--epochs", 3, "--dry-run", "--out", tmp_path)
    assert GenerativeRunConfig.from_dict(yaml.safe_load(result.stdout)).trainer.epochs == 3


def test_resume_refuses_options_it_would_ignore(dcgan_run):
    result = cli("train-gen", "--resume", dcgan_run, "--model", "vae", "-o", "model_options.width=64", ok=False)
    assert result.exit_code == 2
    assert "only --epochs and --minutes can change" in result.output and "--model, --option" in result.output
