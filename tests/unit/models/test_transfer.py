"""Pretrained loading (torchvision files, safetensors, facelab checkpoints) and backbone freezing."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from facelab.errors import FacelabError
from facelab.models.classifiers import create_classifier
from facelab.models.classifiers.transfer import (
    adapt_input_conv,
    freeze_backbone,
    is_frozen,
    load_pretrained,
    resample_kernel,
    split_parameters,
    unfreeze,
)


def resnet18(num_outputs: int = 1000, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return create_classifier("resnet18", num_outputs=num_outputs, image_size=32, **kwargs)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A "fake torchvision" file: our resnet18 state dict saved as torchvision publishes it."""
    model = resnet18()
    with torch.no_grad():  # non-trivial statistics, so a load that skips buffers would be caught
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(1234)
    path = tmp_path_factory.mktemp("tv") / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def assert_backbone_equal(model, state):
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, state[k]), k


def test_torchvision_file_loads_with_a_new_head(torchvision_file):
    path, state = torchvision_file
    model = create_classifier("resnet18", num_outputs=40, image_size=32, pretrained=path)
    assert_backbone_equal(model, state)
    assert model.fc.weight.shape == (40, 512)
    report = load_pretrained(model, path)
    assert report.skipped_head == ["fc.weight", "fc.bias"] and report.loaded == len(state) - 2
    assert "resnet18" in report.summary()


def test_same_head_size_loads_the_head_too(torchvision_file):
    path, state = torchvision_file
    model = resnet18(seed=1)
    report = load_pretrained(model, path)
    assert not report.skipped_head and torch.equal(model.fc.weight, state["fc.weight"])


@pytest.mark.parametrize("wrap", ["safetensors", "model_prefix", "module_prefix", "state_dict_key", "folder", "run_folder"])
def test_other_containers_and_prefixes(torchvision_file, tmp_path, wrap):
    _, state = torchvision_file
    meta = {"facelab": json.dumps({"kind": "classifier", "arch": "resnet18", "arch_kwargs": {"num_outputs": 1000}})}
    if wrap == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, str(path))
    elif wrap == "model_prefix":
        path = tmp_path / "ckpt.safetensors"
        save_file({f"model.{k}": v for k, v in state.items()}, str(path), metadata=meta)
    elif wrap == "module_prefix":  # DataParallel
        path = tmp_path / "dp.pt"
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrap == "state_dict_key":  # training-script checkpoint
        path = tmp_path / "ckpt.pth"
        torch.save({"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}}, path)
    elif wrap == "folder":  # a facelab checkpoint folder
        path = tmp_path / "best"
        path.mkdir()
        save_file(state, str(path / "model.safetensors"), metadata=meta)
    else:  # a facelab run folder: its best checkpoint, not the last
        path = tmp_path / "run"
        for name, weights in (("best", state), ("last", {k: torch.zeros_like(v) for k, v in state.items()})):
            (path / "checkpoints" / name).mkdir(parents=True)
            save_file(weights, str(path / "checkpoints" / name / "model.safetensors"), metadata=meta)
    model = resnet18(num_outputs=3, seed=2)
    report = load_pretrained(model, path)
    assert report.loaded == len(state) - 2
    assert_backbone_equal(model, state)
    if wrap in ("model_prefix", "folder", "run_folder"):
        assert report.source.startswith("facelab checkpoint of resnet18")
    else:
        assert report.source.startswith("resnet18 (basic blocks 2-2-2-2")


def test_wrong_architecture_is_a_clear_error(torchvision_file):
    path, _ = torchvision_file
    with torch.device("meta"):
        r50 = create_classifier("resnet50", num_outputs=40)
        vgg = create_classifier("vgg_scratch", num_outputs=40)
    with pytest.raises(FacelabError, match=r"into resnet50 .*looks like resnet18 \(basic blocks 2-2-2-2") as e:
        load_pretrained(r50, path)
    assert "missing keys" in str(e.value) and "layer1.0.conv3.weight" in str(e.value)
    assert "file (64, 64, 3, 3) vs model (64, 64, 1, 1)" in str(e.value)
    with pytest.raises(FacelabError, match=r"(?s)vgg_scratch.*unexpected keys \(12\d\): conv1.weight"):
        load_pretrained(vgg, path)


def test_head_mismatch_without_skip_head_and_non_strict_loading(torchvision_file):
    path, state = torchvision_file
    model = resnet18(num_outputs=40)
    with pytest.raises(FacelabError, match=r"mismatched keys \(2\): fc.weight file \(1000, 512\) vs model \(40, 512\)"):
        load_pretrained(model, path, skip_head=False)
    with torch.device("meta"):
        r34 = create_classifier("resnet34", num_outputs=1000)
    r34 = r34.to_empty(device="cpu")  # allocate without initialising: fast
    report = load_pretrained(r34, path, strict=False)
    assert report.loaded > 0 and report.missing and not report.unexpected


def test_unreadable_files_are_clear_errors(tmp_path, torchvision_file):
    model = resnet18()
    with pytest.raises(FacelabError, match="not found"):
        load_pretrained(model, tmp_path / "nope.pth")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(FacelabError, match="unsupported weights file"):
        load_pretrained(model, tmp_path / "w.onnx")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(FacelabError, match="not a readable safetensors"):
        load_pretrained(model, tmp_path / "bad.safetensors")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pth")  # a whole module: code, not weights
    with pytest.raises(FacelabError, match=r"weights-only torch file \(UnpicklingError: .*Unsupported global: GLOBAL torch.nn"):
        load_pretrained(model, tmp_path / "pickled.pth")
    (tmp_path / "garbage.pth").write_bytes(b"xxxx")  # e.g. an HTML error page saved under the weights' name
    with pytest.raises(FacelabError, match=r"not a torch weights file \(it starts with b'xxxx'"):
        load_pretrained(model, tmp_path / "garbage.pth")
    legacy = tmp_path / "legacy.pth"  # the pre-1.6 format (a pickle, not a zip) still loads
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    target = resnet18(num_outputs=2, seed=1)
    report = load_pretrained(target, legacy)
    assert report.loaded == len(model.state_dict()) - 2 and report.skipped_head == ["fc.weight", "fc.bias"]
    assert torch.equal(target.state_dict()["layer1.0.conv1.weight"], model.state_dict()["layer1.0.conv1.weight"])
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(FacelabError, match="holds no tensors"):
        load_pretrained(model, tmp_path / "empty.pth")
    with pytest.raises(FacelabError, match="without model.safetensors .nor checkpoints/best"):
        load_pretrained(model, tmp_path)


def test_small_stem_and_grey_input_adapt_the_imagenet_conv1(torchvision_file):
    path, state = torchvision_file
    small = resnet18(num_outputs=2, stem="small")
    report = load_pretrained(small, path)
    assert report.adapted == ["conv1.weight: 7x7 kernel resampled to 3x3"]
    same = [k for k in state if k not in ("conv1.weight", "fc.weight", "fc.bias")]
    assert all(torch.equal(small.state_dict()[k], state[k]) for k in same)
    # each filter keeps its response to a constant image
    torch.testing.assert_close(small.conv1.weight.sum(dim=(2, 3)), state["conv1.weight"].sum(dim=(2, 3)))
    grey = resnet18(num_outputs=2, in_chans=1)
    assert load_pretrained(grey, path).adapted == ["conv1.weight: 3 -> 1 input channels"]
    g = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(grey.conv1(g), F.conv2d(g.expand(1, 3, 16, 16), state["conv1.weight"], stride=2, padding=3))


def test_adapt_input_conv_and_resample_kernel_units():
    w = torch.randn(4, 3, 7, 7)
    assert adapt_input_conv(w, 3) is w
    five = adapt_input_conv(w, 5)
    assert five.shape == (4, 5, 7, 7)
    torch.testing.assert_close(five[:, :3], w * 3 / 5)  # RGB filters repeated cyclically, scaled by 3/5
    torch.testing.assert_close(five[:, 3:], w[:, :2] * 3 / 5)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    r = resample_kernel(w, (3, 3))
    assert r.shape == (4, 3, 3, 3)
    torch.testing.assert_close(r.sum(dim=(2, 3)), w.sum(dim=(2, 3)))
    torch.testing.assert_close(resample_kernel(torch.ones(1, 1, 7, 7), (3, 3)), torch.full((1, 1, 3, 3), 49 / 9))


def test_inception_aux_head_is_optional_in_the_file_and_the_model(tmp_path):
    with torch.device("meta"):
        with_aux = create_classifier("inception_v3", num_outputs=10, aux_logits=True)
        without = create_classifier("inception_v3", num_outputs=10)
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in with_aux.state_dict().items()}
    torch.save(state, tmp_path / "inception_v3_google.pth")
    no_aux_state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    torch.save(no_aux_state, tmp_path / "no_aux.pth")
    without = without.to_empty(device="cpu")
    assert load_pretrained(without, tmp_path / "inception_v3_google.pth").loaded == len(no_aux_state)
    with_aux = with_aux.to_empty(device="cpu")
    assert load_pretrained(with_aux, tmp_path / "no_aux.pth").loaded == len(no_aux_state)


def _frozen_snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.mark.parametrize("name", ["resnet18", "vgg_scratch"])
def test_frozen_backbone_and_batch_norm_stay_bit_identical_through_training(name):
    torch.manual_seed(0)
    model = create_classifier(name, num_outputs=3, image_size=32)
    # An optimizer created before freezing, holding every parameter with stale zero gradients,
    # momentum and weight decay: the worst case for frozen weights.
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    model.train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.zero_grad(set_to_none=False)
    n_frozen = freeze_backbone(model)
    backbone, head = split_parameters(model)
    assert n_frozen == sum(p.numel() for p in backbone) and is_frozen(model)
    assert all(not p.requires_grad for p in backbone) and all(p.requires_grad for p in head)
    before, head_before = _frozen_snapshot(model), model.fc.weight.clone()
    for _ in range(3):
        model.train()
        loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.randint(0, 3, (4,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.training and model.dropout.training
    after = _frozen_snapshot(model)
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed while frozen"
    assert not torch.equal(head_before, model.fc.weight)


def test_unfreeze_restores_training_and_returns_lr_groups():
    model = resnet18(num_outputs=3)
    freeze_backbone(model)
    model.train()
    groups = unfreeze(model, lr_scale=0.1, lr=1e-3)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and groups[1]["lr"] == 1e-3 and groups[1]["lr_scale"] == 1.0
    assert all(p.requires_grad for p in model.parameters()) and not is_frozen(model)
    assert model.bn1.training and model.layer4[1].bn2.training
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert "lr" not in unfreeze(model, lr_scale=0.5)[0]
    torch.optim.AdamW(groups)  # valid param groups


def test_reset_classifier_after_freezing_gives_a_trainable_head():
    model = resnet18(num_outputs=3)
    freeze_backbone(model)
    model.reset_classifier(5)
    assert model.fc.weight.requires_grad and model.fc.weight.shape == (5, 512)
    assert not model.conv1.weight.requires_grad
