"""Top images per unit (Zeiler & Fergus, Fig. 2): one pass over a dataset keeps, for every unit
of a layer at once, the ``k`` images and map positions with the highest activation; then each
is shown with its DeconvNet projection cropped to the unit's receptive field."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.attribute._backprop import backproject, receptive_fields
from convlens.files import load_result, save_result
from convlens.probe import get_layer
from convlens.progress import Callback, notify
from convlens.runner import batch_size as fitting
from convlens.runner import forward_batches
from convlens.units import parse_unit_list

log = logging.getLogger(__name__)


@dataclass
class TopImages:
    """For each unit: ``values (U, k)``, dataset ``indices (U, k)`` and map ``positions
    (U, k, 2)``, strongest first. With projections: ``images``/``projections`` ``(U, k, C, H, W)``
    and receptive-field ``boxes (U, k, 4)`` (row0, row1, col0, col1)."""

    layer: str
    units: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    positions: np.ndarray
    map_shape: tuple[int, ...]
    ids: list[list[str]] = field(default_factory=list)
    images: np.ndarray | None = None
    projections: np.ndarray | None = None
    boxes: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def dead(self) -> list[int]:
        """Units that never activated (largest activation <= 0) on the whole dataset."""
        return [int(u) for u, v in zip(self.units, self.values[:, 0]) if not v > 0]

    def row(self, unit: int) -> int:
        hits = np.flatnonzero(self.units == unit)
        if not len(hits):
            raise ValueError(f"unit {unit} of {self.layer!r} is not in this result (units {self.units.tolist()})")
        return int(hits[0])

    def save(self, folder: str | Path) -> Path:
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        return save_result(folder, "top_images", arrays, {"layer": self.layer, "map_shape": list(self.map_shape),
                                                          "ids": self.ids, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> TopImages:
        a, info = load_result(folder, "top_images")
        return cls(info["layer"], map_shape=tuple(info["map_shape"]), ids=info["ids"], meta=info["meta"],
                   **{k: a.get(k) for k in _ARRAYS})


_ARRAYS = ("units", "values", "indices", "positions", "images", "projections", "boxes")


def _merge(best_v, best_i, best_p, v, i, p, k):
    """Keep the k largest of the running best and a batch, per unit (rows)."""
    cat_v = torch.cat([best_v, v], 1)
    top = cat_v.topk(min(k, cat_v.shape[1]), dim=1)
    return top.values, torch.cat([best_i, i], 1).gather(1, top.indices), \
        torch.cat([best_p, p], 1).gather(1, top.indices)


def _activations(model, dataset, layer: str, batch_size: int, memory=None) -> Iterator[torch.Tensor]:
    """``layer``'s output for each batch of ``dataset`` (at most ``batch_size`` images, as many
    as the memory budget allows)."""
    if len(dataset):
        batch_size = fitting(model, [layer], tuple(dataset.image(0).shape), batch_size, memory=memory)
    for out in forward_batches(model, (x for x, _, _ in dataset.batches(batch_size)), [layer], memory=memory):
        yield out[layer]


def top_images(
    model,
    dataset,
    layer: str,
    *,
    k: int = 9,
    units: str | list[int] | None = None,
    batch_size: int = 128,
    project: bool | list[int] = False,
    progress: Callback | None = None,
    memory: int | float | str | None = None,
) -> TopImages:
    """The ``k`` images (and positions) that excite each unit of ``layer`` most, in one pass.

    Parameters
    ----------
    model, dataset : a :class:`convlens.Model` and an :class:`~convlens.data.ImageDataset`
        conformed to it (``convlens.data.conform``)
    layer : layer name; a unit's activation is its map's maximum (its value for a linear layer)
    k : images per unit
    units : ``"all"`` (default), ``"0-15"``, ``"1,5"`` or a list of indices
    project : also compute DeconvNet projections for every unit (``True``) or for these units
    batch_size : the most images per forward pass; fewer when the memory budget
        (``memory``, :mod:`convlens.runner`; default: the current one) allows fewer, with the
        same result
    progress : receives a :class:`~convlens.progress.Progress` event ``("top images", images
        done, images)`` after each batch
    """
    get_layer(model.net, layer)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(dataset)
    sel, map_shape, best_v, best_i, best_p = _scan(model, dataset, layer, units, k, batch_size, memory, progress)
    w = map_shape[-1] if len(map_shape) > 1 else 1
    pos = torch.stack([best_p // w, best_p % w], -1).cpu().numpy()
    ids = [[dataset.ids[int(i)] for i in row] for row in best_i]
    top = TopImages(layer, sel.cpu().numpy(), best_v.cpu().numpy(), best_i.cpu().numpy(), pos, map_shape, ids,
                    meta={"k": k, "images": n, "dataset": dataset.name, "fingerprint": dataset.fingerprint,
                          "model": model.name, "weights": model.weights_hash()})
    if top.dead:
        log.warning("units %s of %s never activate on %d images", top.dead, layer, n)
    if project is not False:
        project_top(model, dataset, top, None if project is True else list(project))
    return top


def _scan(model, dataset, layer: str, units, k: int, batch_size: int, memory, progress: Callback | None):
    """The one pass: the selected units, the layer's map shape, and per unit the ``k`` largest
    map maxima ``(U, k)`` with their image indices and flat map positions."""
    n = len(dataset)
    best_v = best_i = best_p = sel = map_shape = None
    done = 0
    with closing(_activations(model, dataset, layer, batch_size, memory)) as batches:
        for a in batches:
            if sel is None:
                sel = torch.as_tensor(parse_unit_list(units, a.shape[1]) if not isinstance(units, list)
                                      else [int(u) for u in units], dtype=torch.long)
                if len(sel) and int(sel.max()) >= a.shape[1]:
                    raise ValueError(f"unit {int(sel.max())} is out of range: {layer!r} has {a.shape[1]} units")
                map_shape = tuple(a.shape[1:])
                best_v = torch.full((len(sel), 0), -torch.inf)
                best_i = torch.zeros((len(sel), 0), dtype=torch.long)
                best_p = torch.zeros((len(sel), 0), dtype=torch.long)
            a = a[:, sel].float().cpu()
            flat = a.flatten(2) if a.ndim > 2 else a[..., None]
            v, p = flat.max(2)  # (B, U)
            idx = torch.arange(done, done + len(a)).expand(len(sel), -1)
            best_v, best_i, best_p = _merge(best_v, best_i, best_p, v.T, idx, p.T, k)
            done += len(a)
            notify(progress, "top images", done, n)
    return sel, map_shape, best_v, best_i, best_p


def project_top(model, dataset, top: TopImages, units: list[int] | None = None) -> TopImages:
    """Fill ``top.images``, ``top.projections`` (DeconvNet of each top activation at its
    position) and ``top.boxes`` (receptive fields); units that never activate stay blank."""
    rows = range(len(top.units)) if units is None else [top.row(u) for u in units]
    k = top.indices.shape[1]
    shape = (len(top.units), k, model.spec.channels, *model.spec.size)
    images, projections = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    boxes = np.zeros((len(top.units), k, 4), dtype=int)
    spatial = len(top.map_shape) == 3
    for r in rows:
        unit = int(top.units[r])
        x = torch.stack([dataset.image(int(i)) for i in top.indices[r]])
        images[r] = x.cpu().numpy()
        live = top.values[r] > 0
        if not live.any():
            continue
        p = backproject(model, x[live], f"{top.layer}:{unit}", rule="deconv",
                        positions=top.positions[r][live] if spatial else None)
        projections[r][live] = p.maps
        boxes[r] = receptive_fields(model, top.layer, top.positions[r]) if spatial else \
            [0, model.spec.size[0], 0, model.spec.size[1]]
    top.images, top.projections, top.boxes = images, projections, boxes
    return top
