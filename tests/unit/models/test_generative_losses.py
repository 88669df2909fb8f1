"""Loss terms of the generative models: values on hand-computed cases, the WGAN-GP formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facelab.models.generative.losses import (
    bce_discriminator_loss,
    bce_generator_loss,
    gradient_penalty,
    hinge_discriminator_loss,
    kl_standard_normal,
    mean_negated_generator_loss,
    raw_to_image,
    reconstruction_loss,
    wasserstein_discriminator_loss,
)


def _linear_critic(weight_norm: float, dim: int = 3 * 8 * 8) -> nn.Module:
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(dim, 1))
    with torch.no_grad():
        w = torch.randn(1, dim)
        critic[1].weight.copy_(w / w.norm() * weight_norm)
    return critic


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    critic = _linear_critic(1.0)
    real, fake = torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    assert float(gp.detach()) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("norm", [0.0, 0.5, 3.0])
def test_gradient_penalty_is_the_squared_norm_deviation(norm):
    critic = _linear_critic(norm)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
    assert float(gp.detach()) == pytest.approx((norm - 1) ** 2, rel=1e-5, abs=1e-6)


def test_gradient_penalty_trains_the_critic_and_works_without_grad():
    critic = _linear_critic(3.0)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    gp = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    gp.backward()
    w = critic[1].weight
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||: along w, positive for ||w|| > 1
    expected = 2 * (3.0 - 1) * w.detach() / 3.0
    assert torch.allclose(w.grad, expected, atol=1e-5)
    with torch.no_grad():  # e.g. a validation pass
        assert float(gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)) == pytest.approx(4.0, rel=1e-5)


def test_gradient_penalty_interpolates_between_real_and_fake():
    seen = []
    real, fake = torch.zeros(64, 2), torch.ones(64, 2)

    def critic(x):
        seen.append(x.detach())
        return x.sum(1)

    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    x_hat = seen[0]
    assert torch.allclose(x_hat[:, 0], x_hat[:, 1])  # one eps per sample
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1 and float(x_hat.std()) > 0.1


def test_kl_standard_normal():
    assert float(kl_standard_normal(torch.zeros(4, 8), torch.zeros(4, 8))) == 0.0
    mu, logvar = torch.full((2, 3), 1.0), torch.full((2, 3), math.log(2.0))
    per_dim = 0.5 * (1 + 2 - 1 - math.log(2.0))
    assert float(kl_standard_normal(mu, logvar)) == pytest.approx(3 * per_dim)


def test_reconstruction_losses():
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    perfect = torch.atanh(x.clamp(-0.999, 0.999))
    assert float(reconstruction_loss(perfect, x.clamp(-0.999, 0.999), kind="sse")) == pytest.approx(0.0, abs=1e-8)
    raw = torch.zeros(2, 3, 4, 4)  # tanh(0) = 0
    assert float(reconstruction_loss(raw, x, kind="sse")) == pytest.approx(float((x**2).flatten(1).sum(1).mean()))
    sigma = 0.5
    nll = (x**2 / (2 * sigma**2) + math.log(sigma * math.sqrt(2 * math.pi))).flatten(1).sum(1).mean()
    assert float(reconstruction_loss(raw, x, kind="gaussian", sigma=sigma)) == pytest.approx(float(nll), rel=1e-5)
    target = (x + 1) / 2
    bce = -(target * math.log(0.5) + (1 - target) * math.log(0.5)).flatten(1).sum(1).mean()
    assert float(reconstruction_loss(raw, x, kind="bce")) == pytest.approx(float(bce), rel=1e-5)
    assert torch.allclose(raw_to_image(torch.tensor([0.0, 100.0, -100.0]), "bce"), torch.tensor([0.0, 1.0, -1.0]))


def test_adversarial_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(wasserstein_discriminator_loss(real, fake)) == pytest.approx(-1.0 - 1.25)
    assert float(mean_negated_generator_loss(fake)) == pytest.approx(1.0)
    zero = torch.zeros(3)
    assert float(bce_discriminator_loss(zero, zero)) == pytest.approx(2 * math.log(2))
    assert float(bce_generator_loss(torch.tensor([10.0]))) < float(bce_generator_loss(torch.tensor([-10.0])))
