"""Transfer learning: load pretrained weights, freeze the backbone (with its batch norms), unfreeze.

Weights files understood by :func:`load_pretrained`:

- torchvision-style state dicts saved with ``torch.save`` (``.pth``, ``.pt``, ``.bin``, ``.ckpt``), read with
  ``torch.load(weights_only=True)`` (never unpickles code); a dict wrapping one under ``state_dict`` or
  ``model`` is unwrapped;
- ``.safetensors`` files of a state dict;
- facelab checkpoints: a checkpoint folder (``model.safetensors`` inside) or its ``model.safetensors``,
  whose metadata carries ``"facelab"``.

Key prefixes added by wrappers (``model.``, ``module.``, ``_orig_mod.``) are stripped automatically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from facelab.data.preprocessing import Preprocessing, describe_alignment, same_alignment
from facelab.errors import FacelabError
from facelab.models.classifiers.base import FROZEN_STATS_ATTR, Classifier, identify_architecture
from facelab.models.checkpoint import WEIGHTS, resolve_checkpoint

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_SHOW = 8  # keys listed per kind of mismatch in error messages


@dataclass
class WeightsFile:
    """A state dict read from disk, with the facelab metadata if it is a facelab checkpoint."""

    path: Path
    state: dict[str, torch.Tensor]
    facelab_meta: dict[str, Any] | None = None

    def describe(self) -> str:
        """What the file holds, e.g. 'resnet50 (bottleneck blocks 3-4-6-3, 7x7 stem, ..., 1000 outputs)'."""
        found = identify_architecture(self.state)
        if self.facelab_meta and self.facelab_meta.get("arch"):
            kwargs = self.facelab_meta.get("arch_kwargs") or {}
            return f"facelab checkpoint of {self.facelab_meta['arch']} {kwargs}" + (f": {found}" if found else "")
        return found or f"an unknown architecture (first keys: {', '.join(list(self.state)[:4])})"


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: loaded tensors and everything it left out or adapted."""

    path: str
    source: str
    loaded: int = 0
    skipped_head: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.path} ({self.source})"]
        for name in ("skipped_head", "adapted", "missing", "unexpected", "mismatched"):
            items = getattr(self, name)
            if items:
                parts.append(f"{name.replace('_', ' ')} ({len(items)}): {_first(items)}")
        return "; ".join(parts)


def _first(items: list[str], n: int = _SHOW) -> str:
    more = f", ... (+{len(items) - n})" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def _weights_path(path: Path) -> Path:
    if path.is_dir():
        try:  # a checkpoint folder, or a run folder: its best checkpoint, else its last
            return resolve_checkpoint(path) / WEIGHTS
        except FacelabError:
            raise FacelabError(
                f"{path} is a folder without {WEIGHTS} (nor checkpoints/best or checkpoints/last of a run); pass "
                f"a weights file (.pth/.pt/.safetensors), a facelab checkpoint folder or a run folder"
            ) from None
    if not path.is_file():
        raise FacelabError(f"pretrained weights {path} not found; check the path")
    if path.suffix not in (".safetensors", *TORCH_SUFFIXES):
        raise FacelabError(
            f"{path}: unsupported weights file; expected .safetensors, {', '.join(TORCH_SUFFIXES)} or a checkpoint folder"
        )
    return path


def _read_safetensors(path: Path) -> WeightsFile:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (SafetensorError, OSError) as e:
        raise FacelabError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        facelab_meta = json.loads(meta["facelab"]) if "facelab" in meta else None
    except json.JSONDecodeError as e:
        raise FacelabError(f"{path}: its 'facelab' metadata is not valid JSON ({e}); the checkpoint is damaged") from None
    return WeightsFile(path, state, facelab_meta)


def _read_torch(path: Path) -> WeightsFile:
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip archive, or a legacy pickle
        raise FacelabError(
            f"{path}: not a torch weights file (it starts with {head!r}; torch.save writes a zip archive or a "
            f"pickle); pass a file saved with torch.save(model.state_dict(), path), or a .safetensors file"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        lines = str(e).splitlines()
        why = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0][:200] if lines else "")
        raise FacelabError(
            f"{path}: cannot be read as a weights-only torch file ({type(e).__name__}: {why}); facelab "
            f"only loads plain state dicts (torch.save(model.state_dict(), path)) or .safetensors"
        ) from None
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not state:
        raise FacelabError(
            f"{path}: holds no tensors (expected a state dict saved with torch.save(model.state_dict(), path))"
        )
    return WeightsFile(path, state)


def read_weights(path: str | Path) -> WeightsFile:
    """Read a weights file or facelab checkpoint folder into a CPU state dict (no key matching yet)."""
    p = _weights_path(Path(path).expanduser())
    return _read_safetensors(p) if p.suffix == ".safetensors" else _read_torch(p)


#: architecture options that may differ between a pretrained network and its fine-tuned copy: the head's
#: size, the input size (checked on its own, as the image size) and the dropout before the head
TRANSFERABLE_OPTIONS = frozenset({"num_outputs", "image_size", "drop_rate", "pretrained"})


def read_facelab_meta(path: str | Path) -> dict[str, Any] | None:
    """The facelab metadata of a checkpoint (folder, run folder or .safetensors file) without reading its
    tensors; None for a plain weights file (torchvision-style ``.pth``, a safetensors file without it)."""
    p = _weights_path(Path(path).expanduser())
    if p.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise FacelabError(f"{p}: not a readable safetensors file ({e})") from None
    if "facelab" not in meta:
        return None
    try:
        return json.loads(meta["facelab"])
    except json.JSONDecodeError as e:
        raise FacelabError(f"{p}: its 'facelab' metadata is not valid JSON ({e}); the checkpoint is damaged") from None


def _plain(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))  # tuples as lists, as a checkpoint's JSON holds them


def _architecture_difference(meta: dict[str, Any], arch: str, arch_kwargs: dict[str, Any]) -> str | None:
    theirs = meta.get("arch_kwargs") or {}
    if meta.get("arch") != arch:
        return f"architecture: the checkpoint is {meta.get('arch')}, this run builds {arch}"
    differ = sorted(k for k in theirs if k not in TRANSFERABLE_OPTIONS and k in arch_kwargs
                    and _plain(theirs[k]) != _plain(arch_kwargs[k]))
    if not differ:
        return None
    both = "; ".join(f"{k}: checkpoint {_plain(theirs[k])}, this run {_plain(arch_kwargs[k])}" for k in differ)
    return f"architecture options of {arch}: {both}"


def check_pretrained_fits(path: str | Path, *, arch: str, arch_kwargs: dict[str, Any],
                          preprocessing: Preprocessing) -> None:
    """Refuse a facelab checkpoint whose network cannot be what this run fine-tunes: another architecture
    (or architecture options such as ``channels``), another image size, or another alignment of the faces
    than the run's store. Plain weights files (no facelab metadata) pass: :func:`load_pretrained` then
    checks them tensor by tensor.

    Args:
        path: the ``--pretrained`` value.
        arch, arch_kwargs: what the run builds (``classifier_arch_kwargs``).
        preprocessing: the run's, from its store (image size and alignment are compared).

    Raises:
        FacelabError: naming each of the three that differs, both sides, and the fix.
    """
    meta = read_facelab_meta(path)
    if meta is None:
        return
    if meta.get("kind") not in ("classifier", "encoder"):
        raise FacelabError(f"{path} holds a {meta.get('kind')} model ({meta.get('arch')}), not a classifier or a "
                           "pretrained encoder; pass a `facelab train` or `facelab pretrain` run")
    theirs = Preprocessing.from_meta(meta.get("preprocessing"), where=f"{path}: preprocessing")
    problems = [p for p in [_architecture_difference(meta, arch, arch_kwargs)] if p]
    size = theirs.image_size if theirs is not None else (meta.get("arch_kwargs") or {}).get("image_size")
    if size is not None and size != preprocessing.image_size:
        problems.append(f"image size: the checkpoint was trained on {size}px images, this run's store holds "
                        f"{preprocessing.image_size}px")
    if theirs is not None and "align" in theirs.model_fields_set and \
            not same_alignment(theirs.align, preprocessing.align):
        problems.append(f"alignment: the checkpoint was trained on faces {describe_alignment(theirs.align)}, this "
                        f"run's store is {describe_alignment(preprocessing.align)}")
    if problems:
        raise FacelabError(
            f"cannot fine-tune from {path}: it differs from this run in\n  " + "\n  ".join(problems) +
            "\nFix: train with the checkpoint's --model and -o model_kwargs, on a store prepared like its own "
            "(same --size, same --align or none), or pretrain again to match this run")


def _dotted_prefixes(key: str, depth: int = 2) -> Iterator[str]:
    parts = key.split(".")
    for i in range(1, min(depth, len(parts) - 1) + 1):
        yield ".".join(parts[:i]) + "."


def strip_prefix(
    state: Mapping[str, torch.Tensor], model_keys: set[str], prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """Keys of ``state`` without the wrapper prefix that best matches ``model_keys``.

    ``prefix=None`` tries no prefix and every one- or two-level prefix of the file's keys (``model.``,
    ``module.``, ``model._orig_mod.``...), and keeps the one that matches most model keys (ties: the shortest,
    so a bare state dict wins). Keys without the chosen prefix are dropped.
    """
    if prefix is None:
        candidates = {""} | {p for k in state for p in _dotted_prefixes(k)}

        def score(p: str) -> tuple[int, int]:
            return sum(1 for k in state if k.startswith(p) and k[len(p) :] in model_keys), -len(p)

        prefix = max(sorted(candidates), key=score)
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise FacelabError(f"no key of the weights file starts with prefix {prefix!r}")
    return out


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-conv weight (O, I, kh, kw) -> (O, in_chans, kh, kw) (timm's rule).

    1 channel: sum over the input channels (a grey image gives the response of the RGB image with equal
    channels); more channels: repeat the RGB filters cyclically, scaled by I / in_chans.
    """
    in_c = weight.shape[1]
    if in_chans == in_c:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // in_c)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (in_c / in_chans)


def resample_kernel(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize conv kernels (O, I, kh, kw) -> (O, I, *size) with antialiased bilinear interpolation.

    The result is scaled by the ratio of kernel areas and then shifted so that each filter keeps exactly
    its response to a constant image (the sum of its weights): the following norm layer sees statistics
    of the same scale.
    """
    kh, kw = weight.shape[-2:]
    w = weight.float()
    area = size[0] * size[1]
    out = F.interpolate(w, size=size, mode="bilinear", align_corners=False, antialias=True) * (kh * kw) / area
    out = out + (w.sum(dim=(2, 3), keepdim=True) - out.sum(dim=(2, 3), keepdim=True)) / area  # exact sums
    return out.to(weight.dtype)


def _adapt_first_conv(
    model: Classifier, state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], report: LoadReport
) -> None:
    key = f"{model.pretrained_cfg.first_conv}.weight"
    w, t = state.get(key), target.get(key)
    if w is None or t is None or w.shape == t.shape or w.ndim != 4 or w.shape[0] != t.shape[0]:
        return
    if w.shape[1] != t.shape[1]:
        report.adapted.append(f"{key}: {w.shape[1]} -> {t.shape[1]} input channels")
        w = adapt_input_conv(w, t.shape[1])
    if w.shape[2:] != t.shape[2:]:
        report.adapted.append(f"{key}: {w.shape[2]}x{w.shape[3]} kernel resampled to {t.shape[2]}x{t.shape[3]}")
        w = resample_kernel(w, tuple(t.shape[2:]))
    state[key] = w


def _under(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)


def _mismatch_error(model: Classifier, wf: WeightsFile, report: LoadReport) -> FacelabError:
    own = identify_architecture(model.state_dict()) or model.arch_name
    lines = [f"cannot load {wf.path} into {own}: the file looks like {wf.describe()}."]
    for name in ("missing", "unexpected", "mismatched"):
        items = getattr(report, name)
        if items:
            lines.append(f"  {name} keys ({len(items)}): {_first(items)}")
    lines.append(
        f"Fix: create the model with the file's architecture and options, or pass a weights file of "
        f"{model.arch_name}; strict=False loads only the tensors that match."
    )
    return FacelabError("\n".join(lines))


def _match(model: Classifier, state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, skip_head: bool,
           report: LoadReport) -> None:
    """Drop head tensors of other shapes and absent optional ones from ``state``; list what still differs."""
    optional, head = model.optional_state_prefixes, model.head_names
    for k in list(state):
        if skip_head and _under(k, head) and (k not in target or state[k].shape != target[k].shape):
            report.skipped_head.append(k)
            del state[k]
        elif k not in target and k.startswith(optional):
            del state[k]

    def may_lack(k: str) -> bool:
        return k.endswith("num_batches_tracked") or k.startswith(optional) or (skip_head and _under(k, head))

    report.missing = [k for k in target if k not in state and not may_lack(k)]
    report.unexpected = [k for k in state if k not in target]
    report.mismatched = [
        f"{k} file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]


def load_pretrained(
    model: Classifier, path: str | Path, *, strict: bool = True, skip_head: bool = True, prefix: str | None = None
) -> LoadReport:
    """Load weights from ``path`` into ``model`` (in place).

    Args:
        model: the classifier to fill.
        path: weights file or facelab checkpoint folder (see the module docstring).
        strict: raise FacelabError (listing missing/unexpected keys, shape mismatches and what the file looks
            like) unless every tensor matches; ``False`` loads the matching tensors and reports the rest.
        skip_head: leave the head (``model.head_names``) freshly initialised where its shapes differ from
            the file's (another number of outputs) or the file has none, instead of failing.
        prefix: key prefix to strip (default: detected).

    Returns:
        A LoadReport; its ``summary()`` is logged.

    The first convolution is adapted when only its input channels or kernel size differ (grey input;
    ResNet's small stem gets the 7x7 ImageNet kernel resampled to 3x3). Keys under
    ``model.optional_state_prefixes`` (Inception's ``AuxLogits``) may be absent from the file or the
    model, BatchNorm's ``num_batches_tracked`` from the file (older torchvision files).
    """
    wf = read_weights(path)
    target = model.state_dict()
    state = strip_prefix(wf.state, set(target), prefix)
    wf = replace(wf, state=dict(state))  # describe the file by its unprefixed keys
    report = LoadReport(path=str(wf.path), source=wf.describe())
    _adapt_first_conv(model, state, target, report)
    _match(model, state, target, skip_head=skip_head, report=report)
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise _mismatch_error(model, wf, report)
    load = {k: v for k, v in state.items() if k in target and v.shape == target[k].shape}
    model.load_state_dict(load, strict=False)
    report.loaded = len(load)
    log.info(report.summary())
    return report


def split_parameters(model: Classifier) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, head parameters), the head being the modules in ``model.head_names``."""
    backbone, head = [], []
    for name, p in model.named_parameters():
        (head if _under(name, model.head_names) else backbone).append(p)
    return backbone, head


def freeze_backbone(model: Classifier) -> int:
    """Train only the head: freeze every other parameter and the statistics of every norm layer outside it.

    Frozen parameters get ``requires_grad=False`` and their ``.grad`` cleared (an optimizer that holds them
    skips them, even with momentum or weight decay). Frozen batch norms stay in eval mode through later
    ``model.train()`` calls (``Classifier.train``), so their running mean/var and ``num_batches_tracked``
    never change and normalisation uses the pretrained statistics.

    Returns:
        The number of frozen parameter elements.
    """
    frozen = 0
    for name, p in model.named_parameters():
        if not _under(name, model.head_names):
            p.requires_grad_(False)
            p.grad = None
            frozen += p.numel()
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and not _under(name, model.head_names):
            setattr(m, FROZEN_STATS_ATTR, True)
            m.train(False)
    return frozen


def is_frozen(model: nn.Module) -> bool:
    """True when :func:`freeze_backbone` is in effect (some norm statistics are frozen)."""
    return any(getattr(m, FROZEN_STATS_ATTR, False) for m in model.modules())


def unfreeze(model: Classifier, *, lr_scale: float = 0.1, lr: float | None = None) -> list[dict[str, Any]]:
    """Make every parameter trainable again and return optimizer param groups for discriminative fine-tuning.

    Args:
        model: a classifier, usually after :func:`freeze_backbone`.
        lr_scale: learning-rate factor of the backbone relative to the head.
        lr: the head's learning rate; when given, each group carries its own ``lr``
            (``lr * lr_scale`` for the backbone), ready for ``torch.optim``.

    Returns:
        ``[{"name": "backbone", "params": [...], "lr_scale": lr_scale}, {"name": "head", ..., "lr_scale": 1.0}]``.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        if getattr(m, FROZEN_STATS_ATTR, False):
            delattr(m, FROZEN_STATS_ATTR)
            m.train(model.training)
    backbone, head = split_parameters(model)
    groups: list[dict[str, Any]] = [
        {"name": "backbone", "params": backbone, "lr_scale": lr_scale},
        {"name": "head", "params": head, "lr_scale": 1.0},
    ]
    if lr is not None:
        for g in groups:
            g["lr"] = lr * g["lr_scale"]
    return groups
