"""Condition specs and encoding, and the blend helpers (condition mixes, class latent means, interpolation)."""

from __future__ import annotations

import pytest
import torch

from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, FacelabError
from facelab.models.generative import (
    Condition,
    GenerativeConfig,
    blend_conditions,
    class_latent_means,
    create_generative,
    encode_label_rows,
    interpolate_latents,
)
from facelab.models.generative.conditions import encode_condition_dict

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CONDS = [
    Condition(name="Smiling", kind="binary"),
    Condition(name="label", kind="categorical", classes=CIFAR),
]


def test_condition_validation_errors_name_the_problem():
    with pytest.raises(ConfigError, match="needs `classes`"):
        Condition.from_dict({"name": "label", "kind": "categorical"})
    with pytest.raises(ConfigError, match="2 names"):
        Condition.from_dict({"name": "Smiling", "kind": "binary", "classes": ["a", "b", "c"]})
    with pytest.raises(ConfigError, match="unique"):
        Condition.from_dict({"name": "x", "kind": "categorical", "classes": ["a", "a"]})
    with pytest.raises(ConfigError, match="uniquely named"):
        create_generative("cgan", conditions=[{"name": "a", "kind": "binary"}] * 2)
    with pytest.raises(ConfigError, match="cond_dim=3"):
        create_generative("cgan", conditions=[{"name": "a", "kind": "binary"}], cond_dim=3)


def test_condition_from_label_spec():
    assert Condition.from_label_spec(LabelSpec("Male", LabelKind.BINARY)).value_names == ("no", "yes")
    spec = LabelSpec("hair", LabelKind.CATEGORICAL, ("black", "blond"))
    assert Condition.from_label_spec(spec) == Condition(name="hair", kind="categorical", classes=["black", "blond"])
    with pytest.raises(ConfigError, match="numeric"):
        Condition.from_label_spec(LabelSpec("age", LabelKind.NUMERIC))


def test_encode_condition_dict_multi_hot_and_one_hot():
    v = encode_condition_dict(CONDS, {"Smiling": "yes", "label": "horse"})
    assert v.shape == (11,) and v[0] == 1 and v[1 + 7] == 1 and v.sum() == 2
    v = encode_condition_dict(CONDS, {"label": 2})  # missing binary -> 0
    assert v[0] == 0 and v[3] == 1
    with pytest.raises(FacelabError, match="label \\(categorical: 0=airplane"):
        encode_condition_dict(CONDS, {"label": 10})
    with pytest.raises(FacelabError, match="unknown condition"):
        encode_condition_dict(CONDS, {"Smilling": 1, "label": 0})


def test_encode_label_rows_matches_dict_encoding():
    rows = torch.tensor([[1, 7], [0, 2]])
    out = encode_label_rows(CONDS, rows)
    assert torch.equal(out[0], encode_condition_dict(CONDS, {"Smiling": 1, "label": 7}))
    assert torch.equal(out[1], encode_condition_dict(CONDS, {"Smiling": 0, "label": 2}))
    with pytest.raises(FacelabError, match="out of range"):
        encode_label_rows(CONDS, torch.tensor([[2, 0]]))
    with pytest.raises(FacelabError, match="\\(B, 2\\)"):
        encode_label_rows(CONDS, torch.tensor([[1, 0, 0]]))


def test_unnamed_condition_vector_takes_tensors_only():
    model = create_generative("cgan", image_size=32, width=4, max_width=8, latent_dim=4, cond_dim=3)
    assert model.make_cond(torch.ones(3)).shape == (1, 3)
    with pytest.raises(FacelabError, match="unnamed"):
        model.make_cond({"a": 1})
    assert GenerativeConfig.conditioning == "never"


def test_blend_conditions_makes_a_pegasus():
    model = create_generative("cgan", image_size=32, width=4, max_width=8, latent_dim=4, conditions=CONDS)
    bird, horse = model.make_cond({"label": "bird"}), model.make_cond({"label": "horse"})
    pegasus = blend_conditions(bird, horse, 0.5)
    assert pegasus.shape == (1, 11) and pegasus[0, 3] == 0.5 and pegasus[0, 8] == 0.5 and pegasus.sum() == 1
    sweep = blend_conditions(bird, horse, [0.0, 0.25, 1.0])
    assert sweep.shape == (3, 11) and torch.equal(sweep[0], bird[0]) and torch.equal(sweep[2], horse[0])
    assert model.sample(3, sweep).shape == (3, 3, 32, 32)
    with pytest.raises(FacelabError, match="\\[0, 1\\]"):
        blend_conditions(bird, horse, 1.5)
    with pytest.raises(FacelabError, match="same"):
        blend_conditions(bird, torch.zeros(1, 4), 0.5)


def test_interpolate_latents_linear_and_spherical():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    lin = interpolate_latents(a, b, 3)
    assert torch.allclose(lin, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    sph = interpolate_latents(a, b, 3, spherical=True)
    assert torch.allclose(sph.norm(dim=1), torch.ones(3)) and torch.allclose(sph[[0, 2]], lin[[0, 2]], atol=1e-6)
    assert torch.allclose(interpolate_latents(a, a, 2, spherical=True), a.expand(2, 2))
    with pytest.raises(FacelabError, match="steps"):
        interpolate_latents(a, b, 1)


def test_class_latent_means_average_the_encoder_per_class():
    torch.manual_seed(0)
    model = create_generative("vae", image_size=32, width=4, max_width=8, latent_dim=4)
    x = torch.rand(10, 3, 32, 32) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    means = class_latent_means(model, [(x[:6], labels[:6]), (x[6:], labels[6:])], num_classes=3)
    model.eval()
    with torch.no_grad():
        z = model.encode(x)
    expected = torch.stack([z[labels == k].mean(0) for k in range(3)])
    assert torch.allclose(means, expected, atol=1e-5)
    assert model.training is False  # modes are restored to what they were (eval here)
    with pytest.raises(FacelabError, match="no images of class"):
        class_latent_means(model, [(x, labels)], num_classes=4)
    with pytest.raises(FacelabError, match="no encoder"):
        class_latent_means(create_generative("dcgan", image_size=32, width=4), [(x, labels)], num_classes=3)
