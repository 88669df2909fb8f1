"""Feature extractors for FID/KID: a frozen network that maps generated or real images to pooled features.

Every extractor takes (B, 3, S, S) images in [-1, 1] (what generative models produce) and returns (B, D)
float32 features. It carries an exact ``name`` that goes into every metric name, so a FID computed on
facelab classifier features can never be mistaken for a published Inception FID::

    facelab-vgg_scratch-celeba64-1a2b3c4d   a facelab classifier run: architecture, source + resolution of
                                            its training store, first 8 hex digits of that store's hash
    inception-tv                            torchvision's ImageNet Inception-v3 (torchvision pooling)
    inception-tf                            Inception-v3 with the TensorFlow pooling of the FID network

Extractors are built by name from :data:`FEATURE_EXTRACTORS` (``"facelab"``: a classifier run or
checkpoint; ``"inception"``: a weights file supplied by the user; nothing is downloaded). See
docs/metrics.md for which weights give which numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.data.preprocessing import Preprocessing
from facelab.errors import FacelabError
from facelab.models.checkpoint import WEIGHTS, resolve_checkpoint
from facelab.models.classifiers import create_classifier
from facelab.models.classifiers.transfer import load_pretrained, read_weights
from facelab.models.loading import load_model
from facelab.registry import Registry
from facelab.utils.io import sha256_file

FEATURE_EXTRACTORS: Registry[FeatureExtractor] = Registry("feature extractor")

INCEPTION_SIZE = 299
#: Outputs of the head in a weights file -> the pooling its network was trained with.
INCEPTION_HEADS = {1000: "torchvision", 1008: "tf"}
INCEPTION_NAMES = {"torchvision": "inception-tv", "tf": "inception-tf"}
REQUIRED_PREPROCESSING = ("image_size", "mean", "std", "source", "store_hash")


def images_from_uint8(images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, S, S, 3) uint8 store images -> (B, 3, S, S) float32 in [-1, 1] on ``device``."""
    if isinstance(images, np.ndarray):
        arr = np.ascontiguousarray(images)
        images = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # memmap slices are read-only
    x = images.to(device)  # (B, S, S, 3) uint8
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (B, 3, S, S)


def images_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) float in [-1, 1] -> (B, S, S, 3) uint8 on the CPU (the store's layout), rounded."""
    u = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)  # (B, 3, S, S)
    return u.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (B, S, S, 3)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of uint8 pixels, as real store images (and saved PNGs) have."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round() / 127.5 - 1.0


def network_input(x: torch.Tensor, *, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> what a network trained on [0, 1] pixels normalised by ``mean``/``std`` expects.

    Args:
        x: (B, 3, S, S) float images in [-1, 1].
        size: the network's input side; other sizes are resized (bilinear, ``align_corners=False``).
        mean: (1, 3, 1, 1) per-channel mean of [0, 1] pixels.
        std: (1, 3, 1, 1) per-channel standard deviation.

    Returns:
        (B, 3, size, size) float32.
    """
    if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise FacelabError(f"expected float images (B, 3, S, S) in [-1, 1]; got {tuple(x.shape)} {x.dtype}")
    x = (x.float() + 1.0) * 0.5  # (B, 3, S, S) in [0, 1]
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (B, 3, size, size)
    return (x - mean) / std


class FeatureExtractor(nn.Module):
    """A frozen classifier used as a feature network: images in [-1, 1] -> pooled features (B, D).

    Attributes:
        name: exact name used in metric names (e.g. ``facelab-vgg_scratch-celeba64-1a2b3c4d``).
        input_size: side the network sees; other image sizes are resized bilinearly.
        num_features: D, the feature size (torchmetrics reads this attribute).
        weights_hash: sha256 of the weights file, part of every feature-cache key.
        trained_on: content hash of the store the network was trained on (None: not a facelab store).
        preprocessing: the network's preprocessing as recorded in results (image_size, mean, std, source, ...).
        training: the :class:`Preprocessing` of the data it was trained on, checked against the data it
            measures (None: a network trained elsewhere, e.g. on ImageNet, usable on any data).
    """

    def __init__(self, network: nn.Module, *, name: str, input_size: int, mean: Sequence[float],
                 std: Sequence[float], weights_hash: str, trained_on: str | None = None,
                 preprocessing: dict[str, Any] | None = None, training: Preprocessing | None = None) -> None:
        super().__init__()
        self.network = network.eval()
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.name, self.input_size, self.weights_hash = name, int(input_size), weights_hash
        self.trained_on = trained_on
        self.preprocessing = dict(preprocessing or {})
        self.training = training
        self.num_features = int(network.embedding_dim)
        self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Always eval mode: batch norm uses running statistics, dropout is off, so features are deterministic."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images in [-1, 1] -> (B, num_features) float32 features."""
        x = network_input(x.to(self.device), size=self.input_size, mean=self.mean, std=self.std)
        return self.network.embedding(x).float()  # (B, D)

    @torch.no_grad()
    def extract(self, images: torch.Tensor | np.ndarray, *, batch_size: int = 256) -> np.ndarray:
        """Features of many images, in batches: (N, 3, S, S) floats in [-1, 1] or (N, S, S, 3) uint8 store images.

        Returns:
            (N, num_features) float32 array.
        """
        if batch_size < 1:
            raise FacelabError(f"batch_size must be >= 1, got {batch_size}")
        uint8 = isinstance(images, np.ndarray) and images.dtype == np.uint8
        out = [np.zeros((0, self.num_features), np.float32)]
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            x = images_from_uint8(chunk, self.device) if uint8 else torch.as_tensor(chunk)
            out.append(self(x).cpu().numpy())
        return np.concatenate(out)

    def describe(self) -> dict[str, Any]:
        """What the result files record about the extractor."""
        return {"name": self.name, "weights_sha256": self.weights_hash, "input_size": self.input_size,
                "num_features": self.num_features, "trained_on": self.trained_on, "preprocessing": self.preprocessing}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", str(text).lower()) or "data"


def checkpoint_name(arch: str, preprocessing: Preprocessing) -> str:
    """``facelab-<arch>-<source><size>-<8 hex of the training store hash>`` for a classifier checkpoint."""
    pre = preprocessing
    return f"facelab-{arch}-{_slug(pre.source)}{pre.image_size}-{str(pre.store_hash)[:8]}"


def check_checkpoint_preprocessing(path: str | Path, preprocessing: Preprocessing | None) -> Preprocessing:
    """The checkpoint's preprocessing, or FacelabError unless it records everything an extractor needs."""
    missing = list(REQUIRED_PREPROCESSING) if preprocessing is None else [
        k for k in REQUIRED_PREPROCESSING if getattr(preprocessing, k) is None]
    if missing:
        raise FacelabError(
            f"{path}: the checkpoint's preprocessing lacks {missing}; it was not written by `facelab train` "
            "(ClassifierObjective.checkpoint_meta). Retrain it with the current facelab, or use an inception extractor"
        )
    return preprocessing


def weights_file(path: str | Path, which: str = "best") -> Path:
    """The model.safetensors file of a run folder, checkpoint folder or file."""
    ckpt = resolve_checkpoint(path, which)
    return ckpt if ckpt.is_file() else ckpt / WEIGHTS


@FEATURE_EXTRACTORS.register("facelab")
def facelab_extractor(path: str | Path, *, which: str = "best", device: str | torch.device = "cpu") -> FeatureExtractor:
    """Feature extractor from a facelab classifier run (pooled features before the head).

    Args:
        path: classifier run folder, checkpoint folder or model.safetensors file.
        which: checkpoint of a run folder: "best" or "last".
        device: where the network runs.

    Raises:
        FacelabError: not a classifier checkpoint, or its metadata lacks the preprocessing.
    """
    model, meta = load_model(path, kind="classifier", which=which, device=device)
    pre = check_checkpoint_preprocessing(path, meta.preprocessing)
    return FeatureExtractor(
        model, name=checkpoint_name(meta.arch, pre), input_size=pre.image_size, mean=pre.mean, std=pre.std,
        weights_hash=sha256_file(weights_file(path, which)), trained_on=pre.store_hash,
        preprocessing={k: v for k, v in pre.model_dump(mode="json").items() if k in REQUIRED_PREPROCESSING},
        training=pre,
    ).to(device)


def _inception_head(path: Path) -> int | None:
    fc = read_weights(path).state.get("fc.weight")
    return None if fc is None else int(fc.shape[0])


@FEATURE_EXTRACTORS.register("inception")
def inception_extractor(weights: str | Path, *, pooling: Literal["torchvision", "tf"] = "torchvision",
                        input_size: int = INCEPTION_SIZE, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Inception-v3 (torchvision layout) from a user-supplied weights file: 2048-d pool features.

    Images are resized bilinearly to ``input_size`` (299, as for FID) and fed to the network as [-1, 1]
    pixels, which is what both Google weight sets expect (torchvision's ``transform_input`` does the same).

    Args:
        weights: torchvision-format state dict (.pth/.pt/.safetensors): torchvision's ImageNet weights
            (``inception_v3_google-0cc3c7bd.pth``, 1000 outputs, ``pooling="torchvision"``) or pytorch-fid's
            ``pt_inception-2015-12-05-6726825d.pth`` (1008 outputs, ``pooling="tf"``).
        pooling: "torchvision" (name ``inception-tv``) or "tf" (``inception-tf``, the FID network's pooling).
        input_size: side images are resized to; 299 except for quick tests (at least 75).
        device: where the network runs.

    Raises:
        FacelabError: the file is missing, not a plain state dict of Inception-v3, or its head size says it
            belongs to the other pooling.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FacelabError(f"Inception weights {path} not found; facelab downloads nothing: see docs/metrics.md "
                           "for the weights files and where they come from")
    head = _inception_head(path)
    if head in INCEPTION_HEADS and INCEPTION_HEADS[head] != pooling:
        raise FacelabError(
            f"{path} has a {head}-output head, the weights of the {INCEPTION_HEADS[head]!r}-pooling network, but "
            f"pooling={pooling!r} was asked; pass pooling={INCEPTION_HEADS[head]!r}"
        )
    net = create_classifier("inception_v3", num_outputs=0, image_size=input_size, transform_input=False,
                            pooling=pooling)
    load_pretrained(net, path, strict=True, skip_head=True)
    half = (0.5, 0.5, 0.5)  # [0, 1] -> [-1, 1]
    preprocessing = {"image_size": input_size, "mean": list(half), "std": list(half), "source": "imagenet",
                     "store_hash": None, "pooling": pooling, "head_outputs": head}
    name = INCEPTION_NAMES[pooling] + ("" if input_size == INCEPTION_SIZE else f"{input_size}")
    return FeatureExtractor(net, name=name, input_size=input_size, mean=half, std=half,
                            weights_hash=sha256_file(path), trained_on=None, preprocessing=preprocessing).to(device)


def create_extractor(kind: str, path: str | Path, **options: Any) -> FeatureExtractor:
    """Build the registered extractor ``kind`` ("facelab" or "inception") from ``path`` with ``options``."""
    return FEATURE_EXTRACTORS.create(kind, path, **options)
