"""Neurons with activation ranges, their values in captured activations, and the encoder ``E``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from convlens.probe import get_layer
from convlens.runner import capture
from convlens.units import Unit, parse_unit


@dataclass(frozen=True)
class Constraint:
    """``z1 <= f(x) <= z2`` for one neuron ``f`` (Hada & Carreira-Perpiñán, sec. 3.1).

    A neuron is a dense layer's unit (``fc3:5``), a conv channel at one position (``conv2:3@4,4``)
    or, without a position, a conv channel's mean over all positions (``conv2:3``).
    """

    unit: Unit
    z1: float
    z2: float

    def __str__(self) -> str:
        return f"{self.unit} in [{self.z1:g}, {self.z2:g}]"

    @property
    def eps(self) -> float:
        """The width of the range, ``eps = z2 - z1`` (their eq. 7)."""
        return self.z2 - self.z1


def make_constraint(unit: str | Unit, z1: float, z2: float) -> Constraint:
    """Check a range and parse the unit; ``z1 > z2`` and non-finite values are errors."""
    u = parse_unit(unit) if isinstance(unit, str) else unit
    if not isinstance(u, Unit):
        raise TypeError(f"unit must be 'LAYER:INDEX' or a Unit, got {type(unit).__name__}")
    try:
        z1, z2 = float(z1), float(z2)
    except (TypeError, ValueError):
        raise TypeError(f"the range of {u} must be two numbers, got {z1!r} and {z2!r}") from None
    if not (math.isfinite(z1) and math.isfinite(z2)):
        raise ValueError(f"the range of {u} must be finite, got [{z1}, {z2}]")
    if z1 > z2:
        raise ValueError(f"the range of {u} is [{z1:g}, {z2:g}]: z1 > z2. Give the lower bound "
                         f"first: --range {z2:g} {z1:g}")
    if z1 == z2:
        raise ValueError(f"the range of {u} is the single value {z1:g}; give a range with z1 < z2 "
                         "(samples are drawn from inside it)")
    return Constraint(u, z1, z2)


def as_constraints(spec) -> list[Constraint]:
    """Accept a :class:`Constraint`, a ``(unit, z1, z2)`` triple, or a list of either."""
    if isinstance(spec, Constraint):
        return [spec]
    if isinstance(spec, tuple) and len(spec) == 3 and not isinstance(spec[0], (tuple, Constraint)):
        return [make_constraint(*spec)]
    if isinstance(spec, (list, tuple)) and spec:
        out: list[Constraint] = []
        for s in spec:
            out += as_constraints(s)
        return out
    raise TypeError("constraints must be a Constraint, a (unit, z1, z2) triple such as "
                    f"('fc3:5', 8, 10), or a list of them; got {spec!r}")


def validate_units(model, units: Sequence[Unit]) -> None:
    """Each unit's layer exists and its index (and position) fit the layer's output."""
    from convlens.summary import layer_shapes

    for u in units:
        get_layer(model.net, u.layer)
    shapes = layer_shapes(model, sorted({u.layer for u in units}))
    for u in units:
        u.validate(tuple(shapes[u.layer]))


def neuron_values(acts: dict[str, torch.Tensor], units: Sequence[Unit]) -> torch.Tensor:
    """``(N, len(units))``: each unit's activation from captured layer outputs."""
    cols = []
    for u in units:
        a = acts[u.layer][:, u.index]
        if a.ndim == 1:
            cols.append(a)
        elif u.position is not None:
            cols.append(a[(slice(None), *u.position)])
        else:
            cols.append(a.flatten(1).mean(1))
    return torch.stack(cols, 1)


class Encoder:
    """``E``: the first layers of a classifier, up to ``layer``, as a flat feature vector; the
    space in which Hada & Carreira-Perpiñán measure the distance between samples (their eq. 5).

    Parameters
    ----------
    model : a :class:`convlens.Model`
    layer : the last layer of ``E`` (its output, flattened, is the feature)
    """

    def __init__(self, model, layer: str):
        get_layer(model.net, layer)
        self.model, self.layer = model, layer

    def __repr__(self) -> str:
        return f"Encoder({getattr(self.model, 'name', 'model')!r}, layer={self.layer!r})"

    def shares(self, model) -> bool:
        """Whether ``E`` is part of ``model``'s network (then one forward pass serves both)."""
        return self.model.net is model.net

    def __call__(self, images: torch.Tensor, grad: bool = False) -> torch.Tensor:
        """``E(images)``: ``(N, D)``; with ``grad`` differentiable in the images."""
        return capture(self.model, images, [self.layer], grad=grad)[self.layer].flatten(1)


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(N, M)`` squared Euclidean distances; exact and differentiable at zero distance."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def mean_pairwise_distance(encoder: Encoder, images: torch.Tensor, batch_size: int = 256) -> float:
    """Mean Euclidean distance in ``E`` over all pairs of distinct images (the diversity measure)."""
    if len(images) < 2:
        raise ValueError("the mean pairwise distance needs at least two images")
    e = torch.cat([encoder(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    d = torch.cdist(e.double(), e.double())
    n = len(e)
    return float(d.sum() / (n * (n - 1)))
