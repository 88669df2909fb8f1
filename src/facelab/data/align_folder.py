"""``facelab align``: every face of every photo in a folder, aligned into CelebA's frame, as PNGs plus a CSV.

For each image under PHOTOS (recursive; the rules of :mod:`facelab.data.image_folder`), each face the
pipeline finds is written to ``OUT/<key>.face<i>.png`` (``i`` = 0 for the best-scored face), keeping the
photo's sub-folders, and described by one row of ``OUT/faces.csv`` (:data:`CSV_COLUMNS`: the face's box,
score and five landmarks in the photo's pixels). Photos without a face and unreadable files are skipped
with their reason. Every file is written atomically; nothing is ever written outside OUT.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from facelab.data.decode import IMAGE_SUFFIXES, decode_file
from facelab.data.image_folder import image_key, list_images
from facelab.data.sources.base import text_key
from facelab.errors import FacelabError, ImageDecodeError
from facelab.faces import AlignedFace, AlignSpec, FacePipeline
from facelab.utils.io import atomic_write_bytes, atomic_write_text

CSV_NAME = "faces.csv"
CSV_COLUMNS = ("file", "face", "box_x", "box_y", "box_w", "box_h", "score",
               "le_x", "le_y", "re_x", "re_y", "n_x", "n_y", "ml_x", "ml_y", "mr_x", "mr_y")


@dataclass
class AlignFolderReport:
    """What :func:`align_folder` did: photos read, faces written, files skipped (``{file, reason}``)."""

    out: str
    csv: str
    photos: int  # image files found
    read: int  # of those, decoded
    faces: int  # aligned faces written
    skipped: list[dict[str, str]] = field(default_factory=list)
    align: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "csv": self.csv, "photos": self.photos, "read": self.read, "faces": self.faces,
                "skipped_count": len(self.skipped), "skipped": self.skipped, "align": self.align,
                "seconds": round(self.seconds, 3)}


def align_folder(photos: str | Path, out: str | Path, *, spec: AlignSpec | None = None,
                 progress: bool = True) -> AlignFolderReport:
    """Align every face of every image under ``photos`` into ``out`` (PNG per face + ``faces.csv``).

    Args:
        photos: a folder of images (searched recursively), or one image file.
        out: the folder to write into (created; files of an earlier run with the same names are replaced).
        spec: the alignment (default :class:`~facelab.faces.AlignSpec` (): MTCNN into CelebA's frame).
        progress: show a progress bar on stderr.

    Raises:
        FacelabError: ``photos`` is neither a folder nor an image file, holds no image, or none of its images
            could be read; ``out`` is a file or cannot be written.
    """
    t0 = time.perf_counter()
    photos, out = Path(photos).expanduser(), Path(out).expanduser()
    spec = spec or AlignSpec()
    files, skipped = _photo_files(photos, out)
    _prepare_out(out)
    pipeline = FacePipeline(spec)
    rows: list[list[Any]] = []
    read = 0
    from facelab.utils.progress import progress_bar

    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("aligning faces", total=len(files))
        for key, path in files:
            try:
                image = decode_file(path)
            except ImageDecodeError as e:
                skipped.append({"file": key, "reason": e.reason})
            else:
                read += 1
                rows += _write_faces(out, key, pipeline.find(image), skipped, pipeline.no_face_reason)
            bar.advance(task)
    if read == 0:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5])
        raise FacelabError(f"{photos}: none of its {len(files)} image files could be read ({reasons}); nothing "
                           f"written to {out}")
    atomic_write_text(out / CSV_NAME, _csv_text(rows))
    return AlignFolderReport(out=str(out), csv=str(out / CSV_NAME), photos=len(files), read=read, faces=len(rows),
                             skipped=skipped, align=spec.model_dump(mode="json"), seconds=time.perf_counter() - t0)


def _photo_files(photos: Path, out: Path) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """(key, path) of the images to read and the files skipped while listing; files inside ``out`` (when it
    lies under ``photos``) are left out, so a re-run never aligns the crops of the previous one."""
    if photos.is_file():
        if photos.suffix.lower() not in IMAGE_SUFFIXES:
            raise FacelabError(f"{photos}: not an image file (by extension: {', '.join(sorted(IMAGE_SUFFIXES))}); "
                               "give an image or a folder of images")
        return [(text_key(photos.name), photos)], []
    images, listed = list_images(photos, what="; give a folder of photos or one image file")
    inside = out.resolve()
    files = [(key, p) for key, p in ((image_key(photos, p), p) for p in images) if not _is_within(p.resolve(), inside)]
    if not files:
        raise FacelabError(f"{photos}: its only images lie in --out {out}; choose another --out")
    return files, [{"file": s["key"], "reason": s["reason"]} for s in listed]


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FacelabError(f"{out} is a file; --out names the folder to write the aligned faces into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacelabError(f"cannot create the folder {out} ({e.strerror}); choose another --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write into {out}: not a writable folder; choose another --out")


def _write_faces(out: Path, key: str, found: list[AlignedFace], skipped: list[dict[str, str]],
                 no_face: str) -> list[list[Any]]:
    """Write each aligned face of the photo ``key`` as a PNG; its CSV rows. A photo without a face is skipped."""
    if not found:
        skipped.append({"file": key, "reason": no_face})
        return []
    rows = []
    for i, aligned in enumerate(found):
        dest = face_path(out, key, i)
        if dest is None:
            skipped.append({"file": key, "reason": f"face {i}: its file would lie outside {out}"})
            continue
        ok, png = cv2.imencode(".png", cv2.cvtColor(aligned.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise FacelabError(f"cannot encode the aligned face {i} of {key} as PNG")
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, png.tobytes())
        rows.append(_row(key, i, aligned))
    return rows


def face_path(out: Path, key: str, index: int) -> Path | None:
    """``out/<key>.face<index>.png``, or None if it would lie outside ``out``: an absolute key, one holding
    '..', or a linked folder inside ``out`` leading elsewhere."""
    path = PurePosixPath(key)
    parts = [p for p in path.parts if p != "."]
    if path.is_absolute() or not parts or ".." in parts:
        return None
    dest = out.joinpath(*parts[:-1], f"{parts[-1]}.face{index}.png")
    return dest if _is_within(dest.resolve(), out.resolve()) else None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _row(key: str, index: int, aligned: AlignedFace) -> list[Any]:
    face = aligned.face
    box = [f"{v:.2f}" for v in face.box]
    points = [f"{v:.2f}" for v in np.asarray(face.landmarks).reshape(-1)]
    return [key, index, *box, f"{face.score:.4f}", *points]


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()
