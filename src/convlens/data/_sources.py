"""``load_dataset(spec)``: a built-in name, a folder of class subfolders, a CSV manifest, or an
``.npz`` of arrays; plus :func:`conform` and :func:`tiled`, which fit images to a model."""

from __future__ import annotations

import csv
import hashlib
import logging
import zipfile
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
    if bad and good:  # none readable: the caller's error says so, once
        log.warning("skipping %d unreadable image(s) (--strict makes this an error):\n%s", len(bad), listing)
    return good, bad


def _file_dataset(paths, labels, classes, name, strict, fp_extra="") -> ImageDataset:
    paths = [Path(p) for p in paths]
    good, bad = _keep_readable(paths, strict)
    keep = {p for p in good}
    labels = [lab for p, lab in zip(paths, labels) if p in keep]
    if not good:
        example = f", e.g. {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise ValueError(f"dataset {name!r} is empty: none of {len(paths)} file(s) could be read{example}")
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
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            rows = list(reader)
    except UnicodeDecodeError as e:
        raise ValueError(f"manifest {csv_path} is not UTF-8 (byte {e.object[e.start]:#x} at offset "
                         f"{e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise ValueError(f"manifest {csv_path} is not a readable CSV ({e})") from None
    if not header:
        raise ValueError(f"manifest {csv_path} is empty: write a header line 'path,label', then one "
                         "image per line")
    if "path" not in header:
        raise ValueError(f"{csv_path}: a manifest needs a header with a 'path' column (and optionally "
                         f"'label'); its header is {','.join(header)}")
    if not rows:
        raise ValueError(f"manifest {csv_path} has a header but no rows: add one line per image (path,label)")
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


def from_image(path: str | Path) -> ImageDataset:
    """One image file as a dataset of one unlabelled image (``load_dataset("photo.jpg")``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    read_image(path)  # an unreadable image is an error here, not skipped
    return _file_dataset([path], [-1], [], path.stem, strict=True)


def from_npz(path: str | Path, split: str | None = None) -> ImageDataset:
    """Arrays ``x`` (and ``y``), or the Keras keys ``x_train``/``y_train``/``x_test``/``y_test``
    (``split`` picks ``train``, ``test`` or ``all``; default ``train``). An optional ``classes``
    array names the labels."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a readable .npz of arrays ({e}): fetch or save it again") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array, not an .npz archive: save it with np.savez(path, x=..., y=...)")
    with z:
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
    if not xs or any(a.size == 0 for a in xs):
        raise ValueError(f"{path} holds no images (the x array is empty)")
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
        elif Path(s).suffix.lower() in IMAGE_SUFFIXES:
            ds = from_image(s)
        else:
            raise FileNotFoundError(
                f"dataset {s!r} not found: give a built-in ({', '.join(BUILTIN_DATASETS)}), a "
                "folder with one subfolder per class, a CSV manifest (path,label), an .npz or one image file"
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
    if tile is not None:
        if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
            raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
        ds = tiled(ds, tile, grid)
    transforms: list = [ToChannels(model.spec.channels)]
    if clahe:
        transforms.append(CLAHE())
    size = tuple(model.spec.size) if resize == "model" else parse_size(resize)
    if size is not None:
        transforms.append(Resize(size))
    return ds.with_transforms(*transforms)


def label_mapping(ds: ImageDataset, model) -> tuple[np.ndarray | None, str | None]:
    """How the data's labels name the model's outputs: ``(mapping, None)`` with
    ``mapping[data label] = output index``, or ``(None, problem)`` when the data's classes are not
    the model's (then an "accuracy" would compare two different sets of names). Names match in
    full, in any case, or as one of ImageNet's comma-separated synonyms; data without labels, or a
    side without names, map one to one."""
    from convlens.inputspec import _synonyms

    data_names, model_names = list(ds.class_names), list(getattr(model, "class_names", ()) or ())
    if not ds.has_labels or not data_names or not model_names:
        return np.arange(max(len(data_names), len(model_names), int(ds.labels.max(initial=-1)) + 1)), None
    index: dict[str, int] = {}
    for i, n in enumerate(model_names):
        for key in [n, n.lower(), *_synonyms(n)]:
            index.setdefault(key, i)
    mapping, unknown = [], []
    for n in data_names:
        j = index.get(n, index.get(n.lower(), index.get(n.strip().lower())))
        mapping.append(-1 if j is None else j)
        if j is None:
            unknown.append(n)
    if unknown:
        show = ", ".join(unknown[:4]) + (" ..." if len(unknown) > 4 else "")
        known = ", ".join(n.split(",")[0] for n in model_names[:4]) + (" ..." if len(model_names) > 4 else "")
        return None, (f"the data's classes are not the model's: {len(unknown)} of {len(data_names)} "
                      f"({show}) are not among the model's {len(model_names)} ({known}), so no accuracy "
                      "or confusion matrix is computed; label the data with the model's class names "
                      "(or give --classes)")
    return np.asarray(mapping, dtype=np.int64), None
