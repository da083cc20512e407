"""Persistent homology of a filter cloud on landmarks, as the paper did with Plex's
MaxMinSelector (100 landmarks) and LazyWitnessStream.

- ``method="ripser"``: Vietoris-Rips on ``n_landmarks`` maxmin (greedy-permutation) landmarks
  (ripser's ``n_perm``); bars in Euclidean distance.
- ``method="witness"``: GUDHI's Euclidean witness complex on maxmin landmarks with every point as
  a witness; filtration values are GUDHI's relaxation alpha^2, reported as alpha. The complex
  is capped at ``max_alpha_square`` (always finite: an unbounded witness complex takes minutes);
  bars alive at the cap are reported with death ``inf`` and measured up to the cap.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.files import load_result, save_result

METHODS = ("ripser", "witness")


@dataclass
class Bar:
    dim: int
    birth: float
    death: float  # inf: alive at the end of the filtration
    length: float  # death - birth, with inf measured up to the filtration's end

    def to_dict(self) -> dict:
        return {"dim": self.dim, "birth": self.birth,
                "death": None if np.isinf(self.death) else self.death, "length": self.length}


@dataclass
class Barcodes:
    """Persistence diagrams per dimension (``diagrams[d]`` is ``(m, 2)`` birth/death)."""

    diagrams: list[np.ndarray]
    method: str
    n_points: int
    n_landmarks: int
    end: float  # where the filtration stops (inf bars are measured up to here)
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def bars(self, dim: int) -> list[Bar]:
        """Bars of dimension ``dim``, longest first."""
        if not 0 <= dim < len(self.diagrams):
            raise ValueError(f"dimension {dim} was not computed (maxdim={len(self.diagrams) - 1})")
        out = []
        for b, d in self.diagrams[dim]:
            length = (self.end if np.isinf(d) else d) - b
            out.append(Bar(dim, float(b), float(d), float(max(length, 0.0))))
        return sorted(out, key=lambda bar: -bar.length)

    def long_bars(self, dim: int, n: int = 5) -> list[Bar]:
        """The ``n`` longest bars of dimension ``dim`` (in H0, the one infinite bar is skipped)."""
        bars = self.bars(dim)
        if dim == 0:
            bars = [b for b in bars if not np.isinf(b.death)]
        return bars[:n]

    def dominance(self, dim: int, rank: int = 1) -> float:
        """Length of the ``rank``-th longest bar over the next one (``inf`` if there is none).
        ``dominance(1) >= 3`` reads "one H1 bar at least 3x longer than any other"."""
        lengths = [b.length for b in self.long_bars(dim, rank + 1)]
        if len(lengths) < rank:
            return 0.0
        if len(lengths) == rank or lengths[rank] <= 0:
            return float("inf")
        return lengths[rank - 1] / lengths[rank]

    def summary(self, n: int = 5) -> dict:
        return {f"H{d}": [b.to_dict() for b in self.long_bars(d, n)] for d in range(len(self.diagrams))}

    def save(self, folder: str | Path, name: str = "barcodes") -> Path:
        return save_result(folder, name, {}, {
            "method": self.method, "n_points": self.n_points, "n_landmarks": self.n_landmarks,
            "end": self.end if np.isfinite(self.end) else None, "params": self.params,
            "seconds": self.seconds,
            "diagrams": [[[float(b), None if np.isinf(d) else float(d)] for b, d in dg] for dg in self.diagrams],
            "long_bars": self.summary(),
        }, kind="barcodes")

    @classmethod
    def load(cls, folder: str | Path, name: str = "barcodes") -> Barcodes:
        _, r = load_result(folder, name, kind="barcodes")
        dgms = [np.array([[b, np.inf if d is None else d] for b, d in dg], dtype=float).reshape(-1, 2)
                for dg in r["diagrams"]]
        end = np.inf if r["end"] is None else r["end"]
        return cls(dgms, r["method"], r["n_points"], r["n_landmarks"], end, r["params"], r["seconds"])


def maxmin_landmarks(points: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` maxmin (farthest-point) landmarks, starting from a seeded random point."""
    x = np.asarray(points, dtype=np.float64)
    n = min(n, len(x))
    rng = np.random.default_rng(seed)
    idx = np.empty(n, dtype=np.int64)
    idx[0] = rng.integers(len(x))
    dist = np.linalg.norm(x - x[idx[0]], axis=1)
    for i in range(1, n):
        idx[i] = int(dist.argmax())
        dist = np.minimum(dist, np.linalg.norm(x - x[idx[i]], axis=1))
    return idx


def _check(points, maxdim, n_landmarks, method) -> np.ndarray:
    x = np.asarray(getattr(points, "points", points), dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need at least 2 points as an (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("points contain NaN or infinite values")
    if method not in METHODS:
        raise ValueError(f"unknown persistence method {method!r}; choose from {', '.join(METHODS)}")
    if not isinstance(maxdim, numbers.Integral) or not 0 <= maxdim <= 2:
        raise ValueError(f"maxdim must be 0, 1 or 2, got {maxdim!r}")
    if not isinstance(n_landmarks, numbers.Integral) or n_landmarks < 3:
        raise ValueError(f"n_landmarks must be an integer >= 3, got {n_landmarks!r}")
    return x


def barcodes(points, *, method: str = "ripser", maxdim: int = 1, n_landmarks: int = 100,
             max_alpha_square: float | str = "auto", seed: int = 0) -> Barcodes:
    """Persistence barcodes of a point cloud on ``n_landmarks`` maxmin landmarks.

    Parameters
    ----------
    points : array (n, d) or FilterCloud
    method : 'ripser' or 'witness'
    maxdim : int
        Highest homology dimension (0, 1 or 2).
    n_landmarks : int
        Landmarks (100 as in the paper); all points are used when there are fewer.
    max_alpha_square : float or 'auto'
        Witness complex only: where the filtration stops. 'auto' takes the square of half the
        median landmark-to-landmark distance, which leaves time for loops of the cloud's size to
        be born while keeping the complex small.
    seed : int
        Start of the maxmin selection.

    Examples
    --------
    >>> bc = barcodes(cloud, n_landmarks=100)       # doctest: +SKIP
    >>> bc.long_bars(1, 3), bc.dominance(1)         # doctest: +SKIP
    """
    import time

    x = _check(points, maxdim, n_landmarks, method)
    t0 = time.perf_counter()
    if method == "ripser":
        bc = _ripser(x, maxdim, n_landmarks, seed)
    else:
        bc = _witness(x, maxdim, n_landmarks, max_alpha_square, seed)
    bc.seconds = time.perf_counter() - t0
    return bc


def _ripser(x: np.ndarray, maxdim: int, n_landmarks: int, seed: int) -> Barcodes:
    from ripser import ripser

    idx = maxmin_landmarks(x, n_landmarks, seed=seed)
    lm = x[idx]
    with warnings.catch_warnings():  # "more columns than rows" for tiny clouds is expected here
        warnings.filterwarnings("ignore", message="The input point cloud has more columns")
        r = ripser(lm, maxdim=maxdim)
    dgms = [np.asarray(d, dtype=float).reshape(-1, 2) for d in r["dgms"]]
    finite = [d[np.isfinite(d)] for d in dgms]
    diam = float(np.max(np.linalg.norm(lm[:, None] - lm[None], axis=-1)))
    end = max([diam] + [float(f.max()) for f in finite if f.size])
    return Barcodes(dgms, "ripser", len(x), len(lm), end, {"maxdim": maxdim, "seed": seed})


def _witness(x: np.ndarray, maxdim: int, n_landmarks: int, cap, seed: int) -> Barcodes:
    import gudhi

    idx = maxmin_landmarks(x, n_landmarks, seed=seed)
    lm = x[idx]
    if cap == "auto":
        d = np.linalg.norm(lm[:, None] - lm[None], axis=-1)
        cap = float((np.median(d[np.triu_indices(len(lm), 1)]) / 2) ** 2)
    if isinstance(cap, bool) or not isinstance(cap, numbers.Real) or not 0 < cap < np.inf:
        raise ValueError(f"max_alpha_square must be a positive finite number or 'auto', got {cap!r}: "
                         "an unbounded witness complex can run for many minutes")
    wc = gudhi.EuclideanWitnessComplex(witnesses=x, landmarks=lm)
    st = wc.create_simplex_tree(max_alpha_square=float(cap), limit_dimension=maxdim + 1)
    st.compute_persistence(homology_coeff_field=2, min_persistence=0)
    dgms = []
    for d in range(maxdim + 1):
        iv = np.asarray(st.persistence_intervals_in_dimension(d), dtype=float).reshape(-1, 2)
        dgms.append(np.sqrt(np.maximum(iv, 0.0)))
    return Barcodes(dgms, "witness", len(x), len(lm), float(np.sqrt(cap)),
                    {"maxdim": maxdim, "seed": seed, "max_alpha_square": float(cap)})
