"""Features from any layer for every image: batched, the forward pass stopped at the layer,
streamed into a Zarr array on disk, cached by (weights hash, layer, data fingerprint, pooling).

Kitahara & Holm take VGG16's fc1 over micrographs; Lees takes LeNet/VGG4 intermediate layers.
Any layer works here; spatial outputs ``(N, C, H, W)`` are reduced by ``pooling``: ``flatten``
(C*H*W values), ``avg`` or ``max`` (global average / maximum over H, W: C values).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import read_json, write_json
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

POOLINGS = ("flatten", "avg", "max")
FORMAT = 1  # bump when the on-disk layout changes: old caches are then ignored


def pool(t: torch.Tensor, pooling: str) -> torch.Tensor:
    """``(N, ...)`` activations -> ``(N, D)``; ``avg``/``max`` act over the spatial axes of a
    4-D output and leave a 2-D one unchanged."""
    if t.ndim == 4 and pooling == "avg":
        return t.mean(dim=(2, 3))
    if t.ndim == 4 and pooling == "max":
        return t.amax(dim=(2, 3))
    return t.reshape(len(t), -1)


def _check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    return pooling


def cache_key(model, dataset, layer: str, pooling: str) -> str:
    """Identifies a feature array: weights (and input spec), layer, images + transforms, pooling."""
    parts = [f"v{FORMAT}", model.weights_hash(), layer, dataset.fingerprint, pooling]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


@dataclass
class Features:
    """A feature matrix ``(N, D)`` with the images it came from.

    ``array`` is a Zarr array on disk (extracted with a cache folder) or a NumPy array in
    memory; ``values`` reads it into memory as float32. ``ids``, ``labels`` (-1: none) and ``class_names`` follow the dataset.
    """

    array: object
    ids: list[str]
    labels: np.ndarray
    class_names: tuple[str, ...]
    layer: str
    pooling: str
    key: str
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def values(self) -> np.ndarray:
        return np.asarray(self.array[:], dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, folder: str | Path) -> Path:
        """Write ``features.zarr`` and ``meta.json`` into ``folder`` (no-op when already there)."""
        import zarr

        folder = Path(folder)
        if self.path is not None and self.path.resolve() == folder.resolve():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=".features.", dir=_mkdir(folder.parent)))
        try:
            z = zarr.create_array(str(tmp / "features.zarr"), shape=self.shape, dtype="float32",
                                  chunks=_chunks(self.shape))
            step = z.chunks[0]
            for s in range(0, self.shape[0], step):
                z[s:s + step] = np.asarray(self.array[s:s + step], dtype=np.float32)
            write_json(tmp / "meta.json", self._meta())
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return folder

    def _meta(self) -> dict:
        return {"format": FORMAT, "ids": self.ids, "labels": self.labels.tolist(),
                "class_names": list(self.class_names), "layer": self.layer,
                "pooling": self.pooling, "key": self.key, "shape": list(self.shape), **self.meta}

    @classmethod
    def load(cls, folder: str | Path) -> Features:
        import zarr

        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"no extracted features in {folder} (meta.json missing)")
        m = read_json(folder / "meta.json")
        arr = zarr.open_array(str(folder / "features.zarr"), mode="r")
        extra = {k: v for k, v in m.items() if k not in
                 ("format", "ids", "labels", "class_names", "layer", "pooling", "key", "shape")}
        return cls(arr, m["ids"], np.asarray(m["labels"], dtype=np.int64), tuple(m["class_names"]),
                   m["layer"], m["pooling"], m["key"], extra, folder)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _chunks(shape: tuple[int, int], rows: int | None = None) -> tuple[int, int]:
    if rows is None:  # ~16 MB chunks, at least one row
        rows = max(1, min(shape[0], (16 << 20) // (4 * max(1, shape[1]))))
    return (max(1, min(rows, shape[0])), max(1, shape[1]))


def chunk_rows(n: int, width: int, batch_size: int, target_bytes: int = 4 << 20) -> int:
    """Rows per Zarr chunk: a whole number of batches, about ``target_bytes`` (so a write is one
    chunk, and shards that start on chunk boundaries never share a chunk)."""
    per_batch = 4 * width * batch_size
    return min(max(n, 1), batch_size * max(1, target_bytes // max(1, per_batch)))


class _RowWriter:
    """Buffers consecutive rows and writes them to ``array`` one whole chunk at a time."""

    def __init__(self, array, chunk: int):
        self.array, self.chunk = array, chunk
        self.start, self.parts, self.count = None, [], 0

    def add(self, first_row: int, rows: np.ndarray) -> None:
        if self.start is None:
            self.start = first_row
        self.parts.append(rows)
        self.count += len(rows)
        end = self.start + self.count
        if end % self.chunk == 0:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            block = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
            self.array[self.start:self.start + len(block)] = block
            self.start, self.parts, self.count = self.start + len(block), [], 0


def _probe(model, dataset, layers: list[str], pooling: str) -> tuple[tuple[int, ...], dict[str, int]]:
    """Shape of the first image and each layer's feature width, from one forward pass."""
    from convlens.runner import capture

    x0 = dataset.image(0)
    out = capture(model, x0[None].to(model.device), list(layers))
    return tuple(x0.shape), {k: int(pool(out[k], pooling).shape[1]) for k in layers}


def _check_size(x: torch.Tensor, ref: tuple[int, ...], ids: list[str]) -> None:
    if tuple(x.shape[1:]) != tuple(ref):
        raise ValueError(
            f"images have different sizes ({ids[0]} is {'x'.join(map(str, x.shape[1:]))}, the "
            f"first image is {'x'.join(map(str, ref))}) and no resize was given: pass --resize "
            "H[xW] (resize=... in Python) or tile them (--tile)")


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Yield from ``items`` while a background thread already produces the next one (image
    loading overlaps the forward pass, which releases the GIL). Errors surface in order."""
    from concurrent.futures import ThreadPoolExecutor

    it = iter(items)
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="convlens-prefetch") as pool:
        pending = [pool.submit(next, it, done) for _ in range(depth)]
        while True:
            item = pending.pop(0).result()
            if item is done:
                return
            pending.append(pool.submit(next, it, done))
            yield item


def extract_rows(model, dataset, layers: list[str], pooling: str, indices: np.ndarray,
                 arrays: dict, batch_size: int, ref_shape: tuple[int, ...],
                 progress: Callback | None = None) -> int:
    """Run ``indices`` through ``model`` once, capturing every one of ``layers`` in the same
    pass, and write each layer's pooled features into the matching rows of ``arrays[layer]``.
    Returns the number of images done; ``progress``: a ``("features", done, len(indices))`` event
    after each batch."""
    from convlens.runner import batch_size as fitting
    from convlens.runner import forward_batches

    done = 0
    batch_size = fitting(model, list(layers), ref_shape, batch_size)  # as many as fit the memory budget

    def images():
        for x, _, idx in dataset.batches(batch_size, indices=indices):
            _check_size(x, ref_shape, [dataset.ids[int(i)] for i in idx])
            yield x

    starts = list(range(0, len(indices), batch_size))
    writers = {}
    for k, a in arrays.items():
        writers[k] = _RowWriter(a, a.chunks[0] if hasattr(a, "chunks") and a.chunks else len(a))
    for start, out in zip(starts, forward_batches(model, prefetch(images()), list(layers))):
        for k in layers:
            f = pool(out[k], pooling).cpu().numpy().astype(np.float32, copy=False)
            writers[k].add(int(indices[start]), f)  # indices are contiguous
        done += len(f)
        notify(progress, "features", done, len(indices))
    for w in writers.values():
        w.flush()
    return done


def _shard_task(model, dataset, layers, pooling, stores, start, stop, batch_size, ref_shape, threads):
    """One Dask task: extract rows ``start:stop`` into the shared Zarr arrays (its own chunks)."""
    import zarr

    torch.set_num_threads(threads)
    arrays = {k: zarr.open_array(stores[k], mode="r+") for k in layers}
    return extract_rows(model, dataset, layers, pooling, np.arange(start, stop), arrays, batch_size,
                        ref_shape)


def extract_features(
    model,
    dataset,
    layer: str,
    *,
    pooling: str = "avg",
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    client=None,
    progress: Callback | None = None,
    memory: int | float | str | None = None,
) -> Features:
    """Features of ``layer`` for every image of ``dataset`` (already conformed to the model).

    Parameters
    ----------
    model : a :class:`convlens.Model`
    dataset : a :class:`convlens.ImageDataset` whose images fit the model (see ``conform``)
    layer : a ``named_modules()`` name; the forward pass stops after it
    pooling : ``flatten``, ``avg`` or ``max`` for spatial layers (ignored for vectors)
    batch_size : the most images per forward pass (fewer when the memory budget,
        ``memory``, allows fewer; the same features either way)
    cache_dir : folder of cached features; the result goes to ``cache_dir/<key>`` and a second
        call with the same weights, layer, images, transforms and pooling reads it back.
        ``None``: kept in memory (or in a temporary folder when ``client`` is given)
    client : a ``distributed.Client`` (see :func:`convlens.parallel.get_client`): the images are
        split into one contiguous shard per worker and every worker writes its own rows
    progress : a :class:`~convlens.progress.Progress` event ``("features", images done,
        images)`` after each batch (single process) or shard (Dask); its answer is ignored
    memory : the memory budget (:mod:`convlens.runner`; default: the current one)

    Returns
    -------
    Features
    """
    return extract_layers(model, dataset, [layer], pooling=pooling, batch_size=batch_size,
                          cache_dir=cache_dir, client=client, progress=progress, memory=memory)[layer]


def extract_layers(
    model,
    dataset,
    layers: list[str],
    *,
    pooling: str = "avg",
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    client=None,
    progress: Callback | None = None,
    memory: int | float | str | None = None,
) -> dict[str, Features]:
    """Features of every one of ``layers`` from ONE pass over the images (the forward pass stops
    after the last of them); each layer is cached on its own, as :func:`extract_features` does,
    and only the layers not in the cache are run. Returns ``{layer: Features}`` in the order
    given; the other parameters are those of :func:`extract_features`."""
    from convlens.probe import get_layer

    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("give at least one layer")
    for layer in layers:
        get_layer(model.net, layer)  # unknown layer: one clear error naming the closest
    _check_pooling(pooling)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    keys = {k: cache_key(model, dataset, k, pooling) for k in layers}
    targets = {k: Path(cache_dir) / keys[k] if cache_dir is not None else None for k in layers}
    result: dict[str, Features] = {}
    for k in layers:
        if targets[k] is not None and (targets[k] / "meta.json").is_file():
            log.info("features %s of %s: reusing %s", keys[k], k, targets[k])
            result[k] = Features.load(targets[k])
    todo = [k for k in layers if k not in result]
    n = len(dataset)
    if todo:
        result.update(_extract_missing(model, dataset, todo, pooling, batch_size, keys, targets,
                                       cache_dir, client, progress, memory))
    else:
        notify(progress, "features", n, n, cached=len(layers))
    return {k: result[k] for k in layers}


def _allocate(layers, widths: dict, n: int, rows: int, workdirs: dict) -> tuple[dict, dict]:
    """Each layer's ``(n, width)`` array of NaNs: in memory, or a Zarr array in its workdir
    chunked by ``rows``. Returns ``(arrays, stores)``."""
    import zarr

    arrays, stores = {}, {}
    for k in layers:
        if not workdirs:  # in memory: a plain array
            arrays[k] = np.full((n, widths[k]), np.nan, dtype=np.float32)
        else:
            stores[k] = str(workdirs[k] / "features.zarr")
            arrays[k] = zarr.create_array(stores[k], shape=(n, widths[k]), dtype="float32",
                                          chunks=(rows, widths[k]), fill_value=np.nan)
    return arrays, stores


def _finish(feats: Features, workdirs: dict, target: Path | None) -> Features:
    """In memory as it is; else its metadata written and the workdir renamed onto the cache
    folder (or read back into memory when there is no cache: Dask without ``cache_dir``)."""
    k = feats.layer
    if not workdirs:
        return feats
    write_json(workdirs[k] / "meta.json", feats._meta())
    if target is None:
        feats.array, feats.path = feats.values, None
        return feats
    if target.exists():
        shutil.rmtree(target)
    workdirs.pop(k).rename(target)
    return Features.load(target)


def _extract_missing(model, dataset, layers, pooling, batch_size, keys, targets, cache_dir, client,
                     progress, memory) -> dict[str, Features]:
    from convlens.runner import batch_size as fitting
    from convlens.runner import memory_budget

    n = len(dataset)
    ref_shape, widths = _probe(model, dataset, layers, pooling)
    batch_size = fitting(model, list(layers), ref_shape, batch_size, memory=memory)  # as many as fit
    base_meta = {"model": getattr(model, "name", "model"), "weights_hash": model.weights_hash(),
                 "dataset": dataset.name, "fingerprint": dataset.fingerprint}
    workdirs: dict[str, Path] = {}
    try:
        if cache_dir is not None or client is not None:
            parent = _mkdir(Path(cache_dir)) if cache_dir is not None else None
            for k in layers:
                workdirs[k] = Path(tempfile.mkdtemp(prefix=f".{keys[k]}.", dir=parent))
        # one row chunk for every layer (the widest layer's), so shards cut on chunk
        # boundaries never share a chunk of any layer
        rows = min(chunk_rows(n, w, batch_size) for w in widths.values())
        if client is not None:  # at least one chunk (one shard) per worker
            from convlens.parallel import worker_count

            per_worker = -(-n // batch_size) // max(1, worker_count(client))
            rows = min(rows, batch_size * max(1, per_worker))
        arrays, stores = _allocate(layers, widths, n, rows, workdirs)
        shards = None
        if client is None:
            with memory_budget(memory):
                extract_rows(model, dataset, layers, pooling, np.arange(n), arrays, batch_size,
                             ref_shape, progress)
        else:
            shards = _extract_dask(client, model, dataset, layers, pooling, stores, n, batch_size,
                                   rows, ref_shape, progress)
        return {k: _finish(Features(arrays[k], list(dataset.ids), np.asarray(dataset.labels),
                                    tuple(dataset.class_names), k, pooling, keys[k],
                                    {**base_meta, "width": widths[k],
                                     **({"shards": shards} if shards is not None else {})}),
                           workdirs, targets[k])
                for k in layers}
    finally:
        for w in workdirs.values():
            if w.exists():
                shutil.rmtree(w)


def _extract_dask(client, model, dataset, layers, pooling, stores, n, batch_size, chunk, ref_shape,
                  progress):
    from distributed import as_completed

    from convlens.parallel import worker_count

    workers = worker_count(client)
    # shard boundaries on chunk boundaries so no two workers write the same chunk
    n_chunks = -(-n // chunk)
    per = -(-n_chunks // workers)
    bounds = [(s * chunk, min(n, (s + per) * chunk)) for s in range(0, n_chunks, per)]
    model_f, data_f = client.scatter([model, dataset], broadcast=True, hash=False)
    futures = [client.submit(_shard_task, model_f, data_f, layers, pooling, stores, a, b,
                             batch_size, ref_shape, 1, pure=False) for a, b in bounds]
    done = 0
    for fut in as_completed(futures):
        done += fut.result()
        notify(progress, "features", done, n)
    log.info("extracted %d images on %d Dask workers in %d shards", n, workers, len(bounds))
    return len(bounds)
