"""The preprocessing block of a checkpoint: how an image becomes the model's input, exactly as in training.

Every checkpoint carries one (``CheckpointMeta.preprocessing``), built from the training store by
:meth:`Preprocessing.of_store`; evaluation, prediction and the generative metrics build their inputs from it
and check a store against it with :meth:`Preprocessing.check_store`, the one compatibility check, so training
and inference cannot drift apart.

    >>> p = Preprocessing(image_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="celeba")
    >>> p.model_dump()["image_size"]
    64
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from facelab.config import StrictConfig
from facelab.data.schema import CropSpec
from facelab.errors import FacelabError
from facelab.faces import AlignSpec

if TYPE_CHECKING:
    from facelab.data.store import Store

RGB = tuple[float, float, float]
CELEBA_SOURCE = "celeba"  # the source whose images are aligned faces as they come (img_align_celeba)


@dataclass(frozen=True)
class Compatibility:
    """What :meth:`Preprocessing.check_store` found: the store is usable; these are the caveats."""

    same_source: bool
    same_store: bool  # the very store the network was trained on (same content hash)
    warnings: list[str] = field(default_factory=list)


class Preprocessing(StrictConfig):
    """Image size, crop and normalisation of the training images, and the store they came from.

    ``align`` says whether the training images were faces aligned into CelebA's frame, and how: the
    :class:`~facelab.faces.AlignSpec` that inference must apply to a photo (detect, align, then crop and
    resize) to give the network what it saw. None: the images were not aligned (or the checkpoint predates the
    field: older checkpoints load with None).
    """

    image_size: int = Field(ge=1)
    crop: CropSpec | None = None  # how the training store cropped its source images (None: not recorded)
    source: str | None = None  # dataset source of the training store (celeba, utkface, ...)
    mean: RGB
    std: RGB
    store_hash: str | None = None  # content hash of the training store (None: several stores, e.g. an ensemble)
    align: AlignSpec | None = None  # faces aligned into CelebA's frame, and how (None: not aligned)

    @classmethod
    def of_store(cls, store: Store, *, mean: RGB | list[float], std: RGB | list[float]) -> Preprocessing:
        """The preprocessing of a network trained on ``store`` with input normalisation ``mean``/``std``.

        ``align`` is the store's alignment (``prepare --align``); a ``celeba`` store that was not re-aligned
        holds CelebA's own aligned images, so its networks expect faces aligned into CelebA's frame: the
        default :class:`~facelab.faces.AlignSpec` (MTCNN with its CelebA-derived template).
        """
        return cls(image_size=store.image_size, crop=store.manifest.crop, source=store.source,
                   mean=tuple(mean), std=tuple(std), store_hash=store.content_hash, align=store_alignment(store))

    @classmethod
    def of_stores(cls, stores: Sequence[Store], *, mean: RGB | list[float], std: RGB | list[float]) -> Preprocessing:
        """The preprocessing of a network trained on several stores of one image size and alignment (checked
        by the caller): their common crop and source where they share one, no single store hash."""
        if len(stores) == 1:
            return cls.of_store(stores[0], mean=mean, std=std)
        crops = [s.manifest.crop for s in stores]
        sources = {s.source for s in stores}
        return cls(image_size=stores[0].image_size, crop=crops[0] if all(c == crops[0] for c in crops) else None,
                   source=sources.pop() if len(sources) == 1 else None, mean=tuple(mean), std=tuple(std),
                   store_hash=None, align=store_alignment(stores[0]))

    @classmethod
    def from_meta(cls, data: dict[str, Any] | None, *, where: str) -> Preprocessing | None:
        """Parse a checkpoint's stored block (None when the checkpoint has none)."""
        return cls.from_dict(data, where=where) if data else None

    def to_input(self, images: np.ndarray) -> np.ndarray:
        """Images as the network takes them: (B, S, S, 3) uint8 -> (B, 3, S, S) float32, scaled to [0, 1] and
        normalised with ``mean``/``std`` (what training's batch loader does to the store's images).

        Raises:
            FacelabError: the images are not (B, S, S, 3) uint8 at this preprocessing's ``image_size``.
        """
        s = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise FacelabError(f"images of shape {images.shape} ({images.dtype}) do not fit a network that takes "
                               f"{s}x{s} RGB images: pass (B, {s}, {s}, 3) uint8 (crop and resize them first)")
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)  # (B, 3, S, S) in [0, 1]
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (x - mean) / std

    def check_store(self, store: Store, *, what: str) -> Compatibility:
        """Whether ``store``'s images are what the network ``what`` expects.

        Raises:
            FacelabError: the store's images have another size (the network would see other pixels).

        Returns:
            A :class:`Compatibility`: other sources, crops or stores of the same source are warnings; callers
            that need the same data (FID against a generator's own data) refuse ``same_source=False``.
        """
        if store.image_size != self.image_size:
            raise FacelabError(f"{store.path}: images are {store.image_size}px but {what} works at "
                               f"{self.image_size}px; prepare the store with --size {self.image_size}")
        same_source = self.source is None or self.source == store.source
        same_store = self.store_hash is not None and self.store_hash == store.content_hash
        warnings = []
        if not same_source:
            warnings.append(f"{what} was trained on {self.source!r} images, {store.path} holds {store.source!r}")
        if self.crop is not None and store.manifest.crop is not None and self.crop != store.manifest.crop:
            warnings.append(f"{what} was trained on images cropped {_crop_text(self.crop)}, {store.path} is cropped "
                            f"{_crop_text(store.manifest.crop)}: faces may sit elsewhere in the frame")
        warnings += self._alignment_warnings(store, what=what)
        if same_source and self.store_hash is not None and not same_store:
            warnings.append(f"{what} was trained on another {self.source} store (hash {self.store_hash[:8]}, this one "
                            f"{store.content_hash[:8]}): its training rows may overlap these rows")
        return Compatibility(same_source=same_source, same_store=same_store, warnings=warnings)

    def _alignment_warnings(self, store: Store, *, what: str) -> list[str]:
        """A warning when one of the network's training images and ``store``'s images are aligned faces and the
        other are not (checkpoints from before alignment was recorded say nothing: no warning)."""
        if "align" not in self.model_fields_set and self.align is None:
            return []  # an older checkpoint: whether its images were aligned is not known
        theirs = store_alignment(store)
        if self.align is not None and theirs is None:
            return [f"{what} was trained on faces aligned into CelebA's frame ({self.align.describe()}), "
                    f"{store.path} holds images that were not aligned: prepare it with --align"]
        if self.align is None and theirs is not None:
            return [f"{what} was trained on images that were not aligned, {store.path} holds faces aligned into "
                    f"CelebA's frame ({theirs.describe()})"]
        return []


def store_alignment(store: Store) -> AlignSpec | None:
    """How ``store``'s faces are aligned: its manifest's AlignSpec, the default one for CelebA's own aligned
    images (source ``celeba``), else None (not aligned)."""
    if store.manifest.align is not None:
        return AlignSpec.from_dict(store.manifest.align, where=f"{store.path}: manifest align")
    return AlignSpec() if store.source == CELEBA_SOURCE else None


def alignment_key(spec: AlignSpec | None) -> tuple | None:
    """What decides where a face sits in an aligned image: the template points and the frame (rounded to
    0.01 px), or None for images that were not aligned. Detector thresholds and limits do not move faces."""
    if spec is None:
        return None
    template = tuple((round(x, 2), round(y, 2)) for x, y in (spec.template or ()))
    return template, tuple(spec.frame)


#: templates whose points lie this close (frame pixels) put faces in the same place: the detectors' CelebA
#: templates (mtcnn, retinaface) differ by up to 1.5 px in the 178x218 frame, half a pixel at 64 px
SAME_TEMPLATE_PX = 2.0


def same_alignment(a: AlignSpec | None, b: AlignSpec | None) -> bool:
    """Whether faces aligned by ``a`` and by ``b`` sit in the same place: both not aligned, or the same frame
    and templates within :data:`SAME_TEMPLATE_PX` (whatever detector found the landmarks)."""
    ka, kb = alignment_key(a), alignment_key(b)
    if ka is None or kb is None:
        return ka is kb
    (ta, fa), (tb, fb) = ka, kb
    return fa == fb and len(ta) == len(tb) and \
        float(np.max(np.abs(np.asarray(ta, float) - np.asarray(tb, float)), initial=0.0)) <= SAME_TEMPLATE_PX


def describe_alignment(spec: AlignSpec | None) -> str:
    """One line for error messages: ``aligned into CelebA's frame 178x218 (mtcnn template)`` or ``not aligned``."""
    if spec is None:
        return "not aligned"
    w, h = spec.frame
    return f"aligned into a {w}x{h} frame with the {spec.detector} template {alignment_key(spec)[0]}"


def _crop_text(crop: CropSpec) -> str:
    if crop.mode == "box":
        return f"to the box {crop.box}"
    if crop.mode == "none":
        return "not at all"
    return f"centre x{crop.scale:g} (offset {crop.offset_y:+g})"
