"""What the visualization methods share: choosing a parametrization and transforms, image size,
and the model-identity fields every result records."""

from __future__ import annotations

import torch

from convlens.optimize import (
    ClampPixels,
    FourierImage,
    PixelImage,
    image_seeds,
    standard_transforms,
)


def image_size(model, size: int | tuple[int, int] | None) -> tuple[int, int]:
    if size is None:
        return tuple(model.spec.size)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8 px, got {size}")
    return int(h), int(w)


def make_param(kind: str, n: int, channels: int, size: tuple[int, int], seed: int,
               init: torch.Tensor | None = None, first: int = 0):
    """``(parametrization, projections)`` for ``kind`` ``"fourier"`` or ``"pixel"``: images
    ``first .. first + n - 1`` of a request seeded ``seed``, each drawn from its own seed
    (:func:`convlens.optimize.image_seeds`), so a chunked request starts where one batch would."""
    seeds = image_seeds(seed, first, first + n)
    if kind == "fourier":
        if init is not None:
            raise ValueError("param='fourier' starts from noise; use param='pixel' to start from an image")
        return FourierImage(n, channels, size, seed=seeds), []
    if kind == "pixel":
        p = (PixelImage(init=init) if init is not None
             else PixelImage(n, channels, size, sd=0.1, seed=seeds))
        return p, [ClampPixels()]
    raise ValueError(f"param must be 'fourier' or 'pixel', got {kind!r}")


def make_transforms(kind: str | None, size: tuple[int, int]):
    if kind in (None, "none"):
        return None
    if kind == "standard":
        return standard_transforms(min(size))
    raise ValueError(f"transforms must be 'standard' or 'none', got {kind!r}")


def model_info(model) -> dict:
    return {"model": model.name, "weights": model.weights_hash()}
