"""The pointing game (Zhang et al. 2016): does a map's maximum fall on the object?

A hit when the map's largest value lies within ``tolerance`` pixels of the object's mask (Zhang
et al. use 15 px at 224 px). Masks come from any source of per-pixel object masks: the photos'
``*_segmentation_mask.bmp`` files (:func:`mask_pairs`), or a concept set's masks
(:func:`concept_masks`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pointing_game(maps, masks, *, tolerance: float = 15.0) -> np.ndarray:
    """Hits ``(N,)`` (bool) of maps ``(N, H, W)`` on boolean masks ``(N, H, W)``; an image whose
    mask is empty counts as a miss."""
    from scipy.ndimage import distance_transform_edt

    maps, masks = np.asarray(maps), np.asarray(masks, dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ: give one (H, W) mask per map")
    hits = np.zeros(len(maps), dtype=bool)
    for i, (m, k) in enumerate(zip(maps, masks)):
        if not k.any():
            continue
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        hits[i] = bool(distance_transform_edt(~k)[r, c] <= tolerance)
    return hits


MASK_SUFFIX = "_mask"


def mask_pairs(folder: str | Path) -> dict[Path, Path]:
    """``{image: mask}`` for every ``NAME_mask.EXT`` beside a ``NAME.EXT`` image in ``folder``
    (the photos' ``bird_segmentation.bmp`` / ``bird_segmentation_mask.bmp``)."""
    from convlens.data import IMAGE_SUFFIXES

    folder = Path(folder)
    pairs = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith(MASK_SUFFIX):
            base = p.stem[: -len(MASK_SUFFIX)]
            img = next((q for q in folder.iterdir() if q.stem == base and q.suffix.lower() in IMAGE_SUFFIXES), None)
            if img is not None:
                pairs[img] = p
    return pairs


def read_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask (non-zero = object) resized to ``size`` (nearest)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L").resize((size[1], size[0]), Image.NEAREST))
    return a > 0


def concept_masks(concepts, concept: str | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean masks ``(N, H, W)`` of a :class:`convlens.dissect.ConceptSet`: each image's union
    of ``concept``'s masks (or of every concept's), resized to ``size``."""
    import torch
    import torch.nn.functional as F

    want = None if concept is None else concepts.concept_index(concept)
    out = []
    for i in range(len(concepts)):
        ids, masks = concepts.masks(i)
        keep = masks if want is None else masks[np.asarray(ids) == want]
        m = keep.any(0) if len(keep) else np.zeros(concepts.mask_size, dtype=bool)
        if size is not None and tuple(m.shape) != tuple(size):
            m = F.interpolate(torch.as_tensor(m, dtype=torch.float32)[None, None], size=tuple(size),
                              mode="nearest")[0, 0].numpy() > 0.5
        out.append(m)
    return np.stack(out)
