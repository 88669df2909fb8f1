"""Every command that opens a person's image files refuses the files of other formats that Pillow could read (or
hand to Ghostscript), whatever their names: ``data prepare`` (every source that reads files), ``align`` and
``predict`` report them as skips, ``serve`` answers 415, and a fake ``gs`` on PATH is never run. Sniffing
recognises real headers: text that starts with "BM" or "II*" is 415, a damaged image of a known format 422."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facelab.data.store import Store
from facelab.deploy import load_engine
from facelab.eval.photos import PhotoPredictor
from facelab.serve.app import create_app
from tests.e2e.conftest import cli_error, cli_json
from tests.fixtures.faces import FACE_SEEDS, paste_face
from tests.fixtures.foreign_files import fake_ghostscript, foreign_files, write_foreign_files
from tests.fixtures.layouts import make_celeba, make_class_folders, make_utkface, utkface_name

NOT_AN_IMAGE = "cannot decode image (not a known image format: facelab reads JPEG, PNG, BMP, WebP, GIF and TIFF files)"


@pytest.fixture
def gs_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fake_ghostscript(tmp_path / "trap", monkeypatch)


def _overwrite(paths: list[Path]) -> list[str]:
    """Give the files at ``paths`` the contents of the foreign files, in turn (their names stay); the names."""
    contents = list(foreign_files().values())
    for path, data in zip(paths, contents):
        path.write_bytes(data)
    return [p.name for p in paths[:len(contents)]]


def _folder(root: Path) -> tuple[Path, int, list[str]]:
    make_class_folders(root, {"a": 3, "b": 3})
    return root, 6, [f"a/{n}" for n in write_foreign_files(root / "a")]


def _cifar10(root: Path) -> tuple[Path, int, list[str]]:
    make_class_folders(root / "cifar10" / "train", {"cat": 2, "dog": 2}, size=(32, 32))
    return root, 4, [f"train/cat/{n}" for n in write_foreign_files(root / "cifar10" / "train" / "cat")]


def _celeba(root: Path) -> tuple[Path, int, list[str]]:
    celeba = make_celeba(root, 12)
    return root, 4, _overwrite([root / "img_align_celeba" / n for n in celeba.image_names])


def _utkface(root: Path) -> tuple[Path, int, list[str]]:
    paths = make_utkface(root, [utkface_name(20 + i, i % 2, i % 5) for i in range(12)])
    return root, 4, _overwrite(paths)


@pytest.mark.parametrize("source, make, workers", [("folder", _folder, 2), ("cifar10", _cifar10, 1),
                                                   ("celeba", _celeba, 1), ("utkface", _utkface, 1)])
def test_prepare_skips_other_formats_and_never_runs_ghostscript(source, make, workers, gs_log, tmp_path):
    root, images, foreign = make(tmp_path / source)
    report = cli_json("data", "prepare", source, root, "--out", tmp_path / "store", "--size", 16,
                      "--workers", workers)
    assert report["count"] == images
    skipped = {s["key"]: (s["stage"], s["reason"]) for s in report["skipped"]}
    assert skipped == {key: ("decode", NOT_AN_IMAGE) for key in foreign}
    assert len(Store.open(tmp_path / "store")) == images
    assert not gs_log.exists(), gs_log.read_text()


def test_align_skips_other_formats_and_refuses_one_given_alone(gs_log, tmp_path):
    photos = tmp_path / "photos"
    foreign = write_foreign_files(photos)
    Image.fromarray(paste_face(FACE_SEEDS[0]).image).save(photos / "face.png")
    report = cli_json("align", photos, "--out", tmp_path / "aligned")
    assert (report["photos"], report["read"], report["faces"]) == (len(foreign) + 1, 1, 1)
    assert {s["file"]: s["reason"] for s in report["skipped"]} == dict.fromkeys(foreign, NOT_AN_IMAGE)
    err = cli_error("align", photos / "holiday.jpg", "--out", tmp_path / "one")
    assert f"holiday.jpg: {NOT_AN_IMAGE}" in str(err) and not (tmp_path / "one" / "faces.csv").exists()
    assert not gs_log.exists(), gs_log.read_text()


@pytest.mark.parametrize("faces", ["aligned", "detect"])
def test_predict_skips_other_formats(faces, clf_run, gs_log, tmp_path):
    photos = tmp_path / "photos"
    foreign = write_foreign_files(photos)
    Image.fromarray(paste_face(FACE_SEEDS[0]).image).save(photos / "face.png")
    report = cli_json("predict", clf_run[0], photos, "--out", tmp_path / "pred.csv", "--faces", faces)
    assert report["count"] == 1
    assert {s["key"]: s["reason"] for s in report["skipped"]} == dict.fromkeys(foreign, NOT_AN_IMAGE)
    assert not gs_log.exists(), gs_log.read_text()


# ---- serve ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(clf_run) -> TestClient:
    return TestClient(create_app(PhotoPredictor(load_engine(clf_run[0]), faces="detect")))


def _post(client: TestClient, name: str, data: bytes):
    return client.post("/v1/predict", files={"file": (name, data, "image/jpeg")})


def test_serve_answers_415_to_other_formats_and_never_runs_ghostscript(client, gs_log):
    for name, data in foreign_files().items():
        r = _post(client, name, data)
        assert r.status_code == 415 and r.json()["detail"] == NOT_AN_IMAGE, (name, r.text)
    assert not gs_log.exists(), gs_log.read_text()


@pytest.mark.parametrize("text", [b"BM is how this text starts; it goes on with letters only, long enough.",
                                  b"II* a note, not a TIFF", b"GIF", b"RIFF....WAVEfmt "])
def test_serve_answers_415_to_text_that_starts_like_an_image(client, text):
    assert _post(client, "notes.jpg", text).status_code == 415


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(paste_face(FACE_SEEDS[0]).image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "GIF", "PNG", "JPEG"])
def test_serve_answers_422_to_a_damaged_image_of_a_known_format(client, fmt):
    data = _encoded(fmt)
    r = _post(client, f"cut.{fmt.lower()}", data[:len(data) // 3])
    assert r.status_code == 422, r.text
    assert _post(client, f"whole.{fmt.lower()}", data).status_code == 200
