"""Built-in datasets that need nothing downloaded: ``digits``, ``textures``, ``gratings``."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convlens.data._dataset import ImageDataset


def _from_tensor(x: torch.Tensor, labels, class_names, name: str, ids=None) -> ImageDataset:
    ids = ids or [f"{name}/{i}" for i in range(len(x))]
    return ImageDataset(ids, lambda i: x[i], labels, class_names, name)


def digits() -> ImageDataset:
    """scikit-learn's 1 797 8x8 digits, upsampled to 20x20 and centred in 28x28 like MNIST."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    x = F.pad(x, (4, 4, 4, 4))
    return _from_tensor(x.contiguous(), d.target, [str(i) for i in range(10)], "digits")


TEXTURE_NAMES = ("brick", "grass", "gravel")


def textures(patch: int = 32, stride: int | None = None) -> ImageDataset:
    """scikit-image's texture photographs (brick, grass, gravel) cut into labelled grey patches."""
    import skimage.data

    stride = stride or patch
    xs, ys = [], []
    for label, name in enumerate(TEXTURE_NAMES):
        img = torch.from_numpy(getattr(skimage.data, name)().astype(np.float32) / 255.0)
        tiles = img.unfold(0, patch, stride).unfold(1, patch, stride).reshape(-1, patch, patch)
        xs.append(tiles)
        ys += [label] * len(tiles)
    x = torch.cat(xs)[:, None].contiguous()
    return _from_tensor(x, ys, TEXTURE_NAMES, "textures")


GRATING_KINDS = ("edge", "line", "bar", "sine")


def grating(kind: str, angle_deg: float, phase: float, size: int = 28, period: float = 8.0,
            width: float = 1.5) -> np.ndarray:
    """One grey pattern in [0, 1]: ``edge`` (a step), ``line`` (thin bright line), ``bar`` (wide
    bright bar), ``sine`` (grating of ``period`` px); ``phase`` in [0, 1) shifts it across."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
    t = np.deg2rad(angle_deg)
    d = xx * np.cos(t) + yy * np.sin(t)  # signed distance across the orientation
    shift = (phase - 0.5) * size / 2
    if kind == "edge":
        img = 1 / (1 + np.exp(-(d - shift) * 2.0))
    elif kind == "line":
        img = np.exp(-((d - shift) ** 2) / (2 * (width / 2) ** 2))
    elif kind == "bar":
        img = 1 / (1 + np.exp(-(size / 8 - np.abs(d - shift)) * 2.0))
    elif kind == "sine":
        img = 0.5 + 0.5 * np.cos(2 * np.pi * d / period + 2 * np.pi * phase)
    else:
        raise ValueError(f"unknown grating kind {kind!r}; choose from {GRATING_KINDS}")
    return img.astype(np.float32)


def gratings(size: int = 28, n_angles: int = 8, n_phases: int = 8) -> ImageDataset:
    """Edges, lines, bars and sine gratings at ``n_angles`` orientations in [0, 180) and
    ``n_phases`` phases; the label is the orientation."""
    imgs, labels, ids = [], [], []
    angles = [180.0 * k / n_angles for k in range(n_angles)]
    for kind in GRATING_KINDS:
        for a_i, a in enumerate(angles):
            for p in range(n_phases):
                imgs.append(grating(kind, a, p / n_phases, size))
                labels.append(a_i)
                ids.append(f"gratings/{kind}/{a:g}deg/phase{p}")
    x = torch.from_numpy(np.stack(imgs))[:, None].contiguous()
    return _from_tensor(x, labels, [f"{a:g}deg" for a in angles], "gratings", ids)


BUILTIN_DATASETS = {"digits": digits, "textures": textures, "gratings": gratings}
