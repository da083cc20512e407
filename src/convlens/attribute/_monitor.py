"""Training monitoring (the survey's Fig. 10, after Zeiler & Fergus Fig. 4): one unit's top
images and their DeconvNet projections at each snapshot of a training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.attribute._checks import as_unit
from convlens.attribute._top import top_images
from convlens.files import load_result, save_result
from convlens.progress import Callback, notify

_ARRAYS = ("steps", "values", "indices", "positions", "images", "projections", "boxes")


@dataclass
class UnitMonitor:
    """Row ``t`` of every array belongs to snapshot ``steps[t]``: ``values (T, k)``, ``indices``,
    ``positions (T, k, 2)``, ``images``/``projections (T, k, C, H, W)``, ``boxes (T, k, 4)``."""

    unit: str
    steps: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    images: np.ndarray
    projections: np.ndarray
    boxes: np.ndarray
    meta: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "monitor", {k: getattr(self, k) for k in _ARRAYS},
                           {"unit": self.unit, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> UnitMonitor:
        a, info = load_result(folder, "monitor")
        return cls(info["unit"], meta=info["meta"], **{k: a[k] for k in _ARRAYS})


def monitor_unit(run_dir: str | Path, dataset, unit, *, k: int = 9, batch_size: int = 128,
                 every: int = 1, progress: Callback | None = None,
                 device=None) -> UnitMonitor:
    """Top ``k`` images of ``unit`` (``"layer:index"``) and their projections at every
    ``every``-th snapshot of the training run in ``run_dir`` (``convlens train --snapshot-every``),
    each loaded on ``device`` (see :func:`convlens.load_model`). ``progress`` receives a
    :class:`~convlens.progress.Progress` event ``("snapshots", done, snapshots)`` after each."""
    from convlens.data import conform
    from convlens.model import load_model
    from convlens.training import list_snapshots, snapshot_step

    u = as_unit(unit)
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise FileNotFoundError(f"no snapshots in {Path(run_dir) / 'snapshots'}: train with --snapshot-every N")
    snaps = snaps[::every] if snaps[::every][-1] == snaps[-1] else snaps[::every] + [snaps[-1]]
    rows = []
    for t, snap in enumerate(snaps):
        model = load_model(snap, device=device)
        top = top_images(model, conform(dataset, model), u.layer, k=k, units=[u.index],
                         batch_size=batch_size, project=True)
        rows.append((snapshot_step(snap), top))
        notify(progress, "snapshots", t + 1, len(snaps))
    return UnitMonitor(
        str(u), np.array([s for s, _ in rows]),
        *[np.stack([getattr(top, a)[0] for _, top in rows]) for a in _ARRAYS[1:]],
        meta={"run": str(run_dir), "k": k, "dataset": dataset.name},
    )
