"""Network dissection (Bau et al. 2017): two streaming passes over a concept set, per shard.

Pass 1 finds each unit's top-quantile threshold and its top images; pass 2 counts, for every
unit and concept at once, the pixels of ``S(A_f(x)) >= T_f`` that fall inside the concept's
masks (the survey's Eqs. 18-19). Each pass runs over shards of image indices -- in this
process, or as tasks on a Dask cluster -- and shard results merge exactly (integer counts;
top-k buffers), so a sharded run equals a single one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from convlens.dissect._concepts import ConceptSet
from convlens.dissect._result import Dissection, LayerDissection
from convlens.dissect._stats import IoUTally, TopQuantile, pixel_labels
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)


def _images(model, concepts: ConceptSet):
    from convlens.data import conform

    return conform(concepts.images, model)


def _batches(model, concepts: ConceptSet, indices: np.ndarray, layers: list[str], batch_size: int):
    from convlens.runner import batch_size as fitting
    from convlens.runner import forward_batches

    ds = _images(model, concepts)
    if len(indices):  # at most batch_size images, as many as the memory budget allows
        batch_size = fitting(model, layers, tuple(ds.image(int(indices[0])).shape), batch_size)
    chunks = [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]
    xs = (next(ds.batches(len(c), indices=c))[0] for c in chunks)
    for idx, acts in zip(chunks, forward_batches(model, xs, layers)):
        yield idx, {k: v.float().cpu() for k, v in acts.items()}


def spatial_shapes(model, concepts: ConceptSet, layers: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """``{layer: (units, h, w)}`` from one forward pass; a layer whose output is not
    ``(N, C, H, W)`` is an error."""
    from convlens.runner import capture

    x = next(_images(model, concepts).batches(1))[0]
    acts = capture(model, x.to(model.device), list(layers))
    out = {}
    for name in layers:
        shape = tuple(acts[name].shape)
        if len(shape) != 4:
            raise ValueError(
                f"layer {name!r} gives outputs of shape {shape} without spatial dimensions: "
                "dissection needs a convolutional layer with (N, C, H, W) outputs; `convlens "
                "layers MODEL` lists the layers and their shapes")
        out[name] = shape[1:]
    return out


class _Pass1:
    """Per layer: the quantile tracker and the running top images (values, indices, maps)."""

    def __init__(self, units: int, h: int, w: int, total: int, q: float, top_n: int):
        self.q = TopQuantile(units, total, q)
        self.values = torch.full((units, 0), -np.inf)
        self.index = torch.zeros((units, 0), dtype=torch.int64)
        self.maps = torch.zeros((units, 0, h, w))
        self.top_n = top_n

    def update(self, acts: torch.Tensor, idx: np.ndarray) -> None:
        b, u = acts.shape[:2]
        self.q.update(acts.permute(1, 0, 2, 3).reshape(u, -1))
        self._keep(acts.amax((2, 3)).T, torch.as_tensor(idx).expand(u, b), acts.transpose(0, 1))

    def _keep(self, values, index, maps) -> None:
        values = torch.cat([self.values, values], 1)
        index = torch.cat([self.index, index], 1)
        maps = torch.cat([self.maps, maps], 1)
        n = min(self.top_n, values.shape[1])
        # ties broken by image index so that shard order does not matter
        order = torch.from_numpy(np.lexsort((index.cpu().numpy(), -values.cpu().numpy()), axis=1)[:, :n])
        self.values = values.gather(1, order)
        self.index = index.gather(1, order)
        self.maps = maps[torch.arange(maps.shape[0])[:, None], order]

    def merge(self, other: _Pass1) -> _Pass1:
        self.q = self.q.merge(other.q)
        self._keep(other.values, other.index, other.maps)
        return self


def pass_thresholds(model, concepts: ConceptSet, layers: list[str], indices: np.ndarray,
                    shapes: dict, total_images: int, quantile: float, top_n: int,
                    batch_size: int, progress: Callback | None = None) -> dict[str, _Pass1]:
    """Pass 1 over ``indices`` (one shard); ``progress``: ``("thresholds", images done, images)``."""
    state = {name: _Pass1(*shapes[name], total_images * shapes[name][1] * shapes[name][2],
                          quantile, top_n) for name in layers}
    done = 0
    for idx, acts in _batches(model, concepts, indices, layers, batch_size):
        for name in layers:
            bad = ~torch.isfinite(acts[name]).flatten(1).all(1)
            if bad.any():
                raise ValueError(
                    f"layer {name!r} gives NaN or infinite activations for concept images "
                    f"{idx[bad.cpu().numpy()][:5].tolist()}: check the model's weights and the input spec")
            state[name].update(acts[name], idx)
        done += len(idx)
        notify(progress, "thresholds", done, len(indices))
    return state


def pass_tally(model, concepts: ConceptSet, layers: list[str], indices: np.ndarray,
               thresholds: dict[str, tuple[np.ndarray, np.ndarray]], batch_size: int,
               progress: Callback | None = None) -> dict[str, IoUTally]:
    """Pass 2 over ``indices`` (one shard): IoU counts for every unit and concept; ``progress``:
    ``("iou", images done, images)``."""
    ncat = len(concepts.category_names)
    tallies: dict[str, IoUTally] = {}
    done = 0
    for idx, acts in _batches(model, concepts, indices, layers, batch_size):
        labels = [concepts.masks(int(i)) for i in idx]
        pixels = pixel_labels(labels, concepts.mask_size, len(concepts.concepts))  # shared by the layers
        for name in layers:
            a = acts[name]
            t, strict = thresholds[name]
            tally = tallies.setdefault(name, IoUTally(a.shape[1], concepts.concept_category, ncat))
            tally.update_acts(a, t, strict, labels, concepts.annotated[idx], concepts.mask_size, pixels)
        done += len(idx)
        notify(progress, "iou", done, len(indices))
    return tallies


def _check(concepts: ConceptSet, quantile: float, iou_threshold: float, top_n: int, shards: int) -> None:
    if not isinstance(concepts, ConceptSet):
        raise TypeError(f"concepts must be a ConceptSet (load_concepts / make_concepts), got "
                        f"{type(concepts).__name__}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1) (0.005 in Bau et al.), got {quantile}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1] (0.04 in Bau et al.), got {iou_threshold}")
    if top_n < 1 or shards < 1:
        raise ValueError(f"top_n and shards must be at least 1, got {top_n} and {shards}")


def dissect(model, concepts: ConceptSet, layers: str | Sequence[str], *, quantile: float = 0.005,
            iou_threshold: float = 0.04, top_n: int = 4, batch_size: int = 32, shards: int = 1,
            client=None, workers: int | None = None, scheduler: str | None = None,
            progress: Callback | None = None) -> Dissection:
    """Dissect ``layers`` of ``model`` on ``concepts``: every unit's threshold, its IoU with every
    concept and its label when the best IoU exceeds ``iou_threshold``.

    Parameters
    ----------
    model : a :class:`convlens.Model` (images are fitted to its input spec)
    concepts : a :class:`ConceptSet`
    layers : one or more convolutional layer names (``named_modules()`` names)
    quantile : upper tail of activations kept per unit (``P(a > T) = quantile``)
    iou_threshold : a unit is a detector when its best IoU exceeds this
    top_n : top images kept per unit (for figures)
    shards : split the images into this many shards (merged exactly)
    client, workers, scheduler : run the shards on Dask -- an existing ``distributed.Client``, or
        a local cluster of ``workers`` processes, or the scheduler at this address
    progress : receives :class:`~convlens.progress.Progress` events ``("thresholds", images done,
        images)`` then ``("iou", ...)``: after each batch in this process, after each shard on Dask

    Examples
    --------
    >>> from convlens.dissect import make_concepts, dissect       # doctest: +SKIP
    >>> d = dissect(load_model("lenet-digits"), make_concepts(500), ["conv1", "conv2"])
    >>> d["conv1"].table()[:3]
    """
    layers = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("name at least one layer to dissect")
    _check(concepts, quantile, iou_threshold, top_n, shards)
    t0 = time.perf_counter()
    shapes = spatial_shapes(model, concepts, layers)
    n = len(concepts)
    parts = [s for s in np.array_split(np.arange(n), min(shards, n)) if len(s)]
    if client is None and (workers is not None or scheduler is not None):
        from convlens.parallel import get_client

        with get_client(workers=workers, scheduler=scheduler) as c:
            return dissect(model, concepts, layers, quantile=quantile, iou_threshold=iou_threshold,
                           top_n=top_n, batch_size=batch_size, shards=max(shards, len(c.ncores())),
                           client=c, progress=progress)
    run = _run_dask(client) if client is not None else _run_local
    p1 = run(pass_thresholds, [(model, concepts, layers, s, shapes, n, quantile, top_n, batch_size)
                               for s in parts], progress)
    first = {name: _merge([p[name] for p in p1]) for name in layers}
    thresholds = {name: first[name].q.thresholds() for name in layers}
    p2 = run(pass_tally, [(model, concepts, layers, s, thresholds, batch_size) for s in parts], progress)
    result = {}
    for name in layers:
        tally = _merge([p[name] for p in p2])
        f = first[name]
        result[name] = LayerDissection(
            name, concepts.concepts, concepts.categories, thresholds[name][0], thresholds[name][1],
            tally.iou(), f.index.cpu().numpy(), f.values.cpu().numpy(), f.maps.cpu().numpy().astype(np.float32),
            quantile, iou_threshold,
            {"inter": tally.inter, "unit_area": tally.unit_area, "label_area": tally.label_area})
    seconds = time.perf_counter() - t0
    log.info("dissected %s on %d images in %.1f s", ", ".join(layers), n, seconds)
    return Dissection(getattr(model, "name", "model"), concepts.name, n, result, seconds)


def _merge(parts: list):
    out = parts[0]
    for p in parts[1:]:
        out = out.merge(p)
    return out


def _run_local(fn, arglist: list[tuple], progress: Callback | None) -> list:
    """Each shard in turn; its events counted over all the shards (argument 3 is a shard's indices)."""
    total, before, out = sum(len(args[3]) for args in arglist), 0, []
    for args in arglist:
        def shifted(p, before=before):
            return progress(replace(p, done=before + p.done, total=total))

        out.append(fn(*args, progress=shifted if progress is not None else None))
        before += len(args[3])
    return out


def _run_dask(client):
    def run(fn, arglist: list[tuple], progress: Callback | None) -> list:
        from distributed import as_completed

        # each task carries the model and the concept set itself: scatter(broadcast=True) of the
        # two hung on a local cluster once earlier tests had run in the same process
        futures = [client.submit(fn, *args, pure=False) for args in arglist]
        images = {fut.key: len(args[3]) for fut, args in zip(futures, arglist)}
        task = "thresholds" if fn is pass_thresholds else "iou"
        done = 0
        for fut in as_completed(futures):
            done += images[fut.key]
            notify(progress, task, done, sum(images.values()), shards=len(futures))
        return client.gather(futures)

    return run
