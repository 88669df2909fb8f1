"""``facelab align``: every face of every photo in a folder, aligned into CelebA's frame, as PNGs plus a CSV.

For each image under PHOTOS (recursive; the rules of :mod:`facelab.data.image_folder`), each face the
pipeline finds is written to ``OUT/<key>.face<i>.png`` (``i`` = 0 for the best-scored face), keeping the
photo's sub-folders, and described by one row of ``OUT/faces.csv`` (:data:`CSV_COLUMNS`: the face's box,
score and five landmarks in the photo's pixels). Photos without a face and unreadable files are skipped
with their reason. Every file is written atomically; nothing is ever written outside OUT.

OUT may hold other files: align replaces only the face files it wrote itself (those its ``faces.csv`` lists,
or, for a run that did not finish, its hidden journal ``.faces.csv.journal``) and removes those that no photo
gives any more; a face file or ``faces.csv`` of someone else's in the way is refused before anything is
written. An aligned-faces folder inside PHOTOS is never read back as photos.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
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
from facelab.utils.io import atomic_write_bytes, atomic_write_text, naming

CSV_NAME = "faces.csv"
JOURNAL_NAME = ".faces.csv.journal"  # the face files written so far by a run (and by the runs before it)
_FACE_FILE = re.compile(r"^(?P<photo>.+)\.face\d+\.png$")
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
    removed: int = 0  # face files of an earlier run that no photo gives any more
    capped: list[dict[str, Any]] = field(default_factory=list)  # more faces than max_faces: {file, found, kept, note}

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "csv": self.csv, "photos": self.photos, "read": self.read, "faces": self.faces,
                "skipped_count": len(self.skipped), "skipped": self.skipped, "align": self.align,
                "seconds": round(self.seconds, 3), "removed": self.removed, "capped_count": len(self.capped),
                "capped": self.capped}


def align_folder(photos: str | Path, out: str | Path, *, spec: AlignSpec | None = None,
                 progress: bool = True) -> AlignFolderReport:
    """Align every face of every image under ``photos`` into ``out`` (PNG per face + ``faces.csv``).

    Args:
        photos: a folder of images (searched recursively), or one image file.
        out: the folder to write into (created). Face files an earlier align run wrote there are replaced, and
            removed when no photo gives them any more; nothing else in it is touched.
        spec: the alignment (default :class:`~facelab.faces.AlignSpec` (): MTCNN into CelebA's frame).
        progress: show a progress bar on stderr.

    Raises:
        FacelabError: ``photos`` is neither a folder nor an image file, holds no image, or none of its images
            could be read; ``out`` is a file or cannot be written, or holds a ``faces.csv`` or face files that
            facelab did not write where this run would write its own.
    """
    t0 = time.perf_counter()
    photos, out = Path(photos).expanduser(), Path(out).expanduser()
    spec = spec or AlignSpec()
    files, skipped = _photo_files(photos, out)
    _prepare_out(out)
    faces_out = FaceFiles(out)
    faces_out.check_free({key for key, _ in files})
    pipeline = FacePipeline(spec)
    rows: list[list[Any]] = []
    capped: list[dict[str, Any]] = []
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
                found = pipeline.find_counted(image)
                if found.note is not None:
                    capped.append({"file": key, "found": found.found, "kept": len(found.aligned), "note": found.note})
                rows += _write_faces(faces_out, key, found.aligned, skipped, pipeline.no_face_reason)
            bar.advance(task)
    if read == 0:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5])
        raise FacelabError(f"{photos}: none of its {len(files)} image files could be read ({reasons}); nothing "
                           f"written to {out}")
    removed = faces_out.finish(_csv_text(rows))
    return AlignFolderReport(out=str(out), csv=str(out / CSV_NAME), photos=len(files), read=read, faces=len(rows),
                             skipped=skipped, align=spec.model_dump(mode="json"), seconds=time.perf_counter() - t0,
                             removed=removed, capped=capped)


class FaceFiles:
    """The face files of ``out`` that facelab align wrote: those its ``faces.csv`` lists, those the journal of
    an unfinished run lists, and those this run writes (each journaled before it is written).

    The first face a run writes replaces ``faces.csv`` by the journal of the earlier runs' files (it is written
    anew, listing this run's faces, when the run finishes): a run that stops half-way leaves no list that
    passes for complete, and the next run still knows which files are facelab's. A first write that fails
    (a full disk) leaves ``out`` as it was.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.journal = out / JOURNAL_NAME
        self.owned = self._listed()
        self.resumed = self.journal.is_file()  # an earlier run stopped half-way: its journal stays ours
        self.written: list[str] = []

    def _listed(self) -> set[str]:
        owned: set[str] = set()
        path = self.out / CSV_NAME
        if path.exists():
            try:
                with open(path, newline="", encoding="utf-8") as f:
                    table = list(csv.reader(f))
            except (OSError, UnicodeDecodeError, csv.Error):
                table = []
            if not table or tuple(table[0]) != CSV_COLUMNS:
                raise FacelabError(f"{path} is not a list of faces written by facelab align (its first line is not "
                                   f"{','.join(CSV_COLUMNS[:3])},...); facelab does not replace it: move it away or "
                                   "choose another --out")
            for row in table[1:]:
                dest = face_path(self.out, row[0], int(row[1])) if len(row) > 1 and row[1].isdigit() else None
                if dest is not None:
                    owned.add(dest.relative_to(self.out).as_posix())
        if self.journal.is_file():
            owned.update(line for line in self.journal.read_text(encoding="utf-8", errors="replace").splitlines()
                         if line)
        return owned

    def check_free(self, keys: set[str]) -> None:
        """FacelabError naming the face files in ``out`` that a photo of ``keys`` would replace and that facelab
        did not write (a person's own, or of a run whose list is gone)."""
        theirs = []
        for path in self.out.rglob("*.face*.png"):
            rel = path.relative_to(self.out).as_posix()
            m = _FACE_FILE.match(rel)
            if m and m.group("photo") in keys and rel not in self.owned:
                theirs.append(rel)
        if theirs:
            listed = ", ".join(sorted(theirs)[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
            raise FacelabError(f"{self.out} holds face files that this run would replace and that facelab align did "
                               f"not write (no {CSV_NAME} of its lists them): {listed}; move them away or choose "
                               "another --out")

    def write(self, dest: Path, data: bytes) -> None:
        rel = dest.relative_to(self.out).as_posix()
        first = not self.written and not self.resumed
        if first:  # the earlier runs' files and this one, before it exists
            atomic_write_text(self.journal, "".join(f"{r}\n" for r in sorted(self.owned | {rel})))
        else:
            self._journal(rel)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(dest, data)
        except BaseException:
            if first:
                self.journal.unlink(missing_ok=True)  # nothing changed in out: no journal either
            raise
        self.written.append(rel)
        if first:
            (self.out / CSV_NAME).unlink(missing_ok=True)  # it no longer describes the face files

    def _journal(self, rel: str) -> None:
        try:
            with open(self.journal, "a", encoding="utf-8") as f:
                f.write(f"{rel}\n")
        except OSError as e:
            raise naming(e, self.journal) from None

    def finish(self, csv_text: str) -> int:
        """Write ``faces.csv``, remove the earlier runs' face files no photo gave now; the count removed."""
        atomic_write_text(self.out / CSV_NAME, csv_text)
        removed = 0
        for rel in sorted(self.owned - set(self.written)):
            path = self.out / rel
            inside = _is_within(path.parent.resolve(), self.out.resolve())
            if inside and _FACE_FILE.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink()
                removed += 1
        self.journal.unlink(missing_ok=True)
        return removed


def _photo_files(photos: Path, out: Path) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """(key, path) of the images to read and the files skipped while listing; files inside ``out`` (when it
    lies under ``photos``) and inside any other folder of aligned faces facelab wrote under ``photos`` are left
    out, so a re-run never aligns the crops of an earlier one."""
    if photos.is_file():
        if photos.suffix.lower() not in IMAGE_SUFFIXES:
            raise FacelabError(f"{photos}: not an image file (by extension: {', '.join(sorted(IMAGE_SUFFIXES))}); "
                               "give an image or a folder of images")
        return [(text_key(photos.name), photos)], []
    images, listed = list_images(photos, what="; give a folder of photos or one image file")
    skipped = [{"file": s["key"], "reason": s["reason"]} for s in listed]
    outputs = {out.resolve()}
    for found in aligned_folders(photos):
        outputs.add(found.resolve())
        if found.resolve() != out.resolve():
            skipped.append({"file": f"{image_key(photos, found)}/", "reason": "a folder of aligned faces written by "
                            "facelab align (its faces.csv): not read as photos"})
    files = [(key, p) for key, p in ((image_key(photos, p), p) for p in images)
             if not any(_is_within(p.resolve(), o) for o in outputs)]
    if not files:
        raise FacelabError(f"{photos}: its only images lie in --out {out} or in other folders of faces facelab "
                           "align wrote; choose another --out")
    return files, skipped


def aligned_folders(photos: Path) -> list[Path]:
    """The folders strictly under ``photos`` that facelab align wrote into (a faces.csv with its columns, or the
    journal of a run that did not finish)."""
    found = []
    for marker in (*photos.rglob(CSV_NAME), *photos.rglob(JOURNAL_NAME)):
        folder = marker.parent
        if folder == photos or folder in found:
            continue
        if marker.name == JOURNAL_NAME or _has_face_columns(marker):
            found.append(folder)
    return found


def _has_face_columns(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return tuple(next(csv.reader(f), ())) == CSV_COLUMNS
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FacelabError(f"{out} is a file; --out names the folder to write the aligned faces into")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacelabError(f"cannot create the folder {out} ({e.strerror}); choose another --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write into {out}: not a writable folder; choose another --out")


def _write_faces(faces_out: FaceFiles, key: str, found: list[AlignedFace], skipped: list[dict[str, str]],
                 no_face: str) -> list[list[Any]]:
    """Write each aligned face of the photo ``key`` as a PNG; its CSV rows. A photo without a face is skipped,
    and so is one whose face files could not be named on this file system (a name too long)."""
    if not found:
        skipped.append({"file": key, "reason": no_face})
        return []
    out = faces_out.out
    too_long = _name_too_long(out, key, len(found))
    if too_long is not None:
        skipped.append({"file": key, "reason": too_long})
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
        try:
            faces_out.write(dest, png.tobytes())
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
            skipped.append({"file": key, "reason": f"face {i}: its file name is too long for the file system "
                            f"({dest.name}); rename the photo"})
            continue
        rows.append(_row(key, i, aligned))
    return rows


def _name_too_long(out: Path, key: str, faces: int) -> str | None:
    """Why the face files of photo ``key`` cannot be named in ``out`` (None when they can)."""
    name = f"{PurePosixPath(key).name}.face{faces - 1}.png"
    try:
        limit = os.pathconf(out, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    size = len(os.fsencode(name))
    if size > limit:
        return (f"its face files' names would be {size} bytes, over this file system's limit of {limit} "
                "(the photo's name plus .faceN.png); rename the photo")
    return None


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
