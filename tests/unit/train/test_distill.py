"""The ``distill`` objective: the teacher's targets (soft, hard, tempered, mirrored with the view), the cache
that labels each row once, gradients to the student only, and teachers that cannot label the stores."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError
from facelab.faces import AlignSpec
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers import create_classifier
from facelab.models.classifiers.heads import Task, TaskOutput
from facelab.train.objectives import distill
from facelab.train.objectives.distill import DistillObjective, DistillOptions, check_teacher_fits

TINY = {"channels": [8, 16, 16]}
SPECS = [LabelSpec("Smiling", LabelKind.BINARY), LabelSpec("yaw", LabelKind.CATEGORICAL, ("left", "center", "right"))]
TASK = Task((TaskOutput("Smiling", LabelKind.BINARY), TaskOutput("yaw", LabelKind.CATEGORICAL, 3)))
PRE = Preprocessing(image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)


class _CountingTeacher(nn.Module):
    """Logits from the image's mean brightness left and right of centre; counts the images it labels."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        left, right = x[..., :8].mean((1, 2, 3)), x[..., 8:].mean((1, 2, 3))
        return self.scale * torch.stack([left + right, left - right, torch.zeros_like(left), right - left], 1)


@pytest.fixture()
def make_objective(monkeypatch):
    def make(**options) -> tuple[DistillObjective, _CountingTeacher]:
        teacher = _CountingTeacher()
        meta = CheckpointMeta(kind="classifier", arch="toy", arch_kwargs={}, labels=[s.to_dict() for s in SPECS],
                              preprocessing=PRE, config={"task": TASK.to_dict()})
        monkeypatch.setattr(distill, "load_teacher", lambda o, p: (teacher.eval(), meta, TASK))
        encoder = create_classifier("vgg_scratch", num_outputs=0, image_size=16, **TINY)
        obj = DistillObjective(encoder, options=DistillOptions(teacher=["t"], **options), preprocessing=PRE,
                               config={"model": "vgg_scratch"})
        return obj, teacher
    return make


class _Batch(SimpleNamespace):
    def __init__(self, x, rows):
        super().__init__(x=x, index=torch.as_tensor(list(rows)))

    def __len__(self):
        return int(self.x.shape[0])


def test_a_student_that_gives_the_teachers_logits_agrees_everywhere_and_scores_the_lowest_loss(make_objective):
    obj, _ = make_objective()
    z = torch.randn(8, 4)
    loss_same, agree = obj.distill_loss(z, z)
    loss_other, _ = obj.distill_loss(torch.randn(8, 4), z)
    assert agree.shape == (8, 2) and bool(agree.all())
    assert float(loss_same) < float(loss_other)
    p = torch.sigmoid(z[:, 0])  # at its minimum each label's loss is the teacher's entropy
    q = torch.softmax(z[:, 1:], 1)
    entropy = (-(p * p.log() + (1 - p) * (1 - p).log()).mean() - (q * q.log()).sum(1).mean()) / 2
    torch.testing.assert_close(loss_same, entropy)


def test_hard_targets_are_the_teachers_decisions_and_temperature_softens_them(make_objective):
    z = torch.tensor([[2.0, 3.0, 1.0, 0.0]])
    hard = make_objective(hard=True)[0].targets(z)
    assert hard[0].tolist() == [1.0] and hard[1].tolist() == [[1.0, 0.0, 0.0]]
    soft, warm = make_objective()[0].targets(z), make_objective(temperature=4.0)[0].targets(z)
    assert 0.5 < float(warm[0]) < float(soft[0]) < 1.0
    assert float(warm[1][0, 0]) < float(soft[1][0, 0])


def test_a_mirrored_view_gets_the_mirrored_teacher_targets(make_objective):
    obj, _ = make_objective(hflip=1.0, augment="none")
    x = torch.rand(3, 3, 16, 16)
    z = torch.randn(3, 4)
    view, zt = obj.student_view(x, z, seed=0)
    torch.testing.assert_close(view, (torch.flip(x, dims=[3]) - 0.5) / 0.5)
    torch.testing.assert_close(zt, z[:, [0, 3, 2, 1]])  # left and right swapped, Smiling and center kept
    obj, _ = make_objective(hflip=0.0, augment="none")
    view, zt = obj.student_view(x, z, seed=0)
    torch.testing.assert_close(zt, z)


def test_the_teacher_labels_each_row_once_and_learns_nothing(make_objective):
    obj, teacher = make_objective()
    x = torch.rand(6, 3, 16, 16)
    for _ in range(3):  # three epochs over the same rows
        out = obj.loss("model", _Batch(x, range(6)))
    assert teacher.seen == 6
    out.loss.backward()
    assert teacher.scale.grad is None
    grads = {n: p.grad for n, p in obj.model.named_parameters()}
    assert any(n.startswith("encoder.") and g is not None and g.abs().sum() > 0 for n, g in grads.items())
    assert grads["projector.fc.weight"] is not None
    assert set(obj.parameter_groups()["model"]) == set(obj.model.parameters())
    # rows without a store row (-1) are labelled every time, never cached under a shared key
    obj.teacher_logits(x[:2], torch.tensor([-1, -1]))
    obj.teacher_logits(x[:2], torch.tensor([-1, -1]))
    assert teacher.seen == 10


def test_the_cached_targets_are_the_teachers_logits_of_the_clean_normalised_image(make_objective):
    obj, teacher = make_objective()
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(obj.teacher_logits(x, torch.arange(4)), teacher((x - 0.5) / 0.5))


def test_validation_scores_the_clean_held_out_faces_the_same_every_time(make_objective):
    obj, _ = make_objective()
    obj.model.eval()
    batches = [_Batch(torch.rand(5, 3, 16, 16), range(5)), _Batch(torch.rand(2, 3, 16, 16), range(5, 7))]
    first, second = obj.evaluate(batches), obj.evaluate(batches)
    assert first == second and set(first) == {"loss", "agreement"} and 0 <= first["agreement"] <= 1


def test_the_checkpoint_is_an_encoder_that_records_its_teacher(make_objective):
    meta = make_objective()[0].checkpoint_meta()
    assert meta.kind == "encoder" and meta.arch_kwargs["num_outputs"] == 0
    assert meta.config["objective_options"]["teacher"] == ["t"]
    assert [o["name"] for o in meta.config["teacher_task"]["outputs"]] == ["Smiling", "yaw"]


def test_options_need_a_teacher_and_take_one_as_a_string():
    with pytest.raises(Exception, match="teacher"):
        DistillOptions()
    assert DistillOptions(teacher="runs/a").teacher == ["runs/a"]
    with pytest.raises(Exception, match="best or last"):
        DistillOptions(teacher="a", teacher_checkpoint="first")
    with pytest.raises(Exception, match="augmentation preset"):
        DistillOptions(teacher="a", augment="nope")


def test_a_teacher_of_another_size_or_alignment_is_refused_naming_both():
    meta = CheckpointMeta(kind="classifier", arch="toy", arch_kwargs={}, preprocessing=PRE)
    with pytest.raises(ConfigError, match="the teacher takes 16px images, the stores hold 32px"):
        check_teacher_fits(meta, PRE.model_copy(update={"image_size": 32}), "runs/t")
    with pytest.raises(ConfigError, match="alignment: the teacher learnt faces not aligned"):
        check_teacher_fits(meta, PRE.model_copy(update={"align": AlignSpec()}), "runs/t")
    check_teacher_fits(meta, PRE, "runs/t")  # the same: no error
