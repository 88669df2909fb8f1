"""How well does a distilled student predict its teacher's labels by itself, before any fine-tuning?

Loads a ``facelab pretrain --objective distill`` run with its distillation head (the linear layer to the
teacher's logits, which fine-tuning leaves behind) and scores it on a store's official validation partition:
the mean accuracy over the teacher's binary labels. Optionally scores the teacher runs (averaged) on the same
rows, for comparison.

    python benchmarks/distill_student_accuracy.py runs/pretrain-kd --store stores/celeba64 \\
        --teacher runs/train-a runs/train-b runs/train-c --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from facelab.data.schema import LabelKind, Partition
from facelab.data.store import Store
from facelab.models.checkpoint import read_meta, read_weights, resolve_checkpoint
from facelab.models.classifiers import create_classifier
from facelab.models.classifiers.ensemble import load_classifier
from facelab.models.classifiers.heads import Task
from facelab.models.projection import ProjectedEncoder
from facelab.train.objectives.distill import DistillHead


def load_student(run: Path, which: str) -> tuple[torch.nn.Module, Task, object]:
    ckpt = resolve_checkpoint(run, which)
    meta = read_meta(ckpt)
    if "teacher_task" not in meta.config:
        raise SystemExit(f"{run} is not a distillation run (its checkpoint records no teacher task)")
    task = Task.from_dict(meta.config["teacher_task"])
    encoder = create_classifier(meta.arch, **meta.arch_kwargs)
    model = ProjectedEncoder(encoder, DistillHead(encoder.num_features, task.num_logits, drop_rate=0.0))
    model.load_state_dict(read_weights(ckpt))
    return model.eval(), task, meta.preprocessing


def normalise(x: torch.Tensor, pre) -> torch.Tensor:
    """Images in [0, 1] normalised as the network's checkpoint says."""
    return (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: np.ndarray, task: Task) -> float:
    z = torch.cat([model(x[i:i + 256]).float() for i in range(0, len(x), 256)]).numpy()
    cols = [s.start for o, s in zip(task.outputs, task.slices) if o.kind is LabelKind.BINARY]
    return float(((z[:, cols] > 0) == (y == 1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a facelab pretrain --objective distill run folder")
    ap.add_argument("--store", type=Path, required=True, help="a store with the teacher's labels and official partitions")
    ap.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ap.add_argument("--teacher", type=Path, nargs="*", default=[], help="teacher runs to score on the same rows")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    student, task, pre = load_student(args.run, args.checkpoint)
    store = Store.open(args.store)
    rows = np.flatnonzero(store.partitions == int(Partition.VAL))
    names = [o.name for o in task.outputs if o.kind is LabelKind.BINARY]
    y = np.stack([store.column(n)[rows] for n in names], 1)
    x = torch.from_numpy(np.asarray(store.images[rows])).permute(0, 3, 1, 2).float() / 255
    out = {"run": str(args.run), "store": str(args.store), "rows": int(rows.size), "labels": len(names),
           "student_mean_accuracy": accuracy(student, normalise(x, pre), y, task)}
    if args.teacher:
        teacher, tmeta = load_classifier([str(t) for t in args.teacher], which="last")
        out["teacher_mean_accuracy"] = accuracy(teacher, normalise(x, tmeta.preprocessing), y, task)
    print(json.dumps(out, indent=2) if args.json else
          " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
