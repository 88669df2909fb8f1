"""Mixup in the classifier objective: inputs mixed with a shuffled copy, loss mixed over both label sets."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from facelab.data.schema import LabelKind
from facelab.models.classifiers.heads import Task, TaskOutput, task_loss
from facelab.train.classifier import ClassifierConfig, ClassifierObjective

TASK = Task((TaskOutput("a", LabelKind.BINARY), TaskOutput("k", LabelKind.CATEGORICAL, 3)))


class Recorder(torch.nn.Module):
    """A linear model on the mean pixel that remembers the input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, TASK.num_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return self.lin(x.mean(dim=(2, 3)))


def _objective(alpha: float) -> tuple[ClassifierObjective, SimpleNamespace]:
    cfg = ClassifierConfig(store="unused", mixup_alpha=alpha)
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(x=torch.randn(6, 3, 4, 4, generator=g),
                            y=torch.tensor([[0, 1], [1, 2], [1, -1], [0, 0], [-1, 1], [1, 2]]))
    return ClassifierObjective(Recorder(), TASK, cfg=cfg, store=None), batch


def test_mixup_mixes_the_inputs_and_weighs_both_label_sets_by_lambda():
    obj, batch = _objective(0.4)
    torch.manual_seed(3)
    out = obj.loss("model", batch)
    lam = out.logs["mixup_lambda"]
    torch.manual_seed(3)
    assert lam == float(torch.distributions.Beta(0.4, 0.4).sample())  # drawn from the checkpointed generator
    perm = torch.randperm(6)
    torch.testing.assert_close(obj.model.seen, lam * batch.x + (1 - lam) * batch.x[perm])
    logits = obj.model.lin(obj.model.seen.mean(dim=(2, 3)))
    expected = lam * task_loss(logits, batch.y, TASK) + (1 - lam) * task_loss(logits, batch.y[perm], TASK)
    torch.testing.assert_close(out.loss, expected)
    assert 0 < lam < 1 and lam != 0.5


def test_no_mixup_when_off_or_in_eval_mode():
    for alpha, training in ((0.0, True), (0.4, False)):
        obj, batch = _objective(alpha)
        obj.model.train(training)
        out = obj.loss("model", batch)
        assert "mixup_lambda" not in out.logs
        torch.testing.assert_close(obj.model.seen, batch.x)
