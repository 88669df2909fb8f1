"""The ``synthetic`` source: procedurally rendered faces with exact labels (no download, no license).

Record ``i`` is fully determined by ``(seed, i)`` and the options: its person (identity ``i //
images_per_identity``) and its shot are drawn from their own seed sequences, so records can be
generated in any order, in any process. ``index`` draws labels only; ``load`` renders the image.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator

from facelab.data.face_params import (
    DIRECTIONS,
    HAIR_COLORS,
    FaceLabels,
    FaceParams,
    sample_identity,
    sample_shot,
)
from facelab.data.render_face import face_landmarks, render_face
from facelab.data.schema import LabelKind, LabelSpec, Partition, Record, SourceIndex
from facelab.data.sources.base import SOURCES, Source, SourceOptions
from facelab.errors import DataError

BINARY = ("Male", "Smiling", "Eyeglasses", "Bangs", "Young", "Wearing_Hat")
CATEGORICAL: dict[str, tuple[str, ...]] = {"hair_color": HAIR_COLORS, "yaw": DIRECTIONS, "light": DIRECTIONS}
DEFAULT_PREVALENCE = {
    "Male": 0.42, "Smiling": 0.48, "Eyeglasses": 0.2, "Bangs": 0.25, "Young": 0.75, "Wearing_Hat": 0.15,
}
DEFAULT_CLASS_PROBS = {"hair_color": (0.35, 0.2, 0.35, 0.1), "yaw": (1 / 3,) * 3, "light": (1 / 3,) * 3}
# Mild, marginal-preserving correlations: (attribute, conditioning binary, how much rarer when it is 1).
BANGS_GIVEN_MALE = 0.6  # men have a fringe less often
GLASSES_GIVEN_YOUNG = 0.4  # young people wear glasses less often
GRAY_GIVEN_YOUNG = 0.85  # gray hair is mostly on older people
MIN_RENDER = 32  # smaller store sizes are rendered at 32 px and downscaled by the store

# Independent random streams per record: labels never depend on how images are drawn, and vice versa.
_PERSON_LABELS, _PERSON_LOOK, _SHOT_LABELS, _SHOT_LOOK, _SPLIT = range(5)
_GOLDEN = (math.sqrt(5) - 1) / 2


class SyntheticOptions(SourceOptions):
    """Options of the ``synthetic`` source.

    Attributes:
        n: number of images.
        seed: the dataset seed; record ``i`` depends only on (seed, i) and the options below.
        prevalence: P(attribute = 1) overriding ``DEFAULT_PREVALENCE`` for any binary attribute.
        class_probs: class probabilities overriding ``DEFAULT_CLASS_PROBS`` for a categorical label.
        render_size: side rendered when the caller does not ask for a size.
        partitions: TRAIN/VAL/TEST fractions, assigned per identity.
        images_per_identity: consecutive records sharing one person.
        landmarks: record each face's exact five landmarks (as drawn), so the store carries them; the images
            are then rendered at ``render_size`` and downscaled by the store.
    """

    n: int = Field(2000, ge=1, le=50_000_000)
    seed: int = Field(0, ge=0)
    prevalence: dict[str, float] = Field(default_factory=dict)
    class_probs: dict[str, list[float]] = Field(default_factory=dict)
    render_size: int = Field(128, ge=8, le=4096)
    partitions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    images_per_identity: int = Field(5, ge=1)
    landmarks: bool = False  # record each face's exact 5 landmarks (renders at render_size: slower builds)

    @field_validator("prevalence")
    @classmethod
    def _check_prevalence(cls, v: dict[str, float]) -> dict[str, float]:
        for name, p in v.items():
            if name not in BINARY:
                raise ValueError(f"unknown binary attribute {name!r}; valid names: {', '.join(BINARY)}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"prevalence of {name!r} is {p}; it must lie in [0, 1]")
        return v

    @field_validator("class_probs")
    @classmethod
    def _check_class_probs(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, probs in v.items():
            if name not in CATEGORICAL:
                raise ValueError(f"unknown categorical label {name!r}; valid names: {', '.join(CATEGORICAL)}")
            classes = CATEGORICAL[name]
            if len(probs) != len(classes) or min(probs) < 0 or abs(sum(probs) - 1.0) > 1e-3:
                raise ValueError(
                    f"class_probs[{name!r}] = {probs}: give {len(classes)} non-negative probabilities "
                    f"summing to 1, in the order {', '.join(classes)}"
                )
        return v

    @field_validator("partitions")
    @classmethod
    def _check_partitions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or abs(sum(v) - 1.0) > 1e-3:
            raise ValueError(f"partitions {v}: give three non-negative TRAIN/VAL/TEST fractions summing to 1")
        return v


def conditional_probs(p_b: float, p_a: float, strength: float) -> tuple[float, float]:
    """P(B=1 | A=1) and P(B=1 | A=0) such that B is ``strength`` rarer given A, keeping P(B=1) = ``p_b``.

    The reduction is capped where P(B=1 | A=0) would exceed 1, so the marginal always holds exactly.
    """
    if not (0.0 < p_a < 1.0 and 0.0 < p_b < 1.0):
        return p_b, p_b
    c = min(strength, (1.0 - p_b) * (1.0 - p_a) / (p_b * p_a))
    return p_b * (1.0 - c), p_b * (1.0 + c * p_a / (1.0 - p_a))


def _pick(u: float, probs: np.ndarray) -> int:
    return min(int(np.searchsorted(np.cumsum(probs), u, side="right")), len(probs) - 1)


@SOURCES.register("synthetic")
class SyntheticSource(Source):
    """Procedurally rendered faces: 6 binary attributes, hair colour, head yaw and light direction.

    Every label is visibly drawn (see ``docs/synthetic.md``). ``Record.ref`` is ``(seed, index,
    identity)``; ``load`` renders it at ``max(min_side, 32)`` pixels (or ``render_size``).
    """

    name = "synthetic"
    Options = SyntheticOptions
    needs_root = False

    def __init__(self, root=None, **options) -> None:
        super().__init__(root, **options)
        o = self.options
        self.prevalence = {**DEFAULT_PREVALENCE, **o.prevalence}
        self.class_probs = {k: np.asarray(o.class_probs.get(k, p), float) for k, p in DEFAULT_CLASS_PROBS.items()}
        for k in self.class_probs:
            self.class_probs[k] = self.class_probs[k] / self.class_probs[k].sum()
        self._split_offset = float(self._rng(_SPLIT, 0).random())

    @staticmethod
    def label_specs() -> list[LabelSpec]:
        """The label columns, in record order: the binary attributes, then hair_color, yaw, light."""
        specs = [LabelSpec(name, LabelKind.BINARY) for name in BINARY]
        return specs + [LabelSpec(name, LabelKind.CATEGORICAL, classes) for name, classes in CATEGORICAL.items()]

    # ---- labels ---------------------------------------------------------------------------------------
    def _rng(self, stream: int, i: int) -> np.random.Generator:
        return np.random.default_rng([self.options.seed, stream, i])

    def person_labels(self, identity: int) -> tuple[int, int, int, int]:
        """(Male, Young, Bangs, hair_color index) of one identity."""
        u = self._rng(_PERSON_LABELS, identity).random(4)
        pv = self.prevalence
        male = int(u[0] < pv["Male"])
        young = int(u[1] < pv["Young"])
        bangs_if_male, bangs_if_female = conditional_probs(pv["Bangs"], pv["Male"], BANGS_GIVEN_MALE)
        bangs = int(u[2] < (bangs_if_male if male else bangs_if_female))
        probs = self.class_probs["hair_color"]
        gray = HAIR_COLORS.index("gray")
        if_young, if_old = conditional_probs(float(probs[gray]), pv["Young"], GRAY_GIVEN_YOUNG)
        q = if_young if young else if_old
        rest = 1.0 - probs[gray]
        cond = probs * ((1.0 - q) / rest if rest > 0 else 0.0)
        cond[gray] = q
        return male, young, bangs, _pick(u[3], cond)

    def record_labels(self, index: int, person: tuple[int, int, int, int] | None = None) -> tuple[int, ...]:
        """The label tuple of record ``index`` (cheap: no drawing), in :meth:`label_specs` order.

        ``person`` may pass the already computed :meth:`person_labels` of the record's identity.
        """
        male, young, bangs, hair = person or self.person_labels(index // self.options.images_per_identity)
        u = self._rng(_SHOT_LABELS, index).random(5)
        pv = self.prevalence
        glasses_if_young, glasses_if_old = conditional_probs(pv["Eyeglasses"], pv["Young"], GLASSES_GIVEN_YOUNG)
        smiling = int(u[0] < pv["Smiling"])
        glasses = int(u[1] < (glasses_if_young if young else glasses_if_old))
        hat = int(u[2] < pv["Wearing_Hat"])
        yaw, light = _pick(u[3], self.class_probs["yaw"]), _pick(u[4], self.class_probs["light"])
        return male, smiling, glasses, bangs, young, hat, hair, yaw, light

    def partition_of(self, identity: int) -> Partition:
        """The partition of an identity: a golden-ratio sequence, so fractions hold closely for any n."""
        u = (self._split_offset + identity * _GOLDEN) % 1.0
        return Partition(_pick(u, np.asarray(self.options.partitions, float)))

    def index(self) -> SourceIndex:
        """All ``n`` records with labels, identities and partitions; renders nothing."""
        o = self.options
        records, person, partition = [], None, 0
        for i in range(o.n):
            identity = i // o.images_per_identity
            if i % o.images_per_identity == 0:
                person, partition = self.person_labels(identity), int(self.partition_of(identity))
            record = Record(key=f"synthetic_{i:07d}", ref=(o.seed, i, identity), labels=self.record_labels(i, person),
                            identity=identity, partition=partition)
            if o.landmarks:
                points = face_landmarks(self.face_params(record), o.render_size)  # (5, 2) in render pixels
                record.landmarks = tuple(float(v) for v in points.reshape(-1))
            records.append(record)
        n_ids = (o.n + o.images_per_identity - 1) // o.images_per_identity
        note = f"{o.n} procedurally rendered faces of {n_ids} identities (seed {o.seed}); images are drawn on load"
        return SourceIndex(
            source=self.name, root=None, labels=self.label_specs(), records=records, notes=[note],
            has_identities=True, has_partitions=True, has_landmarks=o.landmarks,
        )

    # ---- images ---------------------------------------------------------------------------------------
    def face_params(self, record: Record) -> FaceParams:
        """The full description of ``record``'s face, built from its ref and labels.

        Editing ``record.labels`` before calling this gives a counterfactual: the same person and shot
        showing the edited labels (person-level labels should be edited for all images of the identity).
        """
        ref = record.ref
        if not (isinstance(ref, tuple) and len(ref) == 3 and all(isinstance(v, int) for v in ref)):
            raise DataError(f"record {record.key!r}: ref {ref!r} is not a synthetic (seed, index, identity) ref")
        seed, index, identity = ref
        names = dict(zip([s.name for s in self.label_specs()], record.labels, strict=True))
        labels = FaceLabels(
            male=bool(names["Male"]), smiling=bool(names["Smiling"]), eyeglasses=bool(names["Eyeglasses"]),
            bangs=bool(names["Bangs"]), young=bool(names["Young"]), hat=bool(names["Wearing_Hat"]),
            hair_color=HAIR_COLORS[names["hair_color"]], yaw=DIRECTIONS[names["yaw"]], light=DIRECTIONS[names["light"]],
        )
        person = sample_identity(
            np.random.default_rng([seed, _PERSON_LOOK, identity]),
            male=labels.male, young=labels.young, bangs=labels.bangs, hair_color=labels.hair_color,
        )
        return sample_shot(np.random.default_rng([seed, _SHOT_LOOK, index]), person, labels)

    def load(self, record: Record, *, min_side: int | None = None) -> np.ndarray:
        """Render ``record`` as a square (S, S, 3) RGB uint8 image, S = max(min_side, 32) or render_size."""
        size = self.options.render_size if min_side is None else max(int(min_side), MIN_RENDER)
        return render_face(self.face_params(record), size)
