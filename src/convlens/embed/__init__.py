"""Transfer-learning clustering of images (Kitahara & Holm) and t-SNE of activations across
training (Lees).

- :func:`extract_features`: any layer, batched, streamed to Zarr, cached, optionally on Dask;
  :func:`extract_layers`: many layers from one pass over the images.
- :func:`block_outputs`, :func:`candidate_layers`, :func:`default_layer` (the pooled vector
  before the classifier head), :func:`describe_feature` (in words).
- :func:`run_layers`: Table 1 on every layer, the best layer with labels and a label-free pick
  (:class:`LayerTable`); :func:`tile_votes`: an image-level result from its tiles.
- :func:`pca_reduce`, :func:`scree`, :class:`TSNE` (openTSNE, ``transform`` for new images),
  :func:`perplexity_sweep`, :class:`UMAPMap`.
- :func:`kmeans`, :func:`matching_accuracy` (Hungarian, one-to-one), :func:`many_to_one_accuracy`
  (each cluster to its majority class), :func:`cluster_scores` (both accuracies, NMI, ARI),
  :func:`confusion_matrix`; :func:`pca_reduce` whitens on request.
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
    check_n_init,
    cluster_scores,
    confusion_matrix,
    kmeans,
    majority_mapping,
    many_to_one_accuracy,
    mapped_predictions,
    matching_accuracy,
)
from convlens.embed._extract import (
    POOLINGS,
    Features,
    cache_key,
    extract_features,
    extract_layers,
    pool,
)
from convlens.embed._interactive import scatter_fragment, write_scatter_page, write_thumbnails
from convlens.embed._layerpick import (
    DEFAULT_CRITERION,
    LayerTable,
    check_criterion,
    choose_layer,
    choose_whitening,
    describe_features,
    resolve_layers,
    run_layers,
)
from convlens.embed._layers import (
    Block,
    block_outputs,
    candidate_layers,
    default_layer,
    describe_feature,
    network_predictions,
)
from convlens.embed._outputs import save_map_outputs
from convlens.embed._pipeline import (
    CRITERIA,
    PIPELINES,
    ClusterMap,
    PipelineTable,
    cluster_map,
    format_score,
    null_spaces,
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
from convlens.embed._tiles import TileVotes, check_tile, parse_tile_id, plot_tile_map, tile_votes
from convlens.embed._training import TrainingMaps, tsne_over_training

__all__ = [
    "CRITERIA", "DEFAULT_CRITERION", "null_spaces", "check_criterion", "check_n_init", "check_tile", "choose_layer", "choose_whitening", "describe_features",
    "format_score", "resolve_layers",
    "PIPELINES", "POOLINGS", "TSNE", "Block", "ClusterMap", "Features", "LayerTable",
    "PipelineTable", "Scores", "Scree", "Sweep", "TrainingMaps", "UMAPMap", "best_matching",
    "block_outputs", "cache_key", "candidate_layers", "cluster_map", "cluster_scores",
    "confusion_matrix", "default_layer", "describe_feature", "extract_features", "network_predictions",
    "extract_layers", "kmeans", "majority_mapping", "many_to_one_accuracy", "mapped_predictions",
    "matching_accuracy", "run_layers", "pca_reduce", "perplexity_sweep", "plot_confusion", "plot_map",
    "plot_scree", "plot_sweep", "plot_training_maps", "pool", "run_pipelines",
    "save_map_outputs", "save_training_gif", "scatter_fragment", "scree", "tsne_over_training",
    "write_scatter_page", "write_thumbnails", "TileVotes", "parse_tile_id",
    "plot_tile_map", "tile_votes",
]
