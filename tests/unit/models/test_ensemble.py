"""ClassifierEnsemble averages its members' probabilities; load_classifier refuses members that disagree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import FacelabError
from facelab.models.classifiers import Task, TaskOutput, create_classifier, task_predict
from facelab.models.classifiers.ensemble import ClassifierEnsemble, load_classifier
from facelab.models.checkpoint import CheckpointMeta, save_checkpoint

TASK = Task((TaskOutput("Male", LabelKind.BINARY), TaskOutput("yaw", LabelKind.CATEGORICAL, 3),
             TaskOutput("Smiling", LabelKind.BINARY)))


class Fixed(nn.Module):
    """Returns the same logits for every image."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def test_ensemble_probabilities_are_the_mean_of_the_members():
    members = [Fixed([2.0, 1.0, 0.0, -1.0, -3.0]), Fixed([-1.0, -2.0, 3.0, 0.5, 4.0]), Fixed([0.0, 0.0, 0.0, 0.0, 0.0])]
    x = torch.zeros(2, 3, 8, 8)
    got = task_predict(ClassifierEnsemble(members, TASK)(x), TASK)
    each = [task_predict(m(x), TASK) for m in members]
    for name in TASK.names:
        want = torch.stack([p[name] for p in each]).mean(0)
        torch.testing.assert_close(got[name], want, atol=1e-6, rtol=0)
    assert got["yaw"].sum(1).sub(1).abs().max() < 1e-6


def test_ensemble_of_confident_members_stays_finite():
    members = [Fixed([80.0, 90.0, -90.0, 0.0, -80.0]), Fixed([70.0, 90.0, -90.0, 0.0, -70.0])]
    logits = ClassifierEnsemble(members, TASK)(torch.zeros(1, 3, 8, 8))
    assert torch.isfinite(logits).all()
    p = task_predict(logits, TASK)
    assert p["Male"].item() > 0.999 and p["Smiling"].item() < 0.001


def test_an_ensemble_needs_two_members():
    with pytest.raises(FacelabError, match="at least 2"):
        ClassifierEnsemble([Fixed([0.0] * 5)], TASK)


# ---- loading ---------------------------------------------------------------------------------------
LABELS = [LabelSpec("Male", LabelKind.BINARY), LabelSpec("Smiling", LabelKind.BINARY),
          LabelSpec("Eyeglasses", LabelKind.BINARY)]
PRE = {"image_size": 16, "crop": {"mode": "none"}, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "store_hash": "a"}



def _checkpoint(path: Path, *, labels=LABELS, pre=PRE, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    task = Task.from_labels(labels)
    model = create_classifier("vgg_scratch", num_outputs=task.num_logits, image_size=16, channels=[4, 8])
    meta = CheckpointMeta(kind="classifier", arch="vgg_scratch", arch_kwargs=model.arch_kwargs,
                          labels=[s.to_dict() for s in labels], preprocessing=Preprocessing.from_dict(pre),
                          config={"task": task.to_dict(), "seed": seed})
    return save_checkpoint(path, model=model, meta=meta)


def test_load_classifier_of_one_path_is_the_plain_model(tmp_path):
    model, meta = load_classifier(_checkpoint(tmp_path / "a"))
    assert not isinstance(model, ClassifierEnsemble) and meta.arch == "vgg_scratch"


def test_load_classifier_of_several_paths_is_an_ensemble_with_their_metadata(tmp_path):
    paths = [_checkpoint(tmp_path / n, seed=i, pre={**PRE, "store_hash": n}) for i, n in enumerate("abc")]
    model, meta = load_classifier(paths)
    assert isinstance(model, ClassifierEnsemble) and not model.training
    assert meta.arch == "ensemble of 3 vgg_scratch"
    assert meta.arch_kwargs["members"] == [str(p) for p in paths]
    assert [m.config["seed"] for m in model.member_metas] == [0, 1, 2]
    assert meta.preprocessing.store_hash is None  # three stores: no single own store
    assert meta.preprocessing.image_size == 16 and meta.labels == [s.to_dict() for s in LABELS]
    x = torch.randn(4, 3, 16, 16)
    singles = [load_classifier(p)[0] for p in paths]
    with torch.no_grad():
        want = torch.stack([torch.sigmoid(m(x)) for m in singles]).mean(0)
        torch.testing.assert_close(torch.sigmoid(model(x)), want, atol=1e-6, rtol=0)


def test_members_with_other_labels_are_refused(tmp_path):
    a = _checkpoint(tmp_path / "a")
    b = _checkpoint(tmp_path / "b", labels=[LABELS[1], LABELS[0], LABELS[2]])  # same labels, other order
    with pytest.raises(FacelabError, match="same labels, in the same order"):
        load_classifier([a, b])


def test_members_with_other_preprocessing_are_refused(tmp_path):
    a = _checkpoint(tmp_path / "a")
    b = _checkpoint(tmp_path / "b", pre={**PRE, "mean": [0.4, 0.4, 0.4]})
    with pytest.raises(FacelabError, match=r"other preprocessing.*mean"):
        load_classifier([a, b])


def test_a_run_listed_twice_is_refused(tmp_path):
    a = _checkpoint(tmp_path / "a")
    with pytest.raises(FacelabError, match="listed twice"):
        load_classifier([a, tmp_path / "a" / ".." / "a"])


def test_members_aligned_differently_are_refused_but_an_unrecorded_alignment_is_not(tmp_path):
    from facelab.faces import AlignSpec

    a = _checkpoint(tmp_path / "a", pre={**PRE, "align": AlignSpec(detector="mtcnn").model_dump(mode="json")})
    b = _checkpoint(tmp_path / "b", pre={**PRE, "align": AlignSpec(detector="retinaface").model_dump(mode="json")})
    old = _checkpoint(tmp_path / "old")  # written before checkpoints recorded their alignment
    with pytest.raises(FacelabError, match=r"other preprocessing.*align"):
        load_classifier([a, b])
    assert load_classifier([a, old])[1].arch == "ensemble of 2 vgg_scratch"
