"""Shared conv stacks: shapes at 32/64 px, spectral norm, conditional norm, projection, DCGAN init."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.errors import ConfigError
from facelab.models.generative.blocks import (
    MLP,
    ConditionalNorm,
    ConvDecoder,
    ConvDiscriminator,
    ConvEncoder,
    conditional_norm_layer,
    init_dcgan_weights,
    stage_channels,
)


def test_stage_channels():
    assert stage_channels(32, 64, 512) == [64, 128, 256]
    assert stage_channels(64, 64, 256) == [64, 128, 256, 256]
    with pytest.raises(ConfigError, match="image_size"):
        stage_channels(48, 8, 64)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("pool", ["flatten", "sum"])
def test_encoder_decoder_shapes(size, pool):
    enc = ConvEncoder(3, image_size=size, width=4, max_width=16, extra_convs=1, pool=pool, cond_channels=2)
    feats = enc(torch.randn(2, 3, size, size), torch.ones(2, 2))
    top = stage_channels(size, 4, 16)[-1]
    assert feats.shape == (2, top * 16 if pool == "flatten" else top) == (2, enc.feat_dim)
    assert isinstance(enc.layers[1], nn.Identity), "the first convolution has no norm (DCGAN)"
    dec = ConvDecoder(5, 3, image_size=size, width=4, max_width=16, cond_dim=2)
    assert dec(torch.randn(2, 5), torch.ones(2, 2)).shape == (2, 3, size, size)


def test_spectral_norm_bounds_every_discriminator_layer():
    torch.manual_seed(0)
    d = ConvDiscriminator(3, image_size=32, width=8, max_width=32, norm_layer="none", spectral_norm=True, cond_dim=3)
    d.train()
    for _ in range(30):  # power iterations run in training-mode forwards
        d(torch.randn(2, 3, 32, 32), torch.ones(2, 3))
    d.eval()
    layers = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 5 and all(hasattr(m, "parametrizations") for m in layers)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=0.05)


def test_projection_discriminator_adds_the_embedding_inner_product():
    torch.manual_seed(0)
    d = ConvDiscriminator(3, image_size=32, width=4, max_width=8, norm_layer="none", pool="sum", cond_dim=3)
    x, cond = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    h = d.features(x)
    expected = d.head(h).squeeze(1) + (cond @ d.embed.weight.T * h).sum(1)
    assert torch.allclose(d(x, cond), expected, atol=1e-5)


def test_conditional_norm_starts_as_the_plain_norm():
    norm = conditional_norm_layer("batchnorm", 4)(6)
    assert isinstance(norm, ConditionalNorm)
    x = torch.randn(3, 6, 4, 4)
    assert torch.allclose(norm(x, torch.eye(4)[:3]), norm.norm(x), atol=1e-6)
    with torch.no_grad():
        norm.beta.weight[:, 0] = 1.0
    shifted = norm(x, torch.eye(4)[:3])
    assert torch.allclose(shifted[0] - norm.norm(x)[0], torch.ones(6, 4, 4), atol=1e-5)  # class 0 shifted
    assert torch.allclose(shifted[1], norm.norm(x)[1], atol=1e-6)


@torch.no_grad()
def test_dcgan_init_statistics_and_conditional_norms_untouched():
    torch.manual_seed(0)
    dec = ConvDecoder(100, 3, image_size=64, width=64, max_width=512, norm_layer=conditional_norm_layer("batchnorm", 3))
    init_dcgan_weights(dec)
    assert float(dec.fc.weight.std()) == pytest.approx(0.02, rel=0.05)
    cn = dec.norms[0]
    assert float(cn.gamma.weight.abs().sum()) == 0.0
    assert float(cn.norm.weight.mean()) == pytest.approx(1.0, abs=0.01)


def test_mlp():
    assert MLP(8, 1, hidden=16, depth=2)(torch.randn(5, 8)).shape == (5, 1)
