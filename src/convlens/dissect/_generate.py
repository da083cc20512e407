"""A concept set that needs no download: seeded images with pixel-exact masks.

Every image is a background region and one or two shapes. Each region is filled with one of the
11 basic colour terms (Berlin & Kay) or with a two-colour texture: stripes, checks and waves at
four (or two) orientations, dots, and binarised crops of scikit-image's brick, grass and gravel
photographs, each at several scales. Colours are jittered per region, never per pixel, so the
colour masks are exact: every pixel belongs to exactly one colour term. Categories are
``color`` (per pixel), ``texture`` (the textured regions) and ``shape`` (the visible shape).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from convlens.data import ImageDataset
from convlens.dissect._concepts import ConceptSet

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10), "white": (245, 245, 245), "red": (215, 25, 30), "green": (40, 160, 50),
    "yellow": (245, 220, 40), "blue": (35, 65, 205), "brown": (125, 75, 35),
    "purple": (125, 45, 155), "pink": (245, 155, 195), "orange": (245, 135, 25),
    "grey": (128, 128, 128),
}
TEXTURES = ("stripes-0", "stripes-45", "stripes-90", "stripes-135", "checks-0", "checks-45", "dots",
            "waves-0", "waves-90", "brick", "grass", "gravel")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
JITTER = 12  # +- per channel, per region


def concept_table() -> tuple[list[str], list[str]]:
    """Names and categories of the generated concepts, in index order."""
    names = list(COLOURS) + list(TEXTURES) + list(SHAPES)
    cats = ["color"] * len(COLOURS) + ["texture"] * len(TEXTURES) + ["shape"] * len(SHAPES)
    return names, cats


@lru_cache(maxsize=4)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32)


def texture_pattern(kind: str, size: int, period: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``(size, size)`` two-phase pattern of texture ``kind`` with the given period."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base, _, angle = kind.partition("-")
    t = np.deg2rad(float(angle or 0))
    u = xx * np.cos(t) + yy * np.sin(t) + rng.uniform(0, period)
    v = -xx * np.sin(t) + yy * np.cos(t) + rng.uniform(0, period)
    if base == "stripes":
        return (u / period) % 1.0 < 0.5
    if base == "checks":
        return (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    if base == "waves":
        d = u + 0.35 * period * np.sin(2 * np.pi * v / (2.5 * period))
        return (d / period) % 1.0 < 0.5
    if base == "dots":
        p = period * 1.2
        return ((u % p) - p / 2) ** 2 + ((v % p) - p / 2) ** 2 < (0.3 * p) ** 2
    if kind in ("brick", "grass", "gravel"):
        img = _photo(kind)
        if size > min(img.shape):
            img = np.tile(img, (size // img.shape[0] + 1, size // img.shape[1] + 1))
        scale = max(1, min(int(round(period / 4)), min(img.shape) // size))
        crop = size * scale
        top = rng.integers(0, img.shape[0] - crop + 1)
        left = rng.integers(0, img.shape[1] - crop + 1)
        patch = img[top:top + crop, left:left + crop].reshape(size, scale, size, scale).mean((1, 3))
        return patch > np.median(patch)
    raise ValueError(f"unknown texture {kind!r}; choose from {', '.join(TEXTURES)}")


def shape_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``(size, size)`` mask of a randomly placed, sized and rotated shape."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    r = rng.uniform(0.18, 0.32) * size
    cy, cx = rng.uniform(r * 0.7, size - r * 0.7, size=2)
    t = rng.uniform(0, np.pi / 2)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    if kind == "circle":
        return u**2 + v**2 < r**2
    if kind == "square":
        return (np.abs(u) < r * 0.85) & (np.abs(v) < r * 0.85)
    if kind == "triangle":  # equilateral, circumradius r
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = t + 2 * np.pi * k / 3
            inside &= (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) < r / 2
        return inside
    if kind == "cross":
        arm = r * 0.35
        return ((np.abs(u) < arm) & (np.abs(v) < r)) | ((np.abs(v) < arm) & (np.abs(u) < r))
    if kind == "ring":
        d2 = u**2 + v**2
        return (d2 < r**2) & (d2 > (0.55 * r) ** 2)
    raise ValueError(f"unknown shape {kind!r}; choose from {', '.join(SHAPES)}")


def _fill(region: np.ndarray, rgb: np.ndarray, colour_map: np.ndarray, texture_map: np.ndarray,
          size: int, rng: np.random.Generator, avoid: set[int], texture_prob: float,
          scales: tuple[float, ...]) -> set[int]:
    """Paint ``region`` with a solid colour or a texture; returns the colour indices used."""
    palette = np.array(list(COLOURS.values()), dtype=np.int64)
    free = [c for c in range(len(COLOURS)) if c not in avoid]
    if rng.random() < texture_prob:
        kind = int(rng.integers(len(TEXTURES)))
        c1, c2 = rng.choice(free, size=2, replace=False)
        pattern = texture_pattern(TEXTURES[kind], size, float(rng.choice(scales)) * size / 64, rng)
        colours = np.where(pattern, c1, c2)
        texture_map[region] = kind
        used = {int(c1), int(c2)}
    else:
        c1 = int(rng.choice(free))
        colours = np.full((size, size), c1)
        texture_map[region] = -1
        used = {c1}
    colour_map[region] = colours[region]
    for c in used:
        jitter = rng.integers(-JITTER, JITTER + 1, size=3)
        sel = region & (colours == c)
        rgb[sel] = np.clip(palette[c] + jitter, 0, 255)
    return used


def make_concepts(n: int = 2000, size: int = 64, seed: int = 0, *, texture_prob: float = 0.5,
                  max_shapes: int = 2, scales: tuple[float, ...] = (4, 6, 8, 12)) -> ConceptSet:
    """Render ``n`` seeded images of ``size`` px with masks for colours, textures and shapes.

    Parameters
    ----------
    n, size : number of images and their side in pixels (masks have the same size)
    seed : the same seed gives the same images and masks
    texture_prob : chance that a region is textured rather than a solid colour
    max_shapes : each image has 1 to ``max_shapes`` shapes over its background
    scales : texture periods in pixels at 64 px (scaled with ``size``)
    """
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 images of size >= 16 px, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    rgb = np.zeros((n, size, size, 3), dtype=np.uint8)
    colour_map = np.zeros((n, size, size), dtype=np.int8)
    texture_map = np.full((n, size, size), -1, dtype=np.int8)
    shape_map = np.full((n, size, size), -1, dtype=np.int8)
    full = np.ones((size, size), dtype=bool)
    for i in range(n):
        img = np.zeros((size, size, 3), dtype=np.int64)
        bg = _fill(full, img, colour_map[i], texture_map[i], size, rng, set(), texture_prob, scales)
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            kind = int(rng.integers(len(SHAPES)))
            m = shape_mask(SHAPES[kind], size, rng)
            _fill(m, img, colour_map[i], texture_map[i], size, rng, bg, texture_prob, scales)
            shape_map[i][m] = kind
        rgb[i] = img
    names, cats = concept_table()
    n_col, n_tex = len(COLOURS), len(TEXTURES)

    def load_masks(i: int) -> tuple[np.ndarray, np.ndarray]:
        ids, masks = [], []
        for offset, lab in ((0, colour_map[i]), (n_col, texture_map[i]), (n_col + n_tex, shape_map[i])):
            for v in np.unique(lab):
                if v >= 0:
                    ids.append(offset + int(v))
                    masks.append(lab == v)
        return np.array(ids, dtype=np.int64), np.stack(masks)

    images = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    ds = ImageDataset([f"concepts/{i}" for i in range(n)], lambda i: images[i].float() / 255.0,
                      name=f"concepts-{n}-{size}-s{seed}")
    return ConceptSet(ds, names, cats, load_masks, (size, size), name=ds.name)
