"""Transfer-learning clustering of images (Kitahara & Holm) and t-SNE of activations across
training (Lees).

- :func:`extract_features`: any layer, batched, streamed to Zarr, cached, optionally on Dask.
- :func:`pca_reduce`, :func:`scree`, :class:`TSNE` (openTSNE, ``transform`` for new images),
  :func:`perplexity_sweep`, :class:`UMAPMap`.
- :func:`kmeans`, :func:`matching_accuracy` (Hungarian), :func:`cluster_scores` (accuracy, NMI,
  ARI), :func:`confusion_matrix`.
- :func:`cluster_map` (the full pipeline, one map) and :func:`run_pipelines` (Table 1 over seeds).
- :func:`tsne_over_training`: maps across a training run's snapshots.
- ``plot_*`` and :func:`save_training_gif` draw saved results.

>>> from convlens import load_model, load_dataset, conform                   # doctest: +SKIP
>>> from convlens.embed import extract_features, cluster_map
>>> m = load_model("lenet-digits"); ds = conform(load_dataset("digits"), m)
>>> feats = extract_features(m, ds, "relu4", cache_dir="cache")
>>> result = cluster_map(feats, 10)
>>> result.scores["accuracy"]
"""

from convlens.embed._cluster import (
    Scores,
    best_matching,
    cluster_scores,
    confusion_matrix,
    kmeans,
    mapped_predictions,
    matching_accuracy,
)
from convlens.embed._extract import POOLINGS, Features, cache_key, extract_features, pool
from convlens.embed._interactive import scatter_fragment, write_scatter_page, write_thumbnails
from convlens.embed._outputs import save_map_outputs
from convlens.embed._pipeline import (
    PIPELINES,
    ClusterMap,
    PipelineTable,
    cluster_map,
    run_pipelines,
)
from convlens.embed._plots import (
    plot_confusion,
    plot_map,
    plot_scree,
    plot_sweep,
    plot_training_maps,
    save_training_gif,
)
from convlens.embed._reduce import TSNE, Scree, Sweep, UMAPMap, pca_reduce, perplexity_sweep, scree
from convlens.embed._training import TrainingMaps, tsne_over_training

__all__ = [
    "PIPELINES", "POOLINGS", "TSNE", "ClusterMap", "Features", "PipelineTable", "Scores", "Scree",
    "Sweep", "TrainingMaps", "UMAPMap", "best_matching", "cache_key", "cluster_map",
    "cluster_scores", "confusion_matrix", "extract_features", "kmeans", "mapped_predictions",
    "matching_accuracy", "pca_reduce", "perplexity_sweep", "plot_confusion", "plot_map",
    "plot_scree", "plot_sweep", "plot_training_maps", "pool", "run_pipelines",
    "save_map_outputs", "save_training_gif", "scatter_fragment", "scree", "tsne_over_training",
    "write_scatter_page", "write_thumbnails",
]
