"""Model-specific behaviour the contract tests do not cover: GAN variants, AAE and ACAI details."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facelab.errors import ConfigError
from facelab.models.generative import GenBatch, create_generative
from facelab.models.generative.blocks import ConditionalNorm

TINY = {"image_size": 32, "width": 4, "max_width": 16, "latent_dim": 8}
CONDS = [{"name": "Smiling", "kind": "binary"}, {"name": "label", "kind": "categorical", "classes": ["bird", "horse"]}]


def _batch(n=4, cond=None):
    torch.manual_seed(0)
    return GenBatch(torch.rand(n, 3, 32, 32) * 2 - 1, cond)


def test_gan_schedules_and_optimizers_follow_the_papers():
    dcgan, wgan, sngan = (create_generative(n, **TINY) for n in ("dcgan", "wgan_gp", "sngan"))
    assert dcgan.train_step_schedule() == [("discriminator", 1), ("generator", 1)]
    assert wgan.train_step_schedule() == [("discriminator", 5), ("generator", 1)]
    wgan_d = {"name": "adam", "lr": 1e-4, "betas": (0.0, 0.9), "weight_decay": 0.0}
    assert wgan.recommended_optimizers()["discriminator"] == wgan_d
    assert dcgan.recommended_optimizers()["generator"]["betas"] == (0.5, 0.999)
    assert sngan.recommended_optimizers()["generator"]["lr"] == 2e-4
    assert create_generative("wgan_gp", **TINY, n_critic=2).train_step_schedule()[0] == ("discriminator", 2)


def test_dcgan_architecture():
    model = create_generative("dcgan", **TINY)
    g_norms = [m for m in model.generator.modules() if isinstance(m, nn.BatchNorm2d)]
    d_layers = list(model.discriminator.features.layers)
    assert len(g_norms) == 3  # 4x4, 8x8, 16x16 stages; none on the output layer
    assert isinstance(d_layers[1], nn.Identity) and isinstance(d_layers[4], nn.BatchNorm2d)
    assert isinstance(d_layers[2], nn.LeakyReLU) and d_layers[2].negative_slope == 0.2


def test_wgan_gp_critic_has_no_batch_norm_and_logs_the_penalty():
    model = create_generative("wgan_gp", **TINY)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in model.discriminator.modules())
    out = model.loss("discriminator", _batch())
    assert out.logs["gp"] >= 0 and "d_real" in out.logs
    with pytest.raises(ConfigError, match="d_norm"):
        create_generative("wgan_gp", **TINY, d_norm="batchnorm")
    no_gp = create_generative("wgan_gp", **TINY, gp_weight=0.0)
    out = no_gp.loss("discriminator", _batch())
    assert out.loss.item() == pytest.approx(out.logs["d_fake"] - out.logs["d_real"], abs=1e-5)


def test_sngan_discriminator_is_spectrally_normalised_with_hinge_loss():
    model = create_generative("sngan", **TINY, d_extra_convs=1)
    convs = [m for m in model.discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(convs) == 7 and all(hasattr(m, "parametrizations") for m in convs)  # 2 per stage + head
    assert not any(hasattr(m, "parametrizations") for m in model.generator.modules())
    out = model.loss("discriminator", _batch())
    assert 0 <= out.loss.item() <= 2 + abs(out.logs["d_real"]) + abs(out.logs["d_fake"])


@pytest.mark.parametrize("mode", ["cbn", "concat"])
def test_cgan_generator_follows_the_condition(mode):
    torch.manual_seed(0)
    model = create_generative("cgan", **TINY, conditions=CONDS, g_conditioning=mode).eval()
    has_cbn = any(isinstance(m, ConditionalNorm) for m in model.generator.modules())
    assert has_cbn == (mode == "cbn")
    with torch.no_grad():
        for m in model.generator.modules():
            if isinstance(m, ConditionalNorm):
                m.beta.weight.normal_()
    z = torch.randn(1, 8)
    bird = model.generate(z, {"label": "bird"})
    horse = model.generate(z, {"label": "horse"})
    assert not torch.allclose(bird, horse)
    assert model.discriminator.embed is not None and model.discriminator.features.pool == "sum"


def test_aae_conditions_the_decoder_only_and_groups_share_the_encoder():
    model = create_generative("aae", **TINY, conditions=CONDS).eval()
    x = _batch().x
    a = model.encode(x, {"label": "bird"})
    b = model.encode(x, {"label": "horse", "Smiling": 1})
    assert torch.equal(a, b), "the AAE encoder does not see the condition"
    groups = model.parameter_groups()
    assert {id(p) for p in groups["generator"]} < {id(p) for p in groups["autoencoder"]}
    assert model.train_step_schedule() == [("autoencoder", 1), ("discriminator", 1), ("generator", 1)]


def test_aae_gaussian_encoder_encodes_the_mean():
    torch.manual_seed(0)
    model = create_generative("aae", **TINY, encoder="gaussian").eval()
    x = _batch().x
    assert model.to_latent.out_features == 16
    assert torch.equal(model.encode(x), model.encode(x))
    assert torch.isfinite(model.train().loss("autoencoder", GenBatch(x)).loss)


def test_acai_interpolants_critic_target_and_latent_statistics():
    torch.manual_seed(0)
    model = create_generative("acai", **TINY).train()
    x = _batch(6).x
    z, x_hat, x_mix, alpha = model._mix(x)
    assert alpha.shape == (6,) and float(alpha.min()) >= 0 and float(alpha.max()) <= 0.5
    assert x_mix.shape == x.shape == x_hat.shape
    before = model.latent_mean.clone()
    out = model.loss("autoencoder", GenBatch(x))
    assert set(out.logs) == {"ae_loss", "ae_recon", "ae_adv"} and out.recon is not None
    assert not torch.equal(before, model.latent_mean), "training updates the running latent statistics"
    model.eval()
    frozen = model.latent_mean.clone()
    model.loss("autoencoder", GenBatch(x))
    assert torch.equal(frozen, model.latent_mean)
    crit = model.loss("critic", GenBatch(x))
    assert crit.loss.item() == pytest.approx(crit.logs["critic_fit"] + crit.logs["critic_reg"], rel=1e-5)
    with torch.no_grad():
        model.latent_mean.fill_(3.0)
        model.latent_std.fill_(1e-6)
    assert torch.allclose(model.sample_latent(4), torch.full((4, 8), 3.0), atol=1e-4)


@pytest.mark.parametrize("name", ["dcgan", "wgan_gp", "sngan", "cgan"])
def test_diffaug_is_applied_to_every_discriminator_input_and_passes_gradients(name):
    from facelab.models.generative.diffaug import DiffAugment

    opts = {**TINY, "diffaug": ["color", "translation", "cutout"]}
    if name == "cgan":
        opts["conditions"] = CONDS
    torch.manual_seed(0)
    model = create_generative(name, **opts)
    assert isinstance(model.diffaug, DiffAugment) and model.diffaug.policy == ["color", "translation", "cutout"]
    seen = []
    model.discriminator.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    cond = model.make_cond([{"label": "bird"}] * 4) if name == "cgan" else None
    batch = GenBatch(x, cond)
    model.loss("discriminator", batch)
    assert not torch.allclose(seen[0], x)  # the real images reached D augmented
    half = 16  # cutout: a 16x16 square of each image is grey (0 in [-1, 1])
    assert all(((img == 0).all(0)).sum() >= half * half * 0.9 for img in seen[0])
    model.zero_grad()
    model.loss("generator", batch).loss.backward()
    grads = [p.grad for p in model.generator.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_diffaug_policy_is_validated_and_empty_means_identity():
    from facelab.models.generative.diffaug import DiffAugment

    with pytest.raises(ConfigError):
        create_generative("dcgan", **TINY, diffaug=["zoom"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert DiffAugment([])(x) is x
    assert create_generative("dcgan", **TINY).diffaug.policy == []


def test_cgan_consistency_classifier_learns_in_the_discriminator_step_and_teaches_the_generator():
    conds = [{"name": "Smiling", "kind": "binary"}, {"name": "digit", "kind": "categorical", "classes": list("012")}]
    torch.manual_seed(0)
    model = create_generative("cgan", image_size=32, width=8, max_width=32, latent_dim=8, conditions=conds,
                              consistency_weight=1.0)
    cls_params = {id(p) for p in model.classifier.parameters()}
    groups = model.parameter_groups()
    assert cls_params <= {id(p) for p in groups["discriminator"]}
    assert not cls_params & {id(p) for p in groups["generator"]}
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    batch = GenBatch(x, model.make_cond([{"Smiling": 1, "digit": "1"}] * 4))
    d = model.loss("discriminator", batch)
    assert "cls_real" in d.logs
    d.loss.backward()
    assert all(p.grad is not None for p in model.classifier.parameters())
    model.zero_grad(set_to_none=True)
    g = model.loss("generator", batch)
    assert "cls_fake" in g.logs
    g.loss.backward()
    assert all(p.grad is None for p in model.classifier.parameters())  # held fixed for the generator
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    plain = create_generative("cgan", image_size=32, width=8, max_width=32, latent_dim=8, conditions=conds)
    assert type(model).legacy_options(plain.state_dict()) == {"consistency_weight": 0.0}
