"""The objectives registry and the SimCLR objective: contracts over every objective, NT-Xent, views, metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from facelab.config import StrictConfig
from facelab.data.preprocessing import Preprocessing
from facelab.errors import ConfigError
from facelab.models.classifiers import create_classifier
from facelab.train.objectives import OBJECTIVES, objective_spec
from facelab.train.objectives.simclr import SimCLRObjective, SimCLROptions, nt_xent

TINY = {"channels": [8, 16, 16]}


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_has_default_options_and_a_monitor(name):
    spec = OBJECTIVES.create(name)
    assert issubclass(spec.options, StrictConfig)
    required = {n: "x" for n, f in spec.options.model_fields.items() if f.is_required()}  # e.g. distill's teacher
    for field in required:
        with pytest.raises(ConfigError, match=field):
            spec.parse_options(name, {})
    spec.parse_options(name, required)  # the defaults of everything else are valid
    with pytest.raises(ConfigError, match="no_such_option"):
        spec.parse_options(name, {"no_such_option": 1})
    assert spec.monitor.startswith("val_") and spec.monitor_mode in ("min", "max") and spec.doc


def test_an_objective_of_the_other_kind_names_the_command_that_runs_it():
    with pytest.raises(ConfigError, match="facelab pretrain"):
        objective_spec("simclr", labelled=True)
    with pytest.raises(ConfigError, match="facelab train"):
        objective_spec("supervised", labelled=False)
    with pytest.raises(ConfigError, match="known objectives: distill, simclr, supervised"):
        objective_spec("byol2", labelled=False)


def test_nt_xent_prefers_matching_views_and_finds_every_partner():
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    same, hit = nt_xent(z, z + 0.01 * torch.randn_like(z), temperature=0.2)
    other, _ = nt_xent(z, torch.randn(16, 32), temperature=0.2)
    assert hit.shape == (32,) and bool(hit.all())
    assert float(same) < float(other)


def test_nt_xent_of_a_batch_of_two_is_the_textbook_value():
    z1, z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, _ = nt_xent(z1, z2, temperature=1.0)
    # each view: positive similarity 1, one negative with similarity 0 (the self-similarity is masked out)
    expected = -torch.log(torch.exp(torch.tensor(1.0)) / (torch.exp(torch.tensor(1.0)) + 2 * torch.exp(torch.tensor(0.0))))
    torch.testing.assert_close(loss, expected)


def _objective(**options) -> SimCLRObjective:
    encoder = create_classifier("vgg_scratch", num_outputs=0, image_size=16, **TINY)
    pre = Preprocessing(image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    return SimCLRObjective(encoder, options=SimCLROptions(**options), preprocessing=pre, config={"model": "vgg_scratch"})


def test_simclr_trains_the_encoder_and_the_projector():
    torch.manual_seed(0)
    obj = _objective(proj_hidden=16, proj_dim=8)
    batch = SimpleNamespace(x=torch.rand(6, 3, 16, 16))
    out = obj.loss("model", batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and 0 <= out.logs["positive_top1"] <= 1
    grads = {n: p.grad for n, p in obj.model.named_parameters()}
    assert any(n.startswith("projector.") and g is not None for n, g in grads.items())
    assert any(n.startswith("encoder.") and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert set(obj.parameter_groups()["model"]) == set(obj.model.parameters())


def test_simclr_validation_views_are_the_same_every_epoch():
    torch.manual_seed(0)
    obj = _objective()
    obj.model.eval()
    batches = [_Batch(torch.rand(5, 3, 16, 16)), _Batch(torch.rand(1, 3, 16, 16))]  # the second is skipped
    first, second = obj.evaluate(batches), obj.evaluate(batches)
    assert first == second and set(first) == {"loss", "positive_top1"}


class _Batch(SimpleNamespace):
    def __init__(self, x):
        super().__init__(x=x)

    def __len__(self):
        return int(self.x.shape[0])


def test_simclr_checkpoint_describes_the_encoder_not_a_classifier():
    meta = _objective().checkpoint_meta()
    assert meta.kind == "encoder" and meta.arch == "vgg_scratch" and meta.arch_kwargs["num_outputs"] == 0
    assert meta.config["objective_options"]["temperature"] == 0.2


def test_unknown_view_augmentation_is_refused_with_the_presets():
    with pytest.raises(Exception, match="augmentation preset"):
        SimCLROptions(augment="nope")
