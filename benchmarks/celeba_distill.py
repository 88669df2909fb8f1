"""Do more *people* help the CelebA attribute classifier? (the 0.915 target; AMD EPYC, 2026-11-24)

The 4,560 training images of the CelebA subset show only 152 people, and the ceiling analysis
(benchmarks/celeba_ceiling.py) found that no threshold or calibration reaches 0.915: the model must rank
images better. UTKFace holds 19,930 faces of thousands of other people, but without CelebA's 40 labels. This
script tests the cheapest way to use them, knowledge distillation on unlabelled images (the "noisy student"
recipe, Xie et al. 2020):

1. UTKFace faces are reframed to CelebA's framing (UTKFace crops are tighter): each face is shrunk and
   moved to where CelebA's faces sit, measured with OpenCV's Haar face detector on both stores, and the
   uncovered border is filled with a blurred copy of the image.
2. Finished CelebA runs (the teachers; several are averaged) label every reframed face with their 40
   probabilities.
3. A student of the default recipe trains on the CelebA training images (true labels) plus the reframed
   faces (the teachers' probabilities as soft targets), on a store in the run folder that holds both; validation is
   the official CelebA val partition as always.

    OMP_NUM_THREADS=1 python benchmarks/celeba_distill.py TEACHER_RUN [TEACHER_RUN ...] \\
        --unlabeled ~/facelab-stores/utk64 --n-unlabeled 9120 --epochs 15 --json

``--mix W --n-unlabeled 0`` is self-distillation ("born-again networks", Furlanello et al. 2018) on CelebA alone: the
student's targets on the training images are (1 - W) x their labels + W x the teachers' probabilities.

The teachers' own training time is not in the student's; the figure answers "is data the limit", not the
15-minute target by itself.

This script reproduces the figures of docs/results.md (faces reframed by a Haar face box, joint training). The
library's way to distil onto other faces is now `facelab pretrain --objective distill` on stores aligned with
`--align`, then `facelab train --pretrained` (docs/pretraining.md; benchmarks/celeba_transfer_recipe.sh).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facelab.data.schema import Partition
from facelab.data.store import Store
from facelab.data.write import write_store_arrays
from facelab.eval.inference import predict_rows
from facelab.models.loading import load_model
from facelab.train.classifier import ClassifierConfig, ClassifierObjective
from facelab.train.trainer import StepOutput

from celeba_common import train_and_score  # benchmarks/ is on sys.path when this runs as a script


def face_frame(store: Store, sample: int = 600, upscale: int = 256) -> np.ndarray:
    """Median (centre x, centre y, width) of the faces OpenCV's frontal Haar cascade finds, as fractions of the image."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    for i in np.linspace(0, len(store) - 1, sample).astype(int):
        gray = cv2.cvtColor(cv2.resize(np.asarray(store.images[i]), (upscale, upscale)), cv2.COLOR_RGB2GRAY)
        faces = cascade.detectMultiScale(gray, 1.1, 5, minSize=(upscale // 6, upscale // 6))
        if len(faces) == 1:
            x, y, w, _ = faces[0]
            found.append(((x + w / 2) / upscale, (y + w / 2) / upscale, w / upscale))
    if len(found) < sample // 10:
        raise SystemExit(f"{store.path}: the face detector found a single face in only {len(found)} of {sample} images")
    return np.median(np.asarray(found), axis=0)


def reframe(images: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move and scale faces framed as ``src`` (cx, cy, w) to ``dst``; uncovered pixels get a blurred copy of the image."""
    n, size = images.shape[0], images.shape[1]
    s = dst[2] / src[2]
    m = np.float32([[s, 0, (dst[0] - s * src[0]) * size], [0, s, (dst[1] - s * src[1]) * size]])
    inside = cv2.warpAffine(np.ones((size, size), np.float32), m, (size, size), flags=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur(inside, (0, 0), 1.0)[..., None]  # soft seam
    out = np.empty_like(images)
    for i in range(n):
        sharp = cv2.warpAffine(images[i], m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        fill = cv2.GaussianBlur(sharp, (0, 0), size / 10)
        out[i] = (alpha * sharp + (1 - alpha) * fill).round().astype(np.uint8)
    return out


class Distill(ClassifierObjective):
    """Rows at or after ``first_extra`` train on the teachers' probabilities ``soft`` (loss weighted ``weight``);
    labelled rows on ``(1 - mix) * labels + mix * soft`` (``mix`` 0: the true labels only). Passed to
    ``train_classifier(objective=...)`` with its own options bound (``functools.partial``)."""

    def __init__(self, *args, first_extra: int, soft: torch.Tensor, weight: float = 1.0, mix: float = 0.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.first_extra, self.soft, self.weight, self.mix = first_extra, soft, weight, mix  # soft: (store rows, labels)

    def loss(self, group, batch):
        if not self.model.training:
            return super().loss(group, batch)
        logits = self.model(batch.x).float()
        extra = (batch.index >= self.first_extra).to(logits.device)
        soft = self.soft[batch.index].to(logits.device)
        parts = {}
        loss = logits.new_zeros(())
        if (~extra).any():
            if self.mix:
                target = (1 - self.mix) * batch.y[~extra].float() + self.mix * soft[~extra]
                real = F.binary_cross_entropy_with_logits(logits[~extra], target)
            else:
                real = self._task_loss(logits[~extra], batch.y[~extra])
            loss = loss + real * (~extra).float().mean()
            parts["loss"] = float(real.detach())
        if extra.any():
            kd = F.binary_cross_entropy_with_logits(logits[extra], soft[extra])
            loss = loss + self.weight * kd * extra.float().mean()
            parts["kd_loss"] = float(kd.detach())
        return StepOutput(loss, parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teachers", nargs="+", type=Path, help="finished classifier runs on --store (their mean is the teacher)")
    ap.add_argument("--store", type=Path, default=Path("~/facelab-stores/celeba64").expanduser())
    ap.add_argument("--unlabeled", type=Path, default=Path("~/facelab-stores/utk64").expanduser())
    ap.add_argument("--n-unlabeled", type=int, default=None, help="use a random subset of this many faces (0: none, for --mix alone)")
    ap.add_argument("--weight", type=float, default=1.0, help="weight of the distillation loss")
    ap.add_argument("--mix", type=float, default=0.0,
                    help="labelled rows train on (1 - mix) labels + mix teacher probabilities (self-distillation)")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/celeba-distill"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.monotonic()
    store, extra = Store.open(args.store), Store.open(args.unlabeled)
    rows = np.arange(len(extra))
    if args.n_unlabeled is not None:
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.n_unlabeled, replace=False))
    src = dst = None
    if len(rows):
        src, dst = face_frame(extra), face_frame(store)
        images = reframe(np.asarray(extra.images[rows]), src, dst)
    else:
        images = np.zeros((0, *store.images.shape[1:]), np.uint8)
    run = args.out / f"distill-n{len(rows)}-w{args.weight}-mix{args.mix}-e{args.epochs}-s{args.seed}-{time.strftime('%H%M%S')}"
    specs, n_labels = store.label_specs, len(store.label_names)
    unlabeled = write_store_arrays(run / "unlabeled", images, np.zeros((len(rows), n_labels)), specs,
                                   np.full(len(rows), int(Partition.TRAIN)), source=store.source, crop=store.manifest.crop)

    teachers = [load_model(t, kind="classifier", device="cpu", which="last") for t in args.teachers]

    def teacher_probabilities(on: Store) -> np.ndarray:
        """(rows of ``on``, labels) mean probability of the teachers."""
        if not len(on):
            return np.zeros((0, n_labels), np.float32)
        probs = []
        for model, meta in teachers:
            p, _, _ = predict_rows(model, meta, on, np.arange(len(on)))
            probs.append(np.stack([p[name] for name in store.label_names], axis=1))
        return np.mean(probs, axis=0).astype(np.float32)

    soft = teacher_probabilities(unlabeled)  # the extra faces
    soft_labelled = teacher_probabilities(store) if args.mix else np.zeros((len(store), n_labels), np.float32)
    shutil.rmtree(unlabeled.path)
    mixed = write_store_arrays(run / "store", np.concatenate([np.asarray(store.images), images]),
                               np.concatenate([store.labels, (soft > 0.5).astype(np.int32)]), specs,
                               np.concatenate([store.partitions, np.full(len(rows), int(Partition.TRAIN))]),
                               source=store.source, crop=store.manifest.crop)
    prep_seconds = time.monotonic() - t0
    checks = {}  # how well the teachers transfer to the reframed faces, where the unlabelled store has a comparable label
    if len(rows) and "gender" in extra.label_names and "Male" in store.label_names:  # UTKFace: gender 0 = male
        male = extra.column("gender")[rows] == 0
        checks["teacher_Male_accuracy_on_unlabeled_gender"] = round(float(((soft[:, store.label_index("Male")] > 0.5) == male).mean()), 4)

    objective = functools.partial(Distill, first_extra=len(store), soft=torch.from_numpy(np.concatenate([soft_labelled, soft])),
                                  weight=args.weight, mix=args.mix)
    cfg = ClassifierConfig.from_dict({"store": str(mixed.path), "split": "official", "seed": args.seed,
                                                 "trainer": {"epochs": args.epochs}})
    out = {"teachers": [str(t) for t in args.teachers], "unlabeled": str(args.unlabeled), "n_unlabeled": int(len(rows)),
           "frame_unlabeled": None if src is None else src.round(3).tolist(),
           "frame_celeba": None if dst is None else dst.round(3).tolist(), "weight": args.weight, "mix": args.mix,
           "epochs": args.epochs, "seed": args.seed, "prep_minutes": round(prep_seconds / 60, 2),
           "teacher_positive_rate_on_unlabeled": round(float((soft > 0.5).mean()), 4) if len(soft) else None, **checks,
           **train_and_score(cfg, run / "student", objective=objective)}
    print(json.dumps(out, indent=2) if args.json else out)


if __name__ == "__main__":
    main()
