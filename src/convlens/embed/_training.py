"""t-SNE of a layer's activations at each snapshot of a training run, each map initialised from
the previous one so that clusters stay where they were (Lees, Sec. 7.6 and Fig. 21; the
initialisation from the previous map follows openTSNE's advice for embedding related data:
rescale the start to a small spread and skip early exaggeration)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.files import load_result, save_result
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)


@dataclass
class TrainingMaps:
    """One 2-D map per snapshot: ``coords`` (S, N, 2), ``steps`` (S,), and the images' labels."""

    steps: list[int]
    coords: np.ndarray
    labels: np.ndarray
    ids: list[str]
    class_names: tuple[str, ...]
    layer: str
    params: dict = field(default_factory=dict)
    accuracy: list[float] = field(default_factory=list)  # k-means matching accuracy per map

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "training_maps", {"coords": self.coords, "labels": self.labels}, {
            "ids": self.ids, "class_names": list(self.class_names), "layer": self.layer,
            "params": self.params, "accuracy": self.accuracy, "steps": self.steps})

    @classmethod
    def load(cls, folder: str | Path) -> TrainingMaps:
        z, m = load_result(folder, "training_maps")
        return cls(m["steps"], z["coords"], z["labels"], m["ids"], tuple(m["class_names"]),
                   m["layer"], m["params"], m["accuracy"])


def tsne_over_training(
    snapshots: Sequence[str | Path] | str | Path,
    dataset,
    layer: str,
    *,
    pooling: str = "avg",
    n_components: int = 50,
    perplexity: float = 30.0,
    n_iter: int = 500,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: Callback | None = None,
    device=None,
) -> TrainingMaps:
    """A t-SNE map of ``layer`` at each snapshot; map ``s`` starts from map ``s - 1``.

    Parameters
    ----------
    snapshots : a run folder of ``convlens train`` (its ``snapshots/``) or snapshot files
    dataset : the images (conformed to the model on the fly)
    layer, pooling : as in :func:`extract_features`
    n_components : PCA components before t-SNE (as in the full pipeline)
    cache_dir : feature cache (one entry per snapshot's weights)
    progress : a :class:`~convlens.progress.Progress` event ``("snapshots", done, total)`` after
        each map (``info``: the snapshot's ``step``); when it returns ``True`` no further map is
        made and the maps made so far are returned
    device : where each snapshot runs (see :func:`convlens.load_model`)
    """
    from convlens.embed._cluster import kmeans, matching_accuracy
    from convlens.training import snapshot_step

    paths = _snapshot_paths(snapshots)
    labelled = bool((np.asarray(dataset.labels) >= 0).all()) and len(np.unique(dataset.labels)) > 1
    steps, maps, acc, prev = [], [], [], None
    for i, path in enumerate(paths):
        prev = _snapshot_map(path, dataset, layer, pooling, n_components, perplexity, n_iter, seed,
                             cache_dir, device, prev)
        maps.append(prev.astype(np.float32))
        try:
            steps.append(snapshot_step(path))
        except (FileNotFoundError, KeyError):
            steps.append(i)
        if labelled:
            k = len(np.unique(dataset.labels))
            acc.append(matching_accuracy(dataset.labels, kmeans(prev, k, seed=seed)))
        log.info("snapshot %s: map %d of %d", path.name, i + 1, len(paths))
        if notify(progress, "snapshots", i + 1, len(paths), step=steps[-1]):
            log.info("stopped after %d of %d snapshots (asked by the progress callback)", i + 1, len(paths))
            break
    return TrainingMaps(steps, np.stack(maps), np.asarray(dataset.labels), list(dataset.ids),
                        tuple(dataset.class_names), layer,
                        {"pooling": pooling, "n_components": n_components, "perplexity": perplexity,
                         "n_iter": n_iter, "seed": seed,
                         "snapshots": [str(p) for p in paths[:len(maps)]]}, acc)


def _snapshot_paths(snapshots) -> list[Path]:
    """The snapshot files of a run folder (in training order), or the files given."""
    from convlens.training import list_snapshots

    if isinstance(snapshots, (str, Path)):
        run = Path(snapshots)
        if not run.is_dir():
            raise FileNotFoundError(f"training run folder not found: {run}")
        paths = list_snapshots(run)
        if not paths:
            raise FileNotFoundError(f"no snapshots in {run / 'snapshots'}: train with "
                                    "--snapshot-every N (snapshot_every=N) to write them")
        return paths
    paths = [Path(p) for p in snapshots]
    if not paths:
        raise ValueError("give at least one snapshot")
    return paths


def _snapshot_map(path, dataset, layer, pooling, n_components, perplexity, n_iter, seed, cache_dir,
                  device, prev: np.ndarray | None) -> np.ndarray:
    """One snapshot's t-SNE map. The first map: PCA start and early exaggeration; later maps
    start from the previous map (rescaled) without early exaggeration, which would scramble it."""
    from convlens.data import conform
    from convlens.embed._extract import extract_features
    from convlens.embed._reduce import TSNE, pca_reduce
    from convlens.model import load_model

    model = load_model(path, device=device)
    feats = extract_features(model, conform(dataset, model), layer, pooling=pooling, cache_dir=cache_dir)
    z, _ = pca_reduce(feats.values, n_components, seed=seed)
    return TSNE(perplexity=perplexity, n_iter=n_iter, seed=seed,
                initialization=prev if prev is not None else "pca",
                early_exaggeration_iter=0 if prev is not None else 250).fit_transform(z)
