"""align_folder replaces only the face files it wrote, removes those no photo gives any more, never reads its own
output back as photos, and skips a photo whose face files cannot be named (too long) instead of aborting.

The face detector is replaced by one that finds as many faces as a photo's top-left red value says, so these
tests check the file handling alone, in milliseconds.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facelab.data.align_folder as af
from facelab.data.align_folder import JOURNAL_NAME, align_folder
from facelab.errors import FacelabError
from facelab.faces import AlignedFace
from facelab.faces.face import Face
from facelab.utils.io import os_error_message
from tests.fixtures.full_disk import simulate_full_disk


class CountingPipeline:
    """Finds ``image[0, 0, 0]`` faces; face i is a frame filled with the value 10 * i + that count."""

    def __init__(self, spec) -> None:  # noqa: ANN001
        self.spec = spec

    @property
    def no_face_reason(self) -> str:
        return "no face found (test)"

    def find(self, image: np.ndarray) -> list[AlignedFace]:
        n = int(image[0, 0, 0])
        face = Face(box=(1, 2, 3, 4), landmarks=np.zeros((5, 2)), score=0.99)
        return [AlignedFace(face=face, image=np.full((218, 178, 3), 10 * i + n, np.uint8), matrix=np.eye(2, 3))
                for i in range(n)]


@pytest.fixture(autouse=True)
def _fake_detector(monkeypatch) -> None:
    monkeypatch.setattr(af, "FacePipeline", CountingPipeline)


def _photo(path: Path, faces: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((8, 8, 3), np.uint8)
    img[0, 0, 0] = faces
    Image.fromarray(img).save(path)


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _listed(out: Path) -> list[tuple[str, str]]:
    with open(out / "faces.csv", newline="") as f:
        return [(r["file"], r["face"]) for r in csv.DictReader(f)]


def _align(photos: Path, out: Path):
    return align_folder(photos, out, progress=False)


def test_a_persons_faces_csv_in_out_is_refused_untouched(tmp_path: Path) -> None:
    _photo(tmp_path / "photos" / "a.png", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "faces.csv").write_text("name,age\nada,36\n")
    (out / "a.png.face0.png").write_bytes(b"someone's picture")
    before = _files(out)
    with pytest.raises(FacelabError, match=r"faces\.csv is not a list of faces written by facelab align"):
        _align(tmp_path / "photos", out)
    (out / "faces.csv").unlink()
    del before["faces.csv"]
    with pytest.raises(FacelabError, match=r"face files that this run would replace.*: a\.png\.face0\.png"):
        _align(tmp_path / "photos", out)
    assert _files(out) == before


def test_a_photo_with_fewer_faces_leaves_no_stale_face_file(tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    _photo(photos / "group.png", 3)
    _photo(photos / "sub" / "solo.png", 1)
    out.mkdir()
    (out / "mine.txt").write_text("my notes")
    _align(photos, out)
    assert _listed(out) == [("group.png", "0"), ("group.png", "1"), ("group.png", "2"), ("sub/solo.png", "0")]
    _photo(photos / "group.png", 2)  # the photo changed: two faces now
    (photos / "sub" / "solo.png").unlink()  # and this one is gone
    _photo(photos / "new.png", 1)
    report = _align(photos, out)
    assert _listed(out) == [("group.png", "0"), ("group.png", "1"), ("new.png", "0")]
    assert sorted(_files(out)) == ["faces.csv", "group.png.face0.png", "group.png.face1.png", "mine.txt",
                                   "new.png.face0.png"]
    assert report.removed == 2 and (out / "mine.txt").read_text() == "my notes"
    assert np.asarray(Image.open(out / "group.png.face1.png"))[0, 0, 0] == 12  # the new faces, not the old


def test_a_run_that_stopped_half_way_is_finished_by_the_next(tmp_path: Path, monkeypatch) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        _photo(photos / name, 1)
    _align(photos, out)
    real = af.FaceFiles.write
    calls = []

    def stop_at_the_second(self, dest, data):
        calls.append(dest)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, dest, data)

    monkeypatch.setattr(af.FaceFiles, "write", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        _align(photos, out)
    assert not (out / "faces.csv").exists()  # no list that passes for complete
    assert (out / JOURNAL_NAME).exists()
    monkeypatch.setattr(af.FaceFiles, "write", real)
    _align(photos, out)  # the files of both earlier runs are known as facelab's: no refusal
    assert _listed(out) == [("a.png", "0"), ("b.png", "0"), ("c.png", "0")] and not (out / JOURNAL_NAME).exists()


def test_a_name_too_long_for_its_face_files_skips_that_photo(tmp_path: Path) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    long_name = "p" * 251 + ".png"  # 255 bytes: fits, but "<name>.face0.png" does not
    _photo(photos / long_name, 2)
    _photo(photos / "ok.png", 1)
    report = _align(photos, out)
    assert _listed(out) == [("ok.png", "0")]
    reason = {s["file"]: s["reason"] for s in report.skipped}[long_name]
    assert "over this file system's limit of 255" in reason and "rename the photo" in reason
    assert sorted(os.listdir(out)) == ["faces.csv", "ok.png.face0.png"]


def test_other_aligned_folders_inside_the_photos_are_not_photos(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photo(photos / "a.png", 2)
    first = _align(photos, photos / "aligned-1")
    second = _align(photos, photos / "aligned-2")
    assert first.photos == second.photos == 1 and second.faces == 2
    assert {"file": "aligned-1/", "reason": "a folder of aligned faces written by facelab align (its faces.csv): "
            "not read as photos"} in second.skipped


def test_a_full_disk_is_one_clear_error_and_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    _photo(photos / "a.png", 2)
    out.mkdir()
    simulate_full_disk(monkeypatch, out)
    with pytest.raises(OSError) as e:
        _align(photos, out)
    monkeypatch.undo()
    assert (os_error_message(e.value) or "").startswith("no space left on the device while writing")
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    assert not (out / "faces.csv").exists()

