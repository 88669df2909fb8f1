"""Task layouts, losses and predictions for multi-label / multi-class / mixed heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facelab.data.schema import LabelKind, LabelSpec
from facelab.errors import ConfigError, FacelabError
from facelab.models.classifiers.heads import (
    Task,
    TaskOutput,
    class_weights_from_labels,
    head_bias_from_labels,
    pos_weight_from_labels,
    task_decode,
    task_loss,
    task_predict,
)

# Smiling (binary), yaw (3 classes), Male (binary), light (3 classes): 1 + 3 + 1 + 3 = 8 logits.
MIXED = Task(
    (
        TaskOutput("Smiling", LabelKind.BINARY),
        TaskOutput("yaw", LabelKind.CATEGORICAL, 3),
        TaskOutput("Male", LabelKind.BINARY),
        TaskOutput("light", LabelKind.CATEGORICAL, 3),
    )
)


def test_layout_slices_and_split():
    assert MIXED.num_logits == 8 and MIXED.num_labels == 4
    assert MIXED.slices == (slice(0, 1), slice(1, 4), slice(4, 5), slice(5, 8))
    assert MIXED.binary_index == ([0, 2], [0, 4])
    parts = MIXED.split(torch.arange(16.0).view(2, 8))
    assert parts["Smiling"].tolist() == [0.0, 8.0] and parts["yaw"].shape == (2, 3) and parts["light"][0].tolist() == [5, 6, 7]
    assert Task.from_dict(MIXED.to_dict()) == MIXED


def test_constructors_and_validation():
    specs = [
        LabelSpec("Smiling", LabelKind.BINARY),
        LabelSpec("age", LabelKind.NUMERIC),
        LabelSpec("race", LabelKind.CATEGORICAL, ("a", "b", "c", "d", "e")),
    ]
    t = Task.from_labels(specs)
    assert t.names == ("Smiling", "race") and t.num_logits == 6  # numeric labels are left out
    assert Task.from_labels(specs, ["race"]).num_logits == 5
    assert Task.multilabel([f"a{i}" for i in range(40)]).num_logits == 40
    assert Task.multiclass("yaw", 3).num_logits == 3
    with pytest.raises(ConfigError, match="unknown label.*'Smilng'.*the data has: Smiling, age, race"):
        Task.from_labels(specs, ["Smilng"])
    with pytest.raises(ConfigError, match="numeric; bin it"):
        Task.from_labels(specs, ["age"])
    with pytest.raises(ConfigError, match="twice"):
        Task.multilabel(["x", "x"])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        Task.multiclass("yaw", 1)


def test_multilabel_loss_is_plain_bce():
    task = Task.multilabel(["a", "b", "c"])
    logits, y = torch.randn(5, 3), torch.randint(0, 2, (5, 3))
    torch.testing.assert_close(task_loss(logits, y, task), F.binary_cross_entropy_with_logits(logits, y.float()))
    pw = torch.tensor([1.0, 3.0, 0.5])
    torch.testing.assert_close(
        task_loss(logits, y, task, pos_weight=pw), F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=pw)
    )
    by_name = task_loss(logits, y, task, pos_weight={"b": 3.0})
    torch.testing.assert_close(by_name, task_loss(logits, y, task, pos_weight=torch.tensor([1.0, 3.0, 1.0])))


def test_mixed_loss_is_the_mean_of_per_label_losses():
    torch.manual_seed(0)
    logits = torch.randn(6, 8, requires_grad=True)
    y = torch.stack([torch.randint(0, 2, (6,)), torch.randint(0, 3, (6,)), torch.randint(0, 2, (6,)), torch.randint(0, 3, (6,))], 1)
    per = task_loss(logits, y, MIXED, reduction="none")
    expected = torch.stack([
        F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0].float()),
        F.cross_entropy(logits[:, 1:4], y[:, 1]),
        F.binary_cross_entropy_with_logits(logits[:, 4], y[:, 2].float()),
        F.cross_entropy(logits[:, 5:8], y[:, 3]),
    ])  # fmt: skip
    torch.testing.assert_close(per, expected)
    loss = task_loss(logits, y, MIXED)
    torch.testing.assert_close(loss, expected.mean())
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(
        task_loss(logits, y, MIXED, class_weights={"yaw": w}, reduction="none")[1], F.cross_entropy(logits[:, 1:4], y[:, 1], weight=w)
    )


def test_unknown_labels_are_ignored():
    task = Task((TaskOutput("a", LabelKind.BINARY), TaskOutput("k", LabelKind.CATEGORICAL, 3)))
    logits = torch.randn(4, 4)
    y = torch.tensor([[1, 2], [-1, 0], [0, -1], [-1, -1]])
    per = task_loss(logits, y, task, reduction="none")
    torch.testing.assert_close(per[0], F.binary_cross_entropy_with_logits(logits[[0, 2], 0], torch.tensor([1.0, 0.0])))
    torch.testing.assert_close(per[1], F.cross_entropy(logits[[0, 1], 1:], torch.tensor([2, 0])))
    all_unknown = task_loss(logits, torch.full((4, 2), -1), task)
    assert all_unknown.item() == 0.0


def test_shape_and_name_errors():
    with pytest.raises(FacelabError, match=r"needs \(B, 8\); create the model with num_outputs=task.num_logits"):
        task_loss(torch.randn(2, 7), torch.zeros(2, 4, dtype=torch.long), MIXED)
    with pytest.raises(FacelabError, match="labels of shape"):
        task_loss(torch.randn(2, 8), torch.zeros(2, 3, dtype=torch.long), MIXED)
    with pytest.raises(ConfigError, match="not categorical labels"):
        task_loss(torch.randn(2, 8), torch.zeros(2, 4, dtype=torch.long), MIXED, class_weights={"Smiling": [1, 1]})
    with pytest.raises(ConfigError, match="one value per binary label"):
        task_loss(torch.randn(2, 8), torch.zeros(2, 4, dtype=torch.long), MIXED, pos_weight=torch.ones(3))


def test_predict_and_decode():
    logits = torch.tensor([[2.0, 0.0, 5.0, 0.0, -1.0, 0.0, 0.0, 3.0]])
    probs = task_predict(logits, MIXED)
    assert probs["Smiling"].shape == (1,) and probs["yaw"].shape == (1, 3)
    torch.testing.assert_close(probs["yaw"].sum(1), torch.ones(1))
    assert probs["Smiling"].item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    assert task_decode(logits, MIXED).tolist() == [[1, 1, 0, 2]]
    assert task_decode(logits, MIXED, threshold=0.95).tolist() == [[0, 1, 0, 2]]


def test_weights_and_priors_from_training_labels():
    y = torch.tensor([[1, 0, 0, 2], [0, 0, 0, 2], [0, 1, 1, 2], [0, 0, -1, 2]])
    assert pos_weight_from_labels(y, MIXED).tolist() == [3.0, 2.0]  # Smiling 3 neg / 1 pos, Male 2 / 1
    cw = class_weights_from_labels(y, MIXED)
    torch.testing.assert_close(cw["yaw"], torch.tensor([4 / (3 * 3), 4 / (3 * 1), 0.0]))  # class 2 unseen
    bias = head_bias_from_labels(y, MIXED)
    assert bias.shape == (8,)
    assert bias[0].item() == pytest.approx(torch.log(torch.tensor(0.25 / 0.75)).item())
    torch.testing.assert_close(torch.softmax(bias[5:8], 0), torch.tensor([1e-3, 1e-3, 1 - 1e-3]), atol=1e-5, rtol=1e-3)
