"""Contracts every registered classifier must meet (timm ``tests/test_models.py`` style).

A model registered in CLASSIFIERS is checked here automatically; it only needs an entry in PARAM_BUDGET.
Each model is built once per module (``built``) and copied where a test changes it; shape-only checks
run on the ``meta`` device (no memory, no compute).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from facelab.errors import ConfigError, FacelabError
from facelab.models.classifiers import create_classifier, list_classifiers, load_pretrained
from facelab.models.classifiers.base import identify_architecture
from facelab.models.classifiers.inception import InceptionA, _avg_pool, _avg_pool_tf
from facelab.models.layers import count_params

NAMES = list_classifiers()
NUM_OUTPUTS = 5
SIZE = {"inception_v3": 75}  # its minimum; the others run at 32 px (the contracts need no more)

# name -> (num_outputs, options, exact parameter count as torchvision's (proves the layout) or ("<", bound))
PARAM_BUDGET = {
    "resnet18": (1000, {}, 11_689_512),
    "resnet34": (1000, {}, 21_797_672),
    "resnet50": (1000, {}, 25_557_032),
    "inception_v3": (1000, {"aux_logits": True}, 27_161_264),
    "vgg_scratch": (40, {}, ("<", 700_000)),
}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            size = SIZE.get(name, 32)
            model = create_classifier(name, num_outputs=NUM_OUTPUTS, image_size=size).eval()
            cache[name] = (model, torch.randn(2, 3, size, size))
        return cache[name]

    return get


def test_registry_lists_the_issue_models():
    assert {"vgg_scratch", "resnet18", "resnet34", "resnet50", "inception_v3"} <= set(NAMES)
    assert set(NAMES) == set(PARAM_BUDGET), "declare the parameter count of every registered classifier"


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_feature_head_consistency(name, built):
    model, x = built(name)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.ndim == 4 and feats.shape[:2] == (2, model.embedding_dim)
    assert model.embedding(x).shape == (2, model.embedding_dim)  # FID/KID features
    assert logits.shape == (2, NUM_OUTPUTS) and torch.isfinite(logits).all()
    torch.testing.assert_close(model.forward_head(feats), logits)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(pooled), logits)  # (B, D) features are accepted too


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_gradients_for_every_trainable_parameter(name, built):
    model, x = built(name)
    model = copy.deepcopy(model).train()
    logits, aux = model.forward_with_aux(x)
    loss = logits.pow(2).mean() + (0 if aux is None else aux.pow(2).mean())
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_changes_the_number_of_outputs(name, built):
    model, x = built(name)
    model = copy.deepcopy(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        model.reset_classifier(7)
        assert model.num_outputs == 7 and model.forward_head(feats).shape == (2, 7)
        assert model.get_classifier().weight.requires_grad
        model.reset_classifier(0)
        assert model.forward_head(feats).shape == (2, model.num_features)
        model.reset_classifier(3)  # from no head back to one
        assert model.forward_head(feats).shape == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_bf16_autocast_forward_on_cpu(name, built):
    model, x = built(name)
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, NUM_OUTPUTS) and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    num_outputs, options, expected = PARAM_BUDGET[name]
    with torch.device("meta"):
        n = count_params(create_classifier(name, num_outputs=num_outputs, **options))
    if isinstance(expected, tuple):
        assert n < expected[1], f"{name}: {n:,} parameters"
    else:
        assert n == expected, f"{name}: {n:,} parameters, torchvision has {expected:,}"


@pytest.mark.parametrize("name", NAMES)
def test_pretrained_cfg_describes_the_input_and_options_are_json(name):
    size = SIZE.get(name, 48)
    with torch.device("meta"):
        model = create_classifier(name, num_outputs=NUM_OUTPUTS, in_chans=1, image_size=size)
        out = model.eval()(torch.zeros(2, 1, size, size))
    assert out.shape == (2, NUM_OUTPUTS)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg.input_size == (1, size, size) and len(cfg.mean) == len(cfg.std) == 1
    assert json.loads(json.dumps(cfg.to_dict()))["input_size"] == [1, size, size]
    assert model.arch_name == name
    saved = json.loads(json.dumps(model.arch_kwargs))  # every option, defaults included, as plain JSON
    assert {"num_outputs": NUM_OUTPUTS, "in_chans": 1, "image_size": size}.items() <= saved.items()
    with torch.device("meta"):
        again = create_classifier(name, **saved)
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


@pytest.mark.parametrize("name", NAMES)
def test_input_of_the_wrong_shape_is_a_clear_error(name, built):
    model, x = built(name)
    need = model.pretrained_cfg.min_input_size
    if need > 1:
        with pytest.raises(FacelabError, match=f"H, W >= {need}.*resize"):
            model(torch.zeros(1, 3, need - 1, need - 1))
    with pytest.raises(FacelabError, match="in_chans=4"):
        model(torch.zeros(1, 4, x.shape[-2], x.shape[-1]))
    with pytest.raises(FacelabError, match="batch dimension"):
        model(x[0])


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_and_architecture_is_recognised(name, built, tmp_path):
    model, _ = built(name)
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for t in fresh.state_dict().values():
            t.zero_()
    report = load_pretrained(fresh, tmp_path / "w.safetensors")
    assert report.loaded == len(state) and not report.skipped_head
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert (identify_architecture(state) or "").startswith(name.split("_")[0])


def test_unknown_name_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="known classifiers: .*resnet18"):
        create_classifier("resnet19", num_outputs=2)
    with pytest.raises(ConfigError, match="no option.*'stemm'.*stem"):
        create_classifier("resnet18", num_outputs=2, stemm="small")
    with pytest.raises(ConfigError, match="num_outputs"):
        create_classifier("vgg_scratch", num_outputs=-1)
    with pytest.raises(ConfigError, match="image_size >= 75"):
        create_classifier("inception_v3", num_outputs=2, image_size=64)
    with pytest.raises(ConfigError, match="stem must be"):
        create_classifier("resnet18", num_outputs=2, stem="tiny")


# torchvision resnet18 state-dict keys of the stem and first block, and of a downsampling block, in order.
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
    "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked", "layer1.0.conv2.weight", "layer1.0.bn2.weight",
    "layer1.0.bn2.bias", "layer1.0.bn2.running_mean", "layer1.0.bn2.running_var", "layer1.0.bn2.num_batches_tracked",
]  # fmt: skip
TORCHVISION_RESNET18_LAYER2_0 = [
    "layer2.0.conv1.weight", "layer2.0.bn1.weight", "layer2.0.bn1.bias", "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var", "layer2.0.bn1.num_batches_tracked", "layer2.0.conv2.weight", "layer2.0.bn2.weight",
    "layer2.0.bn2.bias", "layer2.0.bn2.running_mean", "layer2.0.bn2.running_var", "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean", "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
]  # fmt: skip


def test_resnet_state_dict_keys_match_torchvision():
    with torch.device("meta"):
        keys = list(create_classifier("resnet18", num_outputs=1000).state_dict())
        r50 = create_classifier("resnet50", num_outputs=1000).state_dict()
    assert len(keys) == 122  # torchvision resnet18: 62 parameters + 60 BN buffers
    assert keys[:18] == TORCHVISION_RESNET18_KEYS
    i = keys.index("layer2.0.conv1.weight")
    assert keys[i : i + 18] == TORCHVISION_RESNET18_LAYER2_0
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert r50["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert r50["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # stride on the 3x3 (v1.5)
    assert r50["layer4.2.bn3.running_var"].shape == (2048,) and r50["fc.weight"].shape == (1000, 2048)


def test_inception_state_dict_keys_match_torchvision():
    with torch.device("meta"):
        sd = create_classifier("inception_v3", num_outputs=1000, aux_logits=True).state_dict()
    assert len(sd) == 580  # torchvision inception_v3 with AuxLogits: 580 entries
    for key, shape in {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_mean": (192,),
        "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7c.branch3x3dbl_3b.bn.weight": (384,),
        "AuxLogits.conv1.conv.weight": (768, 128, 5, 5),
        "AuxLogits.fc.weight": (1000, 768),
        "fc.weight": (1000, 2048),
    }.items():
        assert sd[key].shape == shape, key


def test_inception_aux_logits_only_in_training_at_any_size():
    with torch.device("meta"):
        model = create_classifier("inception_v3", num_outputs=3, image_size=75, aux_logits=True)
        for size in (75, 299):
            logits, aux = model.train().forward_with_aux(torch.zeros(2, 3, size, size))
            assert logits.shape == aux.shape == (2, 3)
        assert model.eval().forward_with_aux(torch.zeros(2, 3, 75, 75))[1] is None
        model.reset_classifier(4)
        assert model.AuxLogits.fc.weight.shape == (4, 768)


def test_inception_tf_pooling_ignores_the_padding():
    torch.manual_seed(0)
    x = torch.rand(1, 8, 5, 5)
    torch.testing.assert_close(_avg_pool_tf(x)[..., 0, 0], x[..., :2, :2].mean(dim=(2, 3)))  # corner: 4 pixels
    torch.testing.assert_close(_avg_pool(x)[..., 0, 0], x[..., :2, :2].sum(dim=(2, 3)) / 9)  # torchvision: 9
    block = InceptionA(8, 4, _avg_pool)
    tf_block = InceptionA(8, 4, _avg_pool_tf)
    tf_block.load_state_dict(block.state_dict())
    assert not torch.allclose(block.eval()(x), tf_block.eval()(x))


def test_vgg_scratch_works_at_32_64_128_px():
    with torch.device("meta"):
        model = create_classifier("vgg_scratch", num_outputs=40).eval()
        for size, fmap in ((32, 4), (64, 8), (128, 16)):
            assert model.forward_features(torch.zeros(1, 3, size, size)).shape == (1, 256, fmap, fmap)
            assert model(torch.zeros(1, 3, size, size)).shape == (1, 40)  # any size: the head pools to 4x4
    with pytest.raises(ConfigError, match="image_size >= 32"):
        create_classifier("vgg_scratch", num_outputs=40, image_size=16)  # 2x2 maps: pass a smaller pool_grid
    assert create_classifier("vgg_scratch", num_outputs=40, image_size=16, pool_grid=2).num_features == 256 * 4


def test_vgg_scratch_layout_options_per_stage_convs_and_spatial_head():
    model = create_classifier("vgg_scratch", num_outputs=40, channels=[8, 16, 24], convs_per_stage=[1, 2, 2],
                              pool_grid=2).eval()
    assert [sum(isinstance(m, torch.nn.BatchNorm2d) for m in stage.modules()) for stage in model.stages] == [1, 2, 2]
    x = torch.rand(3, 3, 32, 32)
    feats = model.pooled_features(x)
    assert feats.shape == (3, 24 * 4) and model.num_features == 96 and model.fc.in_features == 96
    fmap = model.forward_features(x)  # (3, 24, 8, 8): the head keeps a 2x2 grid of average-pooled cells
    expected = torch.nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(1)
    torch.testing.assert_close(feats, expected)
    # the FID/KID embedding is the global average, not the head's grid: 24-d, as a 1x1 grid would give
    assert model.embedding_dim == 24
    torch.testing.assert_close(model.embedding(x), fmap.mean(dim=(2, 3)))
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 40)  # the smallest input that still has a 2x2 grid
    with pytest.raises(FacelabError, match=">= 8"):
        model(torch.rand(1, 3, 7, 7))
    with pytest.raises(ConfigError, match="one per stage"):
        create_classifier("vgg_scratch", num_outputs=1, channels=[8, 16], convs_per_stage=[1, 2, 2])
    with pytest.raises(ConfigError, match="pool_grid"):
        create_classifier("vgg_scratch", num_outputs=1, pool_grid=0)


@pytest.mark.parametrize("name", ["vgg_scratch", "resnet18"])
def test_norm_and_act_layers_are_options(name):
    torch.manual_seed(0)
    model = create_classifier(name, num_outputs=2, image_size=32, norm_layer="groupnorm", act_layer="silu")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert torch.isfinite(model(torch.randn(1, 3, 32, 32))).all()  # batch of 1 trains without batch norm
    custom = create_classifier(name, num_outputs=2, image_size=32, norm_layer=lambda c: torch.nn.BatchNorm2d(c, eps=1e-3))
    assert "norm_layer" not in custom.arch_kwargs  # a callable cannot be saved; names can
    with pytest.raises(ConfigError, match="unknown norm layer 'no_such_norm'.*batchnorm"):
        create_classifier(name, num_outputs=2, norm_layer="no_such_norm")
