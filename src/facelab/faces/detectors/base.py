"""The interface every face detector implements, and the DETECTORS registry.

A detector turns an (H, W, 3) RGB uint8 image into a list of :class:`~facelab.faces.face.Face`, best
first (:meth:`Detector.detect`), or into :class:`Detections`, which also says how many faces were found
before the ``max_faces`` cap (:meth:`Detector.detections`). Its model is loaded lazily on first use and
dropped when the detector is pickled, so a detector (or a pipeline holding one) can be sent to worker
processes, each of which loads its own copy. A detector may be called from several threads at once: each
call borrows a model no other thread is running (:class:`~facelab.faces.model_pool.ModelPool`; one shared
model for detectors whose runtime allows it). Both built-in models ship inside their wheels: nothing is
downloaded at run time; a detector whose package is missing is refused when it is made, with the command
that installs it.

    >>> detector = create_detector("mtcnn")
    >>> faces = detector.detect(image)          # list[Face], highest score first
    >>> found = detector.detections(image)      # .faces, .found (before the cap), .note
"""

from __future__ import annotations

import importlib
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

from facelab.errors import ConfigError, DataError
from facelab.faces.face import Face
from facelab.faces.model_pool import ModelPool
from facelab.registry import Registry

DEFAULT_MAX_FACES = 32
DEFAULT_MAX_SIDE = 1280  # longer image sides are downscaled to this before detection


@dataclass(frozen=True, eq=False)
class Detections:
    """The faces of one image and how many there were.

    Attributes:
        faces: the best-scored faces, best first, at most ``max_faces``.
        found: faces scored >= min_score before the ``max_faces`` cap (>= ``len(faces)``). A detector examines
            a number of candidates scaled by ``max_faces`` (so a crowd costs bounded time): in a dense crowd far
            above the cap it may miss a few faces, which a larger ``max_faces`` counts.
        max_faces: the cap that applied.
    """

    faces: list[Face]
    found: int
    max_faces: int

    @property
    def capped(self) -> bool:
        """Whether faces were left out by the cap."""
        return self.found > len(self.faces)

    @property
    def note(self) -> str | None:
        """What a report says about a capped image: ``49 faces found; the 32 best-scored are kept
        (max_faces 32)``; None when nothing was left out."""
        if not self.capped:
            return None
        return capped_note(self.found, len(self.faces), max_faces=self.max_faces)


def capped_note(found: int, kept: int, *, max_faces: int) -> str:
    """The one sentence every report uses for a photo with more faces than ``max_faces``."""
    return f"{found} faces found; the {kept} best-scored are kept (max_faces {max_faces})"


class Detector(ABC):
    """A face detector: :meth:`detect` returns faces above ``min_score``, best first, at most ``max_faces``.

    Subclasses set ``name``, ``default_min_score`` and ``description``, and implement :meth:`_load` (build the
    model) and :meth:`_detect` (run it on an image no larger than ``max_side``). ``shares_model`` says whether
    one loaded model may run in several threads at once (else each concurrent call gets its own);
    ``requires`` and ``install`` name the module the model comes in and the command that installs it.

    Args:
        min_score: faces scored below this are dropped (default: the detector's ``default_min_score``).
        max_faces: at most this many faces are returned (and candidates are capped early, so an image of a
            crowd costs bounded time); a call may ask for another number.
        max_side: images whose longer side exceeds this are downscaled (area interpolation) before detection;
            faces come back in the original image's pixels. Faces smaller than about 20 px after the
            downscale are not found.
        threads: CPU threads the model may use (1: parallelism comes from processes).

    Raises:
        ConfigError: a bad option, or the detector's package is not installed (the message gives the command).
    """

    name: ClassVar[str]
    default_min_score: ClassVar[float]
    description: ClassVar[str] = ""
    shares_model: ClassVar[bool] = False
    requires: ClassVar[str | None] = None  # the module the model comes in (imported when a detector is made)
    install: ClassVar[str] = ""  # the command that installs it

    def __init__(self, *, min_score: float | None = None, max_faces: int = DEFAULT_MAX_FACES,
                 max_side: int = DEFAULT_MAX_SIDE, threads: int = 1) -> None:
        self.min_score = self.default_min_score if min_score is None else float(min_score)
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"face detector {self.name!r}: min_score {min_score} must lie in [0, 1]")
        if max_faces < 1 or max_side < 32 or threads < 1:
            raise ConfigError(f"face detector {self.name!r}: max_faces ({max_faces}) and threads ({threads}) must "
                              f"be >= 1 and max_side ({max_side}) >= 32")
        self.check_installed()
        self.max_faces, self.max_side, self.threads = int(max_faces), int(max_side), int(threads)
        self._models: ModelPool[Any] = ModelPool(self._load, shared=self.shares_model)

    @classmethod
    def check_installed(cls) -> None:
        """ConfigError naming the install command when the module the detector's model comes in is missing."""
        if cls.requires is None:
            return
        try:
            with warnings.catch_warnings():  # packages importing deprecated modules (imghdr)
                warnings.simplefilter("ignore")
                importlib.import_module(cls.requires)
        except ImportError as e:
            missing = e.name or cls.requires
            raise ConfigError(f"face detector {cls.name!r} needs the Python module {cls.requires!r}, which cannot "
                              f"be imported (no module {missing!r}); install it with: {cls.install}") from None

    # ---- pickling: the models stay behind; each process loads its own --------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_models"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._models = ModelPool(self._load, shared=self.shares_model)

    @property
    def models_loaded(self) -> int:
        """How many copies of the model this detector has loaded (at most the calls it ran at once)."""
        return self._models.loaded

    @abstractmethod
    def _load(self) -> Any:
        """Build the model from the files shipped in its wheel."""

    @abstractmethod
    def _detect(self, model: Any, image: np.ndarray, max_faces: int) -> list[Face]:
        """Faces in ``image`` ((H, W, 3) RGB uint8, C-contiguous) scored >= ``min_score``, any order, found by
        ``model`` (no other thread runs it meanwhile, unless ``shares_model``); candidates may be capped in
        proportion to ``max_faces``."""

    def detect(self, image: np.ndarray, *, max_faces: int | None = None) -> list[Face]:
        """Faces in ``image``, highest score first, at most ``max_faces`` (default: the detector's), each scored
        >= ``min_score``. See :meth:`detections`."""
        return self.detections(image, max_faces=max_faces).faces

    def detections(self, image: np.ndarray, *, max_faces: int | None = None) -> Detections:
        """The best ``max_faces`` faces of ``image`` (default: the detector's ``max_faces``) and how many
        faces scored >= ``min_score`` in all.

        Args:
            image: (H, W, 3) RGB uint8; greyscale works as (H, W) or (H, W, 1), or as 3 equal channels.

        Raises:
            DataError: ``image`` is not a uint8 (H, W[, 1 or 3]) array, or has no pixels.
            ConfigError: ``max_faces`` < 1.
        """
        cap = self.max_faces if max_faces is None else int(max_faces)
        if cap < 1:
            raise ConfigError(f"face detector {self.name!r}: max_faces must be >= 1, got {max_faces}")
        image = as_rgb(image)
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        small = image if scale == 1.0 else _downscale(image, scale)
        with self._models.borrow() as model:
            faces = sorted(self._detect(model, small, cap), key=lambda f: -f.score)
        kept = faces[:cap] if scale == 1.0 else [_rescale(f, small.shape, image.shape) for f in faces[:cap]]
        return Detections(faces=kept, found=len(faces), max_faces=cap)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(min_score={self.min_score}, max_faces={self.max_faces}, "
                f"max_side={self.max_side}, threads={self.threads})")


def as_rgb(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array; greyscale (H, W) or (H, W, 1) repeated to 3 channels.

    Raises:
        DataError: not a uint8 array of one of those shapes, or an empty one.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')}".strip()
        raise DataError(f"face detection needs a uint8 RGB image (H, W, 3); got {got} (decode files with "
                        "facelab.data.decode.decode_file, which gives uint8 RGB)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)  # (H, W) -> (H, W, 3)
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"face detection needs an (H, W, 3) RGB image; got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"face detection got an empty image (shape {image.shape})")
    return np.ascontiguousarray(image)


def _downscale(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _rescale(face: Face, small: tuple[int, ...], full: tuple[int, ...]) -> Face:
    """``face`` found in the downscaled ``small`` image, in pixels of the ``full`` image."""
    sx, sy = full[1] / small[1], full[0] / small[0]
    x, y, w, h = face.box
    pts = (face.landmarks + 0.5) * np.array([sx, sy], np.float32) - 0.5  # pixel centres map to pixel centres
    return Face(box=((x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5, w * sx, h * sy), landmarks=pts, score=face.score)


DETECTORS: Registry[Detector] = Registry("face detector")


def create_detector(name: str, **options: Any) -> Detector:
    """Create a registered detector by name (``mtcnn``, ``retinaface``) with :class:`Detector` options."""
    import facelab.faces.detectors  # noqa: F401  (registers the built-in detectors)

    return DETECTORS.create(name, **options)


def detector_class(name: str) -> type[Detector]:
    """The class registered as ``name`` (its ``default_min_score``, ``description``); ConfigError if unknown."""
    import facelab.faces.detectors  # noqa: F401

    return DETECTORS.get(name)  # type: ignore[return-value]
