"""``facelab predict``: probabilities and predicted labels for every image of a store or a folder, as CSV.

A folder of photos goes through :class:`facelab.eval.photos.PhotoPredictor`, the path ``facelab serve`` takes
too: for a checkpoint trained on aligned faces (``--faces auto``, the default, or ``detect``), every face of
every photo is found, aligned like the training images and written as one row (``file, face, box_x, box_y,
box_w, box_h, score``, then the probabilities and decisions); a photo without a face is listed as skipped
with the reason; a photo with more faces than the alignment's ``max_faces`` gets rows for the best-scored ones
and is listed in the report's ``capped`` (how many were found, how many kept). ``--faces aligned`` (and any
checkpoint trained on unaligned images) takes each photo as one
aligned face, one row keyed by the file. A store is predicted row by row as it is (``key``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facelab.data.decode import crop_resize, decode_file, decode_min_side
from facelab.data.image_folder import image_key, list_images
from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import CropSpec, LabelKind, LabelSpec
from facelab.data.store import MANIFEST, Store
from facelab.deploy import load_engine
from facelab.errors import FacelabError, ImageDecodeError
from facelab.eval.evaluate import check_preprocessing, check_run_inputs
from facelab.eval.outputs import check_output
from facelab.eval.photos import FacesMode, PhotoPredictor
from facelab.models.classifiers.heads import Task
from facelab.runs.inputs import run_dir_of
from facelab.utils.io import atomic_write_text
from facelab.utils.progress import progress_bar


@dataclass
class PredictReport:
    out: str
    count: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the store differs from the training data (source, crop)
    capped: list[dict[str, Any]] = field(default_factory=list)  # photos with more faces than max_faces

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "count": self.count, "skipped_count": len(self.skipped), "skipped": self.skipped,
                "warnings": self.warnings, "capped_count": len(self.capped), "capped": self.capped}


#: the columns that say where a face is, before the probabilities (--faces detect)
FACE_COLUMNS = ["file", "face", "box_x", "box_y", "box_w", "box_h", "score"]
Batch = tuple[list[list[Any]], np.ndarray]  # (the first cells of each row, (B, S, S, 3) uint8 crops)


def _aligned_photos(folder: Path, files: Iterable[Path], preprocessing: Preprocessing,
                    skipped: list[dict[str, str]]) -> Iterator[tuple[list[Any], np.ndarray]]:
    """Each photo as one aligned face: ([key], its crop); the decoder may downscale (the crop is all we need)."""
    size = preprocessing.image_size
    crop = preprocessing.crop or CropSpec()
    for p in files:
        try:
            yield [image_key(folder, p)], crop_resize(decode_file(p, min_side=decode_min_side(crop, size)), crop, size)
        except ImageDecodeError as e:
            skipped.append({"key": image_key(folder, p), "reason": e.reason})


def _detected_faces(folder: Path, files: Iterable[Path], predictor: PhotoPredictor, skipped: list[dict[str, str]],
                    capped: list[dict[str, Any]]) -> Iterator[tuple[list[Any], np.ndarray]]:
    """Every face of every photo (at most the alignment's max_faces, the best-scored): ([file, face index, box,
    score], its crop); photos without one are skipped, photos with more faces are listed in ``capped``."""
    for p in files:
        key = image_key(folder, p)
        try:
            faces = predictor.face_crops(predictor.read_photo(p))
        except ImageDecodeError as e:
            skipped.append({"key": key, "reason": e.reason})
            continue
        if not faces.crops:
            skipped.append({"key": key, "reason": faces.note or predictor.no_face_reason})
        elif faces.capped:
            capped.append({"key": key, "found": faces.found, "kept": len(faces.crops), "note": faces.note})
        for i, c in enumerate(faces.crops):
            yield [key, i, *(f"{v:.1f}" for v in c.box), f"{c.score:.4f}"], c.image


def _advancing(files: list[Path], advance: Any) -> Iterator[Path]:
    """``files``, calling ``advance()`` after each one is read (the progress bar counts photos, not faces)."""
    for p in files:
        yield p
        advance()


def _batched(items: Iterator[tuple[list[Any], np.ndarray]], batch_size: int) -> Iterator[Batch]:
    firsts, imgs = [], []
    for first, img in items:
        firsts.append(first)
        imgs.append(img)
        if len(imgs) == batch_size:
            yield firsts, np.stack(imgs)
            firsts, imgs = [], []
    if imgs:
        yield firsts, np.stack(imgs)


def _store_batches(store, batch_size: int) -> Iterator[Batch]:
    for start in range(0, len(store), batch_size):
        sl = slice(start, min(len(store), start + batch_size))
        yield [[str(k)] for k in store.keys[sl]], np.array(store.images[sl])  # copy: memmaps are read-only


def _header(first: list[str], task: Task, specs: dict[str, LabelSpec]) -> list[str]:
    cols = list(first)
    for o in task.outputs:
        if o.kind is LabelKind.BINARY:
            cols.append(f"p_{o.name}")
        else:
            cols += [f"p_{o.name}={c}" for c in specs[o.name].classes]
    return cols + [f"pred_{o.name}" for o in task.outputs]


def _rows(firsts: list[list[Any]], probs: dict[str, np.ndarray], task: Task, specs: dict[str, LabelSpec],
          threshold: float):
    for i, first in enumerate(firsts):
        row: list[Any] = list(first)
        preds = []
        for o in task.outputs:
            p = probs[o.name][i]
            if o.kind is LabelKind.BINARY:
                row.append(f"{p:.5f}")
                preds.append(int(p >= threshold))
            else:
                row += [f"{v:.5f}" for v in p]
                preds.append(specs[o.name].classes[int(np.argmax(p))])
        yield row + preds


def _check_writable(out: Path, inputs: Sequence[Path]) -> None:
    """FacelabError when the CSV cannot, or may not, be written at ``out``: a folder there, no writable folder
    above, a file facelab did not write, a path inside a store or run folder, or one of the inputs
    (:func:`facelab.eval.outputs.check_output`)."""
    if out.is_dir():
        raise FacelabError(f"{out} is a folder; --out names the CSV file to write, e.g. {out / 'predictions.csv'}")
    check_output(out, option="--out", inputs=inputs, ours=is_predictions_csv)
    above = next(p for p in (out.parent, *out.parent.parents) if p.exists())  # missing folders are created
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write {out}: {above} is not a writable folder; choose another --out")


def is_predictions_csv(path: Path) -> bool:
    """Whether ``path`` is a CSV that ``facelab predict`` wrote (its header: key or the face columns first, a
    ``pred_`` column for each output): one it may replace."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    starts = header[:1] == ["key"] or header[:len(FACE_COLUMNS)] == FACE_COLUMNS
    return starts and any(c.startswith("pred_") for c in header)


def predict_to_csv(run: str | Path | Sequence[str | Path], target: str | Path, out: str | Path, *,
                   batch_size: int = 256, device: str = "cpu", threshold: float = 0.5, which: str = "best",
                   tta_flip: bool | None = None, progress: bool = True, engine: str | None = None,
                   faces: FacesMode = "auto", detector: str | None = None,
                   accept_changed_inputs: bool = False) -> PredictReport:
    """Write one CSV row per image of ``target`` (a store folder or a folder of images).

    Args:
        run: a run folder or checkpoint, or a list of them whose probabilities are averaged (an ensemble), or a
            ``.onnx`` file written by ``facelab export`` (its labels and preprocessing come from the file).
        which: checkpoint of each run folder: "best" (default) or "last".
        tta_flip: average each image's logits with those of its mirror image (as ``facelab eval --tta-flip``);
            None: as the run was validated (its config's ``tta_flip``).
        engine: what runs the model (:func:`facelab.deploy.load_engine`): "torch", "onnx" (a run's exported
            model, exported first when missing or stale); None: onnx for a .onnx file, else torch.
        faces: for a folder of photos: "auto" (detect and align the faces when the checkpoint was trained on
            aligned faces), "detect" or "aligned" (each photo is one aligned face); see the module docstring.
        detector: the face detector instead of the checkpoint's (e.g. "retinaface", the fast one).
        accept_changed_inputs: predict a run's own store although it (or another input the run recorded)
            changed since the run recorded it (:func:`facelab.eval.evaluate.check_run_inputs`).
    """
    runs = [Path(r) for r in ([run] if isinstance(run, (str, Path)) else run)]
    _check_writable(Path(out), [Path(target), *runs])  # before any inference, which a refused write would waste
    model = load_engine(run, engine=engine, which=which, device=device, tta_flip=tta_flip)
    meta, task = model.meta, model.task
    specs = {d["name"]: LabelSpec.from_dict(d) for d in meta.labels}
    target = Path(target)
    skipped: list[dict[str, str]] = []
    warnings: list[str] = []
    capped: list[dict[str, Any]] = []
    first = ["key"]
    with progress_bar(enabled=progress) as prog:
        is_store = (target / MANIFEST).is_file()
        if is_store:
            store = Store.open(target)
            warnings = check_preprocessing(meta, store)
            runs = run if isinstance(run, (list, tuple)) else [run]
            warnings += check_run_inputs([run_dir_of(r) for r in runs], store, accept=accept_changed_inputs,
                                         doing="predict", command="predict")
            bar = prog.add_task("predict", total=len(store))
            batches = _store_batches(store, batch_size)
        else:
            files, skipped = list_images(target, what=", and not a store")
            predictor = PhotoPredictor(model, faces=faces, detector=detector, threshold=threshold)
            bar = prog.add_task("predict", total=len(files))
            files_done = _advancing(files, lambda: prog.advance(bar))
            if predictor.mode == "detect":
                first, items = FACE_COLUMNS, _detected_faces(target, files_done, predictor, skipped, capped)
            else:
                items = _aligned_photos(target, files_done, meta.preprocessing, skipped)
            batches = _batched(items, batch_size)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(_header(first, task, specs))
        count = 0
        for firsts, imgs in batches:
            probs = model.probabilities(meta.preprocessing.to_input(imgs))  # {label: (B,) or (B, K)}
            writer.writerows(_rows(firsts, probs, task, specs, threshold))
            count += len(firsts)
            if is_store:
                prog.advance(bar, len(firsts))
    if count == 0:  # every file skipped: an empty CSV with exit code 0 would pass for a result
        reasons = "; ".join(f"{d['key']}: {d['reason']}" for d in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise FacelabError(f"{target}: none of its {len(skipped)} files could be read as an image with a face to "
                           f"predict, nothing written to {out} ({reasons})")
    atomic_write_text(Path(out), buf.getvalue())
    return PredictReport(out=str(out), count=count, skipped=skipped, warnings=warnings, capped=capped)
