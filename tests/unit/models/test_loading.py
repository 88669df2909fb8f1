"""Checkpoints rebuild the network they were written with, even after a model's defaults change."""

from __future__ import annotations

import torch

from facelab.models.classifiers import create_classifier
from facelab.models.loading import load_model
from facelab.models.checkpoint import CheckpointMeta, save_checkpoint

OLD_LAYOUT = {"channels": [32, 64, 128, 256, 384], "convs_per_stage": 2, "separable_from": 3, "pool_grid": 1}


def test_a_checkpoint_that_recorded_only_explicit_options_loads_with_its_layout(tmp_path):
    """Session-1 checkpoints stored only num_outputs/image_size; vgg_scratch's default layout changed since."""
    old = create_classifier("vgg_scratch", num_outputs=10, image_size=32, **OLD_LAYOUT).eval()
    meta = CheckpointMeta(kind="classifier", arch="vgg_scratch", arch_kwargs={"num_outputs": 10, "image_size": 32})
    save_checkpoint(tmp_path / "ckpt", model=old, meta=meta)
    model, _ = load_model(tmp_path / "ckpt", kind="classifier")
    assert [len([m for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]) for s in model.stages][0] == 2
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x), old(x))


def test_new_models_record_every_constructor_option():
    kwargs = create_classifier("vgg_scratch", num_outputs=3).arch_kwargs
    assert {"channels", "convs_per_stage", "separable_from", "pool_grid", "drop_rate", "norm_layer"} <= set(kwargs)
    rebuilt = create_classifier("vgg_scratch", **kwargs)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in create_classifier("vgg_scratch", num_outputs=3).parameters())
    assert "stem" in create_classifier("resnet18", num_outputs=3).arch_kwargs


def test_every_classifier_legacy_hook_rebuilds_a_current_checkpoint():
    """The loader asks each architecture's class for the options an old checkpoint did not record (read from
    the weights); applied to a current checkpoint, they must rebuild the same network."""
    from facelab.models.loading import MODEL_KINDS

    kind = MODEL_KINDS.create("classifier")
    for arch in kind.architectures:
        model = kind.create(arch, num_outputs=2, image_size=96 if arch == "inception_v3" else 32)
        state = model.state_dict()
        rebuilt = kind.create(arch, **{**model.arch_kwargs, **kind.model_class(arch).legacy_options(state)})
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}, arch


def test_an_unrecorded_pool_grid_is_read_from_the_head():
    """Session-2 checkpoints recorded the layout but not pool_grid; the head's width gives it back."""
    for grid in (1, 2, 4):
        old = create_classifier("vgg_scratch", num_outputs=5, image_size=64, channels=[24, 48, 96, 192, 384], pool_grid=grid)
        assert old.legacy_options(old.state_dict())["pool_grid"] == grid
