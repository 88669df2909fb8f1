"""Every learning rate a run sets reaches its optimizers, for every registered generative model, classifier and
unlabelled (pretraining) objective; what a run leaves unset comes from the model's recommendation (generative
models) or the command's defaults.

Order (:func:`facelab.train.generative.optimizer_groups`): recommendation < ``trainer.optim.*`` (every group) <
``trainer.optim.groups.<group>.*`` (that group).
"""

from __future__ import annotations

import pytest
import torch

from facelab.config import resolve_config
from facelab.errors import ConfigError
from facelab.models.classifiers import create_classifier, list_classifiers
from facelab.models.generative import GENERATIVE, create_generative
from facelab.train.classifier import ClassifierConfig
from facelab.train.generative import GenerativeObjective, GenerativeRunConfig, generative_trainer_config
from facelab.train.objectives import OBJECTIVES
from facelab.train.pretrain import PretrainConfig
from facelab.train.trainer import StepOutput, Trainer

TINY = {"width": 4, "max_width": 16, "latent_dim": 8}
CONDITIONS = [{"name": "Smiling", "kind": "binary"}]
SET_LR = 1.234e-4  # no model recommends it, no command defaults to it


def _generative(name: str):
    policy = GENERATIVE.get(name).config_class.conditioning
    extra = {"conditions": CONDITIONS} if policy == "required" else {}
    return create_generative(name, image_size=32, **TINY, **extra)


def _gen_trainer(name: str, tmp_path, options: list[str]) -> Trainer:
    model = _generative(name)
    cfg = resolve_config(GenerativeRunConfig, flags={"store": "unused", "model": name}, options=options)
    tcfg = generative_trainer_config(cfg, model)
    return Trainer(GenerativeObjective(model, cfg=cfg, store=None), None, None, config=tcfg, run_dir=tmp_path)


def _lrs(trainer: Trainer) -> dict[str, list[float]]:
    return {g: [pg["lr"] for pg in o.param_groups] for g, o in trainer.optimizers.items()}


generative = pytest.mark.parametrize("name", GENERATIVE.names())


@generative
def test_generative_unset_lr_is_the_model_s_recommendation(name, tmp_path):
    trainer = _gen_trainer(name, tmp_path, [])
    recommended = _generative(name).recommended_optimizers()
    for group, opt in trainer.optimizers.items():
        rec = recommended[group]
        assert [pg["lr"] for pg in opt.param_groups] == [rec["lr"]] * len(opt.param_groups), group
        assert type(opt).__name__.lower() == rec["name"]
        assert tuple(opt.param_groups[0]["betas"]) == tuple(rec["betas"])
        assert opt.param_groups[0]["weight_decay"] == rec["weight_decay"]


@generative
def test_generative_run_wide_lr_reaches_every_group(name, tmp_path):
    trainer = _gen_trainer(name, tmp_path, [f"trainer.optim.lr={SET_LR}"])
    assert all(lrs == [SET_LR] * len(lrs) for lrs in _lrs(trainer).values()), _lrs(trainer)
    assert trainer.base_lrs == _lrs(trainer)  # the schedule scales from it
    recommended = _generative(name).recommended_optimizers()
    for group, opt in trainer.optimizers.items():  # what the run did not set stays the recommendation
        assert type(opt).__name__.lower() == recommended[group]["name"]
        assert tuple(opt.param_groups[0]["betas"]) == tuple(recommended[group]["betas"])


@generative
def test_generative_group_lr_wins_over_the_run_wide_one_and_the_recommendation(name, tmp_path):
    groups = list(_generative(name).parameter_groups())
    first = groups[0]
    trainer = _gen_trainer(name, tmp_path, [f"trainer.optim.lr={SET_LR}", f"trainer.optim.groups.{first}.lr=0.0042"])
    lrs = _lrs(trainer)
    assert lrs[first] == [0.0042] * len(lrs[first])
    assert all(lrs[g] == [SET_LR] * len(lrs[g]) for g in groups[1:])


@generative
def test_generative_model_option_lr_is_the_recommendation_it_feeds(name, tmp_path):
    """``model_options.lr*`` set the recommendation, which applies while trainer.optim leaves lr unset."""
    model = _generative(name)
    fields = [f for f in type(model.config).model_fields if f == "lr" or f.startswith("lr_")]
    if not fields:
        pytest.skip(f"{name} takes no lr option")
    options = [f"model_options.{f}=0.000777" for f in fields]
    cfg = resolve_config(GenerativeRunConfig, flags={"store": "unused", "model": name}, options=options)
    model = create_generative(name, image_size=32, **TINY, **{**cfg.model_options},
                              **({"conditions": CONDITIONS} if GENERATIVE.get(name).config_class.conditioning == "required" else {}))
    tcfg = generative_trainer_config(cfg, model)
    trainer = Trainer(GenerativeObjective(model, cfg=cfg, store=None), None, None, config=tcfg, run_dir=tmp_path)
    assert all(lr == 0.000777 for lrs in _lrs(trainer).values() for lr in lrs)


def test_generative_unknown_group_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'gen' is not a parameter group of this model; its groups are "
                                          r"generator, discriminator"):
        _gen_trainer("dcgan", tmp_path, ["trainer.optim.groups.gen.lr=1e-4"])


def test_unknown_setting_of_a_group_is_a_config_error():
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve_config(GenerativeRunConfig, flags={"store": "s"}, options=["trainer.optim.groups.model.learning_rate=1"])


def test_a_config_written_before_run_wide_settings_applied_trains_as_it_did(tmp_path):
    """Older versions wrote the classifier defaults into every generative run's trainer.optim (the model's
    recommendation overrode them): such a config.yaml still trains with the recommendation."""
    legacy = {"store": "unused", "model": "dcgan", "trainer": {"optim": {
        "name": "adamw", "lr": 0.003, "weight_decay": 0.05, "momentum": 0.9, "betas": [0.9, 0.999], "groups": {}}}}
    cfg = GenerativeRunConfig.from_dict(legacy)
    assert cfg.trainer.optim.lr is None
    model = _generative("dcgan")
    trainer = Trainer(GenerativeObjective(model, cfg=cfg, store=None), None, None,
                      config=generative_trainer_config(cfg, model), run_dir=tmp_path)
    assert _lrs(trainer) == {g: [r["lr"]] for g, r in model.recommended_optimizers().items()}


# ---- classifiers and pretraining: the command's defaults, the flags and the per-group settings ---------
class _Objective:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def parameter_groups(self):
        return {"model": list(self.model.parameters())}

    def step_schedule(self):
        return [("model", 1)]

    def loss(self, group, batch):  # pragma: no cover - never trained here
        return StepOutput(torch.zeros(()))


@pytest.mark.parametrize("name", list_classifiers())
@pytest.mark.parametrize(("flags", "options", "expected"), [
    ({}, [], 3e-3),  # the classifier default
    ({"trainer.optim.lr": SET_LR}, [], SET_LR),  # --lr
    ({}, [f"trainer.optim.lr={SET_LR}"], SET_LR),  # -o
    ({"trainer.optim.lr": 0.5}, [f"trainer.optim.groups.model.lr={SET_LR}"], SET_LR),  # the group's wins
])
def test_classifier_lr_reaches_the_optimizer(name, flags, options, expected, tmp_path):
    cfg = resolve_config(ClassifierConfig, flags={"store": "unused", "model": name, **flags}, options=options)
    model = create_classifier(name, num_outputs=2, image_size=64 if name != "inception_v3" else 75)
    trainer = Trainer(_Objective(model), None, None, config=cfg.trainer, run_dir=tmp_path)
    assert _lrs(trainer) == {"model": [expected]} and trainer.optimizer_settings["model"]["lr"] == expected


@pytest.mark.parametrize("objective", [n for n in OBJECTIVES.names() if not OBJECTIVES.create(n).labelled])
def test_pretraining_lr_set_by_the_run_wins_over_the_objective_s_default(objective, tmp_path):
    spec = OBJECTIVES.create(objective)
    default = resolve_config(PretrainConfig, flags={"stores": ["unused"], "objective": objective})
    assert default.trainer.optim.lr == spec.trainer_defaults.get("optim", {}).get("lr", 1e-3)
    for flags, options in (({"trainer.optim.lr": SET_LR}, []), ({}, [f"trainer.optim.lr={SET_LR}"])):
        cfg = resolve_config(PretrainConfig, flags={"stores": ["unused"], "objective": objective, **flags},
                             options=options)
        model = create_classifier("vgg_scratch", num_outputs=0, image_size=32, channels=[8, 16, 16])
        trainer = Trainer(_Objective(model), None, None, config=cfg.trainer, run_dir=tmp_path)
        assert _lrs(trainer) == {"model": [SET_LR]}
