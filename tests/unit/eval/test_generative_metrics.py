"""Generative metrics: feature extractors, cached real features, FID/KID, names, score_generator, fidelity, CAS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelKind, LabelSpec, Partition
from facelab.data.store import Store
from facelab.errors import FacelabError
from facelab.eval.features import (
    FEATURE_EXTRACTORS,
    create_extractor,
    facelab_extractor,
    images_to_uint8,
    inception_extractor,
    quantize,
)
from facelab.eval.generative_metrics import (
    conditional_fidelity,
    count_tag,
    feature_cache_key,
    fid_kid,
    metric_name,
    real_features,
    score_generator,
)
from facelab.experiments.cas import classification_accuracy_score
from facelab.models.classifiers import create_classifier
from facelab.models.classifiers.heads import Task
from facelab.models.generative import Condition, create_generative
from facelab.models.checkpoint import CheckpointMeta, save_checkpoint
from facelab.train.classifier import preprocessing_of
from tests.helpers import make_store

SIZE = 32
SPECS = (
    LabelSpec("Male", LabelKind.BINARY),
    LabelSpec("Smiling", LabelKind.BINARY),
    LabelSpec("hair_color", LabelKind.CATEGORICAL, ("black", "blond", "brown", "gray")),
)
TINY_VGG = {"channels": [8, 16, 16]}
TINY_GEN = {"width": 4, "max_width": 16, "latent_dim": 8}


def smooth_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth colour fields (upsampled 4x4 noise): "real" images unlike pixel noise."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().byte().permute(0, 2, 3, 1).numpy()


def build_store(path, *, n: int = 48, size: int = SIZE, source: str = "test", seed: int = 0) -> Store:
    parts = np.array([0, 0, 1, 2] * (n // 4))  # 50% train, 25% val, 25% test
    return make_store(path, images=smooth_images(n, size, seed), label_specs=SPECS, partitions=parts,
                      source=source, seed=seed)


def save_classifier(path, store: Store, labels: list[str], *, preprocessing: Preprocessing | None = None):
    torch.manual_seed(0)
    task = Task.from_labels(store.label_specs, labels)
    model = create_classifier("vgg_scratch", num_outputs=task.num_logits, image_size=store.image_size, **TINY_VGG)
    meta = CheckpointMeta(
        kind="classifier", arch="vgg_scratch",
        arch_kwargs={**TINY_VGG, "num_outputs": task.num_logits, "image_size": store.image_size},
        labels=[store.spec(n).to_dict() for n in labels],
        preprocessing=preprocessing or preprocessing_of(model, store),
        config={"task": task.to_dict(), "split": "official", "seed": 0},
    )
    return save_checkpoint(path, model=model, meta=meta)


def save_generator(path, store: Store, conditions: list[str] | None, *, arch: str = "cvae",
                   classes: dict[str, list[str]] | None = None):
    """A tiny untrained generator; ``classes`` replaces a categorical condition's values (a subset store)."""
    torch.manual_seed(0)
    conds = [Condition.from_label_spec(store.spec(n)).model_dump() for n in conditions or []]
    for c in conds:
        c["classes"] = (classes or {}).get(c["name"], c["classes"])
    model = create_generative(arch, image_size=store.image_size, **TINY_GEN, **({"conditions": conds} if conds else {}))
    meta = CheckpointMeta(
        kind="generative", arch=arch, arch_kwargs=model.config.model_dump(mode="json"),
        labels=[store.spec(n).to_dict() for n in conditions or []],
        preprocessing=Preprocessing.of_store(store, mean=(0.5,) * 3, std=(0.5,) * 3),
        config={"store": str(store.path), "split": "auto", "seed": 0, "conditions": conditions},
    )
    return save_checkpoint(path, model=model, meta=meta)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("genmetrics")
    store = build_store(root / "data")
    return {
        "root": root,
        "store": store,
        "clf": save_classifier(root / "clf", store, ["Male", "Smiling", "hair_color"]),
        "clf_male": save_classifier(root / "clf_male", store, ["Male"]),
        "cgen": save_generator(root / "cgen", store, ["Smiling", "hair_color"]),
        "ugen": save_generator(root / "ugen", store, None, arch="vae"),
    }


@pytest.fixture(scope="module")
def extractor(world):
    return facelab_extractor(world["clf"])


# ---- names ------------------------------------------------------------------------------------------
def test_metric_names_say_count_split_and_extractor(extractor, world):
    h = world["store"].content_hash[:8]
    assert extractor.name == f"facelab-vgg_scratch-test{SIZE}-{h}"
    assert metric_name("fid", 5000, "test", extractor) == f"fid_5k_test_facelab-vgg_scratch-test{SIZE}-{h}"
    assert metric_name("kid", 500, "val", "inception-tv") == "kid_500_val_inception-tv"
    assert [count_tag(n) for n in (999, 1000, 1500, 50000)] == ["999", "1k", "1.5k", "50k"]
    with pytest.raises(FacelabError, match="unknown metric kind"):
        metric_name("is", 10, "test", extractor)


# ---- extractors -------------------------------------------------------------------------------------
def test_facelab_extractor_features_are_deterministic_and_resize(extractor, world):
    assert "facelab" in FEATURE_EXTRACTORS and "inception" in FEATURE_EXTRACTORS
    assert extractor.input_size == SIZE and extractor.trained_on == world["store"].content_hash
    assert extractor.preprocessing["source"] == "test" and len(extractor.weights_hash) == 64
    x = torch.rand(3, 3, SIZE, SIZE) * 2 - 1
    f = extractor(x)
    assert f.shape == (3, extractor.num_features) == (3, 16) and f.dtype == torch.float32
    extractor.train()  # stays in eval mode: batch norm uses running statistics
    assert torch.equal(f, extractor(x)) and not extractor.network.training
    big = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert extractor(big).shape == (3, 16)  # other sizes are resized to the network's input
    u8 = np.asarray(world["store"].images[:5])  # read-only memmap slice
    feats = extractor.extract(u8, batch_size=2)
    assert feats.shape == (5, 16)
    as_float = torch.from_numpy(u8.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_allclose(extractor.extract(as_float), feats, rtol=1e-5, atol=1e-6)
    q = quantize(x)  # generated images are scored at the uint8 levels real images have
    np.testing.assert_array_equal(images_to_uint8(q), images_to_uint8(x))
    assert torch.allclose((q + 1) * 127.5, ((q + 1) * 127.5).round(), atol=1e-4)


def test_facelab_extractor_refuses_a_generative_checkpoint(world):
    with pytest.raises(FacelabError, match="not a classifier"):
        create_extractor("facelab", world["cgen"])


def test_inception_extractor_from_a_random_torchvision_state_dict(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "inception_random.pth"
    torch.save(create_classifier("inception_v3", num_outputs=1000, aux_logits=True).state_dict(), path)
    ext = inception_extractor(path, input_size=75)  # 299 in real use; 75 keeps the test fast
    assert ext.name == "inception-tv75" and ext.num_features == 2048 and ext.trained_on is None
    f = ext(torch.rand(2, 3, SIZE, SIZE) * 2 - 1)
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    fid_head = tmp_path / "fid_head.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, fid_head)
    with pytest.raises(FacelabError, match="pooling='tf'"):
        inception_extractor(fid_head)
    with pytest.raises(FacelabError, match="not found"):
        inception_extractor(tmp_path / "missing.pth")


@pytest.mark.slow
def test_inception_extractor_at_299(tmp_path):
    path = tmp_path / "inception_random.pth"
    torch.save(create_classifier("inception_v3", num_outputs=1000).state_dict(), path)
    ext = inception_extractor(path)
    assert ext.name == "inception-tv" and ext.input_size == 299
    assert ext(torch.rand(2, 3, 64, 64) * 2 - 1).shape == (2, 2048)


# ---- FID / KID --------------------------------------------------------------------------------------
def test_fid_kid_identical_sets_zero_and_ordering_with_shift(extractor):
    rng = np.random.default_rng(0)
    d = extractor.num_features
    real = rng.normal(size=(600, d))
    same = rng.normal(size=(600, d))
    shifted = rng.normal(size=(600, d)) + 0.5
    far = rng.normal(size=(600, d)) + 2.0
    ident = fid_kid(extractor, real, real, kid_subset_size=200, kid_subsets=20)
    assert abs(ident["fid"]) < 1e-6 and abs(ident["kid_mean"]) < 0.05
    s = [fid_kid(extractor, real, f, kid_subset_size=200, kid_subsets=20) for f in (same, shifted, far)]
    assert s[0]["fid"] < s[1]["fid"] < s[2]["fid"]
    assert abs(s[1]["fid"] - 0.25 * d) < 0.25 * 0.25 * d + s[0]["fid"]  # mean term ||0.5||^2 * d dominates
    assert s[0]["kid_mean"] < s[1]["kid_mean"] < s[2]["kid_mean"]
    assert s[0]["n_real"] == 600 and s[0]["kid_subset_size"] == 200 and s[0]["extractor"] == extractor.name
    again = fid_kid(extractor, real, shifted, kid_subset_size=200, kid_subsets=20)
    assert again["kid_mean"] == s[1]["kid_mean"]  # seeded subsets


def test_fid_kid_on_images_noise_is_far_from_real(extractor, world, tmp_path):
    store = world["store"]
    train = store.partition_indices(Partition.TRAIN)
    real = real_features(extractor, store, train, cache_dir=tmp_path)
    other_real = torch.from_numpy(smooth_images(24, seed=5)).permute(0, 3, 1, 2).float() / 127.5 - 1
    noise = torch.rand(24, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1  # not the global RNG
    near = fid_kid(extractor, real, other_real, kid_subset_size=12)
    far = fid_kid(extractor, real, noise, kid_subset_size=12)
    assert far["fid"] > 3 * near["fid"] and far["kid_mean"] > near["kid_mean"]
    with pytest.raises(FacelabError, match="features"):
        fid_kid(extractor, real, np.zeros((5, 7)))


# ---- cache ------------------------------------------------------------------------------------------
def test_real_features_are_cached_and_keyed(extractor, world, tmp_path, monkeypatch):
    store = world["store"]
    rows = np.array([7, 3, 11, 0])
    first = real_features(extractor, store, rows, cache_dir=tmp_path)
    assert first.shape == (4, 16) and len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_allclose(first, extractor.extract(np.asarray(store.images[np.sort(rows)])), rtol=1e-5, atol=1e-6)
    calls = []
    monkeypatch.setattr(type(extractor), "extract", lambda self, *a, **k: calls.append(1) or pytest.fail("recomputed"))
    np.testing.assert_array_equal(real_features(extractor, store, rows[::-1], cache_dir=tmp_path), first)
    assert not calls
    key = feature_cache_key(extractor, store, rows)
    assert key != feature_cache_key(extractor, store, rows[:3])
    name, weights = extractor.name, extractor.weights_hash
    extractor.name = "facelab-other"
    assert key != feature_cache_key(extractor, store, rows)
    extractor.name, extractor.weights_hash = name, "0" * 64
    assert key != feature_cache_key(extractor, store, rows)
    extractor.weights_hash = weights
    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path / "env"))
    from facelab.eval.generative_metrics import default_cache_dir

    assert default_cache_dir() == tmp_path / "env" / "features"


# ---- score_generator --------------------------------------------------------------------------------
@pytest.mark.parametrize("gen", ["cgen", "ugen"])
def test_score_generator_end_to_end(world, tmp_path, gen):
    kw = dict(data=world["store"].path, feature_run=world["clf"], split="test", n=20, batch_size=8, cache_dir=tmp_path)
    out = score_generator(world[gen], out=tmp_path / "fid.json", **kw)
    h = world["store"].content_hash[:8]
    fid_key = f"fid_20_test_facelab-vgg_scratch-test{SIZE}-{h}"
    assert out["metric_names"]["fid"] == fid_key and out["metrics"][fid_key] == out["fid"] >= 0
    assert out["extractor"].startswith("facelab-") and out["n_real"] == 12 and out["n_fake"] == 20
    assert out["warnings"] == [] and (tmp_path / "fid.json").is_file()
    assert out["conditioned_on"] == (["Smiling", "hair_color"] if gen == "cgen" else None)
    assert score_generator(world[gen], **kw)["fid"] == out["fid"]  # same seed, same number (cached real features)


def test_score_generator_refuses_mismatched_networks_and_data(world, tmp_path):
    store, root = world["store"], world["root"]
    kw = dict(split="test", n=8, batch_size=8, cache_dir=tmp_path)
    with pytest.raises(FacelabError, match="holds a model of kind classifier"):
        score_generator(world["clf"], data=store.path, feature_run=world["clf"], **kw)
    other = save_classifier(tmp_path / "other", store, ["Male"], preprocessing=preprocessing_of(
        create_classifier("vgg_scratch", num_outputs=1, **TINY_VGG), store).model_copy(update={"source": "cifar10"}))
    with pytest.raises(FacelabError, match="trained on 'cifar10' data"):
        score_generator(world["cgen"], data=store.path, feature_run=other, **kw)
    big = build_store(tmp_path / "big", size=64)
    with pytest.raises(FacelabError, match="works at 32px"):
        score_generator(world["cgen"], data=big.path, feature_run=world["clf"], **kw)
    rebuilt = build_store(tmp_path / "rebuilt", seed=3)  # same source and size, other content
    out = score_generator(world["ugen"], data=rebuilt.path, feature_run=world["clf"], **kw)
    assert any("another test store" in w for w in out["warnings"]) and out["rows"].startswith("official")
    assert (root / "data").exists()


# ---- conditional fidelity ---------------------------------------------------------------------------
def test_conditional_fidelity_shares(world):
    out = conditional_fidelity(world["cgen"], world["clf"], n_per_value=6, batch_size=4)
    assert set(out["per_label"]) == {"Smiling", "hair_color"}
    assert set(out["per_label"]["Smiling"]) == {"no", "yes"}
    assert set(out["per_label"]["hair_color"]) == {"black", "blond", "brown", "gray"}
    shares = [s for d in out["per_label"].values() for s in d.values()]
    # untrained networks: no share can be expected above chance; each is a count of the 6 samples per value
    assert all(0 <= s <= 1 and s * 6 == pytest.approx(round(s * 6)) for s in shares)
    assert out["mean"] == pytest.approx(np.mean(shares))
    assert out["metric_name"].startswith("condacc_6_per_value_facelab-vgg_scratch-test32-")
    with_data = conditional_fidelity(world["cgen"], world["clf"], labels=["Smiling"], n_per_value=4,
                                     data=world["store"].path)
    assert list(with_data["per_label"]) == ["Smiling"] and "random rows" in with_data["other_conditions"]


def test_fidelity_of_a_class_subset_is_judged_among_all_the_classifier_classes(world, monkeypatch):
    import facelab.eval.generative_metrics as gm

    sub = save_generator(world["root"] / "cgen_sub", world["store"], ["hair_color"], classes={"hair_color": ["gray", "blond"]})
    monkeypatch.setattr(gm, "_predicted", lambda clf, meta, x, label: np.full(x.shape[0], 3))  # always "gray" (3)
    out = conditional_fidelity(sub, world["clf"], n_per_value=4, batch_size=4)
    assert out["per_label"]["hair_color"] == {"gray": 1.0, "blond": 0.0}
    bad = save_generator(world["root"] / "cgen_bad", world["store"], ["hair_color"], classes={"hair_color": ["gray", "red"]})
    with pytest.raises(FacelabError, match=r"conditions on \['gray', 'red'\]; .*superset of its classes"):
        conditional_fidelity(bad, world["clf"], n_per_value=2)


def test_conditional_fidelity_errors(world):
    with pytest.raises(FacelabError, match="does not predict 'Smiling'"):
        conditional_fidelity(world["cgen"], world["clf_male"], labels=["Smiling"], n_per_value=2)
    with pytest.raises(FacelabError, match="not conditioned on"):
        conditional_fidelity(world["cgen"], world["clf"], labels=["Male"], n_per_value=2)
    with pytest.raises(FacelabError, match="unconditional"):
        conditional_fidelity(world["ugen"], world["clf"], n_per_value=2)


# ---- CAS --------------------------------------------------------------------------------------------
def test_classification_accuracy_score_end_to_end(world, tmp_path):
    out = classification_accuracy_score(
        world["cgen"], data=world["store"].path, label="Smiling", run_dir=tmp_path / "cas", n_train=16, epochs=1,
        batch_size=8, model_kwargs=TINY_VGG, trainer={"precision": "fp32"}, max_val=8)
    # 1 epoch on 16 images (and an untrained generator) beats no baseline reliably: the figures are counts
    # of the 12 test rows, and the baseline is the share of their most common Smiling value
    smiling = world["store"].column("Smiling")[world["store"].partition_indices(Partition.TEST)]
    assert out["majority_accuracy"] == pytest.approx(np.bincount(smiling).max() / 12)
    assert all(0 <= out[k] <= 1 and out[k] * 12 == pytest.approx(round(out[k] * 12)) for k in ("cas", "real_accuracy"))
    assert out["metric_names"]["cas"] == "cas_16_test_vgg_scratch-Smiling"
    assert out["metrics"]["realacc_16_test_vgg_scratch-Smiling"] == out["real_accuracy"]
    assert out["n_test"] == 12 and out["n_val"] == 8 and out["n_real_train"] == 16
    assert (tmp_path / "cas" / "cas.json").is_file() and not list((tmp_path / "cas").glob("cas-stores-*"))
    with pytest.raises(FacelabError, match="not conditioned on 'Male'"):
        classification_accuracy_score(world["cgen"], data=world["store"].path, label="Male", run_dir=tmp_path / "x")


def test_cas_deletes_only_the_scratch_folder_it_made(world, tmp_path):
    """CAS into a folder that already holds the user's stores (--out .): they are all still there after it."""
    mine = make_store(tmp_path / "stores" / "mine", n=8, size=8)
    (tmp_path / "stores" / "notes.txt").write_text("keep me")
    classification_accuracy_score(world["cgen"], data=world["store"].path, label="Smiling", run_dir=tmp_path,
                                  n_train=16, epochs=1, batch_size=8, model_kwargs=TINY_VGG,
                                  trainer={"precision": "fp32"}, max_val=8)
    assert Store.open(mine.path).content_hash == mine.content_hash
    assert (tmp_path / "stores" / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob("cas-stores-*"))
    with pytest.raises(FacelabError, match="already holds classifier-generated"):  # nothing is overwritten
        classification_accuracy_score(world["cgen"], data=world["store"].path, label="Smiling", run_dir=tmp_path,
                                      n_train=16, epochs=1)
