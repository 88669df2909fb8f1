"""Procedural face renderer: label-conditioned synthetic faces drawn with anti-aliased OpenCV primitives.

A face is described by a :class:`~facelab.data.face_params.FaceParams` (a person plus what changes from
shot to shot: pose, light, expression, glasses, hat, background; sampled in
:mod:`facelab.data.face_params`). Geometry lives in resolution-free unit coordinates, so
:func:`render_face` draws the same face at any size (anti-aliased, sub-pixel ``shift``, at 2-3x then
area-averaged), then applies Lambertian-style shading from the light direction.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from facelab.data.face_params import FaceParams, Identity, mix_rgb, scale_rgb

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_DEPTH = 0.85  # face depth / face half-width, for yaw projection


# ---- geometry: head-frame points, projected all at once -----------------------------------------------
# A point is a row (a, b, z, rim, lead): ``a`` across and ``b`` down in face radii from the face centre.
# Surface points (rim = 0: eyes, nose, mouth) turn with yaw at depth ``z`` (NaN = on the cheek surface);
# silhouette points (rim = 1: outline, hair, hat) keep their width and move ``lead`` radii with yaw.
def _points(a, b, z, rim: float, lead: float) -> np.ndarray:
    a, b, z = np.asarray(a, float), np.asarray(b, float), np.asarray(z, float)
    out = np.empty((max(a.size, b.size, z.size), 5))
    out[:, 0], out[:, 1], out[:, 2], out[:, 3], out[:, 4] = a, b, z, rim, lead
    return out


def _surf(a, b, z=np.nan) -> np.ndarray:
    return _points(a, b, z, 0.0, 0.0)


def _rim(a, b, lead: float = 0.18) -> np.ndarray:
    return _points(a, b, 0.0, 1.0, lead)


def _stroke(center: np.ndarray, width, *, vertical: bool = False) -> np.ndarray:
    """A polygon around the polyline ``center`` (N, 5), ``width`` (scalar or (N,)) across b (or a)."""
    col = 0 if vertical else 1
    half = np.asarray(width, float) / 2
    out = np.concatenate([center, center[::-1]])
    out[: len(center), col] -= half
    out[len(center) :, col] += half if half.ndim == 0 else half[::-1]
    return out


def _oval(a0: float, b0: float, ra: float, rb: float, n: int = 14, *, rim: bool = False, z=np.nan) -> np.ndarray:
    a, b = a0 + ra * _COS[n], b0 + rb * _SIN[n]
    return _rim(a, b) if rim else _surf(a, b, z)


def _between(a: np.ndarray, top: np.ndarray, bottom: np.ndarray, z=np.nan) -> np.ndarray:
    """The surface polygon between two curves ``top(a)`` and ``bottom(a)``."""
    return np.concatenate([_surf(a, top, z), _surf(a[::-1], bottom[::-1], z)])


_ANGLES = {n: np.linspace(0, 2 * math.pi, n, endpoint=False) for n in (10, 14, 20, 40)}
_COS, _SIN = ({n: f(t) for n, t in _ANGLES.items()} for f in (np.cos, np.sin))
_FRACTIONS = {n: np.linspace(0.0, 1.0, n) for n in range(2, 41)}


def _span(lo: float, hi: float, n: int) -> np.ndarray:
    """``np.linspace(lo, hi, n)`` without its overhead (this module calls it thousands of times a second)."""
    return lo + (hi - lo) * _FRACTIONS[n]


class _Scene:
    """Polygons in head-frame coordinates, drawn in order once projected at the target size."""

    def __init__(self, p: FaceParams) -> None:
        self.p = p
        self.items: list[tuple[np.ndarray, tuple, float, bool, int]] = []  # pts, rgb, alpha, solid, outline_w

    def fill(self, pts: np.ndarray, rgb, *, alpha: float = 1.0, solid: bool = False) -> None:
        self.items.append((pts, tuple(int(c) for c in rgb), alpha, solid, 0))

    def ring(self, pts: np.ndarray, rgb, width: float) -> None:
        """A closed outline ``width`` (fraction of the image) thick."""
        self.items.append((pts, tuple(int(c) for c in rgb), 1.0, False, width))

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N, 5) head-frame points -> (N, 2) unit image coordinates."""
        p, (a, b, z, rim, lead) = self.p, pts.T
        rx, ry = p.person.face_w * p.scale, p.person.face_h * p.scale
        sin, cos = math.sin(p.yaw), math.cos(p.yaw)
        z = np.where(np.isnan(z), np.sqrt(np.clip(1 - a * a, 0, 1) * np.clip(1 - 0.35 * b * b, 0, 1)), z)
        width = math.sqrt(cos**2 + (_DEPTH * sin) ** 2)
        x = np.where(rim > 0, a * width + sin * (lead + 0.22 * np.clip(b, 0, None) ** 2), a * cos + _DEPTH * z * sin)
        y = b + (1 - rim) * p.pitch * z
        cr, sr = math.cos(p.roll), math.sin(p.roll)
        return np.stack([p.cx + rx * x * cr - ry * y * sr, p.cy + rx * x * sr + ry * y * cr], 1)

    def draw(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the (S, S, 3) albedo image and the (S, S) silhouette mask.

        cv2's anti-aliased fill grows shapes by about a pixel, which would thicken lips, lids and frames
        at small sizes; drawing at 2-3x and area-averaging down keeps them at their true size.
        """
        target, size = size, size * (3 if size < 48 else 2)
        img, mask = np.zeros((size, size, 3), np.uint8), np.zeros((size, size), np.uint8)
        xy = self.project(np.concatenate([it[0] for it in self.items]))
        fixed = np.round((xy * size - 0.5) * (1 << _SHIFT)).astype(np.int32)
        start, base, base_alpha = 0, None, 1.0
        for pts, rgb, alpha, solid, outline_w in self.items:
            poly = [fixed[start : start + len(pts)].reshape(-1, 1, 2)]
            start += len(pts)
            if alpha != base_alpha:  # blend the finished translucent group, start a new one
                if base is not None:
                    cv2.addWeighted(img, base_alpha, base, 1.0 - base_alpha, 0.0, dst=img)
                base, base_alpha = (img.copy() if alpha < 1.0 else None), alpha
            if outline_w:
                cv2.polylines(img, poly, True, rgb, max(1, round(outline_w * size)), cv2.LINE_AA, _SHIFT)
            else:
                cv2.fillPoly(img, poly, rgb, cv2.LINE_AA, _SHIFT)
            if solid:
                cv2.fillPoly(mask, poly, 255, cv2.LINE_AA, _SHIFT)
        if base is not None:
            cv2.addWeighted(img, base_alpha, base, 1.0 - base_alpha, 0.0, dst=img)
        shrink = (target, target)
        return (cv2.resize(img, shrink, interpolation=cv2.INTER_AREA),
                cv2.resize(mask, shrink, interpolation=cv2.INTER_AREA))


# ---- the parts of a face, back to front ---------------------------------------------------------------
def _face_outline(person: Identity) -> np.ndarray:
    c, s = _COS[40], _SIN[40]
    low = s > 0
    q, taper = 1.0 - 0.3 * person.jaw, 0.4 - 0.2 * person.jaw  # square jaw vs pointed chin
    a = np.where(low, np.sign(c) * np.abs(c) ** q * (1 - taper * s * s), c)
    return _rim(a, np.where(low, s * 1.04, s))


def _hairline(person: Identity, a: np.ndarray) -> np.ndarray:
    top = -person.hairline - 0.45 * person.recession
    prof = (1 - np.clip(np.abs(a + 0.1 * person.part) / 0.97, 0, 1) ** 2) ** 0.6
    temples = 0.3 * person.recession * np.exp(-(((np.abs(a) - 0.55) / 0.22) ** 2))
    return 0.1 + (top - 0.1) * prof - temples


def _body(sc: _Scene, person: Identity) -> None:
    nw = 0.45 + (0.12 if person.male else 0.0)
    neck = _rim([-nw, -nw * 1.05, nw * 1.05, nw], [0.4, 2.6, 2.6, 0.4], lead=0.05)
    sc.fill(neck, scale_rgb(person.skin, 0.8), solid=True)
    t = _ANGLES[20][10:]  # upper half
    sw = 2.1 + (0.25 if person.male else 0.0)
    sc.fill(_rim(sw * np.cos(t), 2.15 + 0.9 * np.sin(t), lead=0.05), sc.p.shirt, solid=True)
    sc.fill(_rim([-nw * 0.9, 0.0, nw * 0.9], [1.3, 1.65, 1.3], lead=0.05), scale_rgb(person.skin, 0.72))


def _hair_back(sc: _Scene, person: Identity) -> None:
    vol, length = person.hair_volume, person.hair_len
    if person.recession > 0.85:
        return
    if length < 0.2:  # cropped: a cap hugging the skull
        t = _span(math.pi - 0.35, 2 * math.pi + 0.35, 16)
        sc.fill(_rim(vol * np.cos(t), -0.05 + vol * 1.05 * np.sin(t), lead=0.02), person.hair, solid=True)
        return
    t = _span(math.pi, 2 * math.pi, 16)
    f, bot = vol * 1.05 + 0.15 * length, 0.4 + 1.9 * length
    top = _rim(vol * 1.05 * np.cos(t), -0.05 + vol * 1.08 * np.sin(t), lead=-0.05)
    down = _rim(f * np.array([1.0, 1.02, 0.97, 0.75, 0.3, -0.3, -0.75, -0.97, -1.02, -1.0]),
                [0.0, 0.5 * bot, bot - 0.2, bot - 0.05, bot, bot, bot - 0.05, bot - 0.2, 0.5 * bot, 0.0], lead=-0.05)
    sc.fill(np.concatenate([top, down]), person.hair, solid=True)
    for k, x in enumerate(_span(-0.8, 0.8, 5)):
        line = _rim([0.3 * x, 1.05 * x + 0.12 * np.sign(x), 1.1 * x + 0.25 * np.sign(x)], [-1.05, 0.0, bot - 0.1])
        sc.fill(_stroke(line, 0.05, vertical=True), scale_rgb(person.hair, 0.7 if k % 2 else 1.3), alpha=0.3)


def _ears(sc: _Scene, person: Identity, *, front: bool) -> None:
    sin = math.sin(sc.p.yaw)
    for side in (-1.0, 1.0):
        facing = -side * sin  # > 0: this ear turns towards the viewer
        if (facing > 0.25) != front or facing < -0.25:
            continue
        a = side * (1.0 - max(0.0, facing) * 0.6)
        w = 0.14 * (1 + max(0.0, facing))
        sc.fill(_oval(a, 0.12, w, 0.24, rim=True), scale_rgb(person.skin, 0.93), solid=True)
        sc.fill(_oval(a, 0.12, w * 0.5, 0.15, rim=True), scale_rgb(person.skin, 0.72))


def _hair_front(sc: _Scene, person: Identity) -> None:
    hair, vol = person.hair, person.hair_volume
    a = _span(0.97, -0.97, 17)
    inner = _surf(a, _hairline(person, a))
    side = 0.3 if person.hair_len < 0.2 else 0.08
    t = _span(math.pi - side, 2 * math.pi + side, 18)
    outer = _rim(vol * np.cos(t), -0.04 + vol * np.sin(t), lead=0.12)
    if person.recession < 0.85:
        sc.fill(np.concatenate([outer, inner]), hair, solid=True)
    else:  # bald crown: hair only above the ears
        for s in (-1, 1):
            sc.fill(_rim(s * np.array([1.05, 1.03, 0.9, 0.93]), [-0.4, 0.25, 0.2, -0.35]), hair, solid=True)
    if person.hair_len >= 0.2:  # locks framing the face
        low = min(0.3 + 1.6 * person.hair_len, 1.6)
        for s in (-1.0, 1.0):
            sc.fill(_rim(s * np.array([0.84, 0.88, 0.98, 1.1, 1.16, vol]), [-0.5, 0.1, 0.7, low, low, -0.3]),
                    hair, solid=True)
    for x in _span(-0.7, 0.7, 4):
        sc.fill(_stroke(_rim([0.2 * x, 0.9 * x + 0.2 * np.sign(x)], [-1.05, -0.55]), 0.05, vertical=True),
                scale_rgb(hair, 0.7), alpha=0.3)
    if person.bangs:
        a = _span(-0.92, 0.92, len(person.fringe))
        edge = -0.24 - np.asarray(person.fringe) + 0.08 * person.part * a - 0.12 * np.abs(a) ** 3
        sc.fill(_between(a, edge, _hairline(person, a) - 0.1), hair)
        for x in _span(-0.6, 0.6, 5):
            sc.fill(_stroke(_surf([0.8 * x, x], [-0.6, -0.3]), 0.035, vertical=True), scale_rgb(hair, 0.65), alpha=0.35)


def _beard(sc: _Scene, person: Identity) -> None:
    if person.beard not in ("stubble", "full"):
        return
    t = _span(0.1, math.pi - 0.1, 16)
    c, s = np.cos(t), np.sin(t)
    q, taper = 1.0 - 0.3 * person.jaw, 0.4 - 0.2 * person.jaw
    grow = 1.04 if person.beard == "stubble" else 1.12
    jaw = _rim(np.sign(c) * np.abs(c) ** q * (1 - taper * np.clip(s, 0, 1) ** 2) * 0.99, s * grow)
    a = _span(-0.8, 0.8, 7)
    top = _surf(a, 0.36 + 0.25 * a**2 - 0.4 * np.clip(np.abs(a) - 0.6, 0, None))
    sc.fill(np.concatenate([jaw, top]), scale_rgb(person.hair, 0.85), alpha=0.35 if person.beard == "stubble" else 0.92)


def _wrinkles(sc: _Scene, person: Identity) -> None:
    smile = max(0.0, sc.p.smile)
    depth = max(person.wrinkles, 0.6 * smile)
    if depth <= 0:
        return
    ink, alpha = scale_rgb(person.skin, 0.55), 0.45 * depth
    for s in (-1, 1):  # nasolabial folds
        fold = _surf(s * np.array([0.17, 0.25, 0.32 + 0.05 * smile]), [0.3, 0.45, 0.62])
        sc.fill(_stroke(fold, 0.025, vertical=True), ink, alpha=alpha)
    if person.wrinkles == 0:
        return
    a = _span(-0.45, 0.45, 7)
    for b in (-0.36, -0.46):
        sc.fill(_stroke(_surf(a, b + 0.04 * (a / 0.45) ** 2), 0.018), ink, alpha=alpha)
    for s in (-1, 1):
        ea = s * (person.eye_gap + 0.2)
        sc.fill(_stroke(_surf([ea, ea + s * 0.1], [0.0, -0.05]), 0.014), ink, alpha=alpha)
        sc.fill(_stroke(_surf([ea, ea + s * 0.1], [0.04, 0.1]), 0.014), ink, alpha=alpha)
        ua = s * person.eye_gap + _span(-0.12, 0.12, 5)
        sc.fill(_stroke(_surf(ua, 0.15 + 0.03 * _span(-1, 1, 5) ** 2), 0.018), ink, alpha=alpha)


def _eyes(sc: _Scene, person: Identity) -> None:
    p = sc.p
    squint = 0.7 if p.smile > 0.5 else 1.0
    c, s = _COS[14], _SIN[14]
    lid_t = _span(math.pi - 0.25, 2 * math.pi + 0.25, 9)
    for side in (-1.0, 1.0):
        a0, ew, eh = side * person.eye_gap, 0.17 * person.eye_size, 0.085 * person.eye_size * squint
        sc.fill(_surf(a0 + ew * c, eh * s * (1 - 0.25 * c * side)), mix_rgb(person.skin, (246, 244, 240), 0.75))
        ia, ir = a0 + (p.gaze + 0.4 * math.sin(p.yaw)) * ew * 0.5, 0.085 * person.eye_size
        for r, rgb in ((ir, person.iris), (0.45 * ir, (18, 14, 14))):
            sc.fill(_surf(ia + r * c * 0.75, np.clip(r * s, -eh * 0.95, eh * 0.95)), rgb)
        lid = _surf(a0 + ew * 1.04 * np.cos(lid_t), eh * 1.04 * np.sin(lid_t) - 0.005)
        sc.fill(_stroke(lid, 0.022 if person.male else 0.034), mix_rgb(person.skin, (34, 24, 22), 0.75))
        arch = _span(-1, 1, 7)
        brow = _surf(a0 + side * (0.04 + 0.16 * arch), -0.25 - person.brow_arch * (1 - arch**2) - 0.02 * side * arch)
        sc.fill(_stroke(brow, person.brow_w * (1.2 - 0.45 * (side * arch + 1) / 2)), person.brows)


def _nose(sc: _Scene, person: Identity) -> None:
    p, skin = sc.p, person.skin
    nl, nw = person.nose_len, person.nose_w
    sin = math.sin(p.yaw)
    shade_side = 1.0 if (sin > 0.15 or (abs(sin) <= 0.15 and p.light[0] < 0)) else -1.0
    ridge = _surf(shade_side * np.array([0.1, 0.09, nw * 0.7]), [-0.05, nl * 0.6, nl - 0.01], [1.0, 1.12, 1.2])
    sc.fill(_stroke(ridge, 0.045, vertical=True), scale_rgb(skin, 0.62), alpha=0.4)
    base = _span(-nw, nw, 7)
    sc.fill(_stroke(_surf(base, nl + 0.05 - 0.05 * (1 - (base / nw) ** 2), 1.1), 0.035), scale_rgb(skin, 0.6), alpha=0.4)
    for s in (-1.0, 1.0):
        sc.fill(_oval(s * nw * 0.45, nl + 0.025, 0.055, 0.028, n=10, z=1.13), scale_rgb(skin, 0.38))


def _mouth(sc: _Scene, person: Identity) -> None:
    p, smile = sc.p, sc.p.smile
    grin = max(0.0, smile)
    mw = person.mouth_w * (1 + 0.3 * grin)
    t = _span(-1, 1, 11)
    a, bulge = t * mw, np.sqrt(1 - t**2)
    mid = 0.56 - 0.14 * smile * t**2 + 0.03 * smile
    z, lips = 1.02, person.lips
    thin = 1.0 - 0.35 * grin  # lips stretch when smiling
    up = low = mid
    if smile > 0.5 and p.teeth:
        gap = 0.2 * smile * bulge
        up, low = mid - 0.02 * bulge, mid + gap
        sc.fill(_between(a, up, low, z), (60, 18, 22))
        sc.fill(_between(a * 0.92, up, up + 0.7 * gap, z), (240, 236, 226))
    sc.fill(_between(a, up, up - 0.05 * thin * person.lip_full * bulge, z), lips)
    sc.fill(_between(a, low, low + 0.07 * thin * person.lip_full * bulge, z), scale_rgb(lips, 1.06))
    if up is low:
        sc.fill(_stroke(_surf(a, mid, z), 0.025 + 0.02 * grin), scale_rgb(lips, 0.45))
    if grin > 0.5:  # raised cheeks
        for s in (-1.0, 1.0):
            sc.fill(_oval(s * 0.5, 0.3, 0.2, 0.12, n=10), scale_rgb(person.skin, 1.12), alpha=0.5)
    if person.beard in ("mustache", "full"):
        a = _span(-mw - 0.06, mw + 0.06, 9)
        sc.fill(_stroke(_surf(a, 0.46 + 0.12 * a**2, 1.05), 0.07), scale_rgb(person.hair, 0.8))


def _glasses(sc: _Scene, person: Identity) -> None:
    p, n = sc.p, sc.p.glasses_round
    ux = np.sign(_COS[20]) * np.abs(_COS[20]) ** (2 / n)  # a superellipse: round (n = 2) to rectangular
    uy = np.sign(_SIN[20]) * np.abs(_SIN[20]) ** (2 / n)
    lenses = [_surf(s * person.eye_gap + 0.27 * ux, 0.02 + 0.2 * uy, 1.12) for s in (-1.0, 1.0)]
    for lens in lenses:
        sc.fill(lens, (200, 215, 230), alpha=p.lens_alpha)
    width = p.glasses_w * p.person.face_h * p.scale
    for lens in lenses:
        sc.ring(lens, p.glasses_rgb, width * 2.5)
    g = person.eye_gap
    sc.fill(_stroke(_surf([-g + 0.27, -0.1, 0.0, 0.1, g - 0.27], [0.0, -0.04, -0.06, -0.04, 0.0], 1.15), 0.05),
            p.glasses_rgb)
    sin = math.sin(p.yaw)
    for s in (-1.0, 1.0):
        if -s * sin > -0.3:  # the temple arm on a side facing the viewer
            arm = np.concatenate([_surf(s * (g + 0.27), -0.02, 1.12), _rim(s * (1.0 - max(0.0, -s * sin) * 0.6), 0.0)])
            sc.fill(_stroke(arm, 0.045), p.glasses_rgb)


def _hat(sc: _Scene, person: Identity) -> None:
    p, vol = sc.p, person.hair_volume * 1.03
    if p.hat_kind == "brimmed":
        sc.fill(_oval(0.0, -0.62, 1.6, 0.2, n=20, rim=True), scale_rgb(p.hat_rgb, 0.85), solid=True)
        t = _span(math.pi, 2 * math.pi, 10)
        crown = _rim(np.r_[-0.8, 0.72 * np.cos(t), 0.8], np.r_[-0.62, -1.3 + 0.25 * np.sin(t), -0.62])
        sc.fill(crown, p.hat_rgb, solid=True)
        sc.fill(_rim([-0.8, 0.8, 0.79, -0.79], [-0.64, -0.64, -0.8, -0.8]), p.hat_trim)
        return
    cuff = -0.4 if p.hat_kind == "beanie" else -0.5
    t = _span(math.pi, 2 * math.pi, 16)
    a = _span(1.0, -1.0, 9)
    edge = _rim(a * vol * 1.01, cuff - 0.03 * a**2)
    dome = _rim(vol * 1.01 * np.cos(t), cuff + (vol * 1.1 + cuff) * np.sin(t))
    sc.fill(np.concatenate([dome, edge]), p.hat_rgb, solid=True)
    if p.hat_kind == "beanie":
        sc.fill(np.concatenate([edge[::-1], _rim(a * vol * 1.02, cuff - 0.2 - 0.03 * a**2)]), scale_rgb(p.hat_rgb, 0.78))
    else:
        sc.fill(_oval(0.0, cuff + 0.02, 0.8, 0.16, n=20, z=1.35)[:11], scale_rgb(p.hat_rgb, 0.75), solid=True)


# ---- light, background, finishing ---------------------------------------------------------------------
@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) unit coordinates of pixel centres, x and y."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c)


def _shading(p: FaceParams, size: int) -> np.ndarray:
    """(S, S) light factor on the person: wrapped Lambertian on a head-shaped normal field."""
    xs, ys = _grid(size)
    rx, ry = p.person.face_w * p.scale, p.person.face_h * p.scale
    u = np.clip((xs - p.cx - 0.1 * math.sin(p.yaw) * rx) / (1.05 * rx), -1.0, 1.0)
    v = np.clip((ys - p.cy + 0.1 * ry) / (1.1 * ry), -1.0, 0.6)
    nz = np.sqrt(np.clip(1.0 - u * u - v * v, 0.02, 1.0))
    lx, ly, lz = p.light
    lambert = np.clip((u * lx + v * ly + nz * lz + 0.15) / 1.15, 0.0, 1.0)
    return p.ambient + (1.0 - p.ambient) * lambert


def _background(p: FaceParams, mask: np.ndarray, size: int) -> np.ndarray:
    """(S, S, 3) float background: a two-colour gradient, brighter on the lit side, with a soft cast shadow."""
    xs, ys = _grid(size)
    t = np.clip(0.5 + math.cos(p.bg_angle) * (xs - 0.5) + math.sin(p.bg_angle) * (ys - 0.5), 0.0, 1.0)
    a, b = np.asarray(p.bg_a, np.float32), np.asarray(p.bg_b, np.float32)
    bg = a + (b - a) * t[..., None]  # (S, S, 3)
    light = 1.0 + 0.45 * p.light[0] * (2.0 * xs - 1.0)
    dx, dy = int(round(-p.light[0] * 0.1 * size)), int(round(0.03 * size))
    shadow = np.zeros_like(mask)
    shadow[dy:, max(dx, 0) : size + min(dx, 0)] = mask[: size - dy, max(-dx, 0) : size - max(dx, 0)]
    k = max(3, size // 8) | 1
    shadow = cv2.blur(shadow, (k, k)).astype(np.float32) * (0.4 * abs(p.light[0]) / 255.0)
    return bg * (light * (1.0 - shadow))[..., None]


def render_face(params: FaceParams, size: int) -> np.ndarray:
    """Render ``params`` as a (size, size, 3) RGB uint8 image, drawn directly at that size.

    Args:
        params: the face (see :func:`facelab.data.face_params.sample_face_params`).
        size: side in pixels (>= 8); the same params give the same face at every size.
    """
    if size < 8:
        raise ValueError(f"render size must be at least 8 pixels, got {size}")
    sc, person, labels = _Scene(params), params.person, params.labels
    _body(sc, person)
    _hair_back(sc, person)
    _ears(sc, person, front=False)
    sc.fill(_face_outline(person), person.skin, solid=True)
    _wrinkles(sc, person)
    _beard(sc, person)
    _hair_front(sc, person)
    _ears(sc, person, front=True)
    _eyes(sc, person)
    _nose(sc, person)
    _mouth(sc, person)
    if labels.hat:
        _hat(sc, person)
    if labels.eyeglasses:
        _glasses(sc, person)
    img, mask = sc.draw(size)
    alpha = mask.astype(np.float32) * np.float32(1 / 255)  # (S, S)
    shade = _shading(params, size) * alpha  # (S, S)
    bg = _background(params, mask, size)  # (S, S, 3)
    lit = img.astype(np.float32) * np.asarray(params.light_rgb, np.float32)  # (S, S, 3)
    out = bg * (1.0 - alpha)[..., None] + lit * shade[..., None]
    if params.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), params.blur * size / 64)
    if params.noise > 0:
        out += _noise(size, params.noise_seed) * params.noise
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def face_landmarks(params: FaceParams, size: int) -> np.ndarray:
    """(5, 2) float32 (x, y) pixel positions of the face's five landmarks in :func:`render_face` ``(params, size)``.

    In facelab's order and convention (:data:`facelab.faces.face.LANDMARK_NAMES`: image-left eye, image-right
    eye, nose tip, image-left and image-right mouth corner; pixel centres at integers): the eye centres, the
    tip of the nose, and the ends of the lip line, projected exactly as they are drawn (yaw, pitch, roll).
    """
    return (_Scene(params).project(_landmark_points(params)) * size - 0.5).astype(np.float32)  # unit -> pixels


def _landmark_points(params: FaceParams) -> np.ndarray:
    """(5, 5) head-frame points of the five landmarks (see :func:`face_landmarks`)."""
    person, smile = params.person, params.smile
    mouth_w = person.mouth_w * (1 + 0.3 * max(0.0, smile))  # as _mouth draws it
    corner_b = 0.56 - 0.11 * smile  # the lip line's height at its ends (t = +-1 in _mouth)
    return np.concatenate([_surf(-person.eye_gap, 0.0), _surf(person.eye_gap, 0.0),
                           _surf(0.0, person.nose_len, 1.2), _surf(-mouth_w, corner_b, 1.02),
                           _surf(mouth_w, corner_b, 1.02)])


def landmark_model(params: FaceParams) -> np.ndarray:
    """(5, 3) the five landmarks of this face's head as a 3D model in the frame of
    :data:`facelab.labelers.orientation.MEAN_FACE` (x right, y down, z away from the camera, any unit):
    what the face is before yaw, pitch and roll turn it. These drawn faces are flatter than a person's head
    (the nose stands out less from the eyes and mouth), so a pose fitted with this model is exact where one
    fitted with the mean human face reads about two thirds of the yaw."""
    pts = _landmark_points(params)
    a, b, z = pts[:, 0], pts[:, 1], pts[:, 2]
    z = np.where(np.isnan(z), np.sqrt(np.clip(1 - a * a, 0, 1) * np.clip(1 - 0.35 * b * b, 0, 1)), z)
    rx, ry = params.person.face_w, params.person.face_h
    return np.stack([a * rx, b * ry, -_DEPTH * z * rx], 1)


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    """A fixed (2S, 2S, 3) field of unit Gaussian noise; images take seeded windows of it."""
    return np.random.default_rng(size).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def _noise(size: int, seed: int) -> np.ndarray:
    """(S, S, 3) unit Gaussian noise: the window of the bank that ``seed`` picks (S * S variants)."""
    y, x = seed % size, (seed // size) % size
    return _noise_bank(size)[y : y + size, x : x + size]
