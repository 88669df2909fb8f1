"""What a synthetic face is: its labels, the person (:class:`Identity`) and the shot (:class:`FaceParams`).

Sampling consumes a fixed number of random draws whatever the labels, so flipping one label of the same
seed gives a counterfactual of the same person and shot (e.g. the same face with and without glasses).
:mod:`facelab.data.render_face` draws a :class:`FaceParams` at any size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HAIR_COLORS = ("black", "blond", "brown", "gray")
DIRECTIONS = ("left", "center", "right")  # yaw: where the face points; light: where the light comes from
BEARDS = ("none", "stubble", "mustache", "full")
HATS = ("beanie", "cap", "brimmed")

_HAIR_RGB = {"black": (30, 26, 24), "blond": (212, 176, 110), "brown": (100, 64, 40), "gray": (176, 174, 170)}
_OLD_GRAY = np.array((178, 176, 172), float)
_SKIN_RAMP = np.array([(252, 226, 210), (238, 196, 164), (206, 150, 110), (150, 100, 68), (92, 60, 44)], float)
_EYE_RGB = ((58, 36, 22), (94, 60, 34), (118, 96, 52), (76, 112, 70), (72, 112, 164), (112, 122, 132))
_FRAME_RGB = ((22, 22, 24), (78, 44, 26), (168, 136, 70), (140, 30, 36), (32, 52, 112), (128, 128, 134))


class _Draws:
    """Uniform draws consumed in a fixed order, so that labels never shift the random stream."""

    def __init__(self, rng: np.random.Generator, n: int = 64) -> None:
        self._u = rng.random(n)
        self._i = 0

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        v = self._u[self._i]
        self._i += 1
        return lo + (hi - lo) * float(v)

    def pick(self, options, weights=None):
        weights = [1.0] * len(options) if weights is None else weights
        target, acc = self.u() * sum(weights), 0.0
        for option, w in zip(options, weights):
            acc += w
            if target < acc:
                return option
        return options[-1]

    def rgb(self, base, jitter: float) -> tuple[float, float, float]:
        return tuple(min(255.0, max(0.0, float(c) + self.u(-jitter, jitter))) for c in base)


def mix_rgb(a, b, t: float) -> tuple[float, float, float]:
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))


def scale_rgb(a, k: float) -> tuple[float, float, float]:
    return tuple(min(255.0, float(x) * k) for x in a)


@dataclass(frozen=True)
class FaceLabels:
    """The labels a face is rendered for (names follow CelebA where it has the attribute)."""

    male: bool = False
    smiling: bool = False
    eyeglasses: bool = False
    bangs: bool = False
    young: bool = True
    hat: bool = False
    hair_color: str = "brown"
    yaw: str = "center"
    light: str = "center"

    def __post_init__(self) -> None:
        if self.hair_color not in HAIR_COLORS:
            raise ValueError(f"hair_color {self.hair_color!r} is not one of {HAIR_COLORS}")
        for name in ("yaw", "light"):
            if getattr(self, name) not in DIRECTIONS:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {DIRECTIONS}")


@dataclass(frozen=True)
class Identity:
    """A person: what stays fixed across their images. Lengths are in face radii, colours RGB 0..255."""

    male: bool
    young: bool
    bangs: bool
    hair_color: str
    face_w: float  # face half-width, fraction of the image
    face_h: float  # face half-height, fraction of the image
    jaw: float  # 0 = narrow, pointed chin .. 1 = broad, square jaw
    skin: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    hair: tuple[float, float, float]
    brows: tuple[float, float, float]
    hair_len: float  # 0 = cropped, 0.3 = ear length, 1 = past the shoulders
    hair_volume: float
    hairline: float  # forehead top, in face radii above the eye line
    part: float  # -1..1, side parting / fringe sweep
    recession: float  # 0 = full hairline, 1 = bald crown
    fringe: tuple[float, ...]  # jagged offsets of the fringe's lower edge
    brow_w: float
    brow_arch: float
    eye_size: float
    eye_gap: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip_full: float
    beard: str
    wrinkles: float  # 0 = smooth skin, 1 = deep lines


@dataclass(frozen=True)
class FaceParams:
    """Everything :func:`render_face` needs: labels, the person, and this shot's nuisance factors."""

    labels: FaceLabels
    person: Identity
    yaw: float  # radians, positive = face turned towards image right
    roll: float  # radians
    pitch: float  # vertical shift of near-surface points, in face radii
    cx: float
    cy: float
    scale: float
    light: tuple[float, float, float]  # unit vector towards the light (x right, y down, z to viewer)
    ambient: float
    light_rgb: tuple[float, float, float]  # per-channel gain
    smile: float  # mouth-corner lift, -0.3 (down) .. 1 (broad smile)
    teeth: bool
    gaze: float
    glasses_rgb: tuple[float, float, float]
    glasses_w: float
    glasses_round: float  # 2 = round lenses .. 5 = rectangular
    lens_alpha: float
    hat_kind: str
    hat_rgb: tuple[float, float, float]
    hat_trim: tuple[float, float, float]
    bg_a: tuple[float, float, float]
    bg_b: tuple[float, float, float]
    bg_angle: float
    shirt: tuple[float, float, float]
    noise: float  # Gaussian pixel noise sigma (0..255 scale)
    blur: float  # Gaussian blur sigma in pixels at 64 px (0 = sharp)
    noise_seed: int


def sample_identity(rng: np.random.Generator, *, male: bool, young: bool, bangs: bool, hair_color: str) -> Identity:
    """Sample a person's fixed look for the given person-level labels.

    Args:
        rng: source of randomness; exactly one ``rng.random(64)`` call is made.
        male, young, bangs, hair_color: the person-level labels the look must show.
    """
    d = _Draws(rng)
    t = d.u() * (len(_SKIN_RAMP) - 1)
    k = min(int(t), len(_SKIN_RAMP) - 2)
    skin = d.rgb(_SKIN_RAMP[k] * (k + 1 - t) + _SKIN_RAMP[k + 1] * (t - k), 9)
    if not young:  # older skin: less saturated, a little sallower
        skin = scale_rgb(mix_rgb(skin, (np.mean(skin),) * 3, 0.3), 0.95)
    dark = t / (len(_SKIN_RAMP) - 1)
    hair = scale_rgb(d.rgb(_HAIR_RGB[hair_color], 14), d.u(0.82, 1.18))
    gray_tinge = d.u(0.25, 0.55)
    if not young and hair_color != "gray":
        hair = mix_rgb(hair, _OLD_GRAY, gray_tinge)
    brows = mix_rgb(hair, (60, 44, 34), 0.55 if hair_color in ("blond", "gray") else 0.2)
    lipstick = d.u() < (0.0 if male else 0.35)
    lips = mix_rgb(mix_rgb(skin, (176, 84, 90), d.u(0.25, 0.4)), (168, 34, 52), 0.45 if lipstick else 0.0)
    long_u, len_u, bald_u, rec_u, beard_u = d.u(), d.u(), d.u(), d.u(), d.u()
    if male:
        hair_len = 0.35 + 0.2 * len_u if long_u < 0.1 else 0.15 * len_u
        recession = 0.3 + 0.7 * rec_u if (not young and bald_u < 0.35) else 0.15 * rec_u
    else:
        hair_len = 0.25 + 0.15 * len_u if long_u < 0.12 else 0.6 + 0.4 * len_u
        recession = 0.0
    beard = BEARDS[int(np.searchsorted([0.45, 0.73, 0.85], beard_u, side="right"))] if male else "none"
    return Identity(
        male=male, young=young, bangs=bangs, hair_color=hair_color,
        face_w=d.u(0.225, 0.255) + (0.015 if male else 0.0),
        face_h=d.u(0.3, 0.335) + (0.01 if male else 0.0),
        jaw=d.u(0.55, 1.0) if male else d.u(0.0, 0.35),
        skin=skin, lips=lips, hair=hair, brows=brows,
        iris=d.rgb(d.pick(_EYE_RGB, [3, 3, 1.5, 1 - dark, 1.5 * (1 - dark), 1 - dark]), 10),
        hair_len=hair_len, hair_volume=d.u(1.05, 1.18) + (0.0 if male else 0.05),
        hairline=d.u(0.48, 0.6), part=d.u(-1, 1), recession=recession,
        fringe=tuple(d.u(0.0, 0.07) for _ in range(9)),
        brow_w=d.u(0.075, 0.1) if male else d.u(0.04, 0.06), brow_arch=d.u(0.02, 0.07),
        eye_size=d.u(0.85, 1.15) * (0.93 if male else 1.05), eye_gap=d.u(0.36, 0.42),
        nose_len=d.u(0.26, 0.34), nose_w=d.u(0.13, 0.19) + (0.02 if male else 0.0),
        mouth_w=d.u(0.32, 0.42), lip_full=d.u(0.6, 1.0) * (0.8 if male else 1.1),
        beard=beard, wrinkles=(0.0 if young else 1.0) * d.u(0.45, 1.0),
    )


def sample_shot(rng: np.random.Generator, person: Identity, labels: FaceLabels) -> FaceParams:
    """Sample one image of ``person``: pose, light, expression and accessories showing ``labels``.

    Args:
        rng: source of randomness; exactly one ``rng.random(64)`` call plus one integer draw.
        person: the fixed look (its person-level labels win over those in ``labels``).
        labels: the shot-level labels (smiling, eyeglasses, hat, yaw, light).
    """
    d = _Draws(rng)
    side = {"left": -1.0, "center": 0.0, "right": 1.0}
    yaw = math.radians(side[labels.yaw] * d.u(28, 40) + d.u(-5, 5))
    lx = side[labels.light] * d.u(0.55, 0.85) + d.u(-0.1, 0.1)
    ly = d.u(-0.55, -0.1)
    light = np.array([lx, ly, d.u(0.5, 0.9)])
    light /= np.linalg.norm(light)
    bg_a = d.rgb((d.u(40, 225),) * 3, 45)
    smile_u, teeth_u, blur_u, blur = d.u(), d.u(), d.u(), d.u(0.2, 0.6)
    return FaceParams(
        labels=labels, person=person, yaw=yaw,
        roll=math.radians(d.u(-5, 5)), pitch=d.u(-0.08, 0.08),
        cx=0.5 + d.u(-0.02, 0.02), cy=0.5 + d.u(-0.02, 0.02), scale=d.u(0.95, 1.05),
        light=tuple(float(v) for v in light), ambient=d.u(0.18, 0.35),
        light_rgb=(d.u(1.04, 1.18), 1.1, d.u(1.02, 1.16)),
        smile=0.55 + 0.45 * smile_u if labels.smiling else -0.3 + 0.4 * smile_u,
        teeth=teeth_u < 0.85, gaze=d.u(-0.25, 0.25),
        glasses_rgb=d.rgb(d.pick(_FRAME_RGB, [4, 2, 1, 1, 1, 1]), 12),
        glasses_w=d.u(0.012, 0.028), glasses_round=d.u(2.0, 5.0), lens_alpha=d.u(0.05, 0.3),
        hat_kind=d.pick(HATS), hat_rgb=d.rgb((d.u(20, 220), d.u(20, 200), d.u(20, 200)), 20),
        hat_trim=d.rgb((d.u(10, 240),) * 3, 30),
        bg_a=bg_a, bg_b=mix_rgb(bg_a, d.rgb((d.u(30, 230),) * 3, 60), d.u(0.2, 0.8)),
        bg_angle=d.u(0, 2 * math.pi),
        shirt=d.rgb((d.u(20, 230), d.u(20, 230), d.u(20, 230)), 10),
        noise=d.u(0.0, 4.0), blur=blur if blur_u < 0.25 else 0.0,
        noise_seed=int(rng.integers(2**31)),
    )


def sample_face_params(seed: int | list[int], labels: FaceLabels) -> FaceParams:
    """Sample a person and one shot of them from ``seed`` (an int or a list of ints), showing ``labels``."""
    ss = np.random.SeedSequence(seed)
    rng_person, rng_shot = (np.random.default_rng(s) for s in ss.spawn(2))
    person = sample_identity(
        rng_person, male=labels.male, young=labels.young, bangs=labels.bangs, hair_color=labels.hair_color
    )
    return sample_shot(rng_shot, person, labels)
