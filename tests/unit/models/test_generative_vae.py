"""The VAE family: training lowers the loss, KL warm-up and beta, likelihood choices, conditioning."""

from __future__ import annotations

import pytest
import torch

from facelab.errors import ConfigError
from facelab.models.generative import GenBatch, create_generative

TINY = {"image_size": 32, "width": 8, "max_width": 32, "latent_dim": 8}


def _fixed_batch(n: int = 8) -> GenBatch:
    g = torch.Generator().manual_seed(0)
    # smooth images (a colour ramp per image) so a tiny decoder can fit them quickly
    ramp = torch.linspace(-1, 1, 32)
    colours = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    return GenBatch((colours * ramp[None, None, :, None] * ramp[None, None, None, :]).clamp(-1, 1))


def _train(model, batch, steps: int) -> list[float]:
    """The generic loop every trainer runs, written out: one optimizer per group, zeroed per group."""
    opts = {
        g: torch.optim.Adam(ps, lr=spec["lr"], betas=spec["betas"])
        for (g, ps), spec in zip(model.parameter_groups().items(), model.recommended_optimizers().values())
    }
    losses = []
    for _ in range(steps):
        for group, k in model.train_step_schedule():
            for _ in range(k):
                opts[group].zero_grad(set_to_none=True)
                out = model.loss(group, batch)
                out.loss.backward()
                opts[group].step()
        losses.append(out.loss.item())
    return losses


def test_tiny_vae_lowers_its_loss_with_the_generic_loop():
    torch.manual_seed(0)
    model = create_generative("vae", **{**TINY, "width": 4, "max_width": 16}).train()
    batch = _fixed_batch()
    losses = _train(model, batch, 30)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
    assert int(model.step) == 30


def test_kl_warmup_ramps_and_is_saved():
    model = create_generative("vae", **TINY, kl_warmup_steps=4).train()
    batch = _fixed_batch(2)
    weights = [model(batch).logs["kl_weight"] for _ in range(6)]
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert int(model.state_dict()["step"]) == 6
    model.eval()
    model(batch)
    assert int(model.step) == 6, "evaluation does not advance the warm-up"


def test_beta_vae_only_scales_the_kl_weight():
    torch.manual_seed(0)
    vae = create_generative("vae", **TINY, kl_warmup_steps=10)
    torch.manual_seed(0)
    beta = create_generative("beta_vae", **TINY, kl_warmup_steps=10, beta=4.0)
    assert beta.kl_weight(5) == pytest.approx(4.0 * vae.kl_weight(5))
    beta.load_state_dict(vae.state_dict())
    batch = _fixed_batch(2)
    torch.manual_seed(1)
    a = vae.eval().loss("model", batch)
    torch.manual_seed(1)
    b = beta.eval().loss("model", batch)
    assert a.logs["recon"] == pytest.approx(b.logs["recon"]) and a.logs["kl"] == pytest.approx(b.logs["kl"])
    assert b.logs["kl_weight"] == pytest.approx(4.0 * a.logs["kl_weight"])


@pytest.mark.parametrize("kind", ["sse", "gaussian", "bce"])
def test_likelihoods_give_finite_losses_and_images_in_range(kind):
    model = create_generative("vae", **TINY, recon_loss=kind)
    out = model(_fixed_batch(2))
    assert torch.isfinite(out.loss) and out.recon is not None
    assert out.recon.shape == (2, 3, 32, 32) and float(out.recon.abs().max()) <= 1
    assert set(out.logs) == {"loss", "recon", "kl", "kl_weight"}


def test_cvae_decoder_follows_the_condition():
    conditions = [
        {"name": "Smiling", "kind": "binary"},
        {"name": "digit", "kind": "categorical", "classes": list("012")},
    ]
    torch.manual_seed(0)
    model = create_generative("cvae", **TINY, conditions=conditions).eval()
    with torch.no_grad():
        for p in model.decoder.fc.parameters():  # make the condition matter at initialisation
            p.normal_()
    z = torch.zeros(1, 8)
    a = model.decode(z, {"digit": "0"})
    b = model.decode(z, {"digit": "1", "Smiling": 1})
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="conditional"):
        create_generative("cvae", **TINY)
    with pytest.raises(ConfigError, match="unconditional"):
        create_generative("vae", **TINY, conditions=conditions)


def test_unknown_norm_or_activation_names_are_config_errors():
    with pytest.raises(ConfigError, match="batchnorm"):
        create_generative("vae", **TINY, norm="bachnorm")
    with pytest.raises(ConfigError, match="relu"):
        create_generative("vae", **TINY, decoder_act="rleu")


COND = [{"name": "Smiling", "kind": "binary"}, {"name": "digit", "kind": "categorical", "classes": list("012")}]


def test_cvae_consistency_trains_the_classifier_on_real_images_only():
    """The consistency term reaches the decoder; the auxiliary classifier learns from real images alone."""
    torch.manual_seed(0)
    model = create_generative("cvae", **TINY, conditions=COND, consistency_weight=10.0).train()
    batch = _fixed_batch(4)
    batch = GenBatch(batch.x, model.make_cond([{"Smiling": 1, "digit": "2"}] * 4))
    out = model(batch)
    assert {"cls_real", "cls_fake"} <= set(out.logs)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    assert all(p.grad is not None for p in model.classifier.parameters())  # from the real images
    model.zero_grad(set_to_none=True)
    fake = model.decode(torch.randn(4, 8), batch.cond).detach().requires_grad_(True)
    model.classifier.consistency_loss(fake, batch.cond).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.classifier.parameters())  # held fixed for generated images


def _bright_dark_gap(consistency_weight: float, steps: int = 60) -> tuple[float, dict[str, float]]:
    """Train a tiny cvae on bright (label 1) and dark (label 0) noisy images; the mean brightness of prior
    samples drawn with bright=1 minus bright=0."""
    torch.manual_seed(0)
    model = create_generative("cvae", **TINY, conditions=[{"name": "bright", "kind": "binary"}],
                              consistency_weight=consistency_weight)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (16, 1), generator=g).float()
    x = (y[:, :, None, None] * 1.2 - 0.6 + 0.1 * torch.randn(16, 3, 32, 32, generator=g)).clamp(-1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        out = model(GenBatch(x, y))
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        gap = model.sample(64, {"bright": 1}).mean().item() - model.sample(64, {"bright": 0}).mean().item()
    return gap, out.logs


def test_cvae_consistency_loss_makes_prior_samples_follow_the_condition():
    """The latent of a plain cvae carries the brightness too, so prior samples follow z more than the
    condition; the consistency loss makes the condition show (measured: gap 0.13 plain, 0.31 with it)."""
    plain, _ = _bright_dark_gap(0.0)
    consistent, logs = _bright_dark_gap(50.0)
    assert logs["cls_real"] < 0.1  # the auxiliary classifier learned the real attribute
    assert consistent > plain + 0.1, (plain, consistent)


def test_cvae_checkpoints_from_before_the_consistency_loss_still_load(tmp_path):
    from facelab.models.generative.cvae import CVAE

    plain = create_generative("cvae", **TINY, conditions=COND)
    assert plain.classifier is None and CVAE.legacy_options(plain.state_dict()) == {"consistency_weight": 0.0}
    with_cls = create_generative("cvae", **TINY, conditions=COND, consistency_weight=1.0)
    assert CVAE.legacy_options(with_cls.state_dict()) == {}


def test_random_conditions_give_every_value_an_equal_share():
    from facelab.models.generative.conditions import Condition, random_conditions

    conds = [Condition(**c) for c in COND]
    c = random_conditions(conds, 4, 6000, generator=torch.Generator().manual_seed(0))
    assert c.shape == (6000, 4)
    assert abs(float(c[:, 0].mean()) - 0.5) < 0.03  # binary: half yes
    assert torch.equal(c[:, 1:].sum(1), torch.ones(6000))  # one-hot
    assert (c[:, 1:].mean(0) - 1 / 3).abs().max() < 0.03


def test_condition_loss_plain_is_the_batch_mean_and_balanced_weighs_every_value_equally():
    from facelab.models.generative.conditions import Condition, condition_loss

    conds = [Condition(**c) for c in COND]  # Smiling (binary), digit (3 classes)
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    cond = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], cond[:, :1], reduction="none")[:, 0]
    ce = torch.nn.functional.cross_entropy(logits[:, 1:], cond[:, 1:].argmax(1), reduction="none")
    torch.testing.assert_close(condition_loss(logits, cond, conds), bce.mean() + ce.mean())
    # Smiling: one "yes" (row 0) against four "no"; digit: classes 0 (rows 0-2, 4) and 1 (row 3), 2 absent
    expected = (bce[0] + bce[1:].mean()) / 2 + (ce[[0, 1, 2, 4]].mean() + ce[3]) / 2
    torch.testing.assert_close(condition_loss(logits, cond, conds, balanced=True), expected)
    unnamed = condition_loss(logits[:, :2], cond[:, :2], None)
    torch.testing.assert_close(unnamed, torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, :2], cond[:, :2], reduction="none").sum(1).mean())


def test_a_balanced_classifier_is_calibrated_for_balanced_conditions():
    """Trained on 10% positives, the plain loss grants ambiguous inputs the common value; the balanced one
    puts the decision half-way (the prior the consistency term draws its conditions from)."""
    from facelab.models.generative.conditions import Condition, condition_loss

    g = torch.Generator().manual_seed(0)
    y = (torch.rand(2000, 1, generator=g) < 0.1).float()
    x = y * 2 - 1 + torch.randn(2000, 1, generator=g)  # one noisy feature, class means -1 and +1
    conds = [Condition(name="rare", kind="binary")]
    boundary = {}
    for balanced in (False, True):
        w, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=0.05)
        for _ in range(400):
            opt.zero_grad()
            condition_loss(x * w + b, y, conds, balanced=balanced).backward()
            opt.step()
        boundary[balanced] = float(-b.detach() / w.detach())  # the input at which the classifier says 50%
    assert abs(boundary[True]) < 0.15, boundary  # half-way between the class means
    assert boundary[False] > 0.8, boundary  # pushed towards the rare class: ambiguous inputs go to "no"


def test_consistency_classifier_follows_its_config_and_blur_is_a_differentiable_policy():
    model = create_generative("cvae", **TINY, conditions=COND, consistency_weight=1.0,
                              classifier_augment=["translation", "blur"], classifier_balanced=False)
    assert model.classifier.augment.policy == ["translation", "blur"] and model.classifier.balanced is False
    default = create_generative("cvae", **TINY, conditions=COND, consistency_weight=1.0)
    assert default.classifier.augment.policy == ["translation"] and default.classifier.balanced is True
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, ::2, ::2] = 1.0  # a fine checkerboard-like texture
    x.requires_grad_(True)
    blurred = model.classifier.augment.ops[1]((x + 1) / 2) * 2 - 1
    blurred.sum().backward()
    assert x.grad is not None and blurred.detach().std() < x.detach().std()  # the texture is damped
