"""Ways to train on an imbalanced training split, each one registered function -> MethodPlan.

A method may change the training rows (oversampling), add tagged synthetic rows (SMOTE, generative
models), or change the classifier config (class weights, balanced sampler, augmentation). It only ever
sees the reduced *training* rows of the study context: validation and test rows are never passed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from imblearn.over_sampling import SMOTE, RandomOverSampler
from sklearn.linear_model import LogisticRegression

from facelab.data.loader import BatchLoader
from facelab.data.store import Store
from facelab.errors import ConfigError, FacelabError
from facelab.eval.evaluate import binary_scores
from facelab.eval.generative_metrics import conditional_fidelity
from facelab.eval.grids import to_uint8
from facelab.models.checkpoint import resolve_checkpoint, save_checkpoint
from facelab.models.loading import load_model
from facelab.registry import Registry
from facelab.train.generative import GenerativeRunConfig, train_generative

METHODS: Registry[Any] = Registry("balancing method")

#: Minority images a generative method needs at least to train a generator.
MIN_MINORITY_FOR_GENERATOR = 20


@dataclass
class StudyContext:
    """What a method may use: the store, the target, and the reduced training rows only."""

    store: Store
    target: str
    minority: int  # stored value of the minority class
    train_rows: np.ndarray  # reduced training rows (after the imbalance simulation)
    val_rows: np.ndarray  # real validation rows (for generator early stopping only, never augmented)
    seed: int
    work_dir: Path
    synthetic_amount: float | None  # None: balance the classes; else this share of the minority count
    generator: dict[str, Any] = field(default_factory=dict)  # {model_options, epochs, batch_size}
    device: str = "auto"
    keep: float = 1.0  # the share p of the minority kept in train_rows
    #: model name -> GenerativeRunConfig fields of the generator a generative method trains (the study's options)
    generator_config: Callable[[str], dict[str, Any]] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.store.column(self.target)[self.train_rows]

    @property
    def n_minority(self) -> int:
        return int((self.labels == self.minority).sum())

    @property
    def n_majority(self) -> int:
        return int((self.labels != self.minority).sum())

    def n_synthetic(self) -> int:
        """Synthetic minority rows to add: enough to balance the classes unless an amount is set."""
        if self.synthetic_amount is None:
            return max(0, self.n_majority - self.n_minority)
        return int(round(self.synthetic_amount * self.n_minority))


@dataclass
class MethodPlan:
    """How a method changes classifier training."""

    train_rows: np.ndarray
    extra: tuple[np.ndarray, np.ndarray] | None = None  # (images (M,S,S,3) uint8, labels (M, 1))
    overrides: dict[str, Any] = field(default_factory=dict)  # ClassifierConfig fields
    notes: dict[str, Any] = field(default_factory=dict)
    # after training, before evaluation: f(run_dir) -> notes (e.g. refit the head of the saved classifier)
    post_train: Callable[[Path], dict[str, Any]] | None = None


@METHODS.register("none")
def _none(ctx: StudyContext) -> MethodPlan:
    return MethodPlan(ctx.train_rows)


@METHODS.register("oversample")
def _oversample(ctx: StudyContext) -> MethodPlan:
    """Random oversampling (imbalanced-learn RandomOverSampler): duplicate minority rows until balanced."""
    ros = RandomOverSampler(random_state=ctx.seed)
    rows, _ = ros.fit_resample(ctx.train_rows.reshape(-1, 1), ctx.labels)
    return MethodPlan(np.sort(rows.ravel()), notes={"rows_after": int(rows.size)})


@METHODS.register("class_weights")
def _class_weights(ctx: StudyContext) -> MethodPlan:
    return MethodPlan(ctx.train_rows, overrides={"balance": "class_weights"})


@METHODS.register("balanced_sampler")
def _balanced_sampler(ctx: StudyContext) -> MethodPlan:
    return MethodPlan(ctx.train_rows, overrides={"balance": "sampler"})


@METHODS.register("augment")
def _augment(ctx: StudyContext) -> MethodPlan:
    """Classic augmentation (flip, small affine, colour jitter) on every training batch."""
    return MethodPlan(ctx.train_rows, overrides={"augment": "standard"})


@METHODS.register("random_erasing")
def _random_erasing(ctx: StudyContext) -> MethodPlan:
    return MethodPlan(ctx.train_rows, overrides={"random_erasing": 0.5})


@METHODS.register("smote")
def _smote(ctx: StudyContext) -> MethodPlan:
    """SMOTE (imbalanced-learn) on pixels: new minority images between minority neighbours."""
    n_new = ctx.n_synthetic()
    minor = ctx.train_rows[ctx.labels == ctx.minority]
    if minor.size < 2 or n_new == 0:
        return MethodPlan(ctx.train_rows, notes={"skipped": "fewer than 2 minority rows or nothing to add"})
    x = np.asarray(ctx.store.images[np.sort(minor)]).reshape(minor.size, -1).astype(np.float32)  # (n, S*S*3)
    anchor = ctx.train_rows[ctx.labels != ctx.minority][:1]  # one majority row: SMOTE needs two classes
    xa = np.asarray(ctx.store.images[anchor]).reshape(1, -1).astype(np.float32)
    y = np.r_[np.ones(minor.size, int), np.zeros(1, int)]
    sm = SMOTE(sampling_strategy={1: minor.size + n_new}, k_neighbors=min(5, minor.size - 1), random_state=ctx.seed)
    xr, _ = sm.fit_resample(np.vstack([x, xa]), y)
    s = ctx.store.image_size
    new = np.clip(np.rint(xr[minor.size + 1:]), 0, 255).astype(np.uint8).reshape(-1, s, s, 3)  # appended samples
    return MethodPlan(ctx.train_rows, extra=(new, np.full((len(new), 1), ctx.minority, np.int64)),
                      notes={"synthetic": int(len(new))})


@METHODS.register("smote_features")
def _smote_features(ctx: StudyContext) -> MethodPlan:
    """SMOTE (imbalanced-learn) on learnt features, the classifier decoupled from its representation
    (Kang et al. 2020, "classifier re-training"): train on the imbalanced rows as they are, then embed
    the training rows with the trained backbone (pooled features, no augmentation), oversample the
    minority there with SMOTE until the classes balance, and refit the linear head on the balanced
    features (logistic regression); the backbone is unchanged."""
    return MethodPlan(ctx.train_rows, post_train=lambda run_dir: refit_head_with_smote(ctx, run_dir))


def refit_head_with_smote(ctx: StudyContext, run_dir: Path, *, which: str = "best") -> dict[str, Any]:
    """Refit the binary head of the classifier in ``run_dir`` on SMOTE-balanced backbone features of the
    training rows; overwrites checkpoint ``which`` (its metadata says so). Returns notes."""
    model, meta = load_model(run_dir, kind="classifier", which=which)
    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise ConfigError(f"smote_features refits a single-logit linear head; {meta.arch} has {head}")
    pre = meta.preprocessing
    loader = BatchLoader(ctx.store, np.sort(ctx.train_rows), batch_size=256, labels=[ctx.target], shuffle=False,
                         mean=pre.mean, std=pre.std, prefetch=0)
    feats, ys = [], []
    with torch.no_grad():
        for batch in loader:
            feats.append(model.pooled_features(batch.x).float().numpy())
            ys.append(batch.y[:, 0].numpy())
    x, y = np.concatenate(feats), (np.concatenate(ys) == ctx.minority).astype(int)  # 1: minority
    n_min = int(y.sum())
    if n_min < 2:
        return {"skipped": "fewer than 2 minority rows: the head was not refitted"}
    target = max(n_min, int((y == 0).sum())) if ctx.synthetic_amount is None else n_min + ctx.n_synthetic()
    sm = SMOTE(sampling_strategy={1: target}, k_neighbors=min(5, n_min - 1), random_state=ctx.seed)
    xr, yr = sm.fit_resample(x, y)
    lr = LogisticRegression(max_iter=2000, C=1.0).fit(xr, yr)
    w, b = lr.coef_[0], lr.intercept_[0]
    # the logit is "probability of stored value 1": flip the sign when the minority is value 0
    sign = 1.0 if ctx.minority == 1 else -1.0
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(sign * w, dtype=head.weight.dtype)[None])
        head.bias.copy_(torch.as_tensor([sign * b], dtype=head.bias.dtype))
    meta.metrics = {**meta.metrics, "smote_features_synthetic": float(len(xr) - len(x))}
    save_checkpoint(resolve_checkpoint(run_dir, which), model=model, meta=meta)
    return {"synthetic_features": int(len(xr) - len(x)), "head_refit": "logistic regression on SMOTE-balanced features"}


def _generative(ctx: StudyContext, model: str) -> MethodPlan:
    """Train a generator conditioned on the target on the reduced training rows; sample the minority."""
    if ctx.n_minority < MIN_MINORITY_FOR_GENERATOR:
        raise ConfigError(f"{model}: only {ctx.n_minority} minority images left in training; a generator needs at "
                          f"least {MIN_MINORITY_FOR_GENERATOR} (raise p)")
    cfg = GenerativeRunConfig.from_dict(_generator_fields(ctx, model), where=f"{model} generator")
    run_dir = ctx.work_dir / f"gen-{model}"
    summary = train_generative(cfg, run_dir=run_dir, rows=ctx.train_rows, val_rows=ctx.val_rows)
    gen, _ = load_model(run_dir, kind="generative")
    n = ctx.n_synthetic()
    cond = gen.make_cond({ctx.target: ctx.minority})
    gcpu = torch.Generator().manual_seed(ctx.seed)
    chunks = [to_uint8(gen.sample(min(256, n - i), cond, generator=gcpu)) for i in range(0, n, 256)]
    images = np.concatenate(chunks) if chunks else np.zeros((0, ctx.store.image_size, ctx.store.image_size, 3), np.uint8)
    notes = {"synthetic": int(len(images)), "generator_run": str(run_dir), "generator_seconds": summary["fit_seconds"]}
    notes.update(synthetic_fidelity(ctx, run_dir))
    return MethodPlan(ctx.train_rows, extra=(images, np.full((len(images), 1), ctx.minority, np.int64)), notes=notes)


def _generator_fields(ctx: StudyContext, model: str) -> dict[str, Any]:
    """The generator's config: the study's (``ctx.generator_config``), else one built from ``ctx.generator``."""
    if ctx.generator_config is not None:
        return ctx.generator_config(model)
    g = ctx.generator
    return {"store": str(ctx.store.path), "model": model, "conditions": [ctx.target], "seed": ctx.seed,
            "batch_size": g.get("batch_size", 64), "device": ctx.device, "grid_every_epochs": 1000,
            "model_options": (g.get("model_options") or {}).get(model, {}),
            "trainer": {"epochs": g.get("epochs", 10), "time_budget_minutes": g.get("minutes"), "progress": False}}


#: The method whose classifier judges the generated minority samples (trained on real reduced rows only).
JUDGE_METHOD = "none"


def synthetic_fidelity(ctx: StudyContext, gen_run: Path, *, n: int = 500) -> dict[str, Any]:
    """How convincing the generated minority images are, judged by the study's own baseline classifier.

    The ``none`` cell of the same (p, seed) is a classifier trained on the same reduced real training rows
    (no test data, no synthetic rows), so it is a fair judge: ``synthetic_fidelity`` is the share of ``n``
    samples conditioned on the minority that it calls minority, and ``judge_minority_recall_val`` its
    recall on the real minority images of the validation split, the figure a perfect generator would
    reach. A generator far below that adds images that do not look like the minority class.
    Returns {} (with a note) when the ``none`` cell has not been trained before this one.
    """
    judge = ctx.work_dir / JUDGE_METHOD
    try:
        resolve_checkpoint(judge)
    except FacelabError:
        return {"synthetic_fidelity_skipped": f"put {JUDGE_METHOD!r} before the generative methods to judge samples"}
    res = conditional_fidelity(gen_run, judge, labels=[ctx.target], n_per_value=n, seed=ctx.seed)
    shares = list(res["per_label"][ctx.target].values())  # in stored-value order
    val = binary_scores(judge, ctx.store, ctx.val_rows, ctx.target, ctx.minority)
    return {"synthetic_fidelity": float(shares[ctx.minority]), "judge_minority_recall_val": val["minority_recall"],
            "synthetic_fidelity_judge": str(judge)}


for _name in ("cvae", "cgan", "aae"):
    METHODS.register(_name)(lambda ctx, _m=_name: _generative(ctx, _m))

GENERATIVE_METHODS = frozenset({"cvae", "cgan", "aae"})
