"""What the visualization methods share: choosing a parametrization and transforms, image size,
and the model-identity fields every result records."""

from __future__ import annotations

import torch

from convlens.optimize import (
    ClampPixels,
    FourierImage,
    MacoImage,
    PixelImage,
    RandomCrops,
    Replicated,
    image_seeds,
    natural_spectrum,
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
               init: torch.Tensor | None = None, first: int = 0, *, spectrum=None,
               grey: bool = False):
    """``(parametrization, projections)`` for ``kind`` ``"fourier"``, ``"pixel"`` or
    ``"maco"`` (fixed magnitude: ``spectrum``, a :class:`~convlens.optimize.Spectrum`, default
    the built-in natural one): images ``first .. first + n - 1`` of a request seeded ``seed``,
    each drawn from its own seed (:func:`convlens.optimize.image_seeds`; MaCo's phases from
    ``seed + first``), so a chunked request starts where one batch would. ``grey``: optimize
    one channel and feed it replicated to the model's ``channels``."""
    seeds = image_seeds(seed, first, first + n)
    inner_c = 1 if grey else channels
    if init is not None and grey:
        init = init[:, :1]
    if kind == "fourier":
        p, proj = (FourierImage(init=init) if init is not None
                   else FourierImage(n, inner_c, size, seed=seeds)), []
    elif kind == "pixel":
        p = (PixelImage(init=init) if init is not None
             else PixelImage(n, inner_c, size, sd=0.1, seed=seeds))
        proj = [ClampPixels()]
    elif kind == "maco":
        if init is not None:
            raise ValueError("param='maco' optimizes the phase of a fixed spectrum from noise; use "
                             "param='fourier' to start from an image")
        spec = spectrum if spectrum is not None else natural_spectrum(size, inner_c)
        p, proj = MacoImage(n, spec.to_size(size).with_channels(inner_c), seed=seed + first), []
    else:
        raise ValueError(f"param must be 'fourier', 'pixel' or 'maco', got {kind!r}")
    if grey and channels > 1:
        p = Replicated(p, channels)
        proj = [lambda param, step, pr=pr: pr(param.inner, step) for pr in proj]  # on the grey pixels
    return p, proj


# the learning rate each parametrization is tuned for (MaCo's parameters are angles)
DEFAULT_LR = {"fourier": 0.05, "pixel": 0.05, "maco": 0.5}


def make_transforms(kind: str | None, size: tuple[int, int], steps: int = 1, param: str = "fourier"):
    """``"standard"`` (jitter, scale, rotation); ``"crops"`` (MaCo's random crops, their side
    decaying from the whole image to half of it over ``steps``, plus noise); ``"noise"`` (MaCo's
    pixel noise alone); ``"auto"`` (``"noise"`` for ``param="maco"``, else ``"standard"``: on
    the SqueezeNet, MaCo with crops reaches 0.5-0.8 of free Fourier's activation at equal
    steps, with noise alone about twice it -- see docs/notes/issue-20.md); or none."""
    if kind in (None, "none"):
        return None
    if kind == "auto":
        kind = "noise" if param == "maco" else "standard"
    if kind == "standard":
        return standard_transforms(min(size))
    if kind == "crops":
        return RandomCrops(max(int(steps), 1), box=(1.0, 0.5))
    if kind == "noise":
        return RandomCrops(max(int(steps), 1), box=(1.0, 1.0), spread=0.0)
    raise ValueError(f"transforms must be 'standard', 'crops', 'noise', 'auto' or 'none', got {kind!r}")


def transparency_of(param) -> torch.Tensor | None:
    """A MaCo parametrization's accumulated ``|gradient|`` per pixel ``(N, H, W)`` (summed over
    channels), or ``None`` for a parametrization that does not keep one."""
    inner = getattr(param, "inner", param)
    t = getattr(inner, "transparency", None)
    return None if t is None else t.sum(1)


def model_info(model) -> dict:
    return {"model": model.name, "weights": model.weights_hash()}
