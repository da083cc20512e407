"""k-means and the scores of a clustering against labels: accuracy after the best one-to-one
matching of clusters to classes (Hungarian algorithm), accuracy with each cluster mapped to its
majority class (many-to-one: the scoring of Cohn & Holm, for more clusters than classes), NMI,
ARI, and the confusion matrix (Kitahara & Holm, Table 1 and Fig. 7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_labels(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one label per image (1-D), got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {a.dtype}")
    return a.astype(np.int64)


def check_labels(labels, clusters=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate labels (and clusters of the same length) for scoring."""
    y = _as_labels(labels, "labels")
    if (y < 0).any():
        raise ValueError(f"{int((y < 0).sum())} images have no label (-1): scores against labels "
                         "need every image labelled; drop unlabelled images or skip scoring")
    if len(np.unique(y)) < 2:
        raise ValueError(f"the labels hold one class only ({int(y[0]) if len(y) else 'none'}): "
                         "clustering accuracy needs images of at least two classes")
    c = None
    if clusters is not None:
        c = _as_labels(clusters, "clusters")
        if len(c) != len(y):
            raise ValueError(f"{len(y)} labels but {len(c)} cluster assignments")
    return y, c


def check_n_clusters(n_clusters: int, n_images: int) -> int:
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise TypeError(f"n_clusters must be an integer, got {n_clusters!r}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be at least 1, got {n_clusters}")
    if n_clusters > n_images:
        raise ValueError(f"more clusters ({n_clusters}) than images ({n_images}): ask for at most "
                         f"{n_images} clusters or give more images")
    return int(n_clusters)


def contingency(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts ``M[i, j]`` of class ``classes[i]`` in cluster ``ids[j]``."""
    classes, yi = np.unique(labels, return_inverse=True)
    ids, ci = np.unique(clusters, return_inverse=True)
    m = np.zeros((len(classes), len(ids)), dtype=np.int64)
    np.add.at(m, (yi, ci), 1)
    return m, classes, ids


def best_matching(labels, clusters) -> dict[int, int]:
    """The one-to-one map cluster -> class that maximizes the number of images whose cluster maps
    to their class (Hungarian algorithm on the contingency table; with more clusters than classes
    the extra clusters map to nothing, i.e. count as wrong)."""
    from scipy.optimize import linear_sum_assignment

    y, c = check_labels(labels, clusters)
    m, classes, ids = contingency(y, c)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return {int(ids[j]): int(classes[i]) for i, j in zip(rows, cols)}


def matching_accuracy(labels, clusters) -> float:
    """Fraction of images whose cluster, after the best one-to-one matching, is their class."""
    y, c = check_labels(labels, clusters)
    mapping = best_matching(y, c)
    pred = np.array([mapping.get(int(k), -1) for k in c])
    return float((pred == y).mean())


def mapped_predictions(labels, clusters) -> np.ndarray:
    """Each image's cluster replaced by its matched class (-1 for an unmatched cluster)."""
    mapping = best_matching(labels, clusters)
    return np.array([mapping.get(int(k), -1) for k in np.asarray(clusters)], dtype=np.int64)


def majority_mapping(labels, clusters) -> dict[int, int]:
    """Each cluster -> the class most of its images have (many-to-one: several clusters may map
    to one class; ties go to the smaller class id)."""
    y, c = check_labels(labels, clusters)
    m, classes, ids = contingency(y, c)
    return {int(ids[j]): int(classes[i]) for j, i in enumerate(m.argmax(axis=0))}


def many_to_one_accuracy(labels, clusters) -> float:
    """Fraction of images whose cluster's majority class is their class (Cohn & Holm's scoring
    of k-means with more clusters than classes). Never below :func:`matching_accuracy`."""
    y, c = check_labels(labels, clusters)
    m, _, _ = contingency(y, c)
    return float(m.max(axis=0).sum() / len(y))


@dataclass
class Scores:
    """``accuracy``: one-to-one (Hungarian) matching; ``accuracy_m2o``: many-to-one (each
    cluster to its majority class); ``nmi``, ``ari``."""

    accuracy: float
    nmi: float
    ari: float
    accuracy_m2o: float = float("nan")

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "accuracy_m2o": self.accuracy_m2o, "nmi": self.nmi,
                "ari": self.ari}


def cluster_scores(labels, clusters) -> Scores:
    """Matching accuracy (one-to-one and many-to-one), normalized mutual information and
    adjusted Rand index."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y, c = check_labels(labels, clusters)
    return Scores(matching_accuracy(y, c), float(normalized_mutual_info_score(y, c)),
                  float(adjusted_rand_score(y, c)), many_to_one_accuracy(y, c))


def check_clusters_for_classes(n_clusters: int, labels) -> None:
    """Fewer clusters than classes cannot be scored fairly either way: say why, and the fix."""
    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    if n_clusters >= len(classes):
        return
    cap = np.sort(counts)[::-1][:n_clusters].sum() / len(y)
    raise ValueError(
        f"{n_clusters} clusters for {len(classes)} classes: a cluster is scored as one class "
        f"(one-to-one: the Hungarian matching; many-to-one: its majority class), so at least "
        f"{len(classes) - n_clusters} classes could never be predicted and accuracy could not "
        f"pass {cap:.1%}. Ask for --clusters {len(classes)} (one cluster per class) or more "
        "(a class may then split into several clusters, which many-to-one scoring counts as right)")


def confusion_matrix(labels, clusters, n_classes: int | None = None) -> np.ndarray:
    """``C[true, predicted]`` with predicted = the cluster's matched class (Fig. 7). Images in
    unmatched clusters are counted in an extra last column."""
    y, c = check_labels(labels, clusters)
    pred = mapped_predictions(y, c)
    k = int(n_classes if n_classes is not None else max(y.max(), pred.max()) + 1)
    cm = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(cm, (y, np.where(pred < 0, k, pred)), 1)
    return cm if cm[:, k].any() else cm[:, :k]


def check_n_init(n_init: int) -> int:
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(f"n_init (k-means restarts) must be a positive integer, got {n_init!r}")
    return int(n_init)


def kmeans(x: np.ndarray, n_clusters: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means (scikit-learn, k-means++ seeding, ``n_init`` restarts, the best kept) cluster of
    each row."""
    from sklearn.cluster import KMeans

    x = np.asarray(x)
    x = x if x.dtype == np.float32 else x.astype(np.float64)  # float32 stays: twice as fast
    check_n_clusters(n_clusters, len(x))
    return KMeans(n_clusters=n_clusters, n_init=check_n_init(n_init),
                  random_state=seed).fit_predict(x)
