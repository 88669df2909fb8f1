"""What an exported ONNX model says about itself: facelab's metadata in the model's ``metadata_props``.

An exported classifier carries two entries, both JSON text, so that deployment builds its inputs and reads its
outputs from the file alone and cannot drift from training (as a checkpoint does, see
:mod:`facelab.models.checkpoint`):

    facelab          the checkpoint's metadata (:class:`CheckpointMeta`: kind, architecture, labels, task,
                     preprocessing = image size, crop, mean/std and training store, label priors, version)
    facelab.export   how the file was made (:class:`ExportInfo`: input and output names, source runs and
                     checkpoints, exporter, opset, versions, parity figures)

:func:`read_onnx_meta` reads both back as typed objects; a file that is not ONNX, is cut short or was not
exported by facelab is a :class:`FacelabError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError
from pydantic import Field

from facelab.config import StrictConfig
from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelSpec
from facelab.errors import FacelabError
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers.heads import Task

META_KEY = "facelab"
EXPORT_KEY = "facelab.export"
#: version of the ``facelab.export`` layout; a newer file names the facelab that can read it
FORMAT_VERSION = 1
INPUT = "images"  # (B, 3, S, S) float32, normalised as the preprocessing says
OUTPUT = "logits"  # (B, num_logits) float32 in the task's layout


class ExportSource(StrictConfig):
    """One checkpoint an exported model was built from (several: an ensemble)."""

    run: str  # what was given: a run folder or checkpoint
    checkpoint: str  # the checkpoint folder it resolved to
    arch: str
    step: int = 0
    epoch: int = 0
    weights_sha256: str | None = None  # of its model.safetensors: tells a stale export from a current one


class ExportInfo(StrictConfig):
    """How an exported model was made: the ``facelab.export`` entry of its metadata."""

    format_version: int = FORMAT_VERSION
    input: str = INPUT
    output: str = OUTPUT
    sources: list[ExportSource] = Field(default_factory=list)
    which: str = "best"  # checkpoint of each run folder
    exporter: str
    opset: int
    facelab_version: str
    torch_version: str
    created: str  # ISO 8601, UTC
    parity: dict[str, Any] = Field(default_factory=dict)  # the figures of the check done at export


@dataclass(frozen=True)
class OnnxMeta:
    """An exported model's metadata, as the typed objects the rest of facelab uses.

    Attributes:
        path: where it was read from.
        checkpoint: the model's own metadata, as its checkpoint (or ensemble) had it; ``path`` is the ONNX file.
        export: how the file was made.
    """

    path: Path
    checkpoint: CheckpointMeta
    export: ExportInfo

    @property
    def task(self) -> Task:
        return Task.from_dict(self.checkpoint.config["task"])

    @property
    def labels(self) -> list[LabelSpec]:
        return [LabelSpec.from_dict(d) for d in self.checkpoint.labels]

    @property
    def preprocessing(self) -> Preprocessing:
        assert self.checkpoint.preprocessing is not None  # read_onnx_meta refuses files without one
        return self.checkpoint.preprocessing


def write_onnx_meta(model: onnx.ModelProto, meta: CheckpointMeta, info: ExportInfo) -> None:
    """Put facelab's metadata into ``model`` (its other metadata entries are kept)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[META_KEY] = meta.to_json()
    props[EXPORT_KEY] = info.model_dump_json()
    onnx.helper.set_model_props(model, props)
    model.producer_name, model.producer_version = "facelab", info.facelab_version
    task = Task.from_dict(meta.config["task"])
    pre = meta.preprocessing
    model.doc_string = (f"facelab {meta.arch} classifier. Input {info.input}: (B, 3, {pre.image_size}, "
                        f"{pre.image_size}) float32 RGB scaled to [0, 1], minus mean {list(pre.mean)}, divided by std "
                        f"{list(pre.std)}. Output {info.output}: (B, {task.num_logits}) logits of {', '.join(task.names)} "
                        "(sigmoid for binary labels, softmax per categorical label). Metadata: 'facelab' (labels, "
                        "preprocessing) and 'facelab.export'.")


def read_model_bytes(path: str | Path) -> bytes:
    """The bytes of a model file; FacelabError naming it when it is missing, a folder or unreadable."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise FacelabError(f"{path}: {what}; expected an ONNX model file written by facelab export")
    try:
        return path.read_bytes()
    except OSError as e:
        raise FacelabError(f"{path}: cannot read it ({e.strerror})") from None


def load_onnx(data: bytes, *, where: str | Path) -> onnx.ModelProto:
    """The ONNX model serialised in ``data`` (read from ``where``), weights included.

    Raises:
        FacelabError: naming ``where``: not a readable ONNX model (another kind of file, or one cut short).
    """
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise FacelabError(f"{where}: not a readable ONNX model ({type(e).__name__}: {e}); it is another kind of file, "
                           "or damaged or cut short: export it again (facelab export RUN --out FILE.onnx)") from None
    if not model.graph.node or not model.opset_import:
        raise FacelabError(f"{where}: not an ONNX model (no graph in it), or one cut short: export it again "
                           "(facelab export RUN --out FILE.onnx)")
    return model


def onnx_meta(model: onnx.ModelProto, *, where: str | Path) -> OnnxMeta:
    """facelab's metadata of a loaded ONNX model (see :func:`read_onnx_meta`)."""
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props or EXPORT_KEY not in props:
        raise FacelabError(f"{where}: an ONNX model without facelab metadata (labels, preprocessing): it was not "
                           "written by facelab export, or was cut short; export the run with facelab export RUN "
                           "--out FILE.onnx")
    try:
        raw = json.loads(props[EXPORT_KEY])
        version = int(raw.get("format_version", 0)) if isinstance(raw, dict) else 0
    except (ValueError, TypeError) as e:
        raise FacelabError(f"{where}: its facelab metadata is damaged ({type(e).__name__}: {e}); export it again") from None
    if version > FORMAT_VERSION:
        raise FacelabError(f"{where}: written by facelab {raw.get('facelab_version')} in export format {version}; this "
                           f"facelab reads format {FORMAT_VERSION}: upgrade facelab")
    try:
        info = ExportInfo.from_dict(raw, where=f"{EXPORT_KEY} metadata")
        meta = CheckpointMeta.from_json(props[META_KEY], where=str(where))
        Task.from_dict(meta.config["task"])
        for d in meta.labels:
            LabelSpec.from_dict(d)  # both readable now, not when predict writes its CSV header
    except (FacelabError, ValueError, TypeError, KeyError) as e:
        raise FacelabError(f"{where}: its facelab metadata is damaged ({type(e).__name__}: {e}); export it again") from None
    if meta.kind != "classifier" or meta.preprocessing is None:
        raise FacelabError(f"{where}: its facelab metadata describes no classifier with preprocessing; export it again")
    meta.path = Path(where)
    return OnnxMeta(path=Path(where), checkpoint=meta, export=info)


def read_onnx_meta(path: str | Path) -> OnnxMeta:
    """The labels, task, preprocessing and export record of a model written by ``facelab export``.

    Raises:
        FacelabError: naming the file: missing, not ONNX, damaged or cut short, or an ONNX model that facelab did
            not export (no facelab metadata).
    """
    return onnx_meta(load_onnx(read_model_bytes(path), where=path), where=path)
