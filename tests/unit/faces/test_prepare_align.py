"""Stores of aligned faces (``prepare_store(..., align=AlignSpec())``) and what checkpoints record about them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facelab.data.build import landmarks_to_store, prepare_store
from facelab.data.decode import crop_resize, decode_file
from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import CropSpec
from facelab.data.sources import create_source
from facelab.data.store import Store
from facelab.errors import StoreError
from facelab.faces import AlignSpec, FacePipeline
from tests.fixtures.faces import FACE_SEEDS, blank, paste_face
from tests.helpers import make_store

SIZE = 32
CELEBA_CROP = CropSpec(mode="center")  # the celeba source's default crop


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/people/: three pasted faces, a blank photo and a corrupt file."""
    root = tmp_path_factory.mktemp("folder")
    people = root / "people"
    people.mkdir()
    for i, (seed, angle) in enumerate(zip(FACE_SEEDS, (-15.0, 0.0, 12.0))):
        Image.fromarray(paste_face(seed, angle=angle, scale=1.1).image).save(people / f"face{i}.png")
    Image.fromarray(blank()).save(people / "blank.png")
    (people / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


@pytest.fixture(scope="module")
def aligned(folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("stores") / "aligned"
    report = prepare_store(create_source("folder", folder), out, size=SIZE, align=AlignSpec(), workers=1,
                           progress=False)
    return report, Store.open(out)


def test_the_store_holds_each_photos_best_face_in_celebas_frame(folder, aligned):
    report, store = aligned
    assert len(store) == 3 and list(store.keys) == [f"people/face{i}.png" for i in range(3)]
    pipeline = FacePipeline()
    for i, key in enumerate(store.keys):
        face = pipeline.find(decode_file(folder / key))[0].image  # (218, 178, 3)
        assert np.array_equal(store.images[i], crop_resize(face, CELEBA_CROP, SIZE))


def test_no_face_is_a_reported_skip_never_a_guess(aligned):
    report, store = aligned
    skipped = {s["key"]: s for s in report.skipped}
    assert skipped["people/blank.png"] == {"key": "people/blank.png", "stage": "align",
                                            "reason": "no face found (mtcnn, min score 0.9)"}
    assert skipped["people/corrupt.jpg"]["stage"] == "decode"
    assert (report.aligned, report.no_face) == (3, 1)
    assert any("re-detected and aligned" in n and "1 images without a face" in n for n in store.manifest.notes)


def test_the_manifest_records_the_spec_and_each_face_its_detected_landmarks(aligned):
    """Each row's landmarks are its face's own, carried into the aligned frame: near the template (the fit's
    residual), but not the template itself (that would hide how the head is turned)."""
    _, store = aligned
    spec = AlignSpec()
    assert store.manifest.align == spec.model_dump(mode="json") and store.aligned
    assert store.manifest.crop == CELEBA_CROP and store.manifest.has_landmarks
    template = landmarks_to_store(spec.template_points.reshape(-1).tolist(), 218, 178, CELEBA_CROP, SIZE)
    gap = np.abs(store.landmarks - template[None, :])
    assert gap.max() < 0.1 * SIZE and gap.max() > 1e-3  # close to the template, yet each face's own
    assert not np.allclose(store.landmarks[0], store.landmarks[1])


def test_aligned_and_unaligned_builds_are_different_stores(folder, aligned, tmp_path):
    _, store = aligned
    again = prepare_store(create_source("folder", folder), store.path, size=SIZE, align=AlignSpec(), progress=False)
    assert again.status == "already complete" and again.aligned == 3
    with pytest.raises(StoreError, match="align"):
        prepare_store(create_source("folder", folder), store.path, size=SIZE, crop=CELEBA_CROP, progress=False)
    with pytest.raises(StoreError, match="align"):
        prepare_store(create_source("folder", folder), store.path, size=SIZE,
                      align=AlignSpec(detector="retinaface"), progress=False)


def test_parallel_builds_align_the_same(folder, aligned, tmp_path):
    _, store = aligned
    report = prepare_store(create_source("folder", folder), tmp_path / "parallel", size=SIZE, align=AlignSpec(),
                           workers=2, chunk_size=2, progress=False)
    assert report.content_hash == store.content_hash


def test_a_dataset_without_faces_is_a_clear_error(tmp_path):
    (tmp_path / "root" / "x").mkdir(parents=True)
    Image.fromarray(blank()).save(tmp_path / "root" / "x" / "a.png")
    with pytest.raises(StoreError, match="no face was found in any of the 1 images"):
        prepare_store(create_source("folder", tmp_path / "root"), tmp_path / "s", size=SIZE, align=AlignSpec(),
                      workers=1, progress=False)


def test_checkpoints_record_how_their_training_images_were_aligned(aligned, tmp_path):
    _, store = aligned
    rgb = (0.5, 0.5, 0.5)
    assert Preprocessing.of_store(store, mean=rgb, std=rgb).align == AlignSpec()
    celeba = make_store(tmp_path / "celeba", source="celeba")  # CelebA's own aligned images
    synthetic = make_store(tmp_path / "synthetic", source="synthetic")
    assert Preprocessing.of_store(celeba, mean=rgb, std=rgb).align == AlignSpec()
    plain = Preprocessing.of_store(synthetic, mean=rgb, std=rgb)
    assert plain.align is None
    dumped = Preprocessing.of_store(celeba, mean=rgb, std=rgb).model_dump(mode="json")
    assert Preprocessing.from_meta(dumped, where="checkpoint").align == AlignSpec()  # JSON round trip


def test_older_checkpoints_load_and_alignment_mismatches_are_warned(aligned, tmp_path):
    _, store = aligned
    rgb = (0.5, 0.5, 0.5)
    unaligned = make_store(tmp_path / "plain", source="folder", size=SIZE)
    old = Preprocessing.from_meta({"image_size": SIZE, "mean": rgb, "std": rgb, "source": "folder"}, where="old")
    assert old.align is None and old.check_store(store, what="net").warnings == []  # not known: no warning
    trained_aligned = Preprocessing.of_store(store, mean=rgb, std=rgb)
    warned = trained_aligned.check_store(unaligned, what="net").warnings
    assert any("prepare it with --align" in w for w in warned)
    trained_plain = Preprocessing.of_store(unaligned, mean=rgb, std=rgb)
    assert any("not aligned" in w for w in trained_plain.check_store(store, what="net").warnings)
