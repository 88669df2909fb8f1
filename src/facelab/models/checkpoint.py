"""Self-describing checkpoints: safetensors weights + JSON metadata + resumable training state.

A checkpoint is a folder::

    model.safetensors   weights; metadata["facelab"] = JSON with kind, architecture + kwargs, label specs,
                        preprocessing (image size, crop, mean/std), config, package version
    training.pt         optimizer/scheduler/EMA/loader/RNG state and counters (tensors and plain
                        containers only: loaded with ``weights_only=True``, never unpickles code)

Loading builds the model through the registry named in the metadata, so a checkpoint needs no code of
its own.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

import facelab
from facelab.data.preprocessing import Preprocessing
from facelab.errors import FacelabError

WEIGHTS = "model.safetensors"
STATE = "training.pt"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself.

    Attributes:
        kind: "classifier" or "generative": which registry builds it.
        arch: registered model name; arch_kwargs: the factory's keyword arguments.
        labels: label specs (LabelSpec.to_dict) the model predicts or is conditioned on.
        preprocessing: image size, crop, mean/std and the training store (:class:`Preprocessing`); None only
            for models built outside a run.
        config: the resolved run config.
        label_priors: classifiers: {label: class frequencies of the training rows} ([P(0), P(1)] for a
            binary label), the priors its probabilities carry; empty in checkpoints written before they were recorded.
    """

    kind: str
    arch: str
    arch_kwargs: dict[str, Any]
    labels: list[dict[str, Any]] = field(default_factory=list)
    preprocessing: Preprocessing | None = None
    config: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    label_priors: dict[str, list[float]] = field(default_factory=dict)
    version: str = facelab.__version__

    #: where the checkpoint was read from (set by :func:`read_meta`, never written)
    path: Path | None = field(default=None, compare=False)

    def to_json(self) -> str:
        d = {k: v for k, v in self.__dict__.items() if k != "path"}
        d["preprocessing"] = self.preprocessing.model_dump(mode="json") if self.preprocessing is not None else None
        return json.dumps(d, default=str)

    @classmethod
    def from_json(cls, text: str, *, where: str = "checkpoint") -> CheckpointMeta:
        d = json.loads(text)
        d["preprocessing"] = Preprocessing.from_meta(d.get("preprocessing"), where=f"{where}: preprocessing")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "path"})

    @property
    def tta_flip(self) -> bool:
        """Whether the run was validated with flip averaging (its config's ``tta_flip``). Predictions from it
        average with the mirror image by default too, so that they are the ones its figures were measured on."""
        return bool(self.config.get("tta_flip", False))

    @property
    def run_dir(self) -> Path | None:
        """The run folder this checkpoint was read from (``RUN/checkpoints/NAME``), if it sits in one."""
        if self.path is None:
            return None
        folder = self.path if self.path.is_dir() else self.path.parent
        return folder.parent.parent if folder.parent.name == "checkpoints" else None


def _state_dict_for_safetensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone and make contiguous.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    meta: CheckpointMeta,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint folder atomically: its files go to a temporary sibling folder (flushed to disk),
    which then replaces the old folder. On any failure (a full disk, no permission) the temporary folder is
    removed, the previous checkpoint stays as it was, and the OSError names the checkpoint; a kill between
    the two renames leaves the previous checkpoint as ``.NAME.old-PID``, which :func:`clean_checkpoints`
    puts back.
    """
    path = Path(path)
    weights = save_safetensors(_state_dict_for_safetensors(model), metadata={"facelab": meta.to_json()})
    state = None
    if training_state is not None:
        buf = io.BytesIO()  # torch.save into a file loses the errno of a failed write (a RuntimeError)
        torch.save(training_state, buf)
        state = buf.getvalue()
    tmp = path.with_name(f".{path.name}{_TMP}{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _write_synced(tmp / WEIGHTS, weights)
        if state is not None:
            _write_synced(tmp / STATE, state)
        _replace_folder(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = "the previous one is kept" if (path / WEIGHTS).is_file() else "there is none yet"
        raise OSError(e.errno, f"{e.strerror or e}; the checkpoint was not written ({kept})", str(path)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


_TMP = ".tmp-"  # .NAME.tmp-PID: a checkpoint being written by process PID
_OLD = ".old-"  # .NAME.old-PID: the checkpoint it replaces, between the two renames


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_folder(tmp: Path, path: Path) -> None:
    """``tmp`` renamed to ``path``; an existing ``path`` is moved aside first and deleted after (put back if
    the second rename fails)."""
    old = path.with_name(f".{path.name}{_OLD}{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    moved = path.exists()
    if moved:
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if moved:
            os.replace(old, path)
        raise
    _fsync_folder(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_checkpoints(folder: str | Path) -> list[Path]:
    """Remove what writers that died (killed, or their machine stopped) left in a ``checkpoints/`` folder:
    temporary ``.NAME.tmp-PID`` folders are deleted; a ``.NAME.old-PID`` (the previous checkpoint, moved
    aside just before its replacement was renamed in) becomes ``NAME`` again when ``NAME`` is missing and is
    deleted otherwise. Folders of processes still alive are left alone. Returns what it removed or restored.
    """
    folder = Path(folder)
    done: list[Path] = []
    if not folder.is_dir():
        return done
    for p in sorted(folder.iterdir()):
        parsed = _writer_leftover(p.name)
        if parsed is None or not p.is_dir() or _alive(parsed[2]):
            continue
        name, kind, _ = parsed
        target = folder / name
        if kind == _OLD and not target.exists():
            os.replace(p, target)
        else:
            shutil.rmtree(p, ignore_errors=True)
        done.append(p)
    return done


def _writer_leftover(entry: str) -> tuple[str, str, int] | None:
    """``(NAME, kind, PID)`` of ``.NAME.tmp-PID`` / ``.NAME.old-PID``, else None."""
    if not entry.startswith("."):
        return None
    for kind in (_TMP, _OLD):
        stem, sep, pid = entry[1:].rpartition(kind)
        if sep and stem and pid.isdigit():
            return stem, kind, int(pid)
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one checkpoint at a time: what it left is from a failed write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists (another user's process)
    return True


def _weights_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise FacelabError(f"{path}: no checkpoint here (expected a run folder or a {WEIGHTS} file)")
    return path


def read_meta(path: str | Path) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (folder or .safetensors file).

    Raises:
        FacelabError: no checkpoint there, a file that is not safetensors (or is cut short), or one without
            facelab metadata.
    """
    wf = _weights_file(resolve_checkpoint(path))
    try:
        with safe_open(str(wf), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise FacelabError(f"{wf}: not a readable safetensors file ({e}); it is damaged or cut short: "
                           "copy it again or retrain") from None
    if "facelab" not in md:
        raise FacelabError(f"{wf}: safetensors file without facelab metadata (not a facelab checkpoint)")
    try:
        meta = CheckpointMeta.from_json(md["facelab"], where=str(wf))
    except (ValueError, TypeError) as e:
        raise FacelabError(f"{wf}: its facelab metadata is damaged ({e})") from None
    meta.path = wf.parent if wf.name == WEIGHTS else wf
    return meta


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint; FacelabError when the file is damaged or cut short."""
    wf = _weights_file(resolve_checkpoint(path))
    try:
        return load_file(str(wf))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FacelabError(f"{wf}: the weights cannot be read ({e}); the file is damaged or cut short: "
                           "copy it again or retrain") from None


def read_training_state(path: str | Path) -> dict[str, Any] | None:
    """The resumable training state saved beside the weights (None when the checkpoint has none)."""
    p = Path(path) / STATE
    if not p.is_file():
        return None
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise FacelabError(f"{p}: the training state cannot be read ({e}); it is damaged or cut short") from None


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """Accept a run folder (uses ``checkpoints/<which>`` then ``checkpoints/last``), a checkpoint folder or file."""
    path = Path(path).expanduser()
    if path.is_file() or (path / WEIGHTS).is_file():
        return path
    if not path.exists():
        raise FacelabError(f"{path}: no such folder or file; give a run folder, a checkpoint folder or a {WEIGHTS} "
                           "file")
    for name in (which, "last"):
        cand = path / "checkpoints" / name
        if (cand / WEIGHTS).is_file():
            return cand
    raise FacelabError(
        f"{path}: no checkpoint found (looked for {WEIGHTS} in it and in checkpoints/{which}, checkpoints/last)"
    )


def fallback_note(path: str | Path, which: str = "best") -> str | None:
    """A line saying so when :func:`resolve_checkpoint` takes ``checkpoints/last`` of a run folder that has no
    ``checkpoints/<which>`` (a run stopped before its first validation, say); None when it takes what was asked."""
    ckpt = resolve_checkpoint(path, which)
    if ckpt.name == "last" and which != "last" and ckpt.parent.name == "checkpoints":
        return f"{Path(path)} has no checkpoints/{which}: using checkpoints/last (the last epoch's weights)"
    return None


def weights_path(path: str | Path, which: str = "best") -> Path:
    """The weights file that ``path`` names: the model.safetensors of a run folder's ``checkpoints/<which>`` (or
    ``last``), of a checkpoint folder, or the file itself; ``path`` unchanged when there is none (a missing
    input is the caller's to report)."""
    p = Path(path).expanduser()
    try:
        ckpt = resolve_checkpoint(p, which)
    except FacelabError:
        return p
    return ckpt if ckpt.is_file() else ckpt / WEIGHTS
