"""Circular coordinates from the longest H1 class (de Silva, Morozov & Vejdemo-Johansson 2011,
"Persistent cohomology and circular coordinates"), so that every filter on the primary circle
gets an angle; the orientation fitted directly to a filter; and their agreement.

The construction, on ``n_landmarks`` maxmin landmarks:

1. ripser's persistent cohomology over Z/p (p prime) gives a cocycle of the longest H1 bar
   ``[b, d)``; its values are lifted to integers in ``(-p/2, p/2]``.
2. At a Rips scale ``eps`` in ``[b, d)`` (the class is alive there) the integer cocycle ``z`` is
   split by least squares into ``z = delta f + theta``: ``theta`` is its harmonic (smoothest)
   representative, ``f`` a real function on the landmarks (edges weighted by
   ``1/(deg_i deg_k)``, see below). ``f mod 1`` is the circle-valued map:
   along every edge it moves by ``-theta`` (small), and once around the loop by an integer.
3. Every point ``x`` within ``eps / 2`` of some landmark is placed by a partition of unity over
   those landmarks: ``f(j) - sum_k phi_k(x) theta(j, k)``, ``j`` its nearest landmark (the balls
   of radius ``eps / 2`` around ``j`` and ``k`` meet only if ``d(j, k) <= eps``, so the edge is
   in the complex). ``eps`` is raised until the balls cover every point when the bar allows it.

When the cloud has no long H1 class (its longest bar less than ``min_dominance`` times the next)
there is no circle to put angles on: :class:`NoCircleError` says so, with the bars.
DREiMac's ``CircularCoords`` implements the same construction (it installs here: Python 3.11,
numba); this module needs only ripser and scipy and reports the cases DREiMac leaves silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class NoCircleError(ValueError):
    """The cloud has no H1 class long enough to define circular coordinates."""


@dataclass
class CircularCoords:
    """``angles[i]`` (radians, [0, 2pi)) of point ``i`` along the longest H1 class."""

    angles: np.ndarray
    bar: tuple[float, float]  # birth, death of the class (Rips, on the landmarks)
    dominance: float  # its length over the next H1 bar's
    eps: float  # Rips scale of the complex the harmonic cocycle lives on
    cover_radius: float  # largest distance from a point to its nearest landmark
    n_landmarks: int
    uncovered: int  # points farther than eps/2 from every landmark (placed at their nearest)

    def histogram(self, bins: int = 16) -> list[int]:
        return np.histogram(self.angles, bins=bins, range=(0, 2 * np.pi))[0].tolist()

    def to_dict(self) -> dict:
        return {"bar": list(self.bar), "dominance": self.dominance, "eps": self.eps,
                "cover_radius": self.cover_radius, "n_landmarks": self.n_landmarks,
                "uncovered": self.uncovered, "n": len(self.angles), "histogram": self.histogram()}


def _nearest_landmark_distance(x: np.ndarray, lm: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    return float(cKDTree(lm).query(x, k=1)[0].max())


def circular_coordinates(points, *, n_landmarks: int = 100, prime: int = 41, min_dominance: float = 2.0,
                         position: float = 0.5, seed: int = 0, chunk: int = 8192) -> CircularCoords:
    """Circular coordinates of a point cloud (``(n, d)`` array or FilterCloud) from its longest
    H1 class.

    Parameters
    ----------
    n_landmarks : maxmin landmarks the cohomology is computed on
    prime : coefficient field Z/p of the cohomology (odd prime; the lift to integers needs the
        cocycle's values small next to p)
    min_dominance : the longest H1 bar must be this many times longer than the next one
    position : where in the bar ``[b, d)`` the complex is taken, in (0, 1)
    chunk : points placed at a time (memory: ``chunk * n_landmarks`` floats)

    Raises
    ------
    NoCircleError : no H1 class, or none ``min_dominance`` times longer than the next

    Examples
    --------
    >>> cc = circular_coordinates(primary_circle_patches(2000, 3))      # doctest: +SKIP
    >>> cc.angles[:3], cc.dominance                                      # doctest: +SKIP
    """
    from convlens.topology._persistence import _check, maxmin_landmarks

    x = _check(points, 1, n_landmarks, "ripser")
    if not 0 < position < 1:
        raise ValueError(f"position must be in (0, 1), got {position}")
    if prime < 3 or any(prime % q == 0 for q in range(2, int(prime ** 0.5) + 1)):
        raise ValueError(f"prime must be an odd prime, got {prime}")
    lm_idx = maxmin_landmarks(x, n_landmarks, seed=seed)
    lm = x[lm_idx]
    m = len(lm)
    d_lm = np.linalg.norm(lm[:, None] - lm[None], axis=-1)
    from ripser import ripser

    r = ripser(d_lm, distance_matrix=True, maxdim=1, coeff=prime, do_cocycles=True)
    dgm = np.asarray(r["dgms"][1], dtype=float).reshape(-1, 2)
    if len(dgm) == 0:
        raise NoCircleError(f"no H1 class at all on {m} landmarks of {len(x)} points: the cloud has no "
                            "loop, so there is no circle to put angles on")
    lengths = dgm[:, 1] - dgm[:, 0]
    order = np.argsort(-lengths)
    top = order[0]
    nxt = lengths[order[1]] if len(order) > 1 else 0.0
    dominance = float(lengths[top] / nxt) if nxt > 0 else float("inf")
    if dominance < min_dominance:
        bars = ", ".join(f"{v:.3f}" for v in lengths[order[:4]])
        raise NoCircleError(f"no long H1 class: the longest H1 bars are {bars}, the longest only "
                            f"{dominance:.2f}x the next (circular coordinates need >= {min_dominance:g}x); "
                            "the cloud has no dominant circle to put angles on")
    birth, death = map(float, dgm[top])
    cover = _nearest_landmark_distance(x, lm)
    eps = birth + position * (death - birth)
    if eps / 2 <= cover:  # cover every point if the class lives long enough
        eps = min(max(eps, 2.0 * cover * 1.001), birth + 0.99 * (death - birth))
    f, theta = _harmonic(np.asarray(r["cocycles"][1][top]), prime, d_lm, eps)
    angles, uncovered = _place(x, lm, f, theta, eps / 2, chunk)
    return CircularCoords(angles, (birth, death), dominance, float(eps), cover, m, uncovered)


def _harmonic(coc: np.ndarray, prime: int, d_lm: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Split the integer lift of a Z/p cocycle on the Rips complex at ``eps`` into ``delta f +
    theta`` by weighted least squares: ``f`` on the landmarks, ``theta`` (antisymmetric, on the
    edges) its harmonic part."""
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import lsqr

    m = len(d_lm)
    val = coc[:, 2].astype(np.int64)
    val[val > (prime - 1) // 2] -= prime
    z = np.zeros((m, m))
    z[coc[:, 0].astype(int), coc[:, 1].astype(int)] = val
    z = z - z.T
    i, k = np.triu_indices(m, 1)
    keep = d_lm[i, k] < eps
    i, k = i[keep], k[keep]
    ne = len(i)
    delta = coo_matrix((np.r_[-np.ones(ne), np.ones(ne)], (np.r_[np.arange(ne), np.arange(ne)], np.r_[i, k])),
                       shape=(ne, m)).tocsr()
    # edge weights w = 1/(deg_i deg_k). The coordinate is a potential and the edges are
    # conductances: with n landmarks per unit length of the circle about n^2 edges cross each cut,
    # so unweighted the coordinate slows down where landmarks crowd and races across sparse arcs.
    # deg ~ n makes the conductance of every cut the same, and the angle proportional to arc
    # length. Planted circles whose density varies as 1 + 0.8 cos t: |circular correlation|
    # 0.85-0.91 with w = 1/sqrt(deg_i deg_k), 0.97-0.99 with this (docs/notes/issue-19.md).
    deg = np.bincount(np.r_[i, k], minlength=m).astype(float)
    sw = (deg[i] * deg[k]) ** -0.5  # square root of w: lsqr weights the rows
    f = lsqr(diags(sw) @ delta, sw * z[i, k], atol=1e-12, btol=1e-12)[0]
    theta = np.zeros((m, m))
    theta[i, k] = z[i, k] - (f[k] - f[i])
    theta[k, i] = -theta[i, k]
    return f, theta


def _place(x: np.ndarray, lm: np.ndarray, f: np.ndarray, theta: np.ndarray, radius: float,
           chunk: int) -> tuple[np.ndarray, int]:
    """Angles of all points by a partition of unity over the landmarks within ``radius``."""
    angles = np.empty(len(x))
    uncovered = 0
    for a in range(0, len(x), chunk):
        p = x[a: a + chunk]
        dist = np.sqrt(np.maximum((p * p).sum(1)[:, None] + (lm * lm).sum(1)[None] - 2 * p @ lm.T, 0.0))
        j = dist.argmin(axis=1)
        phi = np.maximum(radius - dist, 0.0)
        s = phi.sum(1)
        uncovered += int((s == 0).sum())
        phi = np.where(s[:, None] > 0, phi / np.where(s > 0, s, 1.0)[:, None], 0.0)
        angles[a: a + chunk] = 2 * np.pi * np.mod(f[j] - (phi * theta[j]).sum(1), 1.0)
    if uncovered:
        log.info("%d of %d points lie farther than %.3f from every landmark: placed at their "
                 "nearest landmark", uncovered, len(x), radius)
    return angles, uncovered


def _grid_xy(shape) -> tuple[np.ndarray, np.ndarray]:
    from convlens.topology._reference import _grid

    return _grid(shape)


def filter_orientation(points, shape=None) -> tuple[np.ndarray, np.ndarray]:
    """The edge orientation fitted directly to each filter: least squares ``a x + b y`` on the
    pixel grid (``x, y`` in [-1, 1]), angle ``atan2(b, a)`` in [0, 2pi), and the share of the
    filter's energy that fit explains (1: a pure linear edge). Same parametrisation as
    :func:`primary_circle_patches` (``cos(t) x + sin(t) y``)."""
    p = np.asarray(getattr(points, "points", points), dtype=np.float64)
    shape = tuple(shape or (points.shape if hasattr(points, "points") else (round(np.sqrt(p.shape[1])),) * 2))
    if p.ndim != 2 or shape[0] * shape[1] != p.shape[1]:
        raise ValueError(f"need points (n, h*w) and shape (h, w); got {p.shape}, {shape}")
    gx, gy = _grid_xy(shape)
    basis = np.stack([gx - gx.mean(), gy - gy.mean()], 1)
    coef, *_ = np.linalg.lstsq(basis, (p - p.mean(1, keepdims=True)).T, rcond=None)
    fit = (basis @ coef).T
    energy = (p * p).sum(1)
    explained = np.where(energy > 0, (fit * fit).sum(1) / np.where(energy > 0, energy, 1.0), 0.0)
    return np.mod(np.arctan2(coef[1], coef[0]), 2 * np.pi), explained


def circular_correlation(a, b) -> float:
    """Fisher & Lee's (1983) circular correlation of two samples of angles (radians), in [-1, 1]:
    ``E[sin(a1 - a2) sin(b1 - b2)] / sqrt(E[sin^2(a1 - a2)] E[sin^2(b1 - b2)])`` over pairs of
    draws, i.e. ``det(E[u v']) / sqrt(det(E[u u']) det(E[v v']))`` with ``u = (cos a, sin a)``.
    +1 when ``b = a + c``, -1 when ``b = c - a``; unlike Jammalamadaka & SenGupta's coefficient
    it needs no mean direction, so it is defined for angles spread over the whole circle."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two samples of the same length >= 2, got {a.shape} and {b.shape}")
    u = np.stack([np.cos(a), np.sin(a)], 1)
    v = np.stack([np.cos(b), np.sin(b)], 1)
    n = len(a)
    den = np.sqrt(np.linalg.det(u.T @ u / n) * np.linalg.det(v.T @ v / n))
    return float(np.linalg.det(u.T @ v / n) / den) if den > 0 else 0.0


def angle_agreement(a, b) -> dict:
    """How well angles ``a`` match ``b`` up to the symmetries of a circle (rotation and
    reflection): the circular correlation, and the median angular error in degrees after the best
    rotation and direction."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    best = None
    for sign in (1.0, -1.0):
        diff = sign * a - b
        offset = np.angle(np.exp(1j * diff).mean())
        err = np.abs(np.angle(np.exp(1j * (diff - offset))))
        med = float(np.degrees(np.median(err)))
        if best is None or med < best["median_error_deg"]:
            best = {"median_error_deg": med, "direction": int(sign)}
    return {"correlation": circular_correlation(a, b), "n": int(a.size), **best}
