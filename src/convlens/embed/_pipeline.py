"""The pipelines of Kitahara & Holm's Table 1 -- ``L/k-means``, ``L/PCA/k-means`` and
``L/PCA/t-SNE/k-means`` -- over several seeds, and the single clustered 2-D map that the pictures
are drawn from (Fig. 5, Fig. 7)."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.embed import _reduce
from convlens.embed._cluster import (
    check_clusters_for_classes,
    check_labels,
    check_n_clusters,
    check_n_init,
    cluster_scores,
    confusion_matrix,
    kmeans,
    mapped_predictions,
)
from convlens.embed._reduce import TSNE, UMAPMap, _matrix, _nbytes, _on_disk, pca_reduce
from convlens.files import load_result, save_result, write_text
from convlens.progress import Callback, notify

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
        return save_result(folder, "map", {
            "coords": self.coords, "clusters": self.clusters, "labels": self.labels,
            "predicted": self.predicted, "confusion": self.confusion}, {
            "ids": self.ids, "class_names": list(self.class_names), "pipeline": self.pipeline,
            "params": self.params, "scores": self.scores})

    @classmethod
    def load(cls, folder: str | Path) -> ClusterMap:
        a, meta = load_result(folder, "map")
        pred, conf = (a.get(k) for k in ("predicted", "confusion"))
        if meta["format_version"] == 0:  # empty arrays stood for None
            pred, conf = (v if v.size else None for v in (pred, conf))
        return cls(a["coords"], a["clusters"], a["labels"], meta["ids"], tuple(meta["class_names"]),
                   meta["pipeline"], meta["params"], meta["scores"], pred, conf)


def cluster_map(features, n_clusters: int | None = None, *, labels=None, ids: Sequence[str] | None = None,
                class_names: Sequence[str] = (), n_components: int = 50, method: str = "tsne",
                perplexity: float = 30.0, n_iter: int = 500, seed: int = 0, whiten: bool = False,
                n_init: int = 10) -> ClusterMap:
    """The full pipeline: PCA to ``n_components`` (``whiten``: every component scaled to unit
    variance), a 2-D map (t-SNE, UMAP, or the first two principal components), k-means with
    ``n_clusters`` (``n_init`` restarts) on the map, and scores when labelled (one-to-one and
    many-to-one accuracy, NMI, ARI).

    ``features`` is an array or a :class:`Features` (whose labels, ids and class names are used
    when not given)."""
    x, labels, ids, class_names = _unpack(features, labels, ids, class_names)
    if method not in MAPS:
        raise ValueError(f"unknown map {method!r}: choose one of {', '.join(MAPS)}")
    has_labels = labels is not None and (np.asarray(labels) >= 0).all()
    if has_labels:
        check_labels(labels)
    k = _n_clusters(n_clusters, labels if has_labels else None, x.shape[0])
    if has_labels:
        check_clusters_for_classes(k, np.asarray(labels))
    check_n_init(n_init)
    z, _ = pca_reduce(x, n_components, seed=seed, whiten=whiten)
    reducer = None
    if method == "tsne":
        reducer = TSNE(perplexity=perplexity, n_iter=n_iter, seed=seed)
        coords = reducer.fit_transform(z)
    elif method == "umap":
        reducer = UMAPMap(seed=seed)
        coords = reducer.fit_transform(z)
    else:
        coords = z[:, :2] if z.shape[1] >= 2 else np.c_[z, np.zeros(len(z))]
    clusters = kmeans(coords, k, seed=seed, n_init=n_init)
    lab = np.asarray(labels if labels is not None else np.full(x.shape[0], -1), dtype=np.int64)
    params = {"n_clusters": k, "n_components": int(z.shape[1]), "method": method,
              "perplexity": perplexity, "n_iter": n_iter, "seed": seed, "whiten": whiten,
              "n_init": n_init}
    out = ClusterMap(np.asarray(coords, dtype=np.float32), clusters, lab, list(ids), tuple(class_names),
                     pipeline_name(f"PCA/{MAP_NAMES[method]}/k-means", whiten),
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


METRICS = ("accuracy", "accuracy_m2o", "nmi", "ari")
CRITERIA = ("prediction_agreement", "excess_silhouette", "silhouette", "stability")


def pipeline_name(p: str, whiten: bool) -> str:
    """``PCA/k-means`` -> ``PCA-whitened/k-means`` when whitened (``k-means`` has no PCA)."""
    return p.replace("PCA", "PCA-whitened", 1) if whiten else p


@dataclass
class PipelineTable:
    """Each pipeline at each seed on one layer; :meth:`summary` gives mean ± std (Table 1).

    ``runs``: ``{pipeline, seed, seconds}`` plus, with labels, ``accuracy`` (one-to-one,
    Hungarian), ``accuracy_m2o`` (many-to-one: each cluster to its majority class), ``nmi``,
    ``ari``. ``criteria[pipeline]``: label-free scores of the clustering, used to choose a layer
    without labels (:mod:`convlens.embed._layerpick`)."""

    layer: str
    runs: list[dict]
    params: dict = field(default_factory=dict)
    criteria: dict = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return bool(self.runs) and "accuracy" in self.runs[0]

    def summary(self) -> list[dict]:
        rows = []
        metrics = [m for m in (*METRICS, "seconds") if self.runs and m in self.runs[0]]
        for p in dict.fromkeys(r["pipeline"] for r in self.runs):
            rs = [r for r in self.runs if r["pipeline"] == p]
            row = {"pipeline": f"{self.layer}/{p}", "seeds": len(rs)}
            for m in metrics:
                v = np.array([r[m] for r in rs], dtype=float)
                row[f"{m}_mean"], row[f"{m}_std"] = float(v.mean()), float(v.std(ddof=1) if len(v) > 1 else 0.0)
            for c, v in self.criteria.get(p, {}).items():
                row[c] = v
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
        lines = [markdown_header(self.labelled)]
        lines += [markdown_row(r, self.labelled) for r in self.summary()]
        seeds = self.summary()[0]["seeds"] if self.runs else 0
        lines.append(f"\nMean ± standard deviation over {seeds} seeds; {self.params}.")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        write_text(folder / "pipelines.csv", self.to_csv())
        write_text(folder / "pipelines.md", self.to_markdown())
        return save_result(folder, "pipelines", {}, {"layer": self.layer, "runs": self.runs,
                                                     "params": self.params, "criteria": self.criteria})

    @classmethod
    def load(cls, folder: str | Path) -> PipelineTable:
        _, d = load_result(folder, "pipelines")
        return cls(d["layer"], d["runs"], d["params"], d.get("criteria", {}))


def markdown_header(labelled: bool) -> str:
    if labelled:
        return ("| pipeline | accuracy one-to-one (%) | accuracy many-to-one (%) | NMI | ARI | "
                "agreement with predictions | silhouette | excess silhouette | stability | seconds |\n"
                "|---|---|---|---|---|---|---|---|---|---|")
    return ("| pipeline | agreement with predictions | silhouette | excess silhouette | stability | "
            "seconds |\n|---|---|---|---|---|---|")


def format_score(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def markdown_row(r: dict, labelled: bool) -> str:
    crit = "".join(f"| {format_score(r.get(c))} " for c in
                   ("prediction_agreement", "silhouette", "excess_silhouette", "stability"))
    if not labelled:
        return f"| {r['pipeline']} {crit}| {r['seconds_mean']:.2f} |"
    return (f"| {r['pipeline']} | {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} "
            f"| {100 * r['accuracy_m2o_mean']:.1f} ± {100 * r['accuracy_m2o_std']:.1f} "
            f"| {r['nmi_mean']:.3f} ± {r['nmi_std']:.3f} | {r['ari_mean']:.3f} ± {r['ari_std']:.3f} "
            f"{crit}| {r['seconds_mean']:.2f} |")


def _stability(clusterings: list[np.ndarray]) -> float:
    """Mean adjusted Rand index between every pair of clusterings (1: the seeds agree)."""
    from sklearn.metrics import adjusted_rand_score

    pairs = [(a, b) for i, a in enumerate(clusterings) for b in clusterings[i + 1:]]
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs])) if pairs else float("nan")


def _silhouette(space: np.ndarray, clusters: np.ndarray, seed: int, sample: int = 2000) -> float:
    """Silhouette of ``clusters`` in the space k-means worked in (a seeded sample of at most
    ``sample`` points: the cost is quadratic)."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(clusters)) < 2:
        return float("nan")
    n = len(space)
    return float(silhouette_score(space, clusters, sample_size=min(n, sample), random_state=seed))


def run_pipelines(features, labels=None, n_clusters: int | None = None, *, seeds: int | Sequence[int] = 5,
                  n_components: int = 50, perplexity: float = 30.0, n_iter: int = 500,
                  pipelines: Sequence[str] = PIPELINES, layer: str | None = None,
                  whiten: bool = False, n_init: int = 10, null: bool = False,
                  reference=None, progress: Callback | None = None) -> PipelineTable:
    """Each pipeline of Table 1 at each seed, scored when labelled (one-to-one and many-to-one
    accuracy, NMI, ARI) and by label-free criteria (silhouette, agreement across seeds).

    The work a seed does not change is done once and shared by every seed: the PCA (fitted once,
    with seed 0) and the t-SNE map (PCA initialisation and, below 10 000 images, exact
    neighbours: deterministic). The seeds vary k-means' initialisation, so
    the spread over seeds is that of k-means. ``whiten`` scales every principal component to unit
    variance before k-means or t-SNE (Cohn & Holm); ``n_init`` k-means restarts per run.
    ``null``: also the ``excess_silhouette`` criterion (:func:`null_spaces`: k-means on a
    Gaussian of the same spectrum, one more t-SNE map), used to choose a layer.
    ``reference``: a label-free partition of the images to compare the clusters with (the
    network's own predictions, :func:`~convlens.embed.network_predictions`): the
    ``prediction_agreement`` criterion, the mean adjusted mutual information of each seed's
    clusters with it.

    Returns a :class:`PipelineTable`; ``progress``: a :class:`~convlens.progress.Progress` event
    ``("pipelines", runs done, runs)`` after each run (``info``: the pipeline; its answer is
    ignored: a table with some seeds missing would not be Table 1)."""
    x, labels, _, _ = _unpack(features, labels, None, ())
    layer = layer or getattr(features, "layer", "L")
    y = None
    if labels is not None and (np.asarray(labels) >= 0).all():
        y, _ = check_labels(labels)
    elif labels is not None and n_clusters is None:
        raise ValueError("the pipelines are scored against labels, and these images have none: "
                         "give the number of clusters to run them unscored")
    k = _n_clusters(n_clusters, y, x.shape[0])
    seed_list = _check_runs(x, y, k, n_init, pipelines, seeds)
    ref = _check_reference(reference, x.shape[0])
    spaces, shared = _spaces(x, pipelines, n_components, whiten, perplexity, n_iter, seed_list[0])
    nulls = null_spaces(x, spaces, whiten, perplexity, n_iter, seed_list[0]) if null else {}
    runs, total = [], len(seed_list) * len(pipelines)
    found: dict[str, list[np.ndarray]] = {p: [] for p in pipelines}
    criteria: dict[str, dict] = {}
    for p in pipelines:
        name = pipeline_name(p, whiten)
        sil = []
        for s in seed_list:
            t0 = time.perf_counter()
            c = kmeans(spaces[p], k, seed=s, n_init=n_init)
            found[p].append(c)
            run = {"pipeline": name, "seed": s,
                   "seconds": time.perf_counter() - t0 + shared[p] / len(seed_list)}
            if y is not None:
                run.update(cluster_scores(y, c).to_dict())
            runs.append(run)
            sil.append(_silhouette(spaces[p], c, s))
            notify(progress, "pipelines", len(runs), total, pipeline=name)
        criteria[name] = _criteria(sil, found[p], nulls.get(p), ref, k, n_init, seed_list[0])
    return PipelineTable(layer, runs, {"n_clusters": k, "n_components": n_components,
                                       "perplexity": perplexity, "n_iter": n_iter, "images": x.shape[0],
                                       "dims": int(x.shape[1]), "whiten": whiten, "n_init": n_init},
                         criteria)


def _criteria(sil: list[float], clusterings: list[np.ndarray], null, ref, k: int, n_init: int,
              seed: int) -> dict:
    """The label-free scores of one pipeline's clusterings (None where undefined: JSON has no
    NaN)."""
    stab = _stability(clusterings)
    out = {"silhouette": None if np.isnan(sil).all() else float(np.nanmean(sil)),
           "stability": None if np.isnan(stab) else stab}
    if null is not None:
        out.update(_excess(out["silhouette"], null, k, n_init, seed))
    if ref is not None:
        out["prediction_agreement"] = _agreement(ref, clusterings)
    return out


def _check_reference(reference, n: int) -> np.ndarray | None:
    if reference is None:
        return None
    ref = np.asarray(reference).ravel()
    if len(ref) != n:
        raise ValueError(f"{n} feature rows but {len(ref)} predictions to compare the clusters with")
    return ref


def _agreement(reference: np.ndarray, clusterings: list[np.ndarray]) -> float:
    """Mean adjusted mutual information of the clusterings with ``reference`` (0: no more than
    chance, 1: the same partition)."""
    from sklearn.metrics import adjusted_mutual_info_score

    return float(np.mean([adjusted_mutual_info_score(reference, c) for c in clusterings]))


def _check_runs(x, y, k: int, n_init: int, pipelines, seeds) -> list[int]:
    """Validate the request before any work; returns the seeds as a list."""
    if y is not None:
        check_clusters_for_classes(k, y)
    check_n_init(n_init)
    unknown = [p for p in pipelines if p not in PIPELINES]
    if unknown:
        raise ValueError(f"unknown pipelines {unknown}: choose from {', '.join(PIPELINES)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("give at least one seed")
    if "k-means" in pipelines and _on_disk(x):
        raise ValueError(f"the {x.shape} features do not fit in memory: k-means on them "
                         "directly is not possible; run the PCA pipelines only")
    return seed_list


def null_spaces(x, spaces: dict, whiten: bool, perplexity: float, n_iter: int, seed: int,
                top: int = 512) -> dict:
    """For each space k-means ran in, the same made from a Gaussian null of the same spectrum:
    ``N`` points drawn from a normal distribution with the variances of the layer's principal
    components and no cluster structure (the reference distribution of the gap statistic,
    Tibshirani, Walther & Hastie 2001, aligned with the data's principal axes). k-means and
    the silhouette only see distances, so the rotation does not matter: the null is drawn in
    principal-component coordinates. ``PCA/k-means``: the variances of the components kept
    (all 1 when whitened); ``PCA/t-SNE/k-means``: that null's t-SNE map, made as the layer's;
    ``k-means``: the leading ``top`` variances of the features (the rest, small, left out)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    out = {}
    n = len(x)
    if "PCA/k-means" in spaces:
        z = spaces["PCA/k-means"]
        sd = np.ones(z.shape[1]) if whiten else z.std(axis=0, ddof=1)
        out["PCA/k-means"] = (rng.standard_normal(z.shape) * sd).astype(np.float32)
        if "PCA/t-SNE/k-means" in spaces:
            out["PCA/t-SNE/k-means"] = TSNE(perplexity=perplexity, n_iter=n_iter, seed=seed).fit_transform(
                out["PCA/k-means"]).astype(np.float32)
    if "k-means" in spaces:
        r = min(n, x.shape[1], top)
        lam = PCA(n_components=r, random_state=seed,
                  svd_solver="full" if r == min(x.shape) else "randomized").fit(x).explained_variance_
        out["k-means"] = (rng.standard_normal((n, r)) * np.sqrt(lam)).astype(np.float32)
    return out


def _excess(sil: float | None, null: np.ndarray, k: int, n_init: int, seed: int) -> dict:
    """``excess_silhouette``: the silhouette of the clusters less that of k-means' clusters on the
    null (how much more clustered than structureless data of the same spread), and the null's."""
    ref = _silhouette(null, kmeans(null, k, seed=seed, n_init=n_init), seed)
    if sil is None or np.isnan(ref):
        return {"excess_silhouette": None, "null_silhouette": None}
    return {"excess_silhouette": float(sil - ref), "null_silhouette": float(ref)}


def _spaces(x, pipelines, n_components, whiten, perplexity, n_iter, seed):
    """The space each pipeline runs k-means in, and the seconds spent making it (once)."""
    spaces, shared = {}, {}
    if "k-means" in pipelines:
        spaces["k-means"], shared["k-means"] = np.asarray(x, dtype=np.float32), 0.0
    if "PCA/k-means" in pipelines or "PCA/t-SNE/k-means" in pipelines:
        t0 = time.perf_counter()
        z, _ = pca_reduce(x, n_components, seed=0, whiten=whiten)
        z = np.asarray(z, dtype=np.float32)
        t_pca = time.perf_counter() - t0
        spaces["PCA/k-means"], shared["PCA/k-means"] = z, t_pca
        if "PCA/t-SNE/k-means" in pipelines:
            t0 = time.perf_counter()
            spaces["PCA/t-SNE/k-means"] = TSNE(perplexity=perplexity, n_iter=n_iter,
                                               seed=seed).fit_transform(z).astype(np.float32)
            shared["PCA/t-SNE/k-means"] = t_pca + time.perf_counter() - t0
    return spaces, shared
