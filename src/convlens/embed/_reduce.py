"""Reductions: PCA with its scree curve (Kitahara & Holm, Fig. 3), t-SNE through openTSNE with a
perplexity sweep (Fig. 6) and placement of new images into an existing map, and UMAP.

``TSNE`` and ``UMAPMap`` follow the estimator contract: keyword-only constructor arguments, no
work in ``__init__``, ``fit`` / ``transform`` / ``fit_transform``, learned state in ``*_``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.embed._cluster import check_labels, check_n_clusters, kmeans, matching_accuracy
from convlens.files import load_result, save_result
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)


def _matrix(x, name: str = "features") -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (images x values), got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"{name}: need at least 2 images, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values (an unfinished extraction?)")
    return x


# Features larger than this (bytes) that live on disk (Zarr) are reduced chunk by chunk.
IN_MEMORY_LIMIT = 2 << 30


def _on_disk(x) -> bool:
    return not isinstance(x, np.ndarray) and hasattr(x, "chunks") and hasattr(x, "shape")


def _nbytes(x) -> int:
    return int(np.prod(x.shape)) * 4


def pca_streamed(x, n_components: int, *, rows: int | None = None) -> tuple[np.ndarray, object]:
    """PCA of an on-disk ``(N, D)`` array that need not fit in memory: scikit-learn's
    ``IncrementalPCA`` fitted and applied one block of rows at a time (blocks of at least
    ``n_components`` rows; the last short block is merged into the one before)."""
    from sklearn.decomposition import IncrementalPCA

    n, d = x.shape
    k = min(n_components, n, d)
    step = max(rows or x.chunks[0], k)
    starts = list(range(0, n, step))
    if len(starts) > 1 and n - starts[-1] < k:
        starts.pop()
    ends = starts[1:] + [n]
    pca = IncrementalPCA(n_components=k)
    for a, b in zip(starts, ends):
        pca.partial_fit(_matrix(x[a:b]))
    z = np.concatenate([pca.transform(_matrix(x[a:b])) for a, b in zip(starts, ends)])
    return z, pca


def pca_reduce(x, n_components: int = 50, *, seed: int = 0, whiten: bool = False
               ) -> tuple[np.ndarray, object]:
    """``(scores, fitted PCA)`` with ``min(n_components, N, D)`` components. An on-disk (Zarr)
    array over :data:`IN_MEMORY_LIMIT` bytes is reduced chunk by chunk (:func:`pca_streamed`).

    ``whiten``: each component's scores divided by its standard deviation (the square root of
    its explained variance), so every component has unit variance -- scikit-learn's
    ``PCA(whiten=True)``; Cohn & Holm's pipeline whitens before k-means."""
    from sklearn.decomposition import PCA

    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components}")
    if _on_disk(x) and _nbytes(x) > IN_MEMORY_LIMIT:
        log.info("PCA of %s features on disk, chunk by chunk", x.shape)
        z, pca = pca_streamed(x, n_components)
        return (whitened(z, pca.explained_variance_) if whiten else z), pca
    k = min(n_components, *x.shape)
    if k < n_components:
        log.info("PCA: %d components asked, %d possible (min of images, values)", n_components, k)
    pca = PCA(n_components=k, random_state=seed, svd_solver="auto")
    z = pca.fit_transform(x)
    return (whitened(z, pca.explained_variance_) if whiten else z), pca


def whitened(scores: np.ndarray, explained_variance: np.ndarray) -> np.ndarray:
    """PCA scores scaled to unit variance per component; a component with no variance (constant
    features) stays zero instead of dividing by zero."""
    sd = np.sqrt(np.asarray(explained_variance, dtype=np.float64))
    scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > np.finfo(np.float32).eps * sd.max())
    return (scores * scale).astype(scores.dtype, copy=False)


@dataclass
class Scree:
    """Cumulative explained variance against the number of components and, with labels, the
    k-means matching accuracy on the first ``k`` components (Kitahara & Holm, Fig. 3)."""

    cumulative: np.ndarray
    ks: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    chosen: int = 50

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "scree", {"cumulative": self.cumulative},
                           {"ks": self.ks, "accuracy": self.accuracy, "chosen": self.chosen})

    @classmethod
    def load(cls, folder: str | Path) -> Scree:
        a, d = load_result(folder, "scree")
        cumulative = a["cumulative"] if "cumulative" in a else np.asarray(d["cumulative"])  # format 0: in the JSON
        return cls(cumulative, d["ks"], d["accuracy"], d["chosen"])


def scree(x, labels=None, n_clusters: int | None = None, *, ks: Sequence[int] | None = None,
          chosen: int = 50, seed: int = 0, max_components: int = 200) -> Scree:
    """Explained variance of every component (up to ``max_components``) and, when ``labels``
    are given, the k-means accuracy on the first ``k`` components for each ``k`` in ``ks``."""
    x = _matrix(x)
    _, pca = pca_reduce(x, max_components, seed=seed)
    cum = np.cumsum(pca.explained_variance_ratio_)
    out = Scree(cum, chosen=chosen)
    if labels is not None:
        y, _ = check_labels(labels)
        k_clusters = check_n_clusters(n_clusters or len(np.unique(y)), len(x))
        kmax = len(cum)
        ks = sorted({k for k in (ks or (1, 2, 3, 5, 10, 20, 50, 100, 200)) if 1 <= k <= kmax})
        z = pca.transform(x)
        out.ks = list(ks)
        out.accuracy = [matching_accuracy(y, kmeans(z[:, :k], k_clusters, seed=seed, n_init=3))
                        for k in ks]
    return out


# Below this many points t-SNE's nearest neighbours are found exactly (scikit-learn's brute
# force): 2 000 x 50 takes 0.16 s of CPU against 1.6 s for openTSNE's Annoy index.
EXACT_NEIGHBORS_BELOW = 10_000


class TSNE:
    """t-SNE through openTSNE (FFT-accelerated); new points go into the fitted map with
    :meth:`transform` instead of recomputing it.

    Parameters
    ----------
    perplexity : effective number of neighbours
    n_iter : optimization iterations after early exaggeration
    initialization : ``"pca"``, ``"spectral"``, ``"random"`` or an ``(N, 2)`` array (e.g. the
        previous map, to keep successive maps aligned)
    seed : random state
    n_jobs : threads for openTSNE
    progress : a :class:`~convlens.progress.Progress` event ``("t-SNE", iterations done,
        iterations)`` every 50 iterations (``info``: ``kl``, the KL divergence); when it returns
        ``True`` the optimization stops and the map so far is kept
    neighbors : ``"auto"`` (exact nearest neighbours below :data:`EXACT_NEIGHBORS_BELOW` points,
        where they are ~10x cheaper than openTSNE's default approximate index; approximate
        above), or any method name openTSNE takes (``"exact"``, ``"annoy"``, ``"pynndescent"``)
    """

    def __init__(self, *, perplexity: float = 30.0, n_iter: int = 500, early_exaggeration_iter: int = 250,
                 initialization: str | np.ndarray = "pca", seed: int = 0, n_jobs: int = 1,
                 progress: Callback | None = None, neighbors: str = "auto"):
        self.neighbors = neighbors
        self.perplexity = perplexity
        self.n_iter = n_iter
        self.early_exaggeration_iter = early_exaggeration_iter
        self.initialization = initialization
        self.seed = seed
        self.n_jobs = n_jobs
        self.progress = progress

    def _check(self, n: int) -> None:
        if not self.perplexity > 0:
            raise ValueError(f"perplexity must be positive, got {self.perplexity}")
        if 3 * self.perplexity >= n:
            raise ValueError(f"perplexity {self.perplexity} is too large for {n} images: it must be "
                             f"below {(n - 1) / 3:.1f} (one third of the images)")

    def _neighbors(self, n: int) -> str:
        if self.neighbors != "auto":
            return self.neighbors
        return "exact" if n < EXACT_NEIGHBORS_BELOW else "auto"

    def _reporter(self):
        """openTSNE's callback ``(iteration, kl, embedding) -> stop?`` (its iterations restart at
        each phase; called every 50) as :class:`~convlens.progress.Progress` events."""
        total = self.early_exaggeration_iter + self.n_iter
        calls = [0]

        def report(iteration, kl, embedding) -> bool:
            calls[0] += 1
            return notify(self.progress, "t-SNE", min(total, 50 * calls[0]), total, kl=float(kl))

        return report

    def fit(self, x, y=None) -> TSNE:
        import openTSNE

        x = _matrix(x)
        self._check(len(x))
        init = self.initialization
        if isinstance(init, np.ndarray):
            if init.shape != (len(x), 2):
                raise ValueError(f"initialization array must be ({len(x)}, 2), got {init.shape}")
            init = openTSNE.initialization.rescale(np.asarray(init, dtype=np.float64))
        cbs = [self._reporter()] if self.progress else None
        self.n_features_in_ = x.shape[1]
        self.embedding_ = openTSNE.TSNE(
            perplexity=self.perplexity, n_iter=self.n_iter, initialization=init,
            early_exaggeration_iter=self.early_exaggeration_iter, random_state=self.seed,
            n_jobs=self.n_jobs, callbacks=cbs, callbacks_every_iters=50,
            neighbors=self._neighbors(len(x))).fit(x)
        return self

    def fit_transform(self, x, y=None) -> np.ndarray:
        return np.asarray(self.fit(x).embedding_)

    def transform(self, x) -> np.ndarray:
        """Place new rows into the fitted map (openTSNE's optimization of the new points only,
        the existing map held fixed)."""
        if not hasattr(self, "embedding_"):
            raise ValueError("this TSNE is not fitted yet: call fit(X) first")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"new points must be a 2-D array with {self.n_features_in_} values "
                             f"per row (as fitted), got shape {x.shape}")
        perplexity = min(5.0, max(1.0, (len(self.embedding_) - 1) / 3))
        return np.asarray(self.embedding_.transform(x, perplexity=perplexity))


class UMAPMap:
    """UMAP (umap-learn), same contract as :class:`TSNE`; imported lazily (numba compiles on
    the first call, ~15 s)."""

    def __init__(self, *, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0):
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.seed = seed

    def fit(self, x, y=None) -> UMAPMap:
        import umap

        x = _matrix(x)
        if self.n_neighbors >= len(x):
            raise ValueError(f"n_neighbors {self.n_neighbors} must be below the number of images {len(x)}")
        self.model_ = umap.UMAP(n_neighbors=self.n_neighbors, min_dist=self.min_dist,
                                random_state=self.seed, n_jobs=1).fit(x)
        self.embedding_ = self.model_.embedding_
        return self

    def fit_transform(self, x, y=None) -> np.ndarray:
        return np.asarray(self.fit(x).embedding_)

    def transform(self, x) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise ValueError("this UMAPMap is not fitted yet: call fit(X) first")
        return np.asarray(self.model_.transform(np.asarray(x, dtype=np.float32)))


@dataclass
class Sweep:
    """t-SNE maps for several perplexities (Kitahara & Holm, Fig. 6) and, with labels, the
    k-means matching accuracy on each map."""

    perplexities: list[float]
    maps: np.ndarray  # (P, N, 2)
    accuracy: list[float] = field(default_factory=list)

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "sweep", {"maps": self.maps},
                           {"perplexities": self.perplexities, "accuracy": self.accuracy})

    @classmethod
    def load(cls, folder: str | Path) -> Sweep:
        a, d = load_result(folder, "sweep")
        maps = a["maps"] if "maps" in a else np.load(Path(folder) / "sweep_maps.npy")  # format 0: a .npy
        return cls(d["perplexities"], maps, d["accuracy"])


def perplexity_sweep(x, perplexities: Sequence[float] = (5, 30, 50, 100), labels=None,
                     n_clusters: int | None = None, *, seed: int = 0, n_iter: int = 500,
                     progress: Callback | None = None) -> Sweep:
    """One t-SNE map per perplexity (perplexities too large for the data are skipped);
    ``progress``: a ``("perplexities", done, total)`` event after each map (``info``: the
    perplexity; when it returns ``True`` the maps made so far are returned)."""
    x = _matrix(x)
    ok = [float(p) for p in perplexities if 0 < p < (len(x) - 1) / 3]
    if not ok:
        raise ValueError(f"no usable perplexity in {list(perplexities)} for {len(x)} images")
    y = check_labels(labels)[0] if labels is not None else None
    maps, acc = [], []
    for i, p in enumerate(ok):
        z = TSNE(perplexity=p, n_iter=n_iter, seed=seed).fit_transform(x)
        maps.append(z)
        if y is not None:
            acc.append(matching_accuracy(y, kmeans(z, n_clusters or len(np.unique(y)), seed=seed)))
        if notify(progress, "perplexities", i + 1, len(ok), perplexity=p):
            break
    return Sweep(ok[:len(maps)], np.stack(maps), acc)
