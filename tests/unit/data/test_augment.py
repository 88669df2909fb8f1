"""BatchAugment: presets, identity at p=0, determinism, flip label map, random erasing, config errors."""

from __future__ import annotations

import pytest
import torch
import yaml

from facelab.data.augment import AUGMENT_PRESETS, AugmentConfig, BatchAugment
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError

YAW = LabelSpec("yaw", LabelKind.CATEGORICAL, ("left", "frontal", "right"))
SPECS = [LabelSpec("Male", LabelKind.BINARY), YAW]
FLIP_YAW = {"yaw": {"left": "right"}}


def _images(b: int = 16, s: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, s, s, generator=g)  # (B, 3, S, S) in [0, 1]


def test_presets_are_registered_and_keep_shapes():
    assert {"none", "flip", "standard", "strong"} <= set(AUGMENT_PRESETS.names())
    x = _images()
    for name in AUGMENT_PRESETS.names():
        out, y = BatchAugment.from_preset(name)(x)
        assert out.shape == x.shape and out.dtype == x.dtype and y is None
        assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5
    with pytest.raises(ConfigError, match="known augmentation presets: flip, geometric, none, simclr, standard, strong, wild"):
        AugmentConfig.preset("tempest")


def test_wild_preset_makes_black_and_white_and_blurred_photos():
    x = _images(b=64)
    gray, _ = BatchAugment.from_preset("wild", grayscale=1.0, hflip=0.0, affine=None, color_jitter=None, blur=None)(x)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-6)
    blurred, _ = BatchAugment.from_preset("wild", blur={"p": 1.0, "sigma": (1.0, 1.0)}, hflip=0.0, affine=None,
                                          color_jitter=None, grayscale=0.0)(x)
    assert blurred.diff(dim=3).abs().mean() < 0.7 * x.diff(dim=3).abs().mean()  # fewer sharp pixel-to-pixel jumps
    some, _ = BatchAugment.from_preset("wild")(x, seed=0)
    share_gray = ((some[:, 0] - some[:, 1]).abs().amax(dim=(1, 2)) < 1e-6).float().mean()
    assert 0.05 <= share_gray <= 0.45  # about 20% of the images, drawn per image
    with pytest.raises(ConfigError, match="sigma"):
        AugmentConfig.preset("wild", blur={"sigma": (2.0, 1.0)})


def test_preset_overrides_and_yaml_round_trip():
    cfg = AugmentConfig.preset("standard", hflip=0.0)
    assert cfg.hflip == 0.0 and cfg.affine is not None
    again = AugmentConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    with pytest.raises(ConfigError, match="hflipp"):
        AugmentConfig.from_dict({"hflipp": 0.5})
    with pytest.raises(ConfigError, match="hflip"):
        AugmentConfig.preset("flip", hflip=1.5)


def test_probability_zero_is_identity():
    x, y = _images(), torch.randint(0, 2, (16, 2))
    zero = AugmentConfig.from_dict({
        "hflip": 0.0, "grayscale": 0.0,
        "affine": {"p": 0.0}, "color_jitter": {"p": 0.0}, "random_erasing": {"p": 0.0},
    })
    assert zero.is_identity and AugmentConfig.preset("none").is_identity
    for cfg in (zero, AugmentConfig.preset("none")):
        out, y_out = BatchAugment(cfg)(x, y)
        assert torch.equal(out, x) and torch.equal(y_out, y)


def test_deterministic_under_manual_seed_and_explicit_seed():
    aug, x = BatchAugment.from_preset("strong"), _images()
    torch.manual_seed(0)
    a, _ = aug(x)
    torch.manual_seed(0)
    b, _ = aug(x)
    c, _ = aug(x)
    assert torch.equal(a, b) and not torch.equal(b, c)
    torch.manual_seed(1)
    s1, _ = aug(x, seed=42)
    state = torch.get_rng_state()
    s2, _ = aug(x, seed=42)
    assert torch.equal(s1, s2) and torch.equal(state, torch.get_rng_state())  # global RNG untouched
    aug.to(torch.float64)  # moving the module (e.g. .to(device)) keeps parameters drawn on the CPU generator
    assert torch.equal(aug(x, seed=42)[0], s1)


def test_flip_swaps_left_and_right_labels():
    aug = BatchAugment(AugmentConfig(hflip=1.0, label_flip_map=FLIP_YAW), label_specs=SPECS)
    x = _images(3)
    y = torch.tensor([[1, 0], [0, 1], [1, 2]])  # left, frontal, right
    out, y_out = aug(x, y)
    assert torch.equal(out, torch.flip(x, dims=[-1]))
    assert y_out.tolist() == [[1, 2], [0, 1], [1, 0]]  # a flipped 'left' face is a 'right' face
    assert y.tolist() == [[1, 0], [0, 1], [1, 2]]  # input labels untouched


def test_flip_fixes_exactly_the_flipped_rows():
    aug = BatchAugment(AugmentConfig(hflip=0.5, label_flip_map=FLIP_YAW), label_specs=SPECS)
    x = _images(64)
    y = torch.stack([torch.zeros(64, dtype=torch.long), torch.arange(64) % 3], dim=1)
    torch.manual_seed(3)
    out, y_out = aug(x, y)
    flipped = (out == torch.flip(x, dims=[-1])).flatten(1).all(dim=1)
    assert 10 < flipped.sum() < 54 and torch.equal(out[~flipped], x[~flipped])
    swap = torch.tensor([2, 1, 0])
    assert torch.equal(y_out[:, 1], torch.where(flipped, swap[y[:, 1]], y[:, 1]))
    assert torch.equal(y_out[:, 0], y[:, 0])


def test_no_flip_no_label_change():
    aug = BatchAugment(AugmentConfig(hflip=0.0, color_jitter={"p": 1.0}, label_flip_map=FLIP_YAW), label_specs=SPECS)
    y = torch.tensor([[0, 0], [1, 2]])
    _, y_out = aug(_images(2), y)
    assert torch.equal(y_out, y) and not aug.flips_labels


def test_random_erasing_changes_pixels():
    x = _images(8, 32) * 0.5 + 0.25  # no pixel is 0 before erasing
    aug = BatchAugment(AugmentConfig(random_erasing={"p": 1.0, "scale": (0.1, 0.2), "value": 0.0}))
    out, _ = aug(x, seed=0)
    erased = (out == 0).flatten(1).sum(dim=1) / (3 * 32 * 32)  # per image
    assert torch.all(erased > 0.05) and torch.all(erased < 0.35)
    assert torch.equal(out[out != 0], x[out != 0])  # everything else untouched


def test_flip_map_errors():
    with pytest.raises(ConfigError, match="'right' would swap with both 'left' and 'frontal'"):
        AugmentConfig.from_dict({"label_flip_map": {"yaw": {"left": "right", "frontal": "right"}}})
    with pytest.raises(ConfigError, match="not among the labels"):
        BatchAugment(AugmentConfig(hflip=0.5, label_flip_map={"pose": {"a": "b"}}), label_specs=SPECS)
    with pytest.raises(ConfigError, match="'up' is not a class of 'yaw'"):
        BatchAugment(AugmentConfig(hflip=0.5, label_flip_map={"yaw": {"up": "left"}}), label_specs=SPECS)
    with pytest.raises(ConfigError, match="numeric"):
        BatchAugment(AugmentConfig(label_flip_map={"age": {1: 2}}), label_specs=[LabelSpec("age", LabelKind.NUMERIC)])
    aug = BatchAugment(AugmentConfig(hflip=1.0, label_flip_map=FLIP_YAW), label_specs=SPECS)
    with pytest.raises(ConfigError, match="built for 2 labels"):
        aug(_images(2), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        aug(torch.rand(2, 1, 8, 8))


def test_left_right_labels_are_mirrored_automatically_when_flipping():
    import torch

    from facelab.data.augment import BatchAugment
    from facelab.data.schema import LabelKind, LabelSpec

    specs = [LabelSpec("Smiling", LabelKind.BINARY), LabelSpec("yaw", LabelKind.CATEGORICAL, ("left", "center", "right"))]
    aug = BatchAugment.from_preset("flip", label_specs=specs, hflip=1.0)
    x = torch.rand(4, 3, 8, 8)
    y = torch.tensor([[1, 0], [0, 1], [1, 2], [0, 0]])
    x2, y2 = aug(x, y, seed=0)
    assert torch.equal(x2, torch.flip(x, dims=[3]))
    assert y2[:, 1].tolist() == [2, 1, 0, 2] and y2[:, 0].tolist() == [1, 0, 1, 0]
