"""Honest quality metrics for generative models: FID/KID with named feature networks, conditional fidelity, CAS.

Every result carries exact metric names such as ``fid_5k_test_facelab-vgg_scratch-celeba64-1a2b3c4d``
(:func:`metric_name`) and the feature extractor's name and weights hash, so a FID on facelab classifier
features is never mistaken for a published Inception FID. Real-image features are cached on disk under a
key of (store content, rows, extractor + weights, resolution), written atomically.

- :func:`score_generator`: FID and KID between ``n`` generated images and the real rows of a split;
- :func:`conditional_fidelity`: how often an independent classifier recognises the condition a sample
  was generated with;

CAS (a classifier trained only on generated images, tested on real ones) trains classifiers, so it is an
experiment: :mod:`facelab.experiments.cas`.

See docs/metrics.md for definitions, choices and caveats.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelKind, LabelSpec
from facelab.data.store import Store
from facelab.data.views import as_indices, complete_splits, official_splits, split, splits_for
from facelab.errors import FacelabError
from facelab.eval.features import FeatureExtractor, checkpoint_name, facelab_extractor, network_input, quantize
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers.heads import Task, task_predict
from facelab.models.generative import encode_label_rows
from facelab.models.loading import load_model
from facelab.runs.splits import RunSplits, load_run_splits
from facelab.utils.io import atomic_write_bytes, atomic_write_json

CACHE_VERSION = 1
MetricKind = Literal["fid", "kid", "cas", "realacc", "condacc"]
METRIC_KINDS = ("fid", "kid", "cas", "realacc", "condacc")
SplitName = Literal["train", "val", "test"]


# ---- names ----------------------------------------------------------------------------------------
def count_tag(n: int) -> str:
    """``5000 -> "5k"``, ``1500 -> "1.5k"``, ``500 -> "500"``: sample counts in metric names."""
    if n < 1000:
        return str(int(n))
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n / 1000:g}k"


def metric_name(kind: MetricKind, n: int, split: str, extractor: FeatureExtractor | str) -> str:
    """Exact metric name, e.g. ``fid_5k_test_facelab-vgg_scratch-celeba64-1a2b3c4d``.

    Args:
        kind: fid, kid, cas, realacc or condacc.
        n: number of generated samples (thousands when >= 1000).
        split: the real split compared with.
        extractor: the feature network (or classifier recipe / label) that measured it, or its name.
    """
    if kind not in METRIC_KINDS:
        raise FacelabError(f"unknown metric kind {kind!r}; known: {', '.join(METRIC_KINDS)}")
    name = extractor.name if isinstance(extractor, FeatureExtractor) else str(extractor)
    return f"{kind}_{count_tag(n)}_{split}_{name}"


# ---- real features, cached ------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$FACELAB_CACHE/features`` when set, else ``~/.cache/facelab/features``."""
    root = os.environ.get("FACELAB_CACHE")
    return (Path(root) if root else Path("~/.cache/facelab")).expanduser() / "features"


def feature_cache_key(extractor: FeatureExtractor, store: Store, rows: np.ndarray) -> str:
    """sha256 of the store content, the sorted rows, the extractor (name + weights) and both resolutions."""
    rows_hash = hashlib.sha256(np.sort(np.asarray(rows, dtype="<i8")).tobytes()).hexdigest()
    key = {"version": CACHE_VERSION, "store": store.content_hash, "rows": rows_hash, "extractor": extractor.name,
           "weights": extractor.weights_hash, "input_size": extractor.input_size, "image_size": store.image_size}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def real_features(extractor: FeatureExtractor, store: Store, rows: Sequence[int] | np.ndarray, *,
                  cache_dir: str | Path | None = None, batch_size: int = 256) -> np.ndarray:
    """Features of store ``rows`` (in sorted row order), loaded from or written to the feature cache.

    Args:
        extractor: the feature network.
        store: the real data.
        rows: store rows (duplicates kept; order does not matter for FID/KID).
        cache_dir: cache folder (default :func:`default_cache_dir`); ``<key>.npy`` plus ``<key>.json``.
        batch_size: images per forward pass.

    Returns:
        (len(rows), D) float32 features.
    """
    rows = np.sort(as_indices(store, rows))
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = feature_cache_key(extractor, store, rows)
    path = folder / f"{key}.npy"
    if path.is_file():
        try:
            feats = np.load(path, allow_pickle=False)
            if feats.shape == (rows.size, extractor.num_features):
                return feats
        except (OSError, ValueError):
            pass  # a damaged cache file is recomputed and replaced
    feats = np.zeros((rows.size, extractor.num_features), np.float32)
    for start in range(0, rows.size, batch_size):
        block = rows[start:start + batch_size]
        feats[start:start + block.size] = extractor.extract(np.asarray(store.images[block]), batch_size=batch_size)
    buf = io.BytesIO()
    np.save(buf, feats)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(folder / f"{key}.json", {"store": str(store.path), "store_hash": store.content_hash,
                                              "rows": int(rows.size), **extractor.describe()})
    return feats


# ---- FID / KID ------------------------------------------------------------------------------------
class _Precomputed(nn.Module):
    """Identity "feature network": lets torchmetrics' FID/KID consume features computed elsewhere."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


def _as_features(extractor: FeatureExtractor, data: Any, batch_size: int, what: str) -> torch.Tensor:
    t = data if isinstance(data, torch.Tensor) else torch.as_tensor(np.asarray(data))
    if t.ndim == 4:
        t = torch.as_tensor(extractor.extract(t, batch_size=batch_size))
    if t.ndim != 2 or t.shape[1] != extractor.num_features:
        raise FacelabError(f"{what}: expected images (N, 3, S, S) or features (N, {extractor.num_features}) of "
                           f"{extractor.name}; got shape {tuple(t.shape)}")
    if t.shape[0] < 2 or not bool(torch.isfinite(t).all()):
        raise FacelabError(f"{what}: FID/KID need at least 2 finite feature rows; got {t.shape[0]}")
    return t.detach().cpu().double()


def fid_kid(extractor: FeatureExtractor, real_feats: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, *,
            kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0,
            batch_size: int = 256) -> dict[str, Any]:
    """FID and KID (torchmetrics) between real features and generated images or features.

    Args:
        extractor: the feature network the features come from (fake images are passed through it).
        real_feats: (N, D) features of real images (:func:`real_features`).
        fake: (M, 3, S, S) generated images in [-1, 1], or their (M, D) features.
        kid_subset_size: KID subset size; capped at min(N, M).
        kid_subsets: number of KID subsets.
        seed: seeds the KID subsets.
        batch_size: images per forward pass when ``fake`` holds images.

    Returns:
        {"fid", "kid_mean", "kid_std", "n_real", "n_fake", "kid_subset_size", "extractor"}.
    """
    real = _as_features(extractor, real_feats, batch_size, "real features")
    fake_t = _as_features(extractor, fake, batch_size, "generated images")
    d = extractor.num_features
    fid = FrechetInceptionDistance(feature=_Precomputed(d))
    fid.update(real, real=True)
    fid.update(fake_t, real=False)
    subset = int(min(kid_subset_size, real.shape[0], fake_t.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "KID will save all extracted features in buffer"
        kid = KernelInceptionDistance(feature=_Precomputed(d), subsets=kid_subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake_t, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "n_real": int(real.shape[0]), "n_fake": int(fake_t.shape[0]), "kid_subset_size": subset,
            "extractor": extractor.name}


# ---- generators, data checks, splits ---------------------------------------------------------------
def load_generator(gen_run: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """A generative run's model (eval mode) and metadata; FacelabError when it is no generative checkpoint."""
    return load_model(gen_run, kind="generative", device=device)


def check_same_data(what: str, preprocessing: Preprocessing | None, store: Store) -> list[str]:
    """A network measuring ``store`` must have been trained on the same source at the same resolution
    (:meth:`Preprocessing.check_store`, with another source an error here: FID between datasets is no quality
    measure); returns the warnings (e.g. another store of the same source). ``None``: a network trained
    elsewhere (ImageNet), usable on any data."""
    if preprocessing is None:
        return []
    found = preprocessing.check_store(store, what=what)
    if not found.same_source:
        raise FacelabError(f"{what} was trained on {preprocessing.source!r} data but {store.path} holds "
                           f"{store.source!r}; compare against a store of {preprocessing.source!r} (or use a network "
                           f"trained on {store.source!r})")
    return found.warnings


def generator_splits(meta: CheckpointMeta, store: Store, *, need_test: bool = False,
               seed: int = 0) -> tuple[dict[str, np.ndarray], str, list[str]]:
    """Train/val/test rows of ``store`` for a generative run: the rows it recorded on its own store.

    On another store: its official partitions, or a seeded random split. ``need_test``: a store without a test
    split uses its val rows as the test set (and holds a val split out of train), as every study does.

    Returns:
        (splits, how they were chosen, warnings).
    """
    warns: list[str] = []
    own = meta.preprocessing is not None and meta.preprocessing.store_hash == store.content_hash
    recorded = load_run_splits(meta.run_dir, store) if own and meta.run_dir is not None else None
    if own and recorded is None and meta.config.get("split", "auto") != "all":  # a run from before splits.json
        policy = meta.config.get("split", "auto")
        recorded = RunSplits(splits_for(store, policy=policy, seed=int(meta.config.get("seed", 0))),
                             f"its {policy!r} split, recomputed: the run records no splits.json")
    if recorded is not None:
        splits, how = recorded.splits, f"the generator run's own split ({recorded.how})"
        if splits.get("test", np.zeros(0)).size == 0 and splits.get("val", np.zeros(0)).size == 0:
            warns.append("the generator was trained on all rows: the real rows were seen in training")
            splits, how = official_splits(store) if store.has_partitions else split(store, seed=seed), \
                "the store's own split (the generator trained on every row)"
    elif store.has_partitions:
        splits, how = official_splits(store), "official partitions of the store"
    else:
        splits, how = split(store, seed=seed), f"seeded random split (seed {seed}) of the store"
    splits, notes = complete_splits(store, splits, seed=seed, need_test=need_test, hold_out_val=need_test,
                                    val_share=0.1)
    return splits, "; ".join([how, *notes]), warns


def named_conditions(model: nn.Module, what: str) -> list[Any]:
    """The named conditions of a conditional model; FacelabError for unconditional or unnamed ones."""
    conds = getattr(model.config, "conditions", None) if model.is_conditional else None
    if not conds:
        kind = "conditioned on an unnamed vector" if model.is_conditional else "unconditional"
        raise FacelabError(f"{what} is {kind}; "
                           "this metric needs a model conditioned on named labels (cvae, cgan, aae with `conditions`)")
    return list(conds)


def condition_labels(model: nn.Module, store: Store, rows: np.ndarray) -> np.ndarray:
    """(len(rows), n_conditions) label values of ``rows`` for the model's conditions (store checked)."""
    conds = named_conditions(model, "the generator")
    for c in conds:
        spec = store.spec(c.name)
        if list(spec.classes or ()) != list(c.value_names):
            raise FacelabError(f"{store.path}: label {c.name!r} has values {spec.classes} but the generator's "
                               "condition "
                               f"has {list(c.value_names)}; use the store the generator was trained on")
    cols = [store.label_index(c.name) for c in conds]
    return store.labels[np.asarray(rows, dtype=np.int64)][:, cols].astype(np.int64)


def generate(model: nn.Module, n: int, labels: np.ndarray | None, *, batch_size: int,
             seed: int) -> Iterator[torch.Tensor]:
    """Batches of (b, 3, S, S) samples in [-1, 1]; conditional models get the label rows ``labels`` (n, n_conds)."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        cond = None
        if labels is not None:
            cond = encode_label_rows(model.config.conditions, torch.from_numpy(labels[start:start + b]))
        yield model.sample(b, cond, generator=g)


# ---- FID/KID of a generator -----------------------------------------------------------------------
def _extractor(feature_run: FeatureExtractor | str | Path, device: str | torch.device) -> FeatureExtractor:
    if isinstance(feature_run, FeatureExtractor):
        return feature_run.to(device)
    return facelab_extractor(feature_run, device=device)


def score_generator(gen_run: str | Path, *, data: str | Path, feature_run: FeatureExtractor | str | Path,
                    split: SplitName = "test", n: int = 5000, batch_size: int = 256, device: str | torch.device = "cpu",
                    seed: int = 0, kid_subset_size: int = 1000, cache_dir: str | Path | None = None,
                    out: str | Path | None = None) -> dict[str, Any]:
    """FID and KID between ``n`` samples of a generator and the real rows of ``split`` of ``data``.

    Conditional generators sample with the condition vectors of ``n`` real rows of the split drawn at random
    (with replacement), so generated and real images share one label distribution. The split is the
    generator run's own split when ``data`` is its training store, else the store's official partition.

    Args:
        gen_run: generative run folder or checkpoint.
        data: the real store.
        feature_run: a facelab classifier run (its pooled features) or a ready :class:`FeatureExtractor`.
        split: real rows to compare with ("test" or "val"; "train" measures memorisation-friendly fit).
        n: generated samples.
        batch_size: images per forward pass.
        device: where the networks run.
        seed: seeds the latents, the drawn conditions and the KID subsets.
        kid_subset_size: KID subset size (capped at the sample counts).
        cache_dir: real-feature cache folder (default ``$FACELAB_CACHE/features`` or ``~/.cache/facelab/features``).
        out: optional JSON file for the result.

    Raises:
        FacelabError: not a generative checkpoint; the feature network or the generator was trained on other
            data or at another resolution than ``data``; an empty split; a bad ``n``.
    """
    if n < 2:
        raise FacelabError(f"n={n}: FID/KID need at least 2 generated samples (5,000-50,000 for stable numbers)")
    model, meta = load_generator(gen_run, device=device)
    store = Store.open(data)
    extractor = _extractor(feature_run, device)
    warns = check_same_data(f"feature network {extractor.name}", extractor.training, store)
    warns += check_same_data(f"generator {gen_run}", meta.preprocessing, store)
    splits, how, more = generator_splits(meta, store)
    rows = splits.get(split)
    if rows is None or rows.size < 2:
        count = 0 if rows is None else rows.size
        raise FacelabError(f"{store.path}: the {split} split has {count} rows; choose another split")
    real = real_features(extractor, store, rows, cache_dir=cache_dir, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    labels = condition_labels(model, store, rng.choice(rows, size=n)) if model.is_conditional else None
    fake = np.concatenate([extractor.extract(quantize(x), batch_size=batch_size)  # uint8 levels, like the real
                           for x in generate(model, n, labels, batch_size=batch_size, seed=seed)])
    scores = fid_kid(extractor, real, fake, kid_subset_size=kid_subset_size, seed=seed)
    names = {"fid": metric_name("fid", n, split, extractor), "kid": metric_name("kid", n, split, extractor)}
    result = {
        "metrics": {names["fid"]: scores["fid"], names["kid"]: scores["kid_mean"],
                    f"{names['kid']}_std": scores["kid_std"]},
        "metric_names": names, **scores, "extractor_weights_sha256": extractor.weights_hash,
        "generator": str(gen_run), "generator_arch": meta.arch, "data": str(store.path), "split": split,
        "rows": how, "conditioned_on": None if labels is None else [c.name for c in model.config.conditions],
        "seed": seed, "warnings": warns + more,
    }
    if out is not None:
        atomic_write_json(Path(out), result)
    return result


# ---- conditional fidelity ---------------------------------------------------------------------------
def _classifier_spec(meta: CheckpointMeta, name: str, run: str | Path) -> LabelSpec:
    specs = {d["name"]: LabelSpec.from_dict(d) for d in meta.labels}
    if name not in specs:
        raise FacelabError(f"classifier {run} does not predict {name!r} (it predicts {', '.join(specs) or 'nothing'}); "
                           f"train a classifier on {name!r} to judge that condition")
    return specs[name]


def _base_labels(conds: list[Any], n: int, store: Store | None, rng: np.random.Generator) -> np.ndarray:
    """(n, n_conds) condition values for the labels not being tested: real rows, or base values."""
    if store is not None:
        cols = [store.label_index(c.name) for c in conds]
        return store.labels[rng.integers(0, len(store), size=n)][:, cols].astype(np.int64)
    cols = [np.zeros(n, np.int64) if c.kind == "binary" else rng.integers(0, c.width, size=n) for c in conds]
    return np.stack(cols, axis=1)


@torch.no_grad()
def _predicted(classifier: nn.Module, cmeta: CheckpointMeta, images: torch.Tensor, label: str) -> np.ndarray:
    """(B,) predicted values of ``label`` (binary: P >= 0.5; categorical: argmax)."""
    pre, dev = cmeta.preprocessing, next(classifier.parameters()).device
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    x = network_input(images.to(dev), size=pre.image_size, mean=mean, std=std)  # (B, 3, s, s)
    p = task_predict(classifier(x).float(), Task.from_dict(cmeta.config["task"]))[label]
    return (p >= 0.5).long().cpu().numpy() if p.ndim == 1 else p.argmax(1).cpu().numpy()


def _judged_values(cond: Any, spec: LabelSpec, classifier_run: str | Path) -> list[int]:
    """For each value of the generator's condition, the classifier's index of that value.

    The values must be the classifier's, or (categorical labels) a subset of its classes: a generator of
    CIFAR-10 birds and horses is judged among all ten classes, a stricter test than bird against horse.
    """
    values, classes = list(cond.value_names), list(spec.classes or ())
    subset = cond.kind == "categorical" and spec.kind is LabelKind.CATEGORICAL and set(values) <= set(classes)
    if values != classes and not subset:
        raise FacelabError(f"classifier {classifier_run} predicts {cond.name!r} with values {spec.classes}, the "
                           f"generator conditions on {values}; use a classifier of the same labels (or, for "
                           "a categorical label, of a superset of its classes)")
    return [classes.index(v) for v in values]


def _fidelity_labels(conds: list[Any], labels: list[str] | None, gen: tuple[Any, CheckpointMeta, int],
                     clf: tuple[Any, CheckpointMeta]) -> tuple[dict[str, list[int]], list[str]]:
    """{label to test: the classifier's index of each of its values}, checked against the generator's
    conditions and the classifier; and warnings."""
    (gen_run, gmeta, size), (classifier_run, cmeta) = gen, clf
    by_name = {c.name: c for c in conds}
    labels = list(by_name) if labels is None else list(labels)
    unknown = [name for name in labels if name not in by_name]
    if unknown or not labels:
        raise FacelabError(f"generator {gen_run} is not conditioned on {unknown or 'any label'}; "
                           f"its conditions: {', '.join(by_name)}")
    judged = {name: _judged_values(by_name[name], _classifier_spec(cmeta, name, classifier_run), classifier_run)
              for name in labels}
    if cmeta.preprocessing is None:
        raise FacelabError(f"classifier {classifier_run}: its checkpoint records no preprocessing; retrain it")
    csize = cmeta.preprocessing.image_size
    if csize != size:
        raise FacelabError(f"classifier {classifier_run} works at {csize}px but the generator makes {size}px images; "
                           f"use a classifier trained at {size}px")
    csource = cmeta.preprocessing.source
    gsource = gmeta.preprocessing.source if gmeta.preprocessing is not None else None
    return judged, ([] if csource == gsource else [f"classifier trained on {csource!r} data, generator on {gsource!r}"])


def conditional_fidelity(gen_run: str | Path, classifier_run: str | Path, *, labels: list[str] | None = None,
                         n_per_value: int = 500, data: str | Path | None = None, batch_size: int = 256,
                         device: str | torch.device = "cpu", seed: int = 0) -> dict[str, Any]:
    """Share of samples conditioned on a value that an independent classifier assigns that value.

    For each tested label and each of its values v, ``n_per_value`` samples are generated with the label set
    to v. The generator's other conditions are copied from random real rows of ``data`` when given (samples
    stay on the data's label distribution), else held at their base: binary attributes 0, categorical labels
    uniform at random. Binary attributes report both values (1 and 0).

    Args:
        gen_run: a generative run conditioned on named labels.
        classifier_run: a facelab classifier run that predicts every tested label (not trained on the samples).
        labels: conditions to test (default: all of the generator's).
        n_per_value: samples per (label, value).
        data: optional store for the other conditions (see above).
        batch_size: images per forward pass.
        device: where the networks run.
        seed: seeds latents and drawn conditions.

    Returns:
        {"per_label": {label: {value name: share}}, "per_label_mean": {label: mean share}, "mean": mean over
        every (label, value), "metric_name", "classifier", ...}.

    Raises:
        FacelabError: unconditional generator, unknown label, a classifier that does not predict a label (or
            with other classes), or one working at another resolution.
    """
    model, gmeta = load_generator(gen_run, device=device)
    conds = named_conditions(model, f"generator {gen_run}")
    classifier, cmeta = load_model(classifier_run, kind="classifier", device=device)
    judged, warns = _fidelity_labels(conds, labels, (gen_run, gmeta, model.image_size), (classifier_run, cmeta))
    store = Store.open(data) if data is not None else None
    if store is not None:
        condition_labels(model, store, np.zeros(0, np.int64))  # checks the store has the conditions
    rng = np.random.default_rng(seed)
    per_label: dict[str, dict[str, float]] = {}
    for name, judged_as in judged.items():
        j = [c.name for c in conds].index(name)
        per_label[name] = {}
        for v, value_name in enumerate(conds[j].value_names):
            rows = _base_labels(conds, n_per_value, store, rng)
            rows[:, j] = v  # (n, n_conds): the tested label set to v
            batches = generate(model, n_per_value, rows, batch_size=batch_size, seed=int(rng.integers(2**31)))
            hits = sum(int((_predicted(classifier, cmeta, quantize(x), name) == judged_as[v]).sum()) for x in batches)
            per_label[name][value_name] = hits / n_per_value
    means = {k: float(np.mean(list(d.values()))) for k, d in per_label.items()}
    cname = checkpoint_name(cmeta.arch, cmeta.preprocessing) if cmeta.preprocessing.store_hash else cmeta.arch
    return {
        "per_label": per_label, "per_label_mean": means,
        "mean": float(np.mean([s for d in per_label.values() for s in d.values()])),
        "metric_name": f"condacc_{count_tag(n_per_value)}_per_value_{cname}", "classifier": cname,
        "classifier_run": str(classifier_run), "generator": str(gen_run), "n_per_value": n_per_value,
        "other_conditions": f"copied from random rows of {store.path}" if store is not None
        else "base: other binary attributes 0, other categorical labels uniform",
        "seed": seed, "warnings": warns,
    }
