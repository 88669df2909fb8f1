"""``facelab export``: a trained classifier (or an ensemble of runs) as one ONNX file that carries its labels and
preprocessing, checked against PyTorch before it is written.

    report = export_onnx("runs/train-...", "model.onnx")       # or a list of runs: one averaged ensemble
    report.parity.max_abs_prob_diff                            # PyTorch vs onnxruntime on the same images

The file takes ``images`` (B, 3, S, S) float32, normalised as the checkpoint's preprocessing says, with a
dynamic batch axis, and returns ``logits`` (B, num_logits) in the task's layout; its metadata
(:mod:`facelab.deploy.metadata`) holds the checkpoint's metadata and the export record. Before the file is
written (atomically), the same batch (images of the training store when it is here, else seeded random
images) runs through PyTorch and onnxruntime, and again at batch sizes 1 and 3; probabilities that differ by
more than the tolerance are an error and nothing is written.

Exporters are registered in :data:`EXPORTERS`: ``dynamo`` (``torch.onnx.export(..., dynamo=True)``, the
default; it exports every registered classifier and ensembles) and ``torchscript`` (the older tracer).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

import facelab
from facelab.data.preprocessing import Preprocessing
from facelab.data.store import Store
from facelab.deploy.engines import ENGINES, Engine, OnnxEngine, TorchEngine, check_cpu
from facelab.deploy.metadata import INPUT, OUTPUT, ExportInfo, ExportSource, write_onnx_meta
from facelab.errors import ConfigError, FacelabError
from facelab.models.checkpoint import WEIGHTS, CheckpointMeta, read_meta, resolve_checkpoint
from facelab.models.classifiers.ensemble import load_classifier, member_metas
from facelab.models.classifiers.heads import Task, task_predict
from facelab.registry import Registry
from facelab.utils.io import atomic_write_bytes, sha256_file

log = logging.getLogger("facelab")

#: name -> ``f(model, example (B, 3, S, S), opset or None) -> onnx.ModelProto`` with input INPUT (dynamic batch)
#: and output OUTPUT
EXPORTERS: Registry[onnx.ModelProto] = Registry("ONNX exporter")
PROB_TOLERANCE = 1e-4  # largest difference of a probability between PyTorch and onnxruntime
CHECK_BATCH_SIZES = (1, 3)  # batch sizes also checked, besides the check batch: the batch axis is dynamic
PARITY_SEED = 0


@EXPORTERS.register("dynamo")
def _dynamo(model: torch.nn.Module, example: torch.Tensor, opset: int | None) -> onnx.ModelProto:
    program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                opset_version=opset, dynamic_shapes=({0: torch.export.Dim("batch")},),
                                optimize=True, verbose=False)
    return program.model_proto


@EXPORTERS.register("torchscript")
def _torchscript(model: torch.nn.Module, example: torch.Tensor, opset: int | None) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(model, (example,), buf, dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                      opset_version=opset, dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


@dataclass(frozen=True)
class Parity:
    """PyTorch against the exported model on the same images.

    Attributes:
        images: what the images were ("8 images of the training store ..." or "8 random images ...").
        batch_sizes: the batch sizes the exported model ran at (the check batch, then 1 and 3).
        max_abs_logit_diff, max_abs_prob_diff: the largest differences over every image, label and batch size.
        tolerance: the most ``max_abs_prob_diff`` may be.
    """

    images: str
    count: int
    batch_sizes: list[int]
    max_abs_logit_diff: float
    max_abs_prob_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_prob_diff <= self.tolerance)  # NaN fails

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class ExportReport:
    """What ``facelab export`` did: the file, how it was made and how closely it matches PyTorch."""

    out: str
    size_bytes: int
    opset: int
    exporter: str
    model: str
    sources: list[str]
    which: str
    labels: list[str]
    parity: Parity
    seconds: dict[str, float] = field(default_factory=dict)  # export, check, total

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "parity"}, "parity": self.parity.to_dict()}


def _probabilities(logits: np.ndarray, task: Task) -> np.ndarray:
    """(B, num_logits) -> (B, P) every probability the task reads from them (binary P(1), class probabilities)."""
    probs = task_predict(torch.from_numpy(logits), task).values()
    return torch.cat([p.reshape(len(logits), -1) for p in probs], dim=1).numpy()


def check_parity(reference: Engine, candidate: Engine, x: np.ndarray, *, images: str,
                 batch_sizes: Sequence[int] = CHECK_BATCH_SIZES, tolerance: float = PROB_TOLERANCE) -> Parity:
    """Run ``x`` (B, 3, S, S) through both engines, then batches of ``batch_sizes`` of its rows through
    ``candidate``, and compare logits and probabilities with ``reference``'s (the rows of a batch do not
    depend on each other in eval mode)."""
    ref = reference.logits(x)  # (B, num_logits)
    task = reference.task
    diff_logit, diff_prob = 0.0, 0.0
    sizes = [len(x), *batch_sizes]
    for b in sizes:
        rows = np.arange(b) % len(x)
        got = candidate.logits(np.ascontiguousarray(x[rows]))
        diff_logit = max(diff_logit, float(np.abs(got - ref[rows]).max()))
        diff_prob = max(diff_prob, float(np.abs(_probabilities(got, task) - _probabilities(ref[rows], task)).max()))
        if not np.isfinite(got).all():
            diff_logit = diff_prob = float("nan")
    return Parity(images=images, count=len(x), batch_sizes=sizes, max_abs_logit_diff=diff_logit,
                  max_abs_prob_diff=diff_prob, tolerance=tolerance)


def parity_images(metas: Sequence[CheckpointMeta], pre: Preprocessing, n: int,
                  seed: int = PARITY_SEED) -> tuple[np.ndarray, str]:
    """(n, S, S, 3) uint8 images to check an export on, and what they are: ``n`` rows spread over the training
    store when it is here and unchanged (its content hash is the checkpoint's), else seeded random images."""
    why = "the checkpoint names no training store"
    for meta in metas:
        path = meta.config.get("store")
        if not path or meta.preprocessing is None:
            continue
        try:
            store = Store.open(path)
        except FacelabError:
            why = f"the training store {path} is not here"
            continue
        if store.content_hash != meta.preprocessing.store_hash or store.image_size != pre.image_size:
            why = f"the store at {path} is not the training store any more"
            continue
        rows = np.unique(np.linspace(0, len(store) - 1, n).round().astype(np.int64))
        return np.asarray(store.images[rows]), f"{len(rows)} images of the training store {path}"
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, pre.image_size, pre.image_size, 3), dtype=np.uint8)
    return images, f"{n} random images (seed {seed}; {why})"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's notes (optional torchvision ops, deprecations, tracer warnings) off the user's screen, and any
    print of it on stderr, so that ``--json`` output stays the only thing on stdout."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise FacelabError(f"{out} is a folder; --out names the .onnx file to write, e.g. {out / 'model.onnx'}")
    if out.suffix.lower() != ".onnx":
        raise FacelabError(f"{out}: name the exported model *.onnx (e.g. --out {out.with_suffix('.onnx')}); predict "
                           "tells exported models from run folders by it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FacelabError(f"cannot write {out}: {e.strerror}; choose another --out") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise FacelabError(f"cannot write {out}: {out.parent} is not a writable folder; choose another --out")


def _export(model: torch.nn.Module, meta: CheckpointMeta, exporter: str, opset: int | None,
            device: torch.device) -> onnx.ModelProto:
    size = meta.preprocessing.image_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)  # batch 2: not specialised to 1
    export = EXPORTERS.get(exporter)
    try:
        with _quiet_exporter():
            return export(model, example, opset)
    except Exception as e:  # the exporters raise many types; each one is "this model did not export"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FacelabError(f"the {exporter} exporter could not export {meta.arch} ({type(e).__name__}: {first}); try "
                           f"{_other_exporter(exporter)}" + (f" or another --opset than {opset}" if opset else "")) from None


def _other_exporter(name: str) -> str:
    others = [n for n in EXPORTERS.names() if n != name]
    return f"--exporter {others[0]}" if others else "another --opset"


def weights_sha256(checkpoint: str | Path) -> str:
    """SHA-256 of a checkpoint's weights file (``checkpoint``: its folder or the file)."""
    path = Path(checkpoint)
    return sha256_file(path / WEIGHTS if path.is_dir() else path)


def _sources(runs: Sequence[Path], metas: Sequence[CheckpointMeta]) -> list[ExportSource]:
    return [ExportSource(run=str(r), checkpoint=str(m.path), arch=m.arch, step=m.step, epoch=m.epoch,
                         weights_sha256=weights_sha256(m.path)) for r, m in zip(runs, metas)]


def export_onnx(run: str | Path | Sequence[str | Path], out: str | Path | None = None, *, which: str = "best",
                device: str = "cpu", opset: int | None = None, check_batch: int = 8, exporter: str = "dynamo",
                tolerance: float = PROB_TOLERANCE) -> ExportReport:
    """Export a classifier run (or several: their averaged ensemble) to an ONNX file with facelab's metadata.

    Args:
        run: a run folder or checkpoint, or a list of them (one ensemble, as ``facelab eval`` takes them).
        out: the ``.onnx`` file to write (atomically, only when the parity check passes); None: the run's
            :func:`export_path`, ``RUN/export/model.onnx`` (the file the onnx engine runs), for one run only.
        which: checkpoint of each run folder: "best" or "last".
        device: where PyTorch runs the model while exporting and checking ("cpu", "cuda", "auto").
        opset: ONNX opset (None: the exporter's default).
        check_batch: images in the parity check.
        exporter: a name in :data:`EXPORTERS`.
        tolerance: the largest difference of a probability allowed between PyTorch and onnxruntime.

    Raises:
        FacelabError: not a classifier run, a bad ``out``, an export that fails, or parity beyond ``tolerance``.
    """
    t0 = time.perf_counter()
    runs = [Path(run)] if isinstance(run, (str, Path)) else [Path(r) for r in run]
    if out is None and len(runs) > 1:
        raise FacelabError("an ensemble (several runs) has no run folder of its own: name the .onnx file to write "
                           "(--out ensemble.onnx)")
    out = Path(out) if out is not None else export_path(runs[0], which=which)
    if check_batch < 1:
        raise ConfigError(f"check_batch must be >= 1, got {check_batch}")
    EXPORTERS.get(exporter)  # an unknown name fails before the model loads
    _check_out(out)
    model, meta = load_classifier(runs if len(runs) > 1 else runs[0], which=which, device=device)
    torch_engine = TorchEngine(model, meta, device=device)  # refuses a checkpoint without preprocessing
    metas = member_metas(model, meta)
    proto = _export(model, meta, exporter, opset, torch_engine.device)
    t_export = time.perf_counter()
    info = ExportInfo(sources=_sources(runs, metas), which=which, exporter=exporter,
                      opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                      facelab_version=facelab.__version__, torch_version=torch.__version__,
                      created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_onnx_meta(proto, meta, info)
    images, what = parity_images(metas, meta.preprocessing, check_batch)
    onnx_engine = OnnxEngine.from_bytes(proto.SerializeToString(), where=out)  # reads the metadata back, too
    parity = check_parity(torch_engine, onnx_engine, meta.preprocessing.to_input(images), images=what,
                          tolerance=tolerance)
    if not parity.ok:
        raise FacelabError(f"{out}: the exported model disagrees with PyTorch on {what}: probabilities differ by up to "
                           f"{parity.max_abs_prob_diff:.3g} (tolerance {tolerance:g}; logits by "
                           f"{parity.max_abs_logit_diff:.3g}); nothing written. Try {_other_exporter(exporter)} or "
                           "another --opset")
    write_onnx_meta(proto, meta, info.model_copy(update={"parity": parity.to_dict()}))
    data = proto.SerializeToString()
    atomic_write_bytes(out, data)
    t_end = time.perf_counter()
    return ExportReport(out=str(out), size_bytes=len(data), opset=info.opset, exporter=exporter, model=meta.arch,
                        sources=[str(r) for r in runs], which=which, labels=list(onnx_engine.task.names),
                        parity=parity, seconds={"export": round(t_export - t0, 3), "check": round(t_end - t_export, 3),
                                                "total": round(t_end - t0, 3)})


def export_path(run: str | Path, *, which: str = "best") -> Path:
    """Where the onnx engine keeps a run's exported model: ``RUN/export/model.onnx`` (``model-last.onnx`` for the
    last checkpoint; ``CHECKPOINT/export/`` for a checkpoint outside a run folder)."""
    ckpt = resolve_checkpoint(run, which)
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    run_dir = read_meta(ckpt).run_dir or folder
    return run_dir / "export" / ("model.onnx" if which == "best" else f"model-{which}.onnx")


def _current(engine: OnnxEngine, run: Path, which: str) -> bool:
    """Whether an exported model was made from the checkpoint ``run`` has now (the same weights)."""
    sources = engine.onnx_meta.export.sources
    return len(sources) == 1 and sources[0].weights_sha256 == weights_sha256(resolve_checkpoint(run, which))


@ENGINES.register("onnx")
def _onnx_engine(paths: list[Path], *, which: str, device: str, tta_flip: bool | None, threads: int | None) -> Engine:
    """A run folder on onnxruntime: its exported model, exported first when missing, unreadable or made from
    other weights than the checkpoint's (training went on, or another best epoch)."""
    if len(paths) > 1:
        raise FacelabError("the onnx engine runs one exported file: export the runs together first (facelab export "
                           f"{' '.join(map(str, paths))} --out ensemble.onnx) and pass ensemble.onnx")
    check_cpu(device)
    run, out = paths[0], export_path(paths[0], which=which)
    if out.is_file():
        try:
            engine = OnnxEngine.from_file(out, threads=threads, tta_flip=tta_flip)
            if _current(engine, run, which):
                return engine
            log.info(f"{out} was exported from other weights than the {which} checkpoint's now: exporting it again")
        except FacelabError as e:
            log.warning(f"{e}; exporting it again")
    else:
        log.info(f"exporting {run} ({which} checkpoint) to {out} for the onnx engine")
    export_onnx(run, out, which=which)
    return OnnxEngine.from_file(out, threads=threads, tta_flip=tta_flip)
