"""Mapper (Singh, Memoli & Carlsson 2007) as the paper used it (Gabrielsson & Carlsson, Sec. 3):
PCA lenses (1 to 3), a cover of ``resolution`` equal intervals per lens overlapping by
``1 - 1/gain`` (KeplerMapper's :class:`kmapper.Cover`, whose ``perc_overlap`` is exactly that
ratio), a clusterer inside each bin (single linkage cut by the gap heuristic by default, any
scikit-learn clusterer otherwise) in the variance-normalised Euclidean metric, and the nerve.

The nerve uses an inverted index from points to the nodes that hold them, so it costs
O(sum over points of (nodes per point)^2) instead of KeplerMapper's pairwise loop over nodes.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, clone

from convlens.files import atomic_path, load_result, save_result, write_json
from convlens.topology._cluster import GapSingleLinkage

METRICS = ("vne", "euclidean")


@dataclass
class MapperGraph:
    """Nodes (clusters of points), edges (clusters sharing a point) and what to draw them with.

    ``members`` holds the point indices of every node back to back; node ``v`` owns
    ``members[offsets[v]:offsets[v + 1]]``. ``means`` is the mean point of each node (the mean
    filter drawn as its glyph), ``centroids`` its mean lens value.
    """

    members: np.ndarray
    offsets: np.ndarray
    edges: np.ndarray  # (E, 2) int, i < j
    bins: np.ndarray  # (V,) cover-bin id of each node
    means: np.ndarray  # (V, D)
    centroids: np.ndarray  # (V, n_lenses)
    n_points: int
    point_shape: tuple[int, ...] | None = None
    params: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def node(self, v: int) -> np.ndarray:
        return self.members[self.offsets[v]: self.offsets[v + 1]]

    def to_networkx(self):
        import networkx as nx

        g = nx.Graph(**{k: str(v) for k, v in self.params.items()})
        for v, size in enumerate(self.sizes):
            attrs = {"size": int(size), "bin": int(self.bins[v])}
            attrs.update({f"lens{i}": float(c) for i, c in enumerate(self.centroids[v])})
            g.add_node(int(v), **attrs)
        g.add_edges_from((int(a), int(b)) for a, b in self.edges)
        return g

    def n_components(self) -> int:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        n = self.n_nodes
        if n == 0:
            return 0
        e = self.edges
        return int(connected_components(coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)),
                                        directed=False)[0])

    def cycle_rank(self) -> int:
        """First Betti number of the graph itself: E - V + components."""
        return len(self.edges) - self.n_nodes + self.n_components()

    def betti_numbers(self) -> tuple[int, int]:
        """(b0, b1) of the clique complex of the graph up to triangles. With gain > 2 three bins
        overlap, so the graph has triangles that the cycle rank would count as loops; filling
        them leaves the loops of the data (a circle gives b1 = 1)."""
        import gudhi

        st = gudhi.SimplexTree()
        for v in range(self.n_nodes):
            st.insert([v], 0.0)
        for a, b in self.edges:
            st.insert([int(a), int(b)], 0.0)
        st.expansion(2)
        st.compute_persistence(persistence_dim_max=True)
        b = st.betti_numbers() + [0, 0]
        return int(b[0]), int(b[1])

    def summary(self) -> dict:
        b0, b1 = self.betti_numbers()
        return {"nodes": self.n_nodes, "edges": int(len(self.edges)), "points": self.n_points,
                "covered": int(len(np.unique(self.members))), "components": b0, "loops": b1,
                "cycle_rank": self.cycle_rank(), "params": self.params}

    def to_json(self) -> dict:
        return {
            "params": self.params, "n_points": self.n_points,
            "point_shape": list(self.point_shape) if self.point_shape else None,
            "nodes": [{"id": v, "size": int(s), "bin": int(self.bins[v]),
                       "lens": [float(c) for c in self.centroids[v]],
                       "mean": [round(float(m), 5) for m in self.means[v]],
                       "members": self.node(v).tolist()} for v, s in enumerate(self.sizes)],
            "edges": self.edges.tolist(),
        }

    def write_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())

    def write_graphml(self, path: str | Path) -> Path:
        import networkx as nx

        with atomic_path(path) as tmp:
            nx.write_graphml(self.to_networkx(), tmp)
        return Path(path)

    def save(self, folder: str | Path, name: str = "mapper") -> Path:
        return save_result(folder, name, {k: getattr(self, k) for k in _GRAPH_ARRAYS},
                           {"n_points": self.n_points, "params": self.params, "point_shape": self.point_shape},
                           kind="mapper")

    @classmethod
    def load(cls, folder: str | Path, name: str = "mapper") -> MapperGraph:
        z, meta = load_result(folder, name, kind="mapper")
        shape = tuple(meta["point_shape"]) if meta["point_shape"] else None
        return cls(*(z[k] for k in _GRAPH_ARRAYS), meta["n_points"], shape, meta["params"])


_GRAPH_ARRAYS = ("members", "offsets", "edges", "bins", "means", "centroids")


def nerve_edges(members: np.ndarray, offsets: np.ndarray, n_points: int) -> np.ndarray:
    """Pairs of nodes that share at least one point, through an inverted index points -> nodes.

    Memberships are sorted by point; for each shift ``s`` the membership ``m`` and ``m + s`` of
    the same point give an edge. Linear in the memberships times the largest node count per
    point (at most ``ceil(gain)^lenses``)."""
    node_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    if len(members) == 0:
        return np.empty((0, 2), np.int64)
    order = np.lexsort((node_of, members))
    pts, nodes = members[order], node_of[order]
    pairs = []
    for s in range(1, len(pts)):
        same = pts[s:] == pts[:-s]
        if not same.any():
            break
        pairs.append(np.stack([nodes[:-s][same], nodes[s:][same]], axis=1))
    if not pairs:
        return np.empty((0, 2), np.int64)
    e = np.concatenate(pairs)
    e = np.sort(e, axis=1)
    e = e[e[:, 0] != e[:, 1]]
    key = np.unique(e[:, 0].astype(np.int64) * (len(offsets) - 1) + e[:, 1])
    return np.stack([key // (len(offsets) - 1), key % (len(offsets) - 1)], axis=1)


def _check_int(name, v, lo, hi=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (hi is not None and v > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an integer {rng}, got {v!r}")


class Mapper(BaseEstimator):
    """Mapper(resolution, gain) with PCA lenses, as in the paper.

    Parameters
    ----------
    resolution : int
        Intervals per lens (Ayasdi's resolution).
    gain : float
        Overlap of adjacent intervals is ``1 - 1/gain`` (gain 3: two thirds), > 1.
    lenses : int
        Number of PCA lenses, 1 to 3.
    clusterer : scikit-learn clusterer, optional
        Fitted on each bin; ``labels_`` of -1 mean noise and are dropped. Default
        :class:`GapSingleLinkage`.
    metric : 'vne' or 'euclidean'
        'vne' (variance-normalised Euclidean) scales every column by its standard deviation over
        the whole cloud before clustering, i.e. squared differences are divided by the variance.
    min_cluster_size : int
        Clusters smaller than this are not made nodes.

    Attributes
    ----------
    graph_ : MapperGraph
    lens_ : ndarray (n, lenses)
    pca_ : sklearn PCA
    cover_ : kmapper.Cover

    Examples
    --------
    >>> g = Mapper(resolution=30, gain=3).fit(cloud.points).graph_     # doctest: +SKIP
    >>> g.betti_numbers(), g.write_graphml("mapper.graphml")           # doctest: +SKIP
    """

    def __init__(self, *, resolution: int = 30, gain: float = 3.0, lenses: int = 2, clusterer=None,
                 metric: str = "vne", min_cluster_size: int = 1):
        self.resolution = resolution
        self.gain = gain
        self.lenses = lenses
        self.clusterer = clusterer
        self.metric = metric
        self.min_cluster_size = min_cluster_size

    def _validate(self):
        _check_int("resolution", self.resolution, 1)
        _check_int("lenses", self.lenses, 1, 3)
        _check_int("min_cluster_size", self.min_cluster_size, 1)
        if isinstance(self.gain, bool) or not isinstance(self.gain, numbers.Real) or not self.gain > 1:
            raise ValueError(f"gain must be a number > 1 (overlap 1 - 1/gain), got {self.gain!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.clusterer is not None and not hasattr(self.clusterer, "fit"):
            raise TypeError(f"clusterer must be a scikit-learn style estimator with fit(), got "
                            f"{type(self.clusterer).__name__}")

    def transform(self, X) -> np.ndarray:
        """The PCA lens values of ``X`` (fitted PCA)."""
        x = np.asarray(getattr(X, "points", X), dtype=np.float64)
        return self.pca_.transform(x)

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).lens_

    def fit(self, X, y=None, *, shape=None):
        from kmapper import Cover
        from sklearn.decomposition import PCA

        self._validate()
        shape = shape or (tuple(X.shape) if hasattr(X, "points") else None)
        x = np.asarray(getattr(X, "points", X), dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"Mapper needs an (n, d) array of at least 2 points, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("points contain NaN or infinite values")
        n_lens = min(self.lenses, x.shape[1], len(x))
        self.pca_ = PCA(n_components=n_lens, random_state=0).fit(x)
        self.lens_ = self.pca_.transform(x)
        self.cover_ = Cover(n_cubes=self.resolution, perc_overlap=1.0 - 1.0 / float(self.gain))
        self.cover_.fit(np.c_[np.arange(len(x)), self.lens_])
        if self.metric == "vne":
            std = x.std(axis=0)
            std[std == 0] = 1.0
            xm = x / std
        else:
            xm = x
        clusterer = self.clusterer if self.clusterer is not None else GapSingleLinkage()
        members, sizes, bins = [], [], []
        for b, idx in enumerate(self._bins()):
            if len(idx) == 0:
                continue
            labels = np.zeros(1, int) if len(idx) == 1 else np.asarray(clone(clusterer).fit(xm[idx]).labels_)
            for lab in np.unique(labels[labels >= 0]):
                pts = idx[labels == lab]
                if len(pts) >= self.min_cluster_size:
                    members.append(pts)
                    sizes.append(len(pts))
                    bins.append(b)
        self.graph_ = self._graph(x, members, sizes, bins, shape)
        return self

    def bins(self) -> list[np.ndarray]:
        """Point indices of every cover bin (fitted cover), empty bins included."""
        return list(self._bins())

    def _bins(self):
        """Bins as products of per-lens intervals ``[c - r, c + r]`` of the fitted kmapper cover
        (the same sets as ``Cover.transform_single``), found lens by lens."""
        centers = np.asarray(self.cover_.centers_)
        radius = np.asarray(self.cover_.radius_)
        per_dim = [np.unique(centers[:, d]) for d in range(centers.shape[1])]
        inside = [[np.flatnonzero((self.lens_[:, d] >= c - radius[d]) & (self.lens_[:, d] <= c + radius[d]))
                   for c in cs] for d, cs in enumerate(per_dim)]
        yield from _products(inside, np.arange(len(self.lens_)))

    def _graph(self, x, members, sizes, bins, shape) -> MapperGraph:
        offsets = np.zeros(len(sizes) + 1, np.int64)
        offsets[1:] = np.cumsum(sizes)
        flat = np.concatenate(members) if members else np.empty(0, np.int64)
        node_of = np.repeat(np.arange(len(sizes)), sizes)
        means = np.zeros((len(sizes), x.shape[1]))
        cents = np.zeros((len(sizes), self.lens_.shape[1]))
        if len(sizes):
            np.add.at(means, node_of, x[flat])
            np.add.at(cents, node_of, self.lens_[flat])
            means /= np.asarray(sizes)[:, None]
            cents /= np.asarray(sizes)[:, None]
        edges = nerve_edges(flat, offsets, len(x))
        params = {"resolution": self.resolution, "gain": float(self.gain), "lenses": self.lens_.shape[1],
                  "metric": self.metric, "clusterer": repr(self.clusterer or GapSingleLinkage()),
                  "min_cluster_size": self.min_cluster_size}
        return MapperGraph(flat.astype(np.int64), offsets, edges, np.asarray(bins, np.int64), means, cents,
                           len(x), tuple(shape) if shape else None, params)


def _products(inside: list[list[np.ndarray]], all_idx: np.ndarray):
    """Intersections of one interval per lens, in the cover's (row-major) bin order."""
    if not inside:
        yield all_idx
        return
    first, rest = inside[0], inside[1:]
    for idx in first:
        if not rest:
            yield idx
            continue
        mask = np.zeros(len(all_idx), bool)
        mask[idx] = True
        for sub in _products(rest, all_idx):
            yield sub[mask[sub]]
