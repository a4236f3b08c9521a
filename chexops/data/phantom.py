"""Chest X-ray phantoms whose findings follow given severities.

A phantom is drawn in normalised coordinates (y from -1 at the top to 1 at the bottom, x on the same scale,
0 at the body midline) as an attenuation map, larger meaning denser and brighter, then exposed to 8 bits.
As on a real frontal film the patient's left is the image's right, so the heart bulges right of centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from chexops.data.labels import OBSERVATIONS
from chexops.data.phantom_geometry import bezier, ellipse_d, noise, polyline_d, soft
from chexops.errors import ConfigError

Arr = np.ndarray
VIEWS = ("frontal", "lateral")
_I = {name: i for i, name in enumerate(OBSERVATIONS)}
_AIR = 0.22  # attenuation that a fully aerated lung removes from the soft-tissue background


@dataclass(frozen=True)
class Anatomy:
    """One patient's habitus and positioning, shared by all of their images."""

    thorax: float  # lung-field width scale
    body: float  # soft-tissue width scale
    height: float  # lung height scale
    ctr: float  # cardiothoracic ratio of the healthy heart
    mediastinum: float  # half-width of the healthy upper mediastinum
    dome: float  # diaphragm level offset
    tilt: float  # rotation in radians
    dx: float
    dy: float
    zoom: float


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random, plausible patient."""
    return Anatomy(
        thorax=rng.uniform(0.9, 1.06), body=rng.uniform(0.95, 1.2), height=rng.uniform(0.9, 1.06),
        ctr=rng.uniform(0.38, 0.47), mediastinum=rng.uniform(0.085, 0.115), dome=rng.normal(0, 0.03),
        tilt=rng.normal(0, 0.035), dx=rng.normal(0, 0.03), dy=rng.normal(0, 0.03), zoom=rng.uniform(0.92, 1.04),
    )


@dataclass(frozen=True)
class _Lung:
    cx: float
    cy: float
    ax: float
    ay: float
    side: int  # direction of the chest wall: -1/+1 on a frontal, +1 (posterior) on a lateral
    base: float  # diaphragm level at the costophrenic angle
    dome_cx: float


@dataclass(frozen=True)
class _Scene:
    """What every drawing step needs: the coordinate grid, severities, placements and the image's rng."""

    X: Arr
    Y: Arr
    px: float  # one pixel in normalised units
    s: dict[str, float]
    anat: Anatomy
    place: dict
    rng: np.random.Generator
    view: str
    ap: bool

    def lung(self, lungs: list[_Lung], side: int) -> _Lung:
        return lungs[0] if len(lungs) == 1 else lungs[side > 0]

    def at(self, L: _Lung, p: dict) -> tuple[float, float]:
        """A placement's point in lung L: u across it towards the wall, or depth on a lateral."""
        u = p["u"] if self.view == "frontal" else p["depth"]
        return L.cx + L.side * u * L.ax, L.cy + p["v"] * L.ay


def render(severity: Arr | list[float], rng: np.random.Generator, size: int = 320, *,
           view: str = "frontal", width: int | None = None, ap: bool = False,
           anatomy: Anatomy | None = None, study_seed: int | None = None, exposure: float = 1.0) -> Arr:
    """Render a phantom as a (size, width) uint8 array.

    severity holds 14 values in OBSERVATIONS order: 0 absent, up to 1 marked (No Finding is ignored).
    rng drives what varies per image (exposure, noise, jitter). The patient's anatomy and the study's
    finding placement (from study_seed) are drawn from rng when not given; pass them to make several
    views of one study agree. `exposure` scales how much the exposure (window and gamma) varies between images:
    1 as on the wards, 0 every image exposed alike; the random draws are the same whatever its value.
    """
    sev = np.asarray(severity, dtype=np.float64)
    if sev.shape != (len(OBSERVATIONS),) or not np.all((sev >= 0) & (sev <= 1)):
        raise ConfigError(f"severity must be {len(OBSERVATIONS)} values in [0, 1] in OBSERVATIONS order, "
                          f"got shape {sev.shape}; pass one value per observation.")
    if view not in VIEWS:
        raise ConfigError(f"view must be one of {VIEWS}, got {view!r}.")
    width = size if width is None else width
    if size < 16 or not 16 <= width <= 4 * size:
        raise ConfigError(f"image size {size}x{width} is too small or too oblong; use at least 16 px.")
    anatomy = anatomy or sample_anatomy(rng)
    seed = int(rng.integers(2**62)) if study_seed is None else study_seed
    place = _placements(np.random.default_rng(seed))
    X, Y, px = _grid(size, width, anatomy, rng)
    c = _Scene(X, Y, px, {name: float(sev[i]) for name, i in _I.items()}, anatomy, place, rng, view, ap)
    return _expose(_frontal(c) if view == "frontal" else _lateral(c), rng, px, exposure)


def _placements(rng: np.random.Generator) -> dict[str, dict]:
    """Where each finding sits in a study; drawn in a fixed order so views and severities don't shift it."""
    def side() -> int:
        return int(rng.choice((-1, 1)))

    def spot(v_lo: float, v_hi: float) -> dict:
        return {"side": side(), "u": rng.uniform(-0.35, 0.55), "v": rng.uniform(v_lo, v_hi),
                "depth": rng.uniform(-0.6, 0.6)}

    return {
        "effusion": {"sides": (-1, 1) if rng.random() < 0.45 else (side(),), "second": rng.uniform(0.5, 1)},
        "consolidation": spot(-0.3, 0.6) | {"r": rng.uniform(0.8, 1.25), "angle": rng.uniform(0, math.pi)},
        "pneumonia": spot(0.0, 0.6),
        "opacity": spot(-0.4, 0.5) | {"r": rng.uniform(0.9, 1.3)},
        "atelectasis": spot(0.25, 0.65) | {"angle": rng.normal(0, 0.25), "two": rng.random() < 0.4},
        "lesion": spot(-0.5, 0.5) | {"r": rng.uniform(0.85, 1.15)},
        "pneumothorax": {"side": side()},
        "pleural_other": {"side": side(), "v": rng.uniform(-0.4, 0.3)},
        "fracture": {"side": side(), "rib": int(rng.integers(3, 9)), "u": rng.uniform(0.22, 0.48)},
        "devices": {"kinds": _device_kinds(rng), "side": side(), "jit": rng.normal(0, 0.04, 8),
                    "ecg": rng.uniform(-1, 1, (4, 2))},
    }


def _device_kinds(rng: np.random.Generator) -> tuple[str, ...]:
    kinds = [k for k, p in (("ett", 0.35), ("cvc", 0.45), ("ecg", 0.4), ("ngt", 0.25), ("pacer", 0.12))
             if rng.random() < p]
    return tuple(kinds) or (str(rng.choice(("cvc", "ecg", "pacer"))),)


def _grid(h: int, w: int, anat: Anatomy, rng: np.random.Generator) -> tuple[Arr, Arr, float]:
    px = 2.0 / h
    y = ((np.arange(h, dtype=np.float32) + 0.5) * px - 1.0)[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5 - w / 2) * px)[None, :]
    t = anat.tilt + rng.normal(0, 0.01)
    c, s = math.cos(t), math.sin(t)
    z = anat.zoom * rng.uniform(0.98, 1.02)
    X = (c * x + s * y) / z - np.float32(anat.dx + rng.normal(0, 0.01))
    Y = (c * y - s * x) / z - np.float32(anat.dy + rng.normal(0, 0.01))
    return X, Y, px / z


def _lung_d(X: Arr, Y: Arr, L: _Lung) -> Arr:
    u, v = np.abs((X - L.cx) / L.ax), (Y - L.cy) / L.ay
    # a round apex but a squared-off base, so the costophrenic angle is sharp until fluid blunts it
    u2, v2 = u * u, v * v
    r = np.sqrt(np.where(v < 0, u2 + v2, np.sqrt(u2 * u2 + v2 * v2)))
    return (r - 1) * min(L.ax, L.ay)


def _dome(X: Arr, L: _Lung) -> Arr:
    """Level of the top of the diaphragm under lung L."""
    return L.base - 0.17 * L.ay / 0.6 * np.exp(-(((X - L.dome_cx) / (0.8 * L.ax)) ** 2))


def _lung_mask(X: Arr, Y: Arr, L: _Lung, w: float) -> Arr:
    return soft(_lung_d(X, Y, L), w) * soft(Y - _dome(X, L), w)


def _opacities(c: _Scene, lungs: list[_Lung]) -> Arr:
    """Fraction of lung air that the airspace findings replace, clipped to [0, 1]."""
    X, Y, s, place = c.X, c.Y, c.s, c.place
    opq = np.zeros_like(X)
    if s["Edema"]:  # bilateral perihilar haze, the "butterfly"
        tex = 0.6 + 0.4 * np.clip(noise(c.rng, X, Y, 14), -1, 1)
        for L in lungs:
            hx, hy = L.cx - L.side * 0.45 * L.ax, L.cy + 0.15 * L.ay
            opq += (0.2 + 0.55 * s["Edema"]) * tex * np.exp(-(((X - hx) / 0.2) ** 2 + ((Y - hy) / 0.3) ** 2))
    if s["Consolidation"]:
        p = place["consolidation"]
        cx, cy = c.at(c.lung(lungs, p["side"]), p)
        r = (0.07 + 0.07 * s["Consolidation"]) * p["r"]
        d = ellipse_d(X, Y, cx, cy, 1.3 * r, r, p["angle"]) + 0.03 * noise(c.rng, X, Y, 16)
        opq += (0.3 + 0.6 * s["Consolidation"]) * soft(d, 0.02)
    if s["Pneumonia"]:  # patchy, ill-defined airspace disease
        p = place["pneumonia"]
        cx, cy = c.at(c.lung(lungs, p["side"]), p)
        patches = np.clip(1.5 * (noise(c.rng, X, Y, 22) - 0.2), 0, 1)
        opq += (0.15 + 0.35 * s["Pneumonia"]) * patches * np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / 0.04)
    if s["Lung Opacity"]:
        p = place["opacity"]
        cx, cy = c.at(c.lung(lungs, p["side"]), p)
        d = ellipse_d(X, Y, cx, cy, 0.14 * p["r"], 0.18 * p["r"]) + 0.04 * noise(c.rng, X, Y, 10)
        opq += (0.12 + 0.33 * s["Lung Opacity"]) * soft(d, 0.06)
    return np.clip(opq + _focal(c, lungs), 0, 1)


def _focal(c: _Scene, lungs: list[_Lung]) -> Arr:
    """Plate-like atelectasis, a nodule, pleural thickening: small, sharp-edged findings."""
    X, Y, s, place = c.X, c.Y, c.s, c.place
    opq = np.zeros_like(X)
    if s["Atelectasis"]:
        p = place["atelectasis"]
        for k in range(1 + p["two"]):
            cx, cy = c.at(c.lung(lungs, p["side"]), p | {"v": p["v"] - 0.25 * k})
            d = ellipse_d(X, Y, cx, cy, 0.14, 0.012 + 0.012 * s["Atelectasis"], p["angle"])
            opq += (0.35 + 0.55 * s["Atelectasis"]) * soft(d, max(0.008, c.px))
    if s["Lung Lesion"]:
        p = place["lesion"]
        cx, cy = c.at(c.lung(lungs, p["side"]), p)
        r = (0.018 + 0.022 * s["Lung Lesion"]) * p["r"]
        opq += (0.25 + 0.5 * s["Lung Lesion"]) * soft(np.hypot(X - cx, Y - cy) - r, max(0.3 * r, c.px))
    if s["Pleural Other"]:  # thickening along the lateral chest wall
        p = place["pleural_other"]
        L = c.lung(lungs, p["side"])
        d, t = _lung_d(X, Y, L), 0.012 + 0.03 * s["Pleural Other"]
        wall = soft(-L.side * (X - L.cx) / L.ax + 0.3, 0.1) * soft(np.abs(Y - L.cy - p["v"] * L.ay) - 0.2, 0.04)
        opq += 0.9 * soft(-d - t, max(0.006, c.px)) * wall
    return opq


def _effusion(c: _Scene, lungs: list[_Lung]) -> Arr:
    """Fluid at the bases: a meniscus climbing the chest wall, blunting the costophrenic angle."""
    F = np.zeros_like(c.X)
    if not c.s["Pleural Effusion"]:
        return F
    sides = c.place["effusion"]["sides"]
    for k, side in enumerate(sides if len(lungs) == 2 else sides[:1]):
        L = c.lung(lungs, side)
        h = (0.06 + 0.36 * c.s["Pleural Effusion"]) * (c.place["effusion"]["second"] if k else 1.0)
        w = np.clip((L.side * (c.X - L.cx) / L.ax + 1) / 2, 0, 1)
        level = L.base - h * (0.55 + 0.45 * w**2)
        fluid = soft(level - c.Y, 0.025) * soft(_lung_d(c.X, c.Y, L) - 0.02, 0.02)
        F = np.maximum(F, fluid * soft(c.Y - _dome(c.X, L), 0.03))
    return F


def _pneumothorax(c: _Scene, L: _Lung, sev: float) -> tuple[Arr, Arr]:
    """(air rim without markings, visible pleural line) at the apex of lung L."""
    k = 0.1 + 0.2 * sev
    hx, hy = L.cx - L.side * 0.3 * L.ax, L.cy + 0.4 * L.ay  # the lung collapses towards the hilum
    inner = _Lung(hx + (L.cx - hx) * (1 - k), hy + (L.cy - hy) * (1 - k), L.ax * (1 - k), L.ay * (1 - k),
                  L.side, L.base, L.dome_cx)
    d_in, inside = _lung_d(c.X, c.Y, inner), soft(_lung_d(c.X, c.Y, L), 0.01)
    upper = soft(c.Y - L.cy - 0.2 * L.ay, 0.1) * inside
    line = soft(np.abs(d_in) - max(0.004, 0.6 * c.px), max(0.003, 0.5 * c.px))
    return soft(-d_in, 0.008) * upper, line * upper


def _frontal_lungs(anat: Anatomy, lift: dict[int, float]) -> list[_Lung]:
    lungs = []
    for side in (-1, 1):
        ax = 0.27 * anat.thorax * (0.94 if side > 0 else 1.0)
        cx, ay, cy = side * (0.03 * anat.thorax + ax), 0.6 * anat.height, -0.06
        base = cy + 0.8 * ay + anat.dome + (0.03 if side > 0 else 0.0) - lift[side]
        lungs.append(_Lung(cx, cy, ax, ay, side, base, cx + side * 0.1 * ax))
    return lungs


def _frontal(c: _Scene) -> Arr:
    X, Y, s, anat = c.X, c.Y, c.s, c.anat
    w = max(0.012, 1.2 * c.px)
    lift = {-1: 0.0, 1: 0.0}
    if s["Atelectasis"]:  # volume loss pulls the hemidiaphragm up
        lift[c.place["atelectasis"]["side"]] = 0.06 * s["Atelectasis"]
    lungs = _frontal_lungs(anat, lift)
    thorax_w = (lungs[1].cx + lungs[1].ax) - (lungs[0].cx - lungs[0].ax)
    ctr = (anat.ctr * (1 - s["Cardiomegaly"]) + 0.63 * s["Cardiomegaly"]) * (1.04 if c.ap else 1.0)
    hax, hy = ctr * thorax_w / 2, lungs[1].base - 0.22  # AP films magnify the heart a little
    heart = soft(ellipse_d(X, Y, 0.6 * hax - 0.05, hy, hax, 0.23 + 0.3 * (hax - 0.24), -0.35), w)
    mw = (anat.mediastinum + 0.025 * s["Enlarged Cardiomediastinum"]) * anat.thorax
    med = soft(np.abs(X - 0.01) - mw * (1.1 + 0.2 * Y), 0.02) * soft(Y - hy + 0.05, 0.05)
    knob = soft(ellipse_d(X, Y, 0.01 + mw, -0.32, 0.035 + 0.015 * s["Enlarged Cardiomediastinum"], 0.06), w)
    occ = np.maximum(np.maximum(heart, med), knob)
    air = sum(_lung_mask(X, Y, L, w) * _depth(X, L) for L in lungs) * (1 - occ)
    # heart, mediastinum and the abdomen below the domes are all water-dense and look alike
    abdomen = soft(np.where(X < 0, _dome(X, lungs[0]), _dome(X, lungs[1])) - Y, 0.03)
    abdomen = abdomen * soft(np.abs(X) - 0.9 * thorax_w / 2, 0.06)
    A = _body(X, Y, 0.8 * anat.body, 0.36) + 0.12 * np.maximum(occ, abdomen)
    fluid = _effusion(c, lungs)
    marks = _markings(c, lungs)
    if s["Pneumothorax"]:
        rim, line = _pneumothorax(c, c.lung(lungs, c.place["pneumothorax"]["side"]), s["Pneumothorax"])
        marks = marks * (1 - rim)
        A = A - (0.02 + 0.05 * s["Pneumothorax"]) * rim * air + 0.1 * line
    A = A - _AIR * air * (1 - np.clip(_opacities(c, lungs) + fluid + marks, 0, 1)) + 0.1 * fluid * (1 - occ)
    return A + _bones(c, lungs, air) + _devices(c)


def _body(X: Arr, Y: Arr, bw: float, density: float) -> Arr:
    """Soft tissue of the trunk and shoulders, denser where the path through the body is longer."""
    u, v = np.abs(X / bw), np.abs((Y - 0.3) / 1.35)
    trunk = soft((np.sqrt(np.sqrt(u**4 + v**4)) - 1) * bw, 0.03)  # squared-off top: the shoulders
    return trunk * (density * (0.55 + 0.45 * np.sqrt(np.clip(1 - u * u, 0, 1))))


def _depth(X: Arr, L: _Lung) -> Arr:
    """Relative thickness of air along the beam: a lung is thinner at its edges."""
    return 0.55 + 0.45 * np.sqrt(np.clip(1 - ((X - L.cx) / L.ax) ** 2, 0, 1))


def _markings(c: _Scene, lungs: list[_Lung]) -> Arr:
    """Vessels: streaks radiating from each hilum, thinning towards the periphery, plus the hilar density."""
    X, Y = c.X, c.Y
    M = np.zeros_like(X)
    for L in lungs:
        hx, hy = L.cx - L.side * 0.55 * L.ax, L.cy + 0.2 * L.ay
        # noise stretched along rays from the hilum has ridges that look like branching vessels
        ridge = np.clip(1 - np.abs(noise(c.rng, X, Y, 24, (hx, hy, L.side))) / 0.45, 0, 1) ** 2
        M += ridge * 0.3 * np.exp(-np.hypot(X - hx, Y - hy) / 0.45)
        M += 0.35 * np.exp(-((X - hx) ** 2 / 0.004 + (Y - hy) ** 2 / 0.012))
    return M


def _bones(c: _Scene, lungs: list[_Lung], air: Arr) -> Arr:
    """Spine, posterior ribs (one maybe fractured: a gap and a step) and clavicles."""
    X, Y, anat, f, sev = c.X, c.Y, c.anat, c.place["fracture"], c.s["Fracture"]
    w = max(0.008, 0.8 * c.px)
    A = 0.06 * soft(np.abs(X) - 0.05 * anat.thorax, w) * (0.85 + 0.15 * np.cos(2 * math.pi * Y / 0.105))
    u, sp = np.abs(X) - 0.04, 0.112 * anat.height
    v = (Y - (-0.2 * u + 1.1 * u * u) + 0.72) / sp  # rib number, rising from the spine then curving down
    k = np.round(v)
    broken = (k == f["rib"]) & (np.sign(X) == f["side"]) if sev else np.zeros(X.shape, bool)
    v = v + broken * (u > f["u"]) * (0.012 + 0.02 * sev) / sp
    ribs = soft(np.abs(v - np.round(v)) * sp - 0.02, w) * (k >= 0) * (k <= 9) * (1 - np.exp(-u / 0.05))
    ribs = ribs * soft(u - (lungs[1].cx + lungs[1].ax + 0.03), 0.02)
    ribs = ribs * (1 - broken * (np.abs(u - f["u"]) < 0.006 + 0.012 * sev))
    A = A + ribs * (0.03 + 0.03 * air)
    for side in (-1, 1):
        pts = np.array([(side * 0.07, -0.64), (side * 0.26, -0.73), (side * 0.48 * anat.thorax, -0.8)])
        A = A + 0.08 * soft(polyline_d(X, Y, pts) - 0.022, w)
    return A


def _lateral(c: _Scene) -> Arr:
    """A side view: heart anterior, spine posterior, both lungs superimposed."""
    X, Y, s, anat = c.X, c.Y, c.s, c.anat
    w, ay, bw = max(0.012, 1.2 * c.px), 0.6 * anat.height, 0.72 * anat.body
    L = _Lung(0.04, -0.06, 0.42 * anat.body, ay, 1, -0.06 + 0.85 * ay + anat.dome, -0.1)
    hax = 0.2 * (anat.ctr * (1 - s["Cardiomegaly"]) + 0.63 * s["Cardiomegaly"]) / 0.43
    heart = soft(ellipse_d(X, Y, -0.24 + 0.6 * (hax - 0.2), L.base - 0.2, hax, 0.21, 0.5), w)
    mw = anat.mediastinum + 0.05 * s["Enlarged Cardiomediastinum"]
    occ = np.maximum(0.75 * heart, 0.5 * soft(ellipse_d(X, Y, -0.25, -0.3, mw, 0.22), 0.04))
    air = _lung_mask(X, Y, L, w) * (1 - occ)
    A = soft(ellipse_d(X, Y, 0, 0.3, bw, 1.35), 0.03) * (0.36 + 0.05 * np.clip(1 - (X / bw) ** 2, 0, 1))
    A = A + 0.05 * heart
    marks = 0.7 * _markings(c, [L])
    if s["Pneumothorax"]:
        rim, line = _pneumothorax(c, L, 0.6 * s["Pneumothorax"])
        marks, A = marks * (1 - rim), A - 0.05 * s["Pneumothorax"] * rim * air + 0.06 * line
    A = A - _AIR * air * (1 - np.clip(_opacities(c, [L]) + _effusion(c, [L]) + marks, 0, 1))
    trachea = soft(np.abs(X - 0.02 + 0.1 * Y) - 0.035, 0.01) * soft(Y + 0.2, 0.03)
    spine = soft(np.abs(X - 0.75 * bw) - 0.075, w) * (0.7 + 0.3 * np.cos(2 * math.pi * Y / 0.12))
    sternum = soft(np.abs(X + 0.62 * bw) - 0.025, w) * soft(np.abs(Y + 0.2) - 0.42, 0.03)
    ribs = soft(np.abs((Y - 0.45 * X) / 0.12 - np.round((Y - 0.45 * X) / 0.12)) * 0.12 - 0.018, w)
    A = A - 0.12 * trachea + 0.12 * spine + 0.08 * sternum + 0.025 * ribs * air
    return A + _devices(c)


def _devices(c: _Scene) -> Arr:
    """Radiopaque tubes and lines with bright tips, ECG electrodes, a pacemaker."""
    X, Y, sev, p = c.X, c.Y, c.s["Support Devices"], c.place["devices"]
    A = np.zeros_like(X)
    if not sev:
        return A
    j, side, lat = p["jit"], p["side"], c.view == "lateral"
    hw, br = max(0.006, 0.7 * c.px), 0.2 + 0.35 * sev

    def xs(x: float, depth: float) -> float:  # a lateral view sees depth, not left-right
        return depth if lat else x

    lines = []
    if "ett" in p["kinds"]:
        lines.append(np.array([(xs(j[0], -0.05), -1.1), (xs(0.01 + j[1], -0.02 + j[1]), -0.35 + j[2])]))
    if "cvc" in p["kinds"]:
        lines.append(bezier((xs(side * 0.6, -0.3), -0.95), (xs(side * 0.25, -0.2), -0.62 + j[3]),
                             (xs(0.05 + j[4], -0.15), -0.2 + j[5])))
    if "ngt" in p["kinds"]:
        lines.append(bezier((xs(j[6], 0.0), -1.1), (xs(0.0, 0.1), 0.1), (xs(0.22 + j[7], -0.1), 0.75)))
    if "pacer" in p["kinds"]:
        cx = xs(side * 0.45, -0.55)
        A += (0.3 + 0.4 * sev) * soft(ellipse_d(X, Y, cx, -0.62, 0.09, 0.06), 0.01)
        lines.append(bezier((cx, -0.62), (xs(0.0, -0.2), -0.3), (xs(0.22, -0.3), 0.3 + j[3])))
    for pts in lines:
        A += br * soft(polyline_d(X, Y, pts) - hw, 0.5 * hw)
        A += 0.6 * br * np.exp(-((X - pts[-1][0]) ** 2 + (Y - pts[-1][1]) ** 2) / (4 * hw) ** 2)
    if "ecg" in p["kinds"]:
        for ex, ey in p["ecg"][: 3 + (sev > 0.5)]:
            cx, cy = (-0.7 + 0.1 * ex, -0.3 + 0.4 * ey) if lat else (0.55 * ex, -0.55 + 0.3 * ey)
            r = np.hypot(X - cx, Y - cy)
            edge = max(0.004, 0.5 * c.px)
            A += br * (soft(np.abs(r - 0.03) - 0.006, edge) + soft(r - 0.01, edge))
    return A


def _expose(A: Arr, rng: np.random.Generator, px: float, exposure: float = 1.0) -> Arr:
    """Detector response: blur, exposure window, gamma and quantum noise, to uint8. `exposure` shrinks the window's
    and gamma's spread around their middles (1: unchanged)."""
    sigma = 0.0035 / px * rng.uniform(0.7, 1.3)  # unsharpness of about 0.6 px at 320 px
    if sigma > 0.3:
        A = ndimage.gaussian_filter(A, sigma)
    lo, hi, g = rng.uniform(-0.02, 0.05), rng.uniform(0.55, 0.68), rng.uniform(0.75, 1.3)
    if exposure != 1.0:
        lo, hi, g = 0.015 + exposure * (lo - 0.015), 0.615 + exposure * (hi - 0.615), 1.025 + exposure * (g - 1.025)
    gamma = np.linspace(0, 1, 4096, dtype=np.float32) ** g  # a lookup table: pow is slow
    img = gamma[(np.clip((A - lo) / (hi - lo), 0, 1) * 4095).astype(np.intp)]
    img += rng.uniform(0.006, 0.02) * rng.standard_normal(A.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
