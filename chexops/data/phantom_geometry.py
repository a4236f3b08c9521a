"""Drawing primitives for the phantoms: soft masks, distances to shapes, smooth noise.

Everything works on coordinate grids in normalised units and is vectorised; nothing loops over pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

Arr = np.ndarray


def soft(d: Arr, w: float) -> Arr:
    """1 where d < 0, 0 where d > 0, with an edge about w wide."""
    out = 0.5 - (0.5 / w) * d
    return np.clip(out, 0, 1, out=out)


def ellipse_d(X: Arr, Y: Arr, cx: float, cy: float, ax: float, ay: float,
               angle: float = 0.0) -> Arr:
    """Approximate signed distance to an ellipse (negative inside)."""
    dx, dy = X - cx, Y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, c * dy - s * dx
    return (np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2) - 1) * min(ax, ay)


def polyline_d(X: Arr, Y: Arr, pts: Arr, reach: float = 0.1) -> Arr:
    """Distance to a polyline, computed only within `reach` of its bounding box (1.0 elsewhere)."""
    out = np.ones_like(X)
    lo, hi = pts.min(axis=0) - reach, pts.max(axis=0) + reach
    inside = (X >= lo[0]) & (X <= hi[0]) & (Y >= lo[1]) & (Y <= hi[1])
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if not rows.size:
        return out
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    X, Y = X[win], Y[win]
    d = None
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((X - x0) * vx + (Y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0, 1)
        dd = np.hypot(X - x0 - t * vx, Y - y0 - t * vy)
        d = dd if d is None else np.minimum(d, dd)
    out[win] = d
    return out


def bezier(p0: tuple, p1: tuple, p2: tuple, n: int = 12) -> Arr:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * t * (1 - t) * np.array(p1) + t**2 * np.array(p2)


def noise(rng: np.random.Generator, X: Arr, Y: Arr, cells: int,
           rays_from: tuple[float, float, int] | None = None) -> Arr:
    """Smooth unit-variance noise with about `cells` blobs across the image, attached to the anatomy.

    With rays_from=(x, y, side) the noise is stretched along rays from that point, opening towards side.
    """
    g = rng.standard_normal((cells + 4, cells + 4)).astype(np.float32)
    k = (cells + 1) / 2.8
    step = -(-X.shape[0] // 80)  # spline-evaluate on a coarse grid, then upsample linearly: much faster
    Xc, Yc = X[::step, ::step], Y[::step, ::step]
    if rays_from:
        x0, y0, side = rays_from
        Xc, Yc = np.arctan2(Yc - y0, side * (Xc - x0)) * 0.45, np.log(np.hypot(Xc - x0, Yc - y0) + 0.05) * 0.35
    coords = np.stack([((Yc + 1.4) * k + 1.5).ravel(), ((Xc + 1.4) * k + 1.5).ravel()])
    n = ndimage.map_coordinates(g, coords, order=3, mode="nearest").reshape(Xc.shape)
    if step > 1:
        i0, f = lerp_index(X.shape[0], step, n.shape[0])
        n = n[i0] * (1 - f[:, None]) + n[i0 + 1] * f[:, None]
        i0, f = lerp_index(X.shape[1], step, n.shape[1])
        n = n[:, i0] * (1 - f) + n[:, i0 + 1] * f
    return n / (n.std() + 1e-6)


def lerp_index(n: int, step: int, coarse: int) -> tuple[Arr, Arr]:
    """Left neighbour and weight for linear interpolation from every step-th sample back to n samples."""
    pos = np.minimum(np.arange(n, dtype=np.float32) / step, coarse - 1)
    i0 = np.minimum(pos.astype(np.intp), coarse - 2)
    return i0, pos - i0
