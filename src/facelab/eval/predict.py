"""``facelab predict``: probabilities and predicted labels for every image of a store or a folder, as CSV."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
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
from facelab.eval.evaluate import check_preprocessing
from facelab.models.classifiers.heads import Task
from facelab.utils.io import atomic_write_text


@dataclass
class PredictReport:
    out: str
    count: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the store differs from the training data (source, crop)

    def to_dict(self) -> dict[str, Any]:
        return {"out": self.out, "count": self.count, "skipped_count": len(self.skipped), "skipped": self.skipped,
                "warnings": self.warnings}


def _folder_batches(folder: Path, files: list[Path], preprocessing: Preprocessing, batch_size: int,
                    skipped: list[dict[str, str]]) -> Iterator[tuple[list[str], np.ndarray]]:
    size = preprocessing.image_size
    crop = preprocessing.crop or CropSpec()
    keys, imgs = [], []
    for p in files:
        try:
            img = crop_resize(decode_file(p, min_side=decode_min_side(crop, size)), crop, size)
        except ImageDecodeError as e:
            skipped.append({"key": image_key(folder, p), "reason": e.reason})
            continue
        keys.append(image_key(folder, p))
        imgs.append(img)
        if len(imgs) == batch_size:
            yield keys, np.stack(imgs)
            keys, imgs = [], []
    if imgs:
        yield keys, np.stack(imgs)


def _store_batches(store, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    for start in range(0, len(store), batch_size):
        sl = slice(start, min(len(store), start + batch_size))
        yield [str(k) for k in store.keys[sl]], np.array(store.images[sl])  # copy: memmaps are read-only


def _header(task: Task, specs: dict[str, LabelSpec]) -> list[str]:
    cols = ["key"]
    for o in task.outputs:
        if o.kind is LabelKind.BINARY:
            cols.append(f"p_{o.name}")
        else:
            cols += [f"p_{o.name}={c}" for c in specs[o.name].classes]
    return cols + [f"pred_{o.name}" for o in task.outputs]


def _rows(keys: list[str], probs: dict[str, np.ndarray], task: Task, specs: dict[str, LabelSpec], threshold: float):
    for i, k in enumerate(keys):
        row: list[Any] = [k]
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


def _check_writable(out: Path) -> None:
    """FacelabError when the CSV cannot be written at ``out`` (a folder there, or no writable folder above)."""
    if out.is_dir():
        raise FacelabError(f"{out} is a folder; --out names the CSV file to write, e.g. {out / 'predictions.csv'}")
    above = next(p for p in (out.parent, *out.parent.parents) if p.exists())  # missing folders are created
    if not above.is_dir() or not os.access(above, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write {out}: {above} is not a writable folder; choose another --out")


def predict_to_csv(run: str | Path | Sequence[str | Path], target: str | Path, out: str | Path, *,
                   batch_size: int = 256, device: str = "cpu", threshold: float = 0.5, which: str = "best",
                   tta_flip: bool = False, progress: bool = True, engine: str | None = None) -> PredictReport:
    """Write one CSV row per image of ``target`` (a store folder or a folder of images).

    Args:
        run: a run folder or checkpoint, or a list of them whose probabilities are averaged (an ensemble), or a
            ``.onnx`` file written by ``facelab export`` (its labels and preprocessing come from the file).
        which: checkpoint of each run folder: "best" (default) or "last".
        tta_flip: average each image's logits with those of its mirror image (as ``facelab eval --tta-flip``).
        engine: what runs the model (:func:`facelab.deploy.load_engine`): "torch", "onnx" (a run's exported
            model, exported first when missing or stale); None: onnx for a .onnx file, else torch.
    """
    _check_writable(Path(out))  # before any inference, which a failed write at the end would throw away
    model = load_engine(run, engine=engine, which=which, device=device, tta_flip=tta_flip)
    meta, task = model.meta, model.task
    specs = {d["name"]: LabelSpec.from_dict(d) for d in meta.labels}
    target = Path(target)
    skipped: list[dict[str, str]] = []
    warnings: list[str] = []
    if (target / MANIFEST).is_file():
        store = Store.open(target)
        warnings = check_preprocessing(meta, store)
        batches, total = _store_batches(store, batch_size), len(store)
    else:
        files, skipped = list_images(target, what=", and not a store")
        batches, total = _folder_batches(target, files, meta.preprocessing, batch_size, skipped), len(files)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(_header(task, specs))
    count = 0
    from rich.console import Console
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True, console=Console(stderr=True)) as prog:
        bar = prog.add_task("predict", total=total)
        for keys, imgs in batches:
            probs = model.probabilities(meta.preprocessing.to_input(imgs))  # {label: (B,) or (B, K)}
            writer.writerows(_rows(keys, probs, task, specs, threshold))
            count += len(keys)
            prog.update(bar, advance=len(keys))
    if count == 0:  # every file skipped: an empty CSV with exit code 0 would pass for a result
        reasons = "; ".join(f"{d['key']}: {d['reason']}" for d in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise FacelabError(f"{target}: none of its {len(skipped)} files could be read as an image, nothing written "
                           f"to {out} ({reasons})")
    atomic_write_text(Path(out), buf.getvalue())
    return PredictReport(out=str(out), count=count, skipped=skipped, warnings=warnings)
