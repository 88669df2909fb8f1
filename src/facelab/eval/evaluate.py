"""``facelab eval``: score a trained classifier on a store (its own or an external one with the same labels)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from facelab.data.schema import LabelSpec
from facelab.data.labels_file import LabelsFile, with_labels_file
from facelab.data.store import Store
from facelab.data.views import official_splits, run_splits
from facelab.errors import FacelabError
from facelab.eval.inference import predict_rows
from facelab.eval.label_shift import adapt_probabilities, label_priors
from facelab.eval.metrics import label_metrics, score
from facelab.eval.plots import plot_confusion, plot_label_bars
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers.ensemble import describe, load_classifier, member_metas
from facelab.models.classifiers.heads import Task, flip_permutation
from facelab.models.loading import load_model
from facelab.report import render_report
from facelab.runs.inputs import ACCEPT_FLAG, RunInput, check_own_data
from facelab.runs.splits import load_run_splits
from facelab.utils.io import atomic_write_json

SplitName = Literal["train", "val", "test", "all"]
#: one run folder / checkpoint, or several scored as an ensemble
RunPaths = str | Path | Sequence[str | Path]


def check_labels(meta: CheckpointMeta, store: Store) -> None:
    """The store must have every label the model predicts, with the same kind and classes."""
    have = {s.name: s for s in store.label_specs}
    problems = []
    for d in meta.labels:
        want = LabelSpec.from_dict(d)
        got = have.get(want.name)
        if got is None:
            problems.append(f"{want.name!r} is missing")
        elif (got.kind, got.classes) != (want.kind, want.classes):
            problems.append(f"{want.name!r} is {got.kind.value} {got.classes} in the store but {want.kind.value} {want.classes} in the model")
    if problems:
        raise FacelabError(
            f"{store.path}: labels do not match the checkpoint ({'; '.join(problems)}). Evaluate on a store "
            f"prepared from data with the model's labels: {', '.join(d['name'] for d in meta.labels)}"
        )


def check_preprocessing(meta: CheckpointMeta, store: Store, *, what: str = "the model") -> list[str]:
    """The store's images must be what the model was trained on (:meth:`Preprocessing.check_store`); returns
    the warnings (another source, crop or store of the same source)."""
    if meta.preprocessing is None:
        raise FacelabError(f"{meta.path}: the checkpoint records no preprocessing, so its inputs cannot be rebuilt; "
                           "it was not written by facelab train")
    return meta.preprocessing.check_store(store, what=what).warnings


@dataclass(frozen=True)
class EvalRows:
    """The rows an evaluation scores and how they were chosen."""

    rows: np.ndarray
    how: str
    own_split: bool = False  # the run's own split of its training store (its val rows chose its best checkpoint)


def eval_rows(meta: CheckpointMeta, store: Store, split: SplitName) -> EvalRows:
    """Rows of ``store`` to evaluate a run on.

    On the run's own store (same content hash) these are the rows the run recorded in its splits.json, so
    ``test`` is unseen and ``val`` is exactly what it validated on; on an external store, the official
    partition when it has one, otherwise every row.
    """
    if split == "all":
        return EvalRows(np.arange(len(store)), "all rows")
    if meta.preprocessing is not None and meta.preprocessing.store_hash == store.content_hash:
        recorded = load_run_splits(meta.run_dir, store) if meta.run_dir is not None else None
        if recorded is not None:
            return EvalRows(recorded.rows(split), f"the run's own {split} split", own_split=True)
        return EvalRows(_recomputed_rows(meta, store)[split],
                        f"the run's own {split} split (recomputed from its config: the run records no splits.json)",
                        own_split=True)
    if store.has_partitions:
        return EvalRows(official_splits(store)[split], f"official {split} partition of an external store")
    return EvalRows(np.arange(len(store)), "all rows of an external store (it has no partitions)")


def _recomputed_rows(meta: CheckpointMeta, store: Store) -> dict[str, np.ndarray]:
    """A run that predates splits.json: its split policy replayed (its train_limit / train_identities are not:
    they only ever shrank train)."""
    cfg = meta.config
    stratify = [o["name"] for o in cfg["task"]["outputs"]][:1]
    splits, _ = run_splits(store, policy=cfg.get("split", "auto"), seed=cfg.get("seed", 0), stratify=stratify,
                           fractions=tuple(cfg.get("split_fractions", (0.7, 0.15, 0.15))))
    return splits


def ensemble_eval_rows(metas: list[CheckpointMeta], store: Store, split: SplitName) -> EvalRows:
    """:func:`eval_rows` for several runs scored together: the rows in every run's ``split``.

    Runs trained on this store with other seeds or split policies hold out different rows, and a row one
    run trained on is not a test of the ensemble; so the ensemble is scored on the rows every run held out.
    """
    chosen = [eval_rows(m, store, split) for m in metas]
    first = chosen[0]
    if all(np.array_equal(c.rows, first.rows) for c in chosen[1:]):
        return first
    rows = first.rows
    for c in chosen[1:]:
        rows = np.intersect1d(rows, c.rows)
    return EvalRows(rows, f"the rows in all {len(metas)} runs' {split} splits (the runs split the store differently)",
                    own_split=all(c.own_split for c in chosen))


def training_priors(metas: list[CheckpointMeta], store: Store) -> tuple[dict[str, list[float]], str]:
    """The class priors a classifier's (or an ensemble's: the mean of its members') probabilities carry, and
    where they come from: the checkpoints, or for older checkpoints evaluated on their own training store,
    that store's training split.

    Raises:
        FacelabError: a run was trained with class weights or a balanced sampler (its probabilities do not
            carry its training priors), or an older checkpoint is evaluated on an external store.
    """
    task = Task.from_dict(metas[0].config["task"])
    found, sources = [], set()
    for meta in metas:
        balance = meta.config.get("balance", "none")
        if balance != "none":
            raise FacelabError(f"a run was trained with balance={balance}: its probabilities do not carry its "
                               "training priors, so --adapt-priors cannot re-weight them; evaluate without it")
        if all(n in meta.label_priors for n in task.names):
            found.append(meta.label_priors)
            sources.add("the checkpoints")
        elif meta.preprocessing is not None and meta.preprocessing.store_hash == store.content_hash:
            rows = eval_rows(meta, store, "train").rows
            cols = [store.label_index(n) for n in task.names]
            found.append(label_priors(store.labels[rows][:, cols].astype(np.int64), task))
            sources.add("the run's train split of this store (the checkpoint records no priors)")
        else:
            raise FacelabError("the checkpoint records no training priors (it was written before facelab recorded "
                               "them) and this is not its training store; evaluate it on its own store or retrain it "
                               "to use --adapt-priors")
    mean = {n: np.mean([f[n] for f in found], 0).tolist() for n in task.names}
    return mean, " and ".join(sorted(sources))


def _run_names(run: RunPaths) -> str | list[str]:
    return [str(r) for r in run] if isinstance(run, (list, tuple)) else str(run)


def _prepare(runs: RunPaths, store: Store, *, which: str, device: str) -> tuple[torch.nn.Module, CheckpointMeta, list[str]]:
    """The classifier (or ensemble), its metadata and the store's compatibility warnings."""
    model, meta = load_classifier(runs, which=which, device=device)
    check_labels(meta, store)
    return model, meta, check_preprocessing(meta, store)


def labelled_store(store: Store, meta: CheckpointMeta, labels_file: str | Path | None = None, *,
                   reviewed_only: bool = False) -> Store:
    """``store`` with the labels file the model's labels come from laid over it: ``labels_file``, or else
    the one its training run used when the store lacks a label the model predicts. ``reviewed_only``: only
    the classes a person reviewed count (the others are unknown)."""
    if labels_file is None and (reviewed_only or any(d["name"] not in store.label_names for d in meta.labels)):
        labels_file = (meta.config or {}).get("labels_file")
        if labels_file is None and reviewed_only:
            raise FacelabError("--reviewed-only needs a labels file: --labels-file, or a model trained with one")
    if labels_file is None:
        return store
    predicted = [d["name"] for d in meta.labels]
    tasks = [t for t in LabelsFile.read(labels_file).tasks if t in predicted]
    return with_labels_file(store, labels_file, tasks=tasks or None, reviewed_only=reviewed_only)


def check_run_inputs(run_dirs: Sequence[Path | None], store: Store, *, accept: bool = False,
                     doing: str = "evaluate", command: str = "eval") -> list[str]:
    """Each run (folder) of ``run_dirs`` applied to ``store``: on its own store, every input it recorded must be
    as it recorded it, and so must its labels file wherever the truth comes from it (:func:`facelab.runs.inputs.
    check_own_data`); returns a warning per change accepted (``accept``: --accept-changed-inputs). None (a
    checkpoint outside a run folder, an exported file) has nothing recorded.

    Raises:
        ChangedInputError: an input changed since the run recorded it, and ``accept`` is false.
    """
    ov = store.overlay
    labels = RunInput("labels_file", "labels file", ov.source, ov.sha256) if ov is not None else None
    changes = []
    for run_dir in dict.fromkeys(run_dirs):
        if run_dir is not None:
            changes += check_own_data(run_dir, store, labels=labels, accept=accept, doing=doing, command=command)
    return [f"{c.describe()}; accepted with {ACCEPT_FLAG}" for c in changes]


def flip_consistency(probs: dict[str, np.ndarray], mirrored: dict[str, np.ndarray], task: Task,
                     flip_perm: list[int] | None) -> dict[str, float]:
    """Per label a flip mirrors (left <-> right): the share of images whose predicted class on the mirror
    image is the mirror of the predicted class on the image."""
    out = {}
    if flip_perm is None:
        return out
    for o, sl in zip(task.outputs, task.slices):
        swap = [flip_perm[sl.start + k] - sl.start for k in range(o.num_logits)]
        if o.num_logits > 1 and swap != list(range(o.num_logits)):
            a, b = probs[o.name].argmax(1), mirrored[o.name].argmax(1)
            out[o.name] = float(np.mean(np.asarray(swap)[a] == b)) if len(a) else float("nan")
    return out


def evaluate_run(run: RunPaths, store_path: str | Path, *, split: SplitName = "test", out_dir: str | Path | None = None,
                 batch_size: int = 256, device: str = "cpu", tta_flip: bool | None = None, which: str = "best",
                 adapt_priors: bool = False, labels_file: str | Path | None = None,
                 reviewed_only: bool = False, accept_changed_inputs: bool = False) -> dict[str, Any]:
    """Evaluate a classifier run (or several, their probabilities averaged) on ``store_path``; write JSON and
    plots; return the report.

    Args:
        run: a run folder or checkpoint, or a list of them scored as one ensemble.
        which: checkpoint of each run folder: "best" (default) or "last".
        tta_flip: average each image's logits with its mirror image's; None: as the run was validated (its
            config's ``tta_flip``; for an ensemble, when every member was).
        adapt_priors: re-weight the probabilities to the class priors of the evaluated rows, estimated from
            the unlabelled predictions by EM (:mod:`facelab.eval.label_shift`); the report keeps the
            unadapted figures in ``label_shift.unadapted_summary``.
        out_dir: where report.json and the plots go (default: RUN/eval/STORE-SPLIT, for an ensemble
            FIRST_RUN/eval/ensemble-of-N-HASH-STORE-SPLIT, HASH naming its members; suffixed -last, -tta,
            -reviewed, -adapted for those options, so that one evaluation never replaces another kind).
        labels_file, reviewed_only: the labels file the truth comes from (:func:`labelled_store`; default: the
            run's own when the store lacks the model's labels), and whether only reviewed classes count.
        accept_changed_inputs: score although the run's store or labels file (or, on its own store, another
            input it recorded) changed since it recorded them (:func:`check_run_inputs`).

    Labels a flip mirrors (left/right classes) also get their flip consistency: the share of images whose
    prediction on the mirror image is the mirrored prediction.
    """
    store = Store.open(store_path)
    model, meta = load_classifier(run, which=which, device=device)
    tta_flip = meta.tta_flip if tta_flip is None else tta_flip
    store = labelled_store(store, meta, labels_file, reviewed_only=reviewed_only)
    check_labels(meta, store)
    warnings = check_preprocessing(meta, store)
    metas = member_metas(model, meta)
    warnings += check_run_inputs([m.run_dir for m in metas], store, accept=accept_changed_inputs)
    task = Task.from_dict(meta.config["task"])
    chosen = ensemble_eval_rows(metas, store, split)
    rows, how = chosen.rows, chosen.how
    if len(rows) == 0:
        others = [s for s in ("train", "val", "test") if s != split and len(ensemble_eval_rows(metas, store, s).rows)]
        hint = " or ".join(f"--split {s}" for s in [*others, "all"])
        raise FacelabError(f"{store.path}: the {split} split ({how}) is empty; choose {hint}")
    if reviewed_only:  # the rows a person reviewed for at least one label the model predicts
        known = (store.labels[rows][:, [store.label_index(n) for n in task.names]] >= 0).any(axis=1)
        rows = rows[known]
        how += f"; only the {len(rows)} a person reviewed"
        if not len(rows):
            raise FacelabError(f"{store.overlay.source if store.overlay else 'the labels file'}: no reviewed image "
                               f"among the {split} rows; review some with `facelab label review`")
    priors = training_priors(metas, store) if adapt_priors else None  # refuse before the forward pass
    probs, y, loss = predict_rows(model, meta, store, rows, batch_size=batch_size, device=device, tta_flip=tta_flip)
    shift = None
    if priors is not None:
        unadapted = score(task, y, probs)["summary"]
        probs, per_label = adapt_probabilities(probs, task, priors[0])
        shift = {"method": "EM re-estimate of the class priors of the evaluated rows from their unlabelled "
                           "predictions (Saerens et al. 2002)", "train_priors_from": priors[1],
                 "unadapted_summary": unadapted, "priors": per_label}
    flip_perm = flip_permutation(task, meta.labels)
    consistency = {}
    if flip_perm is not None:
        mirrored, _, _ = predict_rows(model, meta, store, rows, batch_size=batch_size, device=device,
                                      tta_flip=tta_flip, mirror=True)
        consistency = flip_consistency(probs, mirrored, task, flip_perm)
    report = score(task, y, probs)
    runs = _run_names(run)
    report.update({"run": runs, "store": str(store.path), "split": split, "rows": how, "loss": loss,
                   "checkpoint": which, "tta_flip": tta_flip, **describe(meta), "warnings": warnings})
    if consistency:
        report["flip_consistency"] = consistency
    if store.overlay is not None:
        report["labels_file"] = store.overlay.describe()
        trained = (meta.config or {}).get("labels_file")
        if trained and Path(trained).resolve() == Path(store.overlay.source) and \
                (meta.config or {}).get("labels_file_sha256") not in (None, store.overlay.sha256):
            report["labels_file"]["changed_since_training"] = True
    if shift is not None:
        report["label_shift"] = shift
    if which == "best" and split == "val" and chosen.own_split:
        report["note"] = ("the best checkpoint was chosen on these rows (the run's validation split), so this figure is "
                          "optimistic; --checkpoint last, or a split the run never saw, gives an unbiased one")
    first = Path(runs[0] if isinstance(runs, list) else runs)
    if out_dir is None:
        name = f"{store.path.name}-{split}"
        if len(metas) > 1:  # one folder per set of members: another ensemble sharing the first run keeps its own
            members = "\n".join(str(Path(r).resolve()) for r in runs)
            name = f"ensemble-of-{len(metas)}-{hashlib.sha1(members.encode()).hexdigest()[:8]}-{name}"
        for suffix, on in (("last", which == "last"), ("tta", tta_flip), ("reviewed", reviewed_only),
                           ("adapted", adapt_priors)):
            name += f"-{suffix}" if on else ""
        out_dir = first / "eval" / name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"per_label": str(plot_label_bars(out / "per_label_accuracy.png", report["per_label"]))}
    for name, m in report["confusion"].items():
        classes = store.spec(name).classes or [str(i) for i in range(len(m))]
        plots[f"confusion_{name}"] = str(plot_confusion(out / f"confusion_{name}.png", np.array(m), classes, title=name))
    report["plots"] = plots
    atomic_write_json(out / "report.json", report)
    if out.parent == first / "eval" and (first / "summary.json").is_file():
        report["report"] = str(render_report(first))  # the run's report.html lists this evaluation too
    return report


def evaluate_rows(run: RunPaths, store: Store, rows: np.ndarray, *, batch_size: int = 256,
                  device: str = "cpu", which: str = "best") -> dict[str, Any]:
    """Scores of a classifier run (or an ensemble of runs) on chosen ``rows`` of ``store`` (experiments that
    make their own splits); the same figures as :func:`evaluate_run`, without files or plots."""
    model, meta, warnings = _prepare(run, store, which=which, device=device)
    probs, y, loss = predict_rows(model, meta, store, np.asarray(rows), batch_size=batch_size, device=device)
    report = score(Task.from_dict(meta.config["task"]), y, probs)
    report.update({"run": _run_names(run), "store": str(store.path), "count": int(len(rows)), "loss": loss,
                   **describe(meta), "warnings": warnings})
    return report


#: the figures of a binary classifier that the class-imbalance study compares
BINARY_METRICS = ("accuracy", "balanced_accuracy", "minority_recall", "f1_macro", "auroc")


@torch.no_grad()
def binary_scores(run: str | Path, store: Store, rows: np.ndarray, target: str, minority: int, *,
                  device: str = "cpu", which: str = "best") -> dict[str, float]:
    """Accuracy, balanced accuracy, minority recall, macro-F1 and AUROC of a single-label binary classifier run
    on ``rows`` of ``store`` (``minority``: the stored value whose recall is reported)."""
    model, meta = load_model(run, kind="classifier", which=which, device=device)
    check_labels(meta, store)
    check_preprocessing(meta, store)
    probs, y, _ = predict_rows(model, meta, store, rows, device=device)
    p = probs[target]
    m = label_metrics(y[:, 0], p)
    pred = (p >= 0.5).astype(int)
    is_min = y[:, 0] == minority
    m["minority_recall"] = float((pred[is_min] == minority).mean()) if is_min.any() else float("nan")
    return {k: m[k] for k in BINARY_METRICS}
