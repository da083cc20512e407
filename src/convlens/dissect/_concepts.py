"""Concept data for network dissection: images with pixel masks for named concepts.

A :class:`ConceptSet` pairs an :class:`~convlens.data.ImageDataset` with, for every image, the
concepts present and their masks at a fixed mask size. Two formats are read:

- **ours** (written by :meth:`ConceptSet.save` and ``convlens concepts make``): ``index.csv`` with
  one row per (image, concept) -- ``image,concept,category,mask`` -- where ``mask`` names a PNG
  (non-zero = concept) of the image's size, or is empty for an image-level label (the whole image);
  images and masks are paths relative to the folder; ``concepts.csv`` lists ``concept,category``.
- **Broden** (Bau et al.): ``index.csv`` with ``image, split, ih, iw, sh, sw`` and one column per
  category (``color, object, part, material, scene, texture``) holding ``;``-separated mask PNGs
  (label coded as R + 256 G) or image-level label numbers; ``label.csv`` with ``number, name,
  category`` (``color(123);object(4)``). Images are under ``images/``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convlens.data import ImageDataset, read_image
from convlens.files import atomic_path, slug, write_json, write_png

log = logging.getLogger(__name__)

BRODEN_CATEGORIES = ("color", "object", "part", "material", "scene", "texture")
MaskLoader = Callable[[int], tuple[np.ndarray, np.ndarray]]


class ConceptSet:
    """Images plus per-image concept masks.

    Parameters
    ----------
    images : the images (display space, any size the model's ``conform`` can resize)
    concepts : concept names; ``categories`` gives each one's category
    load_masks : ``i -> (ids, masks)`` with ``ids`` concept indices (int, ``(k,)``) and ``masks``
        boolean ``(k, mask_h, mask_w)``
    mask_size : ``(mask_h, mask_w)``, the same for every image
    annotated : optional boolean ``(n_images, n_categories)``: which categories were labelled in
        each image (an unlabelled category does not count against a unit there); default all
    """

    def __init__(self, images: ImageDataset, concepts: Sequence[str], categories: Sequence[str],
                 load_masks: MaskLoader, mask_size: tuple[int, int],
                 annotated: np.ndarray | None = None, name: str = "concepts"):
        if len(concepts) != len(categories):
            raise ValueError(f"{len(concepts)} concepts but {len(categories)} categories")
        if not concepts:
            raise ValueError("a concept set needs at least one concept")
        self.images = images
        self.concepts = tuple(str(c) for c in concepts)
        self.category_names = tuple(dict.fromkeys(str(c) for c in categories))
        self.concept_category = np.array([self.category_names.index(str(c)) for c in categories])
        self._load_masks = load_masks
        self.mask_size = (int(mask_size[0]), int(mask_size[1]))
        if annotated is None:
            annotated = np.ones((len(images), len(self.category_names)), dtype=bool)
        self.annotated = np.asarray(annotated, dtype=bool)
        if self.annotated.shape != (len(images), len(self.category_names)):
            raise ValueError(f"annotated must be (images, categories) = "
                             f"{(len(images), len(self.category_names))}, got {self.annotated.shape}")
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"ConceptSet({self.name!r}, images={len(self)}, concepts={len(self.concepts)}, "
                f"categories={list(self.category_names)}, masks={self.mask_size[0]}x{self.mask_size[1]})")

    @property
    def categories(self) -> tuple[str, ...]:
        """Each concept's category name."""
        return tuple(self.category_names[k] for k in self.concept_category)

    def concept_index(self, name: str) -> int:
        if name not in self.concepts:
            import difflib

            close = difflib.get_close_matches(name, self.concepts, n=5, cutoff=0.4)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise ValueError(f"no concept named {name!r} in {self.name}.{hint}")
        return self.concepts.index(name)

    def masks(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, masks)`` of image ``i``: concept indices and boolean ``(k, mask_h, mask_w)``."""
        ids, masks = self._load_masks(i)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        masks = np.asarray(masks, dtype=bool).reshape(len(ids), *self.mask_size)
        return ids, masks

    def subset(self, indices: Sequence[int]) -> ConceptSet:
        idx = [int(i) for i in indices]
        return ConceptSet(self.images.subset(idx), self.concepts, self.categories,
                          lambda j: self._load_masks(idx[j]), self.mask_size,
                          self.annotated[idx], self.name)

    def pixel_counts(self) -> np.ndarray:
        """Pixels of each concept over the whole set (int64, ``(n_concepts,)``)."""
        counts = np.zeros(len(self.concepts), dtype=np.int64)
        for i in range(len(self)):
            ids, m = self.masks(i)
            np.add.at(counts, ids, m.reshape(len(ids), -1).sum(1))
        return counts

    def save(self, folder: str | Path) -> Path:
        """Write our format: ``images/``, ``masks/``, ``index.csv``, ``concepts.csv``."""
        folder = Path(folder)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(len(self)):
            x = self.images.image(i)
            img = (x.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            stem = f"{i:06d}"
            write_png(folder / "images" / f"{stem}.png", img[..., 0] if img.shape[2] == 1 else img)
            ids, masks = self.masks(i)
            for c, m in zip(ids, masks):
                name = self.concepts[c]
                if m.all() and tuple(img.shape[:2]) != self.mask_size:
                    rows.append([f"images/{stem}.png", name, self.categories[c], ""])
                    continue
                path = f"masks/{stem}_{slug(name)}.png"
                write_png(folder / path, m.astype(np.uint8) * 255)
                rows.append([f"images/{stem}.png", name, self.categories[c], path])
        _write_csv(folder / "concepts.csv", ["concept", "category"],
                   [[c, k] for c, k in zip(self.concepts, self.categories)])
        _write_csv(folder / "index.csv", ["image", "concept", "category", "mask"], rows)
        write_json(folder / "concepts.json", {"name": self.name, "images": len(self),
                                              "concepts": len(self.concepts),
                                              "mask_size": list(self.mask_size)})
        return folder


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _read_mask(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"mask {path} listed in index.csv does not exist")
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 0


def load_concepts(path: str | Path) -> ConceptSet:
    """Read a concept set folder in our format or the Broden format (detected from its files).

    A built-in name is not accepted here: make one with :func:`make_concepts` or
    ``convlens concepts make``.
    """
    folder = Path(path)
    if not (folder / "index.csv").is_file():
        raise FileNotFoundError(
            f"{folder} is not a concept set: it has no index.csv. Make one with `convlens concepts "
            "make --out FOLDER`, or point to a Broden folder (index.csv + label.csv)")
    if (folder / "label.csv").is_file():
        return load_broden(folder)
    return _load_ours(folder)


def _load_ours(folder: Path) -> ConceptSet:
    rows = _read_csv(folder / "index.csv")
    missing = {"image", "concept", "category", "mask"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{folder / 'index.csv'} lacks the columns {sorted(missing)}; expected "
                         "image,concept,category,mask")
    order: dict[str, str] = {}
    if (folder / "concepts.csv").is_file():
        order = {r["concept"]: r["category"] for r in _read_csv(folder / "concepts.csv")}
    for r in rows:
        order.setdefault(r["concept"], r["category"])
    concepts = list(order)
    index = {c: k for k, c in enumerate(concepts)}
    per_image: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        per_image.setdefault(r["image"], []).append((index[r["concept"]], r["mask"]))
    images = list(per_image)
    first = read_image(folder / images[0])
    size = tuple(first.shape[1:])

    def load_masks(i: int) -> tuple[np.ndarray, np.ndarray]:
        entries = per_image[images[i]]
        ids, masks = [], []
        for c, mask in entries:
            if mask:
                m = _read_mask(folder / mask)
                if m.shape != size:
                    raise ValueError(
                        f"mask {mask} is {m.shape[0]}x{m.shape[1]} but its image {images[i]} is "
                        f"{size[0]}x{size[1]}: masks must have their image's size (resize the mask "
                        "with nearest-neighbour interpolation)")
                if not m.any():
                    raise ValueError(f"mask {mask} of concept {concepts[c]!r} has no pixels: drop "
                                     "the row from index.csv or fix the mask")
            else:
                m = np.ones(size, dtype=bool)
            ids.append(c)
            masks.append(m)
        return np.array(ids, dtype=np.int64), np.stack(masks) if masks else np.zeros((0, *size), bool)

    def load_image(i: int) -> torch.Tensor:
        x = read_image(folder / images[i])
        if tuple(x.shape[1:]) != size:
            raise ValueError(f"image {images[i]} is {x.shape[1]}x{x.shape[2]} but the set's masks are "
                             f"{size[0]}x{size[1]}: every image of a concept set must have one size")
        return x

    ds = ImageDataset([str(folder / p) for p in images], load_image, name=folder.name)
    return ConceptSet(ds, concepts, [order[c] for c in concepts], load_masks, size, name=folder.name)


def decode_label_png(path: Path) -> np.ndarray:
    """A Broden segmentation PNG: label = R + 256 * G (0 = unlabelled)."""
    if not path.is_file():
        raise FileNotFoundError(f"Broden mask {path} does not exist")
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB")).astype(np.int64)
    return a[..., 0] + 256 * a[..., 1]


def _broden_labels(labels: list[dict]) -> dict[int, tuple[str, str]]:
    """``label.csv``'s rows as ``{number: (name, category)}`` (0, the background, left out; the
    first category listed when a label names several)."""
    names: dict[int, tuple[str, str]] = {}
    for r in labels:
        num = int(r["number"])
        if num == 0:
            continue
        cat = (r.get("category") or "").split(";")[0].split("(")[0].strip() or "unknown"
        names[num] = (r["name"], cat)
    return names


def _broden_masks(r: dict, cats: list[str], img_dir: Path, position: dict[int, int],
                  set_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The concepts of one ``index.csv`` row ``r``: their indices (``position`` of each label
    number) and their masks, from the row's label PNGs and image-level labels."""
    size = (int(r["sh"]), int(r["sw"]))
    if size != set_size:
        raise ValueError(f"Broden image {r['image']} has masks of {size[0]}x{size[1]}, the set "
                         f"{set_size[0]}x{set_size[1]}: mixed mask sizes are not supported")
    found: dict[int, np.ndarray] = {}
    for c in cats:
        for item in filter(None, (r.get(c) or "").split(";")):
            if item.strip().isdigit():  # image-level label (scene, texture)
                found.setdefault(int(item), np.zeros(size, bool))[:] = True
                continue
            lab = decode_label_png(img_dir / item)
            if lab.shape != size:
                raise ValueError(f"mask {item} is {lab.shape[0]}x{lab.shape[1]} but index.csv "
                                 f"gives {size[0]}x{size[1]} for image {r['image']}")
            for v in np.unique(lab):
                if v and int(v) in position:
                    found.setdefault(int(v), np.zeros(size, bool))
                    found[int(v)] |= lab == v
    keys = sorted(found)
    ids = np.array([position[k] for k in keys], dtype=np.int64)
    masks = np.stack([found[k] for k in keys]) if keys else np.zeros((0, *size), bool)
    return ids, masks


def load_broden(folder: str | Path, categories: Sequence[str] | None = None) -> ConceptSet:
    """Read a Broden folder: ``index.csv``, ``label.csv`` and the images/masks under ``images/``.

    Every label number becomes a concept; a label whose ``category`` cell names several
    categories (``color(12);object(3)``) takes the first one listed. ``categories`` keeps only
    those categories (all by default).
    """
    folder = Path(folder)
    labels = _read_csv(folder / "label.csv")
    index = _read_csv(folder / "index.csv")
    if not index:
        raise ValueError(f"{folder / 'index.csv'} has no rows")
    cats = [c for c in BRODEN_CATEGORIES if c in index[0]]
    if categories is not None:
        unknown = set(categories) - set(cats)
        if unknown:
            raise ValueError(f"categories {sorted(unknown)} are not columns of index.csv ({cats})")
        cats = [c for c in cats if c in categories]
    names = _broden_labels(labels)
    numbers = sorted(names)
    position = {n: k for k, n in enumerate(numbers)}
    sh, sw = int(index[0]["sh"]), int(index[0]["sw"])
    annotated = np.array([[bool(r.get(c)) for c in cats] for r in index], dtype=bool)
    img_dir = folder / "images"

    def load_masks(i: int) -> tuple[np.ndarray, np.ndarray]:
        return _broden_masks(index[i], cats, img_dir, position, (sh, sw))

    ds = ImageDataset([str(img_dir / r["image"]) for r in index],
                      lambda i: read_image(img_dir / index[i]["image"]), name=folder.name)
    return ConceptSet(ds, [names[n][0] for n in numbers], [names[n][1] for n in numbers],
                      load_masks, (sh, sw), annotated=_annotated_for(annotated, cats, numbers, names),
                      name=folder.name)


def _annotated_for(annotated: np.ndarray, cats: list[str], numbers: list[int],
                   names: dict[int, tuple[str, str]]) -> np.ndarray:
    """Reorder the per-image category flags to the concept set's category order."""
    order = list(dict.fromkeys(names[n][1] for n in numbers))
    cols = [annotated[:, cats.index(c)] if c in cats else np.zeros(len(annotated), bool) for c in order]
    return np.stack(cols, axis=1) if cols else np.zeros((len(annotated), 0), bool)
