"""Reference models of small image patches (Carlsson, Ishkhanov, de Silva & Zomorodian 2008):
the primary circle of edges at every angle, the three-circle model (primary plus the horizontal
and vertical secondary circles) and the Klein bottle, sampled as ``size x size`` patches that are
mean-centred and normalised like filters; and a primary-circle score for any filter cloud.

Patches are polynomials on the pixel grid ``x, y`` in [-1, 1] (Carlsson et al., Sec. 4):
primary circle ``cos(t) x + sin(t) y``; secondary circles ``cos(s) u + sin(s) (u^2 - mean)`` with
``u = x`` (vertical lines/edges) or ``u = y``; Klein bottle ``cos(s) v + sin(s) (v^2 - mean)``
with ``v = cos(t) x + sin(t) y``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from convlens.topology._cloud import normalize_filters


def _grid(size) -> tuple[np.ndarray, np.ndarray]:
    h, w = (size, size) if np.isscalar(size) else size
    if h * w < 2:
        raise ValueError(f"patch size must have at least 2 pixels, got {h}x{w}")
    ys, xs = np.meshgrid(np.linspace(-1, 1, h) if h > 1 else [0.0],
                         np.linspace(-1, 1, w) if w > 1 else [0.0], indexing="ij")
    return xs.ravel(), ys.ravel()


def _finish(raw: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if noise:
        raw = raw + noise * rng.standard_normal(raw.shape) * np.linalg.norm(raw, axis=1, keepdims=True) / np.sqrt(raw.shape[1])
    pts, kept = normalize_filters(raw)
    return pts


def primary_circle_patches(n: int, size=3, *, noise: float = 0.0, seed: int = 0,
                           angles: np.ndarray | None = None) -> np.ndarray:
    """``n`` normalised patches ``cos(t) x + sin(t) y`` at uniform random angles ``t`` (edges at
    every orientation); ``noise`` adds Gaussian noise of that size relative to the patch."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    t = rng.uniform(0, 2 * np.pi, n) if angles is None else np.asarray(angles, float)
    return _finish(np.cos(t)[:, None] * x + np.sin(t)[:, None] * y, noise, rng)


def _secondary(t: np.ndarray, u: np.ndarray) -> np.ndarray:
    q = u * u
    q = q - q.mean()
    return np.cos(t)[:, None] * u + np.sin(t)[:, None] * q


def three_circle_patches(n: int, size=3, *, primary_share: float = 0.5, secondary: int = 2,
                         noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``n`` patches on the three-circle model: ``primary_share`` of them on the primary circle,
    the rest split between the two secondary circles, each meeting the primary circle twice and
    not each other (first Betti number 5). ``secondary=1`` keeps only the vertical one: the
    two-circle model of the paper's Fig. 11 (two circles meeting twice: three loops)."""
    if secondary not in (1, 2):
        raise ValueError(f"secondary must be 1 or 2 circles, got {secondary!r}")
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    n1 = int(round(n * primary_share))
    n2 = (n - n1) // secondary
    t = rng.uniform(0, 2 * np.pi, n1)
    parts = [np.cos(t)[:, None] * x + np.sin(t)[:, None] * y,
             _secondary(rng.uniform(0, 2 * np.pi, n2 if secondary == 2 else n - n1), x)]
    if secondary == 2:
        parts.append(_secondary(rng.uniform(0, 2 * np.pi, n - n1 - n2), y))
    return _finish(np.concatenate(parts), noise, rng)


def klein_bottle_patches(n: int, size=3, *, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``n`` patches on the Klein-bottle model: ``cos(s) v + sin(s) (v^2 - mean)``,
    ``v = cos(t) x + sin(t) y``, with ``s, t`` uniform."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    t, s = rng.uniform(0, 2 * np.pi, (2, n))
    v = np.cos(t)[:, None] * x + np.sin(t)[:, None] * y
    q = v * v
    q = q - q.mean(axis=1, keepdims=True)
    return _finish(np.cos(s)[:, None] * v + np.sin(s)[:, None] * q, noise, rng)


def gaussian_patches(n: int, size=3, *, seed: int = 0) -> np.ndarray:
    """``n`` normalised Gaussian-noise patches (no structure: the null model)."""
    rng = np.random.default_rng(seed)
    x, _ = _grid(size)
    return _finish(rng.standard_normal((n, len(x))), 0.0, rng)


@dataclass
class CircleScore:
    """How much of a filter cloud lies on the primary circle.

    ``share``: fraction of filters within ``threshold`` (Euclidean, on unit vectors) of the
    circle. ``angles``: the angle (radians, [0, 2pi)) of the nearest circle point for each of
    those filters; ``histogram``: their counts in ``bins`` equal sectors; ``coverage``: normalised
    entropy of that histogram (1: every orientation equally present, 0: a single one).
    ``noise_share``: the share Gaussian-noise filters of the same size reach (the null level).
    """

    share: float
    coverage: float
    threshold: float
    n: int
    histogram: list[int]
    noise_share: float
    angles: np.ndarray | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("angles")
        return d

    def __str__(self) -> str:
        return (f"primary circle: {self.share:.1%} of {self.n} filters within {self.threshold} "
                f"(noise: {self.noise_share:.1%}), orientation coverage {self.coverage:.2f}")


def _circle(shape, m: int = 720) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, m, endpoint=False)
    return t, primary_circle_patches(m, shape, angles=t)


def _nearest_on_circle(points: np.ndarray, shape, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    return _nearest_on(points, *_circle(shape), chunk=chunk)


def _secondary_circle(shape, axis: str, m: int = 720) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, m, endpoint=False)
    x, y = _grid(shape)
    return t, normalize_filters(_secondary(t, x if axis == "x" else y))[0]


def _nearest_on(points: np.ndarray, t: np.ndarray, c: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each unit vector in ``points`` to the nearest of the unit vectors ``c`` (a
    sampled curve with parameters ``t``), and that parameter."""
    dist = np.empty(len(points))
    ang = np.empty(len(points))
    for a in range(0, len(points), chunk):
        p = points[a: a + chunk].astype(np.float64)
        sims = p @ c.T  # unit vectors: |p - c|^2 = |p|^2 + 1 - 2 p.c
        j = sims.argmax(axis=1)
        sq = (p * p).sum(1) + 1.0 - 2.0 * sims[np.arange(len(p)), j]
        dist[a: a + chunk] = np.sqrt(np.maximum(sq, 0.0))
        ang[a: a + chunk] = t[j]
    return dist, ang


def _points_and_shape(cloud, shape, threshold: float) -> tuple[np.ndarray, tuple[int, int]]:
    points = np.asarray(getattr(cloud, "points", cloud), dtype=np.float64)
    shape = tuple(shape or (cloud.shape if hasattr(cloud, "points") else ()))
    if not shape and points.ndim == 2 and round(np.sqrt(points.shape[1])) ** 2 == points.shape[1]:
        shape = (round(np.sqrt(points.shape[1])),) * 2  # square patches by default
    if points.ndim != 2 or len(shape) != 2 or shape[0] * shape[1] != points.shape[1]:
        raise ValueError(f"need points (n, h*w) and shape (h, w); got points {points.shape}, shape {shape}")
    if not 0 < threshold < 2:
        raise ValueError(f"threshold must be in (0, 2) for unit vectors, got {threshold}")
    if len(points) == 0:
        raise ValueError("the filter cloud is empty")
    return points, shape


def primary_circle_score(cloud, *, shape=None, threshold: float = 0.5, bins: int = 16,
                         seed: int = 0) -> CircleScore:
    """Score a filter cloud (or an ``(n, h*w)`` array with ``shape=(h, w)``) against the primary
    circle of the same patch size.

    A threshold of 0.5 between unit vectors means a cosine similarity of at least 0.875 with
    some edge; Gaussian-noise 3x3 filters lie about 1.0 from the circle.
    """
    points, shape = _points_and_shape(cloud, shape, threshold)
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    dist, ang = _nearest_on_circle(points, shape)
    near = dist <= threshold
    hist, _ = np.histogram(ang[near], bins=bins, range=(0, 2 * np.pi))
    prob = hist / max(1, hist.sum())
    nz = prob[prob > 0]
    coverage = max(0.0, float(-(nz * np.log(nz)).sum() / np.log(bins))) if near.any() else 0.0  # no -0.0
    noise = gaussian_patches(2000, shape, seed=seed)
    noise_share = float((_nearest_on_circle(noise, shape)[0] <= threshold).mean())
    return CircleScore(float(near.mean()), coverage, threshold, len(points), hist.tolist(),
                       noise_share, ang[near])


@dataclass
class ThreeCircleScore:
    """The three-circle test as numbers: the share of filters within ``threshold`` of the
    three-circle model (primary circle plus the two secondary circles) against the share within
    ``threshold`` of the primary circle alone, each beside the share Gaussian-noise filters of the
    same size reach. ``secondary_x`` / ``secondary_y``: filters nearer a secondary circle (lines
    and edges varying along x or along y) than the primary one, within ``threshold``.
    ``gain = three - primary`` is what the secondary circles add."""

    primary: float
    three: float
    secondary_x: float
    secondary_y: float
    threshold: float
    n: int
    noise_primary: float
    noise_three: float

    @property
    def gain(self) -> float:
        return self.three - self.primary

    def to_dict(self) -> dict:
        return {**asdict(self), "gain": self.gain}

    def __str__(self) -> str:
        return (f"three circles: {self.three:.1%} of {self.n} filters within {self.threshold} "
                f"(primary circle alone {self.primary:.1%}; noise {self.noise_three:.1%} / "
                f"{self.noise_primary:.1%}); secondary x {self.secondary_x:.1%}, y {self.secondary_y:.1%}")


def _three_distances(points: np.ndarray, shape) -> np.ndarray:
    """Distances to the primary, vertical-secondary and horizontal-secondary circles, (n, 3)."""
    return np.stack([_nearest_on_circle(points, shape)[0], _nearest_on(points, *_secondary_circle(shape, "x"))[0],
                     _nearest_on(points, *_secondary_circle(shape, "y"))[0]], 1)


def three_circle_score(cloud, *, shape=None, threshold: float = 0.5, seed: int = 0) -> ThreeCircleScore:
    """Score a filter cloud (or an ``(n, h*w)`` array with ``shape``) against the three-circle
    model of Carlsson et al. (2008) and against its primary circle alone (same ``threshold`` as
    :func:`primary_circle_score`). A cloud on the primary circle only has ``gain`` near 0; one
    on the three-circle model gains the share its secondary circles hold."""
    points, shape = _points_and_shape(cloud, shape, threshold)
    d = _three_distances(points, shape)
    noise = _three_distances(gaussian_patches(2000, shape, seed=seed), shape)
    near = d.min(1) <= threshold
    nearest = d.argmin(1)
    return ThreeCircleScore(float((d[:, 0] <= threshold).mean()), float(near.mean()),
                            float((near & (nearest == 1)).mean()), float((near & (nearest == 2)).mean()),
                            threshold, len(points), float((noise[:, 0] <= threshold).mean()),
                            float((noise.min(1) <= threshold).mean()))
