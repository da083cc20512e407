"""The pipelines of Kitahara & Holm's Table 1 -- ``L/k-means``, ``L/PCA/k-means`` and
``L/PCA/t-SNE/k-means`` -- over several seeds, and the single clustered 2-D map that the pictures
are drawn from (Fig. 5, Fig. 7)."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.embed import _reduce
from convlens.embed._cluster import (
    check_labels,
    check_n_clusters,
    cluster_scores,
    confusion_matrix,
    kmeans,
    mapped_predictions,
)
from convlens.embed._reduce import TSNE, UMAPMap, _matrix, _nbytes, _on_disk, pca_reduce
from convlens.files import read_json, write_json, write_text

log = logging.getLogger(__name__)

PIPELINES = ("k-means", "PCA/k-means", "PCA/t-SNE/k-means")
MAPS = ("tsne", "umap", "pca")
MAP_NAMES = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PC1-2"}


def _n_clusters(n_clusters, labels, n) -> int:
    if n_clusters is None:
        if labels is None:
            raise ValueError("give the number of clusters (--clusters K): the images have no labels")
        n_clusters = len(np.unique(labels))
    return check_n_clusters(n_clusters, n)


@dataclass
class ClusterMap:
    """A 2-D map of the images, their k-means clusters, and (with labels) the scores.

    ``coords`` (N, 2); ``clusters`` (N,); ``labels`` (N,, -1: none); ``predicted`` the matched
    class of each image's cluster (-1 without labels); ``confusion`` rows true, columns predicted.
    """

    coords: np.ndarray
    clusters: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...]
    pipeline: str
    params: dict = field(default_factory=dict)
    scores: dict | None = None
    predicted: np.ndarray | None = None
    confusion: np.ndarray | None = None
    reducer: object = None  # the fitted TSNE/UMAPMap (not saved): reducer.transform(new)

    @property
    def correct(self) -> np.ndarray | None:
        return None if self.predicted is None else self.predicted == self.labels

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from convlens.files import atomic_path

        with atomic_path(folder / "map.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, coords=self.coords, clusters=self.clusters, labels=self.labels,
                     predicted=self.predicted if self.predicted is not None else np.zeros(0),
                     confusion=self.confusion if self.confusion is not None else np.zeros((0, 0)))
        return write_json(folder / "map.json", {
            "ids": self.ids, "class_names": list(self.class_names), "pipeline": self.pipeline,
            "params": self.params, "scores": self.scores})

    @classmethod
    def load(cls, folder: str | Path) -> ClusterMap:
        folder = Path(folder)
        meta = read_json(folder / "map.json")
        with np.load(folder / "map.npz") as z:
            pred = z["predicted"] if z["predicted"].size else None
            conf = z["confusion"] if z["confusion"].size else None
            return cls(z["coords"], z["clusters"], z["labels"], meta["ids"], tuple(meta["class_names"]),
                       meta["pipeline"], meta["params"], meta["scores"], pred, conf)


def cluster_map(features, n_clusters: int | None = None, *, labels=None, ids: Sequence[str] | None = None,
                class_names: Sequence[str] = (), n_components: int = 50, method: str = "tsne",
                perplexity: float = 30.0, n_iter: int = 500, seed: int = 0) -> ClusterMap:
    """The full pipeline: PCA to ``n_components``, a 2-D map (t-SNE, UMAP, or the first two
    principal components), k-means with ``n_clusters`` on the map, and scores when labelled.

    ``features`` is an array or a :class:`Features` (whose labels, ids and class names are used
    when not given)."""
    x, labels, ids, class_names = _unpack(features, labels, ids, class_names)
    if method not in MAPS:
        raise ValueError(f"unknown map {method!r}: choose one of {', '.join(MAPS)}")
    has_labels = labels is not None and (np.asarray(labels) >= 0).all()
    if has_labels:
        check_labels(labels)
    k = _n_clusters(n_clusters, labels if has_labels else None, x.shape[0])
    z, _ = pca_reduce(x, n_components, seed=seed)
    reducer = None
    if method == "tsne":
        reducer = TSNE(perplexity=perplexity, n_iter=n_iter, seed=seed)
        coords = reducer.fit_transform(z)
    elif method == "umap":
        reducer = UMAPMap(seed=seed)
        coords = reducer.fit_transform(z)
    else:
        coords = z[:, :2] if z.shape[1] >= 2 else np.c_[z, np.zeros(len(z))]
    clusters = kmeans(coords, k, seed=seed)
    lab = np.asarray(labels if labels is not None else np.full(x.shape[0], -1), dtype=np.int64)
    params = {"n_clusters": k, "n_components": int(z.shape[1]), "method": method,
              "perplexity": perplexity, "n_iter": n_iter, "seed": seed}
    out = ClusterMap(np.asarray(coords, dtype=np.float32), clusters, lab, list(ids), tuple(class_names),
                     f"PCA/{MAP_NAMES[method]}/k-means",
                     params, reducer=reducer)
    if has_labels:
        out.scores = cluster_scores(lab, clusters).to_dict()
        out.predicted = mapped_predictions(lab, clusters)
        out.confusion = confusion_matrix(lab, clusters, n_classes=max(len(class_names), int(lab.max()) + 1))
    return out


def _unpack(features, labels, ids, class_names):
    if hasattr(features, "values") and hasattr(features, "ids"):
        labels = features.labels if labels is None else labels
        ids = features.ids if ids is None else ids
        class_names = class_names or features.class_names
        arr = features.array
        if _on_disk(arr) and _nbytes(arr) > _reduce.IN_MEMORY_LIMIT:
            return arr, labels, list(ids), tuple(class_names)  # PCA streams it
        features = features.values
    x = _matrix(features)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(x))]
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{len(x)} feature rows but {len(labels)} labels")
    return x, labels, ids, tuple(class_names)


@dataclass
class PipelineTable:
    """Scores of each pipeline at each seed; :meth:`summary` gives mean ± std (Table 1)."""

    layer: str
    runs: list[dict]  # {pipeline, seed, accuracy, nmi, ari, seconds}
    params: dict = field(default_factory=dict)

    def summary(self) -> list[dict]:
        rows = []
        for p in dict.fromkeys(r["pipeline"] for r in self.runs):
            rs = [r for r in self.runs if r["pipeline"] == p]
            row = {"pipeline": f"{self.layer}/{p}", "seeds": len(rs)}
            for m in ("accuracy", "nmi", "ari", "seconds"):
                v = np.array([r[m] for r in rs], dtype=float)
                row[f"{m}_mean"], row[f"{m}_std"] = float(v.mean()), float(v.std(ddof=1) if len(v) > 1 else 0.0)
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        buf = io.StringIO()
        rows = self.summary()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()

    def to_markdown(self) -> str:
        lines = ["| pipeline | accuracy (%) | NMI | ARI | seconds |", "|---|---|---|---|---|"]
        for r in self.summary():
            lines.append(f"| {r['pipeline']} | {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} "
                         f"| {r['nmi_mean']:.3f} ± {r['nmi_std']:.3f} | {r['ari_mean']:.3f} ± {r['ari_std']:.3f} "
                         f"| {r['seconds_mean']:.2f} |")
        seeds = self.summary()[0]["seeds"] if self.runs else 0
        lines.append(f"\nMean ± standard deviation over {seeds} seeds; {self.params}.")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        write_text(folder / "pipelines.csv", self.to_csv())
        write_text(folder / "pipelines.md", self.to_markdown())
        return write_json(folder / "pipelines.json", {"layer": self.layer, "runs": self.runs,
                                                      "params": self.params})

    @classmethod
    def load(cls, folder: str | Path) -> PipelineTable:
        d = read_json(Path(folder) / "pipelines.json")
        return cls(d["layer"], d["runs"], d["params"])


def run_pipelines(features, labels=None, n_clusters: int | None = None, *, seeds: int | Sequence[int] = 5,
                  n_components: int = 50, perplexity: float = 30.0, n_iter: int = 500,
                  pipelines: Sequence[str] = PIPELINES, layer: str | None = None,
                  callback: Callable[[int, int], None] | None = None) -> PipelineTable:
    """Each pipeline of Table 1 at each seed (PCA, t-SNE and k-means all reseeded).

    Returns a :class:`PipelineTable`; ``callback(done, total)`` after each run."""
    x, labels, _, _ = _unpack(features, labels, None, ())
    layer = layer or getattr(features, "layer", "L")
    if labels is None:
        raise ValueError("the pipelines are scored against labels, and these images have none")
    y, _ = check_labels(labels)
    k = _n_clusters(n_clusters, y, x.shape[0])
    unknown = [p for p in pipelines if p not in PIPELINES]
    if unknown:
        raise ValueError(f"unknown pipelines {unknown}: choose from {', '.join(PIPELINES)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("give at least one seed")
    runs, total = [], len(seed_list) * len(pipelines)
    for s in seed_list:
        z = None
        for p in pipelines:
            t0 = time.perf_counter()
            if p == "k-means":
                if _on_disk(x):
                    raise ValueError(f"the {x.shape} features do not fit in memory: k-means on them "
                                     "directly is not possible; run the PCA pipelines only")
                c = kmeans(x, k, seed=s)
            else:
                if z is None:
                    z, _ = pca_reduce(x, n_components, seed=s)
                if p == "PCA/k-means":
                    c = kmeans(z, k, seed=s)
                else:
                    c = kmeans(TSNE(perplexity=perplexity, n_iter=n_iter, seed=s).fit_transform(z), k, seed=s)
            runs.append({"pipeline": p, "seed": s, **cluster_scores(y, c).to_dict(),
                         "seconds": time.perf_counter() - t0})
            if callback:
                callback(len(runs), total)
    return PipelineTable(layer, runs, {"n_clusters": k, "n_components": n_components,
                                       "perplexity": perplexity, "n_iter": n_iter, "images": x.shape[0],
                                       "dims": int(x.shape[1])})
