"""Validation at the boundary of every attribution method: images, targets and units."""

from __future__ import annotations

import numpy as np
import torch

from convlens.units import Unit, parse_unit


def check_images(model, images) -> torch.Tensor:
    """Return ``images`` as a float ``(N, C, H, W)`` tensor on the model's device, or fail
    naming the expected and the given shape.

    One image ``(C, H, W)`` becomes a batch of one. The channel count and the size must be the
    model's input spec (``model.spec``)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch tensor or numpy array, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    spec = model.spec
    want = (spec.channels, *spec.size)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
        got = "x".join(map(str, images.shape[1:] if images.ndim == 4 else images.shape))
        raise ValueError(
            f"image of shape {got} does not fit {getattr(model, 'name', 'the model')}, which expects "
            f"{want[0]}x{want[1]}x{want[2]} (channels x height x width): convert it with "
            "convlens.data.conform(dataset, model) (--resize model on the command line)"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images.to(model.device, torch.float32)


def resolve_class(model, target) -> int:
    """A class index from an int or a class name (:func:`convlens.inputspec.find_class`)."""
    from convlens.inputspec import find_class

    names = list(model.class_names)
    n = len(names) or (_n_outputs(model) if not isinstance(target, str) or target.strip().isdigit() else 0)
    return find_class(names, target, n)


def _n_outputs(model) -> int:
    from convlens.probe import frozen

    with frozen(model.net), torch.no_grad():  # eval mode: a BatchNorm in train mode would update
        return int(model(model.example_input(1)).shape[1])


def as_unit(unit) -> Unit:
    if isinstance(unit, Unit):
        return unit
    if isinstance(unit, str):
        return parse_unit(unit)
    raise TypeError(f"a unit is 'LAYER:INDEX' or a convlens.Unit, got {type(unit).__name__}")
