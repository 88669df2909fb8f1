"""``facelab train-gen -o trainer.optim.lr=X`` trains every player at lr X (a sweep over that field measures what
it says); left unset, each player trains with the model's recommended optimizer."""

from __future__ import annotations

from pathlib import Path

from facelab.models.checkpoint import read_training_state
from facelab.models.generative import create_generative
from tests.e2e.conftest import TINY_GEN, cli_json


def _optimizer_lrs(run: Path) -> dict[str, list[float]]:
    state = read_training_state(run / "checkpoints" / "last")
    return {g: [pg["lr"] for pg in s["param_groups"]] for g, s in state["optimizers"].items()}


def test_a_run_wide_lr_reaches_both_players_of_a_gan(store, tmp_path):
    summary = cli_json("train-gen", store, "--model", "dcgan", "--epochs", 1, *TINY_GEN,
                       "-o", "trainer.optim.lr=0.00123", "--out", tmp_path, "--name", "lr")
    run = Path(summary["run_dir"])
    assert _optimizer_lrs(run) == {"generator": [0.00123], "discriminator": [0.00123]}
    settings = read_training_state(run / "checkpoints" / "last")["optimizer_settings"]
    assert settings["generator"]["name"] == "adam" and settings["generator"]["lr"] == 0.00123


def test_left_unset_each_player_trains_with_the_recommendation(dcgan_run):
    recommended = create_generative("dcgan", image_size=32, width=8, latent_dim=8).recommended_optimizers()
    assert _optimizer_lrs(dcgan_run) == {g: [r["lr"]] for g, r in recommended.items()}


def test_a_group_lr_wins_for_its_player(store, tmp_path):
    summary = cli_json("train-gen", store, "--model", "dcgan", "--epochs", 1, *TINY_GEN,
                       "-o", "trainer.optim.lr=0.00123", "-o", "trainer.optim.groups.discriminator.lr=0.0005",
                       "--out", tmp_path, "--name", "group")
    assert _optimizer_lrs(Path(summary["run_dir"])) == {"generator": [0.00123], "discriminator": [0.0005]}


def test_a_checkpoint_written_before_run_wide_settings_applied_resumes_as_it_trained(store, tmp_path):
    """Older versions ignored trainer.optim.* for generative models: such a run (its config holding a run-wide lr
    that never reached the optimizer, its training state no optimizer_settings) goes on with the recommendation."""
    import torch
    import yaml

    run = Path(cli_json("train-gen", store, "--model", "dcgan", "--epochs", 1, *TINY_GEN, "--out", tmp_path,
                        "--name", "older")["run_dir"])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["trainer"]["optim"].update({"name": "adamw", "lr": 0.05, "weight_decay": 0.05, "momentum": 0.9,
                                    "betas": [0.9, 0.999]})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    state_file = run / "checkpoints" / "last" / "training.pt"
    state = torch.load(state_file, weights_only=True)
    del state["optimizer_settings"]
    torch.save(state, state_file)
    recommended = create_generative("dcgan", image_size=32, width=8, latent_dim=8).recommended_optimizers()
    cli_json("train-gen", "--resume", run, "--epochs", 2)
    assert _optimizer_lrs(run) == {g: [r["lr"]] for g, r in recommended.items()}
