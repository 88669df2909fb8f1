"""Inference engines: one interface to run a trained classifier, whatever runs it.

    engine = load_engine("runs/train-...", engine="onnx")      # or a .onnx file, or several runs (torch)
    x = engine.preprocessing.to_input(images)                   # (B, S, S, 3) uint8 -> (B, 3, S, S) float32
    logits = engine.logits(x)                                   # (B, num_logits) float32
    probs = engine.probabilities(x)                             # {label: (B,) or (B, K)}

Every engine takes the same normalised input and returns the same logits (up to float noise), with its
``meta`` (a :class:`CheckpointMeta`: labels, ``config["task"]``, preprocessing) telling how to read them:

- ``torch``: the facelab model (or ensemble of runs) in PyTorch, on any device;
- ``onnx``: a model written by ``facelab export`` in onnxruntime (CPU), its metadata read from the file; a run
  folder runs as ``RUN/export/model.onnx``, exported first when missing or made from other weights than the
  checkpoint's (registered in :mod:`facelab.deploy.onnx`, which does the export).

Flip TTA is the mean of the logits of the image and of its mirror image, as
:func:`facelab.eval.inference.forward_logits` computes it.

An engine may be called from several threads at once (``facelab serve`` runs ``max_concurrent`` predictions in
worker threads): a PyTorch module in eval mode under ``inference_mode`` keeps no state between calls, and
onnxruntime's ``InferenceSession.run`` is thread-safe. An engine whose runtime is not says so
(``thread_safe = False``) and its passes are then run one at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import threading

import numpy as np
import onnxruntime as ort
import torch

from facelab.data.preprocessing import Preprocessing
from facelab.data.schema import LabelSpec
from facelab.deploy.metadata import OnnxMeta, load_onnx, onnx_meta, read_model_bytes
from facelab.errors import ConfigError, FacelabError
from facelab.models.checkpoint import CheckpointMeta
from facelab.models.classifiers.ensemble import load_classifier
from facelab.models.classifiers.heads import Task, flip_permutation, task_predict
from facelab.registry import Registry
from facelab.utils.device import resolve_device

Sources = str | Path | Sequence[str | Path]

#: engine name -> factory ``f(paths, *, which, device, tta_flip, threads) -> Engine`` (paths: a list of run
#: folders or checkpoints; a .onnx file is opened by :func:`load_engine` itself)
ENGINES: Registry[Engine] = Registry("inference engine")


class Engine(ABC):
    """A loaded classifier that maps normalised images to logits.

    Attributes:
        meta: the model's checkpoint metadata (labels, ``config["task"]``, preprocessing).
        tta_flip: :meth:`logits` averages each image's logits with those of its mirror image (None: as the run
            was validated, :attr:`CheckpointMeta.tta_flip`).
        thread_safe: (class) :meth:`forward` may run in several threads at once; when False, :meth:`logits`
            runs one call at a time.
    """

    name: ClassVar[str]
    thread_safe: ClassVar[bool] = True

    def __init__(self, meta: CheckpointMeta, *, tta_flip: bool | None = None) -> None:
        if meta.preprocessing is None:
            raise FacelabError(f"{meta.path}: the checkpoint records no preprocessing, so its inputs cannot be "
                               "rebuilt; it was not written by facelab train")
        self.meta, self.tta_flip = meta, meta.tta_flip if tta_flip is None else tta_flip
        self.task = Task.from_dict(meta.config["task"])
        self.flip_perm = flip_permutation(self.task, meta.labels)
        self._one_at_a_time = None if self.thread_safe else threading.Lock()

    @property
    def preprocessing(self) -> Preprocessing:
        assert self.meta.preprocessing is not None  # checked in __init__
        return self.meta.preprocessing

    @property
    def labels(self) -> list[LabelSpec]:
        return [LabelSpec.from_dict(d) for d in self.meta.labels]

    @abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 -> (B, num_logits) float32, one pass of the model."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 images normalised as ``preprocessing`` says -> (B, num_logits) float32 logits.

        Raises:
            FacelabError: ``x`` has another shape or dtype.
        """
        self.check_input(x)
        if self._one_at_a_time is None:
            return self._logits(x)
        with self._one_at_a_time:
            return self._logits(x)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        logits = self.forward(x)
        if self.tta_flip:
            mirrored = self.forward(np.ascontiguousarray(x[..., ::-1]))
            if self.flip_perm is not None:  # the mirror's left/right classes swapped back
                mirrored = mirrored[:, self.flip_perm]
            logits = np.float32(0.5) * (logits + mirrored)
        return logits

    def probabilities(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """{label: (B,) P(label = 1) for a binary label, (B, K) class probabilities for a categorical one}."""
        return {k: v.numpy() for k, v in task_predict(torch.from_numpy(self.logits(x)), self.task).items()}

    def check_input(self, x: np.ndarray) -> None:
        """FacelabError unless ``x`` is what :meth:`logits` takes: (B >= 1, 3, S, S) float32."""
        s = self.preprocessing.image_size
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != (3, s, s) \
                or len(x) == 0:
            shape = getattr(x, "shape", None)
            raise FacelabError(f"the {self.name} engine takes (B, 3, {s}, {s}) float32 images, B >= 1, got "
                               f"{type(x).__name__} of shape {shape} and dtype {getattr(x, 'dtype', None)}; build "
                               "them with preprocessing.to_input(images)")

    def describe(self) -> dict[str, Any]:
        """What a report says about the engine."""
        return {"engine": self.name, "model": self.meta.arch, "tta_flip": self.tta_flip}


class TorchEngine(Engine):
    """A facelab classifier (or :class:`ClassifierEnsemble`) in PyTorch, in eval mode on ``device``."""

    name = "torch"
    thread_safe = True  # eval mode, inference_mode: forward reads the weights and keeps no state

    def __init__(self, model: torch.nn.Module, meta: CheckpointMeta, *, device: str | torch.device = "cpu",
                 tta_flip: bool | None = None) -> None:
        super().__init__(meta, tta_flip=tta_flip)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()

    def forward(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))  # (B, num_logits)
        return out.float().cpu().numpy()


class OnnxEngine(Engine):
    """A model written by ``facelab export`` in an onnxruntime session on the CPU.

    Args:
        session: the session; ``meta``: the file's facelab metadata (:func:`facelab.deploy.read_onnx_meta`).
    """

    name = "onnx"
    thread_safe = True  # InferenceSession.run may be called from several threads at once

    def __init__(self, session: ort.InferenceSession, meta: OnnxMeta, *, tta_flip: bool | None = None) -> None:
        super().__init__(meta.checkpoint, tta_flip=tta_flip)
        self.session, self.onnx_meta = session, meta
        self._input, self._output = meta.export.input, meta.export.output
        self._check_signature()

    @classmethod
    def from_file(cls, path: str | Path, *, threads: int | None = None, tta_flip: bool | None = None) -> OnnxEngine:
        """Open an exported model; ``threads``: onnxruntime's intra-op threads (None: its default, one per core).

        Raises:
            FacelabError: naming the file: missing, not ONNX, damaged, cut short or not a facelab export.
        """
        return cls.from_bytes(read_model_bytes(path), where=Path(path), threads=threads, tta_flip=tta_flip)

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str | Path, threads: int | None = None,
                   tta_flip: bool | None = None) -> OnnxEngine:
        """An engine on the serialised model ``data``, named ``where`` in errors and reports."""
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1 (or None for onnxruntime's default), got {threads}")
        meta = onnx_meta(load_onnx(data, where=where), where=where)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: no optimiser notes on stderr
        try:
            session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (InvalidGraph, Fail, ...) derive from Exception
            first = str(e).splitlines()[0] if str(e) else ""
            raise FacelabError(f"{where}: onnxruntime cannot load this model ({type(e).__name__}: {first}); it is "
                               "damaged: export it again") from None
        return cls(session, meta, tta_flip=tta_flip)

    def _check_signature(self) -> None:
        s, n = self.preprocessing.image_size, self.task.num_logits
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        ok = (len(inputs) == 1 and inputs[0].name == self._input and list(inputs[0].shape[1:]) == [3, s, s]
              and any(o.name == self._output and o.shape[-1] == n for o in outputs))
        if not ok:
            got = ", ".join(f"{a.name} {a.shape}" for a in inputs) + " -> " + ", ".join(f"{a.name} {a.shape}" for a in outputs)
            raise FacelabError(f"{self.onnx_meta.path}: the model takes {got}, but its facelab metadata promises "
                               f"{self._input} [B, 3, {s}, {s}] -> {self._output} [B, {n}]; it was changed after "
                               "export: export it again")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: np.ascontiguousarray(x)})[0]

    def describe(self) -> dict[str, Any]:
        opts = self.session.get_session_options()
        return {**super().describe(), "path": str(self.onnx_meta.path), "threads": opts.intra_op_num_threads or None}


@ENGINES.register("torch")
def _torch_engine(paths: list[Path], *, which: str, device: str, tta_flip: bool | None, threads: int | None) -> Engine:
    if threads is not None:
        raise ConfigError("threads is an option of the onnx engine; torch takes its threads from "
                          "torch.set_num_threads (or OMP_NUM_THREADS)")
    model, meta = load_classifier(paths if len(paths) > 1 else paths[0], which=which, device=device)
    return TorchEngine(model, meta, device=device, tta_flip=tta_flip)


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path`` names an exported model (by its ``.onnx`` suffix), not a run folder or checkpoint."""
    return Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir()


def load_engine(sources: Sources, *, engine: str | None = None, which: str = "best", device: str = "cpu",
                tta_flip: bool | None = None, threads: int | None = None) -> Engine:
    """An inference engine on a trained classifier.

    Args:
        sources: a run folder or checkpoint, several of them (an ensemble, torch engine), or a ``.onnx`` file
            written by ``facelab export`` (runs on the onnx engine).
        engine: a name in :data:`ENGINES` ("torch", "onnx"); None: onnx for a .onnx file, torch otherwise. The
            onnx engine on a run folder runs ``RUN/export/model.onnx``, exported first (with the parity check)
            when missing, unreadable or made from other weights than the checkpoint's.
        which: checkpoint of each run folder: "best" or "last".
        device: torch device ("cpu", "cuda", "auto"); the onnx engine runs on the CPU only.
        tta_flip: average the logits of each image and of its mirror image; None (default): as the run was
            validated (its config's ``tta_flip``).
        threads: intra-op threads of the onnx engine (None: onnxruntime's default).

    Raises:
        FacelabError: a bad path or file, an unknown engine, or a combination the engine cannot run.
    """
    paths = [Path(sources)] if isinstance(sources, (str, Path)) else [Path(p) for p in sources]
    if not paths:
        raise FacelabError("no classifier run given")
    onnx_files = [p for p in paths if is_onnx_file(p)]
    if not onnx_files:
        return ENGINES.create(engine or "torch", paths, which=which, device=device, tta_flip=tta_flip, threads=threads)
    if len(paths) > 1:
        raise FacelabError(f"{onnx_files[0]}: an exported model runs alone; to average several runs export them "
                           "together (facelab export RUN1 RUN2 --out ensemble.onnx) and pass that one file")
    if engine not in (None, "onnx"):
        raise FacelabError(f"{paths[0]} is an exported ONNX model: it runs on the onnx engine (--engine onnx), "
                           f"not {engine}; give the run folder to run it on {engine}")
    check_cpu(device)
    return OnnxEngine.from_file(paths[0], threads=threads, tta_flip=tta_flip)


def check_cpu(device: str | torch.device) -> None:
    """The onnx engine runs on the CPU: refuse another device by name ("auto" means the CPU here)."""
    if str(device).strip().lower() not in ("cpu", "auto"):
        raise ConfigError(f"device {device!r}: the onnx engine runs on the CPU (onnxruntime's CPU provider); "
                          "drop --device or use --engine torch on the GPU")
