"""A user's own segmentation data as a concept set: a folder of images, a folder of label-index
masks and a class list -- the layout CamVid, Pascal VOC, Cityscapes and ADE20K ship.

Each mask pixel holds a class number (a palette PNG such as VOC's is read as its indices, not its
colours); line ``k`` of the class list names class ``k``. Pixels equal to ``ignore`` (255 by
default), and pixels of a class named ``void``, belong to no concept -- as Broden's unlabelled
pixels. Masks are matched to images by file stem, after dropping a Cityscapes-style suffix
(``_leftImg8bit``, ``_gtFine_labelIds``, ...) or CamVid's ``_L``. Every class is one concept of
one category (``object`` unless told), its mask read from the index mask on demand: no PNG per
concept is written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convlens.data import IMAGE_SUFFIXES, ImageDataset, read_image
from convlens.dissect._concepts import ConceptSet

log = logging.getLogger(__name__)

_SUFFIXES = ("_leftImg8bit", "_gtFine_labelTrainIds", "_gtFine_labelIds", "_gtCoarse_labelIds", "_labelIds",
             "_L", "_mask", "_label", "_labels", "_seg")
VOID_NAMES = ("void",)


def _key(path: Path) -> str:
    stem = path.stem
    for s in _SUFFIXES:
        if stem.endswith(s) and len(stem) > len(s):
            return stem[: -len(s)]
    return stem


def _files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(_key(p), p)
    if not found:
        raise FileNotFoundError(f"no {what} in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return found


def read_index_mask(path: Path) -> np.ndarray:
    """A label-index mask as an int64 ``(H, W)`` array of class numbers."""
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            a = np.asarray(im.convert("RGB"))
            if not (a[..., 0] == a[..., 1]).all() or not (a[..., 0] == a[..., 2]).all():
                raise ValueError(
                    f"mask {path} is a colour-coded RGB image, not a label-index mask (one class "
                    "number per pixel): convert its colours to class numbers first (e.g. with the "
                    "data set's palette), or give the *_labelIds / trainannot masks")
            return a[..., 0].astype(np.int64)
        return np.asarray(im).astype(np.int64)  # P (palette indices), L, I, I;16


def load_segmentation(images: str | Path, masks: str | Path, classes: str | Path | Sequence[str], *,
                      ignore: int | None = 255, category: str = "object",
                      mask_size: tuple[int, int] | None = None) -> ConceptSet:
    """A :class:`ConceptSet` over a folder of images and a folder of label-index masks.

    Parameters
    ----------
    images, masks : folders (searched recursively); a mask belongs to the image of the same stem
    classes : a file with one class name per line (line k names class k), or the names
    ignore : the mask value of unlabelled pixels (255 in VOC and Cityscapes' train ids); None: none
    category : the category every class belongs to
    mask_size : ``(h, w)`` to resample every mask to (nearest neighbour); default the images'
        size when they all share one, else required

    Raises
    ------
    ValueError
        A mask whose size differs from its image's, class numbers beyond the class list, images
        without masks -- each naming the file and the fix. Checked before anything runs.
    """
    from convlens.inputspec import read_class_names

    names = read_class_names(classes) if isinstance(classes, (str, Path)) else tuple(str(c) for c in classes)
    if not names:
        raise ValueError("the class list is empty: give one class name per line, in class-number order")
    imgs, msks = _files(Path(images), "images"), _files(Path(masks), "masks")
    keys = [k for k in imgs if k in msks]
    lonely = [imgs[k].name for k in imgs if k not in msks]
    if not keys:
        raise ValueError(f"no image in {images} has a mask in {masks} (matched by file stem, e.g. "
                         f"{next(iter(imgs.values())).name} -> {next(iter(imgs)).split('.')[0]}.png)")
    if lonely:
        log.warning("%d images have no mask and are left out (e.g. %s)", len(lonely), lonely[0])
    void = {k for k, n in enumerate(names) if n.strip().lower() in VOID_NAMES}
    sizes = [_check_pair(imgs[k], msks[k], len(names), ignore) for k in keys]
    if mask_size is None:
        if len(set(sizes)) > 1:
            raise ValueError(f"the images have {len(set(sizes))} different sizes (e.g. {sizes[0]} and "
                             f"{next(s for s in sizes if s != sizes[0])}): give mask_size (--mask-size HxW) "
                             "to resample every mask to one size")
        mask_size = sizes[0]
    size = (int(mask_size[0]), int(mask_size[1]))
    concepts = [k for k in range(len(names)) if k not in void]
    column = {k: j for j, k in enumerate(concepts)}

    def load_masks(i: int) -> tuple[np.ndarray, np.ndarray]:
        lab = read_index_mask(msks[keys[i]])
        if lab.shape != size:
            lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST))
        present = [k for k in np.unique(lab) if k in column]
        ids = np.array([column[k] for k in present], dtype=np.int64)
        stack = np.stack([lab == k for k in present]) if present else np.zeros((0, *size), bool)
        return ids, stack

    def load_image(i: int) -> torch.Tensor:
        return read_image(imgs[keys[i]])

    name = Path(images).name or "segmentation"
    ds = ImageDataset([str(imgs[k]) for k in keys], load_image, name=name)
    return ConceptSet(ds, [names[k] for k in concepts], [category] * len(concepts), load_masks, size, name=name)


def _check_pair(image: Path, mask: Path, n_classes: int, ignore: int | None) -> tuple[int, int]:
    """The image's ``(h, w)``, after checking its mask's size and class numbers."""
    with Image.open(image) as im:
        w, h = im.size
    lab = read_index_mask(mask)
    if lab.shape != (h, w):
        raise ValueError(f"mask {mask} is {lab.shape[0]}x{lab.shape[1]} but its image {image.name} is "
                         f"{h}x{w}: a mask must have its image's size (resize it with nearest-neighbour "
                         "interpolation, never bilinear, so class numbers stay whole)")
    values = np.unique(lab)
    bad = [int(v) for v in values if (v < 0 or v >= n_classes) and v != ignore]
    if bad:
        raise ValueError(f"mask {mask} holds class number(s) {bad[:8]} beyond the class list "
                         f"({n_classes} classes, 0..{n_classes - 1}): add their names to the class "
                         f"list, or pass --ignore N if N marks unlabelled pixels (now {ignore})")
    return h, w
