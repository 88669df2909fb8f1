"""Contract of every registered generative model, at 32 and 64 px, conditional and unconditional.

A new model registered in GENERATIVE is checked here automatically: per-player losses and gradients,
the generic training loop, sampling, conditions, encode/decode, state dicts and configs.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from facelab.errors import ConfigError, FacelabError
from facelab.models.generative import GENERATIVE, GenBatch, GenerativeModel, create_generative

CONDITIONS = [
    {"name": "Smiling", "kind": "binary"},
    {"name": "Male", "kind": "binary"},
    {"name": "animal", "kind": "categorical", "classes": ["bird", "horse", "cat"]},
]
COND_DIM = 5
TINY = {"width": 4, "max_width": 16, "latent_dim": 8}


def _variants() -> list[tuple[str, bool]]:
    out = []
    for name in GENERATIVE.names():
        policy = GENERATIVE.get(name).config_class.conditioning
        out += [(name, c) for c in {"never": [False], "required": [True], "optional": [False, True]}[policy]]
    return out


VARIANTS = _variants()
IDS = [f"{n}-{'cond' if c else 'uncond'}" for n, c in VARIANTS]
variant = pytest.mark.parametrize(("name", "conditional"), VARIANTS, ids=IDS)
sizes = pytest.mark.parametrize("size", [32, 64])


def build(name: str, conditional: bool, size: int, **overrides) -> GenerativeModel:
    torch.manual_seed(0)
    extra = {"conditions": CONDITIONS} if conditional else {}
    return create_generative(name, image_size=size, **TINY, **extra, **overrides)


def make_batch(model: GenerativeModel, n: int = 4, seed: int = 0) -> GenBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, model.image_size, model.image_size, generator=g) * 2 - 1
    rows = [{"Smiling": i % 2, "Male": (i // 2) % 2, "animal": i % 3} for i in range(n)]
    return GenBatch(x, model.make_cond(rows) if model.is_conditional else None)


def test_registry_holds_the_documented_models():
    assert {"vae", "beta_vae", "cvae", "aae", "dcgan", "wgan_gp", "sngan", "cgan", "acai"} <= set(GENERATIVE.names())


@variant
@sizes
def test_each_group_loss_is_finite_and_reaches_only_its_parameters(name, conditional, size):
    model = build(name, conditional, size).train()
    batch = make_batch(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for group, params in model.parameter_groups().items():
        model.zero_grad(set_to_none=True)
        out = model.loss(group, batch)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss), (group, out.loss)
        assert out.logs and all(math.isfinite(v) for v in out.logs.values()), out.logs
        out.loss.backward()
        own = {id(p) for p in params}
        assert not [names[id(p)] for p in params if p.grad is None], f"{group}: parameters without gradient"
        assert all(torch.isfinite(p.grad).all() for p in params)
        assert any(bool(p.grad.abs().sum() > 0) for p in params)
        leaked = [n for n, p in model.named_parameters() if id(p) not in own and p.grad is not None]
        assert not leaked, f"the {group!r} loss left gradients on other groups' parameters: {leaked[:5]}"
        assert all(p.requires_grad for p in model.parameters()), "loss() must restore requires_grad"


@variant
def test_groups_schedule_and_optimizers_agree(name, conditional):
    model = build(name, conditional, 32)
    groups = model.parameter_groups()
    assert groups and all(groups.values())
    covered = {id(p) for ps in groups.values() for p in ps}
    assert covered == {id(p) for p in model.parameters()}, "every parameter belongs to some group"
    schedule = model.train_step_schedule()
    assert {g for g, _ in schedule} == set(groups)
    assert all(isinstance(k, int) and k >= 1 for _, k in schedule)
    opts = model.recommended_optimizers()
    assert set(opts) == set(groups)
    for spec in opts.values():
        assert spec["lr"] > 0 and len(spec["betas"]) == 2 and spec["name"] == "adam"


@variant
def test_generic_loop_steps_only_the_scheduled_group(name, conditional):
    model = build(name, conditional, 32).train()
    batch = make_batch(model)
    groups = model.parameter_groups()
    opts = {g: torch.optim.Adam(ps, lr=1e-2) for g, ps in groups.items()}
    for group, k in model.train_step_schedule():
        for _ in range(min(k, 2)):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            opts[group].zero_grad(set_to_none=True)
            model.loss(group, batch).loss.backward()
            opts[group].step()
            own = {id(p) for p in groups[group]}
            changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
            outside = {n for n, p in model.named_parameters() if id(p) not in own}
            assert changed and not changed & outside, (group, sorted(changed & outside)[:5])


@variant
def test_forward_is_the_single_group_loss_or_a_clear_error(name, conditional):
    model = build(name, conditional, 32).eval()
    batch = make_batch(model)
    groups = list(model.parameter_groups())
    if len(groups) == 1:
        torch.manual_seed(1)
        a = model(batch)
        torch.manual_seed(1)
        b = model.loss(groups[0], batch)
        assert torch.equal(a.loss, b.loss) and a.logs == b.logs
    else:
        with pytest.raises(FacelabError, match="train_step_schedule"):
            model(batch)
    with pytest.raises(FacelabError, match="no parameter group"):
        model.loss("nonexistent", batch)


@variant
@sizes
def test_sample_shape_range_determinism_and_no_side_effects(name, conditional, size):
    model = build(name, conditional, size).train()
    cond = model.make_cond({"Smiling": 1, "animal": "horse"}) if conditional else None
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = model.sample(3, cond, generator=torch.Generator().manual_seed(7))
    b = model.sample(3, cond, generator=torch.Generator().manual_seed(7))
    c = model.sample(3, cond, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 3, size, size) and a.dtype == torch.float32
    assert float(a.min()) >= -1 and float(a.max()) <= 1 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not a.requires_grad
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), "sampling changed buffers"
    small = model.sample(2, cond, generator=torch.Generator().manual_seed(7), temperature=0.5)
    assert small.shape == (2, 3, size, size)


@variant
def test_conditions_are_required_or_rejected(name, conditional):
    model = build(name, conditional, 32)
    batch = make_batch(model)
    assert model.is_conditional is conditional
    if conditional:
        assert model.cond_dim == COND_DIM
        with pytest.raises(FacelabError, match="conditional"):
            model.sample(2)
        with pytest.raises(FacelabError, match="conditional"):
            model.loss(model.train_step_schedule()[0][0], GenBatch(batch.x))
        with pytest.raises(FacelabError, match="Smiling"):  # lists the valid conditions
            model.make_cond({"Smiling": 1, "animal": "bird", "Bald": 1})
        with pytest.raises(FacelabError, match="bird"):  # lists the valid values
            model.make_cond({"animal": "pegasus"})
        with pytest.raises(FacelabError, match="out|invalid"):
            model.make_cond({"Smiling": 2, "animal": 0})
        with pytest.raises(FacelabError, match="missing categorical"):
            model.make_cond({"Smiling": 1})
        with pytest.raises(FacelabError, match="condition must be"):
            model.sample(2, torch.zeros(2, COND_DIM + 1))
        one = model.make_cond({"Male": "yes", "animal": "cat"})
        assert one.tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0]]
        assert model.sample(2, {"animal": "bird"}).shape == (2, 3, 32, 32)
    else:
        with pytest.raises(FacelabError, match="unconditional"):
            model.sample(2, torch.zeros(2, COND_DIM))
        with pytest.raises(FacelabError, match="unconditional"):
            model.make_cond({"Smiling": 1})
        with pytest.raises(FacelabError, match="unconditional"):
            model.loss(model.train_step_schedule()[0][0], GenBatch(batch.x, torch.zeros(4, COND_DIM)))


@variant
@sizes
def test_encode_decode_for_autoencoders_generate_for_all(name, conditional, size):
    model = build(name, conditional, size).eval()
    batch = make_batch(model, n=3)
    z = torch.randn(3, model.latent_dim)
    images = model.generate(z, batch.cond)
    assert images.shape == (3, 3, size, size) and float(images.detach().abs().max()) <= 1
    if model.has_encoder:
        codes = model.encode(batch.x, batch.cond)
        assert codes.shape == (3, model.latent_dim)
        assert torch.equal(codes, model.encode(batch.x, batch.cond)), "encode must be deterministic in eval mode"
        assert model.decode(codes, batch.cond).shape == (3, 3, size, size)
    else:
        with pytest.raises(FacelabError, match="no encoder"):
            model.encode(batch.x)
    with pytest.raises(FacelabError, match="latents must be"):
        model.generate(torch.randn(3, model.latent_dim + 1), batch.cond)


@variant
def test_wrong_image_size_is_a_clear_error(name, conditional):
    model = build(name, conditional, 32)
    batch = make_batch(model)
    wrong = GenBatch(torch.zeros(4, 3, 64, 64), batch.cond)
    with pytest.raises(FacelabError, match="image_size=32"):
        model.loss(model.train_step_schedule()[0][0], wrong)


@variant
def test_state_dict_round_trip(name, conditional):
    model = build(name, conditional, 32).train()
    batch = make_batch(model)
    for group, _ in model.train_step_schedule():  # move buffers (BN stats, step counters, latent stats)
        model.loss(group, batch).loss.backward()
    copy = create_generative(name, model.config)
    copy.load_state_dict(model.state_dict())
    cond = batch.cond[:1] if conditional else None
    a = model.sample(2, cond, generator=torch.Generator().manual_seed(3))
    b = copy.sample(2, cond, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@variant
def test_config_rejects_unknown_keys_and_round_trips(name, conditional):
    with pytest.raises(ConfigError, match="no_such_option"):
        build(name, conditional, 32, no_such_option=1)
    with pytest.raises(ConfigError, match="image_size"):
        build(name, conditional, 48)
    model = build(name, conditional, 32)
    data = yaml.safe_load(model.config.to_yaml())
    assert model.config_class.from_dict(data) == model.config


@variant
def test_legacy_options_read_from_a_current_state_rebuild_the_same_network(name, conditional):
    """The loader fills options an old checkpoint did not record from its weights; for a current checkpoint
    (every option recorded) they must rebuild the same network."""
    model = build(name, conditional, 32)
    state, recorded = model.state_dict(), model.config.model_dump(mode="json")
    rebuilt = create_generative(name, **{**recorded, **type(model).legacy_options(state)})
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
