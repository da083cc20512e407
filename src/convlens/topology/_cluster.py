"""Single-linkage clustering cut by the gap heuristic of Singh, Memoli & Carlsson (2007), Sec. 3.1:
take the lengths of the single-linkage merges (the edges of the minimum spanning tree), make a
histogram of them with ``n_bins`` intervals, and cut at the first empty interval; with no empty
interval the bin is one cluster. This is the "fixed heuristic for the choice of threshold" the
paper used inside Mapper.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin


def mst_edges(x: np.ndarray, *, max_exact: int = 3000, n_neighbors: int = 12):
    """Edges ``(i, j, length)`` of a minimum spanning forest of ``x`` (Euclidean).

    Exact up to ``max_exact`` points (dense distances); beyond, the MST of the symmetric
    ``n_neighbors``-nearest-neighbour graph (exact whenever that graph holds the true MST, which
    is the usual case; pieces it leaves apart stay apart, i.e. they are treated as a large gap).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n = len(x)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    if n <= max_exact:
        from scipy.spatial.distance import pdist, squareform

        return _prim(squareform(pdist(x)))
    else:
        from scipy.spatial import cKDTree

        k = min(n_neighbors + 1, n)
        dist, idx = cKDTree(x).query(x, k=k)
        rows = np.repeat(np.arange(n), k - 1)
        w = np.maximum(dist[:, 1:].ravel(), 1e-12)
        g = coo_matrix((w, (rows, idx[:, 1:].ravel())), shape=(n, n)).tocsr()
        t = minimum_spanning_tree(g.maximum(g.T)).tocoo()
    return t.row.astype(np.int64), t.col.astype(np.int64), t.data


def _prim(d: np.ndarray):
    """Prim's minimum spanning tree of a dense distance matrix, O(n^2) in n vector steps: the
    same tree as scipy's Kruskal (the unique one when lengths are distinct; with ties, the same
    lengths and the same components below any cut), without sorting all n^2 edges (that sort was
    90 % of Mapper's time on the 204 800-point cloud)."""
    n = len(d)
    best = d[0].copy()
    parent = np.zeros(n, np.int64)
    done = np.zeros(n, bool)
    done[0] = True
    best[0] = np.inf
    rows, cols, w = np.empty(n - 1, np.int64), np.empty(n - 1, np.int64), np.empty(n - 1)
    for e in range(n - 1):
        j = int(best.argmin())
        rows[e], cols[e], w[e] = parent[j], j, best[j]
        done[j] = True
        best[j] = np.inf
        closer = (d[j] < best) & ~done
        best[closer] = d[j][closer]
        parent[closer] = j
    return rows, cols, w


def gap_threshold(lengths: np.ndarray, n_bins: int = 10, min_ratio: float = 1.0) -> float:
    """The cut of the gap heuristic: the start of the first empty interval of the histogram of
    merge ``lengths``, or ``inf`` (one cluster) when the histogram has no gap.

    With ``min_ratio > 1`` a gap counts only if the shortest merge above it is at least
    ``min_ratio`` times the longest merge below it; otherwise the next empty interval is tried.
    """
    if len(lengths) == 0:
        return float("inf")
    lo, hi = float(lengths.min()), float(lengths.max())
    if hi <= lo:
        return float("inf")
    counts, edges = np.histogram(lengths, bins=n_bins, range=(lo, hi))
    for e in np.flatnonzero(counts == 0):
        cut = float(edges[e])
        below, above = lengths[lengths < cut], lengths[lengths >= cut]
        if min_ratio <= 1 or (len(below) and above.min() >= min_ratio * below.max()):
            return cut
    return float("inf")


class GapSingleLinkage(ClusterMixin, BaseEstimator):
    """Single-linkage clustering with the gap-heuristic cut (scikit-learn clusterer).

    Parameters
    ----------
    n_bins : int
        Intervals of the histogram of merge lengths (Singh et al. use 10).
    max_exact : int
        Above this many points the spanning tree comes from a nearest-neighbour graph.
    n_neighbors : int
        Neighbours per point of that graph.
    min_ratio : float
        A gap counts only if the merges above it are at least this many times longer than those
        below it. Points sampled uniformly along a curve have exponentially distributed spacings,
        whose histogram has empty intervals in its tail by chance: the raw heuristic
        (``min_ratio=1``) cuts such arcs into pieces and the nerve then shows false loops.
    min_cluster_size : int
        Clusters the cut leaves smaller than this are joined back along their shortest removed
        tree edge (single linkage would have merged them there). In small bins the histogram of a
        few merge lengths has empty intervals by chance, and the raw heuristic shatters the bin
        into outliers; 1 keeps the raw heuristic.

    Attributes
    ----------
    labels_ : ndarray of int
    threshold_ : float
        The cut (``inf``: no gap, one cluster).
    """

    def __init__(self, *, n_bins: int = 10, min_ratio: float = 2.0, min_cluster_size: int = 3, max_exact: int = 3000,
                 n_neighbors: int = 12):
        self.n_bins = n_bins
        self.min_ratio = min_ratio
        self.min_cluster_size = min_cluster_size
        self.max_exact = max_exact
        self.n_neighbors = n_neighbors

    def fit(self, X, y=None):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")
        x = np.asarray(X, dtype=np.float64)
        n = len(x)
        i, j, w = mst_edges(x, max_exact=self.max_exact, n_neighbors=self.n_neighbors)
        self.threshold_ = gap_threshold(w, self.n_bins, self.min_ratio)
        keep = w < self.threshold_
        g = coo_matrix((np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(n, n))
        _, labels = connected_components(g, directed=False)
        if self.min_cluster_size > 1 and not keep.all():
            labels = _join_small(labels, i[~keep], j[~keep], w[~keep], self.min_cluster_size)
        self.labels_ = labels
        return self


def _join_small(labels: np.ndarray, i: np.ndarray, j: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """Union-find over the cut tree edges, shortest first, merging while either side is small."""
    parent = np.arange(labels.max() + 1)
    size = np.bincount(labels).astype(np.int64)

    def root(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for e in np.argsort(w, kind="stable"):
        a, b = root(labels[i[e]]), root(labels[j[e]])
        if a != b and (size[a] < m or size[b] < m):
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
    roots = np.array([root(c) for c in range(len(parent))])
    return np.unique(roots[labels], return_inverse=True)[1]
