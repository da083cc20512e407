"""``load_dataset(spec)``: a built-in name, a folder of class subfolders, a CSV manifest, or an
``.npz`` of arrays; plus :func:`conform` and :func:`tiled`, which fit images to a model."""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from convlens.data._builtin import BUILTIN_DATASETS
from convlens.data._dataset import ImageDataset
from convlens.data._io import IMAGE_SUFFIXES, array_to_tensor, check_readable, read_image
from convlens.data._transforms import CLAHE, Resize, ToChannels, parse_size, tile_grid

log = logging.getLogger(__name__)


class UnreadableImagesError(ValueError):
    pass


def _keep_readable(paths: list[Path], strict: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    good, bad = [], []
    for p in paths:
        reason = check_readable(p)
        (bad.append((p, reason)) if reason else good.append(p))
    if bad:
        listing = "\n".join(f"  {p}: {r}" for p, r in bad)
        if strict:
            raise UnreadableImagesError(f"{len(bad)} unreadable image(s) (--strict):\n{listing}")
        log.warning("skipping %d unreadable image(s) (--strict makes this an error):\n%s", len(bad), listing)
    return good, bad


def _file_dataset(paths, labels, classes, name, strict, fp_extra="") -> ImageDataset:
    paths = [Path(p) for p in paths]
    good, bad = _keep_readable(paths, strict)
    keep = {p for p in good}
    labels = [lab for p, lab in zip(paths, labels) if p in keep]
    if not good:
        raise ValueError(f"dataset {name!r} is empty: none of {len(paths)} file(s) could be read")
    fp = hashlib.sha256()
    for p in good:
        st = p.stat()
        fp.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    fp.update(fp_extra.encode())
    ds = ImageDataset([str(p) for p in good], lambda i: read_image(good[i]), labels, classes, name,
                      source_fingerprint=fp.hexdigest())
    ds.unreadable = [str(p) for p, _ in bad]
    return ds


def from_folder(root: str | Path, strict: bool = False) -> ImageDataset:
    """One subfolder per class (sorted names are the classes); a folder whose subfolders hold no
    images (``photos/`` with a ``licenses/`` folder) is one unlabelled set of its own images."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")

    def has_images(d: Path) -> bool:
        return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*"))

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                     and has_images(d))
    paths, labels = [], []
    for label, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(label)
    if not classes:
        for p in sorted(root.iterdir()):
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                labels.append(-1)
    if not paths:
        raise ValueError(
            f"no images found in {root}: expected one subfolder per class holding image files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return _file_dataset(paths, labels, classes, root.name, strict)


def from_manifest(csv_path: str | Path, strict: bool = False) -> ImageDataset:
    """A CSV with a ``path`` column (relative to the CSV) and an optional ``label`` column
    (class names or integers)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"manifest not found: {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise ValueError(f"{csv_path}: a manifest needs a header with a 'path' column (and optionally 'label')")
    raw = [r.get("label", "") or "" for r in rows]
    if all(v == "" for v in raw):
        labels, classes = [-1] * len(rows), []
    elif all(v.lstrip("-").isdigit() for v in raw):
        labels = [int(v) for v in raw]
        classes = [str(i) for i in range(max(labels) + 1)]
    else:
        classes = sorted(set(raw))
        labels = [classes.index(v) for v in raw]
    paths = []
    for r in rows:
        p = Path(r["path"])
        paths.append(p if p.is_absolute() else csv_path.parent / p)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        msg = f"{len(missing)} file(s) named in {csv_path} do not exist, e.g. {missing[:3]}"
        if strict:
            raise FileNotFoundError(msg)
        log.warning("%s; skipping them", msg)
        keep = [i for i, p in enumerate(paths) if p.is_file()]
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return _file_dataset(paths, labels, classes, csv_path.stem, strict)


def from_npz(path: str | Path, split: str | None = None) -> ImageDataset:
    """Arrays ``x`` (and ``y``), or the Keras keys ``x_train``/``y_train``/``x_test``/``y_test``
    (``split`` picks ``train``, ``test`` or ``all``; default ``train``). An optional ``classes``
    array names the labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if "x" in keys:
            xs, ys = [z["x"]], [z["y"]] if "y" in keys else None
        elif "x_train" in keys:
            split = split or "train"
            parts = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}.get(split)
            if parts is None:
                raise ValueError(f"unknown split {split!r} for {path}: choose train, test or all")
            xs = [z[f"x_{s}"] for s in parts]
            ys = [z[f"y_{s}"] for s in parts] if all(f"y_{s}" in keys for s in parts) else None
        else:
            raise ValueError(f"{path} has keys {sorted(keys)}; expected 'x' (and 'y') or x_train/y_train/x_test/y_test")
        classes = [str(c) for c in z["classes"]] if "classes" in keys else []
    x = np.concatenate(xs)
    y = np.concatenate(ys).astype(np.int64).ravel() if ys is not None else None
    if x.ndim not in (3, 4):
        raise ValueError(f"{path}: x must be (N, H, W) or (N, H, W, C) / (N, C, H, W), got {x.shape}")
    if y is not None and not classes and len(y):
        classes = [str(i) for i in range(int(y.max()) + 1)]
    name = path.stem + (f":{split}" if split else "")
    ids = [f"{name}/{i}" for i in range(len(x))]
    fp = hashlib.sha256(f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}|{split}".encode()).hexdigest()
    return ImageDataset(ids, lambda i: array_to_tensor(x[i]), y, classes, name, source_fingerprint=fp)


def load_dataset(spec: str | Path | ImageDataset, *, strict: bool = False, limit: int | None = None,
                 seed: int = 0) -> ImageDataset:
    """A built-in name (``digits``, ``textures``, ``gratings``), a folder, a ``.csv`` manifest,
    or an ``.npz`` (``file.npz:test`` picks a split). ``limit`` keeps a seeded random sample."""
    if isinstance(spec, ImageDataset):
        ds = spec
    else:
        s = str(spec)
        base, _, split = s.partition(".npz:")
        if s in BUILTIN_DATASETS:
            ds = BUILTIN_DATASETS[s]()
        elif split or s.endswith(".npz"):
            ds = from_npz(base + ".npz" if split else s, split or None)
        elif s.endswith(".csv"):
            ds = from_manifest(s, strict)
        elif Path(s).is_dir():
            ds = from_folder(s, strict)
        else:
            raise FileNotFoundError(
                f"dataset {s!r} not found: give a built-in ({', '.join(BUILTIN_DATASETS)}), a "
                "folder with one subfolder per class, a CSV manifest (path,label) or an .npz"
            )
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        ds = ds.sample(limit, seed)
    return ds


def tiled(ds: ImageDataset, tile: int, grid: tuple[int, int] | None = None) -> ImageDataset:
    """Each image replaced by a centred grid of ``tile``-px tiles (the largest grid, or
    ``grid=(rows, cols)``); ids get ``#r<top>c<left>``."""
    ids, labels, where = [], [], []
    for i in range(len(ds)):
        x = ds.image(i)
        for top, left in tile_grid(x.shape[1], x.shape[2], tile, grid):
            ids.append(f"{ds.ids[i]}#r{top}c{left}")
            labels.append(ds.labels[i])
            where.append((i, top, left))

    def load(j: int) -> torch.Tensor:
        i, top, left = where[j]
        return ds.image(i)[:, top : top + tile, left : left + tile]

    return ImageDataset(ids, load, labels, ds.class_names, ds.name,
                        source_fingerprint=ds.fingerprint + f"|tile{tile}|{grid}")


def conform(ds: ImageDataset, model, *, resize: str | int | tuple | None = "model",
            clahe: bool = False, tile: int | None = None, grid: tuple[int, int] | None = None
            ) -> ImageDataset:
    """Fit ``ds`` to ``model``'s input spec: tiles (optional), channel count, size, CLAHE.

    ``resize="model"`` resizes to the model's input size; an int or ``"HxW"`` to that size;
    ``None`` keeps sizes (images of different sizes then fail with a clear message).
    ``tile`` cuts each image into a centred grid of tiles first (``grid=(rows, cols)`` or the
    largest that fits).
    """
    if tile:
        ds = tiled(ds, tile, grid)
    transforms: list = [ToChannels(model.spec.channels)]
    if clahe:
        transforms.append(CLAHE())
    size = tuple(model.spec.size) if resize == "model" else parse_size(resize)
    if size is not None:
        transforms.append(Resize(size))
    return ds.with_transforms(*transforms)
