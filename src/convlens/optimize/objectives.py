"""Objectives: values to *minimize*, one per image, that compose with arithmetic.

An :class:`Objective` maps an :class:`ObjectiveContext` (the captured activations, the image)
to a loss per image, shape ``(N,)``. Activation objectives are negated so that minimizing
them maximizes the activation, as in Lucent: ``channel("conv1", 3) + 1e-3 * total_variation()``
raises channel 3 under a smoothness penalty. Each objective declares the layers it needs
(``.layers``), so the render loop hooks only those; :data:`OUTPUT` stands for the network's
output (class scores before softmax).

Index arguments take an ``int`` (every image the same unit) or a sequence with one index per
image, so one batch can visualize many units at once: ``channel("conv2", range(16))`` with a
batch of 16 images gives image ``i`` the objective of channel ``i``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

OUTPUT = "<output>"

Index = int | Sequence[int] | torch.Tensor


@dataclass
class ObjectiveContext:
    """What an objective sees at one step.

    ``acts[layer]``: captured activations (differentiable); ``acts[OUTPUT]``: the network's
    output when some objective asked for it. ``image``: the images the network saw (after the
    random transforms); ``raw``: the parametrized images before transforms (regularizers use
    these). ``step``: the optimization step (``-1`` outside the loop).
    """

    acts: dict[str, torch.Tensor]
    image: torch.Tensor
    raw: torch.Tensor
    step: int = -1

    @property
    def batch_size(self) -> int:
        return int(self.raw.shape[0])

    def select(self, i: int) -> ObjectiveContext:
        """The context of image ``i`` alone (a batch of one)."""
        return ObjectiveContext({k: v[i:i + 1] for k, v in self.acts.items()},
                                self.image[i:i + 1], self.raw[i:i + 1], self.step)


@dataclass(frozen=True)
class Objective:
    """A loss per image, the layers it needs, and a description in words.

    Build new ones with :func:`custom` (or this constructor): ``fn(ctx) -> Tensor (N,)``.
    """

    fn: Callable[[ObjectiveContext], torch.Tensor]
    layers: frozenset[str] = field(default_factory=frozenset)
    description: str = "objective"

    def __call__(self, ctx: ObjectiveContext) -> torch.Tensor:
        out = self.fn(ctx)
        n = ctx.batch_size
        if not isinstance(out, torch.Tensor) or out.shape != (n,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"objective {self.description!r} returned {shape}; an objective returns one loss "
                f"per image, a tensor of shape ({n},) (use .flatten(1).sum(1) over the rest)"
            )
        return out

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)):
            if other == 0:
                return self
            return Objective(lambda c: self(c) + other, self.layers, f"{self.description} + {other:g}")
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda c: self(c) + other(c), self.layers | other.layers,
                         f"{self.description} + {other.description}")

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return Objective(lambda c: -self(c), self.layers, f"-({self.description})")

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, k: float) -> Objective:
        if isinstance(k, Objective):
            return Objective(lambda c: self(c) * k(c), self.layers | k.layers,
                             f"({self.description}) * ({k.description})")
        if not isinstance(k, (int, float)):
            return NotImplemented
        return Objective(lambda c: k * self(c), self.layers, f"{k:g} * ({self.description})")

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if not isinstance(k, (int, float)):
            return NotImplemented
        return self * (1.0 / k)

    def __str__(self) -> str:
        return self.description


def custom(fn: Callable[[ObjectiveContext], torch.Tensor], layers: Iterable[str] = (),
           description: str = "custom") -> Objective:
    """An objective from a function ``ctx -> Tensor (N,)`` and the layers it reads."""
    if isinstance(layers, str):
        layers = [layers]
    return Objective(fn, frozenset(layers), description)


# -- helpers -----------------------------------------------------------------------------------
def _act(ctx: ObjectiveContext, layer: str) -> torch.Tensor:
    return ctx.acts[layer]


def _indices(index: Index, n: int, size: int, what: str, layer: str) -> torch.Tensor:
    """One index per image, checked against the layer's ``size`` units."""
    idx = torch.as_tensor(index if not isinstance(index, range) else list(index), dtype=torch.long)
    if idx.ndim == 0:
        idx = idx.expand(n)
    elif idx.shape != (n,):
        raise ValueError(
            f"{what} on {layer!r}: got {idx.numel()} indices for a batch of {n} images; give one "
            f"index, or one per image"
        )
    bad = idx[(idx < 0) | (idx >= size)]
    if bad.numel():
        raise ValueError(
            f"{what} {int(bad[0])} is out of range: layer {layer!r} has {size} units (0-{size - 1})"
        )
    return idx


def _name(index: Index) -> str:
    if isinstance(index, int):
        return str(index)
    vals = list(index.tolist() if isinstance(index, torch.Tensor) else index)
    return f"{vals[0]}..{vals[-1]} ({len(vals)} images)" if len(vals) > 3 else str(vals)


def _layer_label(layer: str) -> str:
    return "output" if layer == OUTPUT else layer


# -- activation objectives -----------------------------------------------------------------------
def unit(layer: str, index: Index, position: tuple[int, int] | None = None) -> Objective:
    """One neuron: a dense layer's unit, or a conv channel at one position (default the centre).

    Returns the negated activation (so minimizing raises it)."""

    def fn(ctx):
        a = _act(ctx, layer)
        n = a.shape[0]
        idx = _indices(index, n, a.shape[1], "unit", _layer_label(layer))
        rows = a[torch.arange(n), idx]
        if rows.ndim == 1:
            return -rows
        if rows.ndim != 3:
            raise ValueError(f"unit objective expects (N, C) or (N, C, H, W) at {layer!r}, "
                             f"got {tuple(a.shape)}")
        h, w = rows.shape[1:]
        y, x = position if position is not None else (h // 2, w // 2)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"position {(y, x)} is outside the {h}x{w} maps of {layer!r}")
        return -rows[:, y, x]

    where = "" if position is None else f"@{position[0]},{position[1]}"
    return Objective(fn, frozenset([layer]), f"unit {_layer_label(layer)}:{_name(index)}{where}")


def channel(layer: str, index: Index) -> Objective:
    """A conv channel's mean activation over all positions, negated."""

    def fn(ctx):
        a = _act(ctx, layer)
        if a.ndim != 4:
            raise ValueError(
                f"a channel objective needs a layer with spatial dimensions (N, C, H, W); layer "
                f"{_layer_label(layer)!r} gives {tuple(a.shape)}. Use unit({layer!r}, i) for a "
                "dense layer"
            )
        n = a.shape[0]
        idx = _indices(index, n, a.shape[1], "channel", _layer_label(layer))
        # the means of all channels, then one per image: its gradient keeps the layout of ``a``
        # (indexing ``a`` first would send back a dense NCHW gradient to a channels-last net)
        means = a.mean(dim=(2, 3))
        return -means[torch.arange(n), idx.to(a.device)]

    return Objective(fn, frozenset([layer]), f"channel {_layer_label(layer)}:{_name(index)}")


def layer(name: str) -> Objective:
    """A whole layer: the mean squared activation (DeepDream), negated."""
    return Objective(lambda c: -_act(c, name).pow(2).flatten(1).mean(1), frozenset([name]),
                     f"layer {_layer_label(name)}")


def class_logit(index: Index, layer: str = OUTPUT) -> Objective:
    """A class score before softmax (Simonyan et al.), negated. ``layer`` defaults to the
    network's output; name the last dense layer if the network ends in a softmax."""
    o = unit(layer, index)
    return Objective(o.fn, o.layers, f"class score {_name(index)}")


def class_log_prob(index: Index, layer: str = OUTPUT) -> Objective:
    """The log-softmax of a class, negated (the cross-entropy to that class)."""

    def fn(ctx):
        a = _act(ctx, layer)
        idx = _indices(index, a.shape[0], a.shape[1], "class", _layer_label(layer))
        return -torch.log_softmax(a.flatten(1), 1)[torch.arange(a.shape[0]), idx]

    return Objective(fn, frozenset([layer]), f"log p(class {_name(index)})")


# -- matching objectives (inversion, style transfer) -------------------------------------------
def _target(t: torch.Tensor, n: int, what: str) -> torch.Tensor:
    t = t.detach()
    if t.shape[0] not in (1, n):
        raise ValueError(f"{what}: the target has {t.shape[0]} items for a batch of {n}")
    return t


def feature_match(layer: str, target: torch.Tensor, *, relative: bool = True) -> Objective:
    """Squared Euclidean distance to target features (Mahendran & Vedaldi's loss), per image:
    ``||phi(x) - phi0||^2 / ||phi0||^2`` when ``relative`` (the default), else the plain sum.
    ``target`` has one item or one per image."""

    def fn(ctx):
        a = _act(ctx, layer).flatten(1)
        t = _target(target, a.shape[0], f"feature_match on {layer!r}").flatten(1).to(a)
        if t.shape[1] != a.shape[1]:
            raise ValueError(f"feature_match on {layer!r}: target has {t.shape[1]} values per "
                             f"image, the layer {a.shape[1]}; compute the target at the same size")
        d = (a - t).pow(2).sum(1)
        return d / t.pow(2).sum(1).clamp_min(1e-12) if relative else d

    return Objective(fn, frozenset([layer]), f"feature match {_layer_label(layer)}")


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``F F^T / (C H W)`` of features ``(N, C, H, W)`` -> ``(N, C, C)``."""
    if features.ndim != 4:
        raise ValueError(f"a Gram matrix needs features (N, C, H, W), got {tuple(features.shape)}")
    n, c = features.shape[:2]
    f = features.reshape(n, c, -1)
    return f @ f.transpose(1, 2) / f[0].numel()


def style(layers: Sequence[str], targets: Sequence[torch.Tensor],
          weights: Sequence[float] | None = None) -> Objective:
    """Gatys et al.'s style loss: the weighted sum over ``layers`` of the mean squared difference
    between the Gram matrices of the image and ``targets`` (Gram matrices from :func:`gram`)."""
    layers = list(layers)
    if len(targets) != len(layers):
        raise ValueError(f"style: {len(layers)} layers but {len(targets)} target Gram matrices")
    w = list(weights) if weights is not None else [1.0 / len(layers)] * len(layers)

    def fn(ctx):
        total = 0.0
        for name, tg, wl in zip(layers, targets, w):
            g = gram(_act(ctx, name))
            t = _target(tg, g.shape[0], f"style on {name!r}").to(g)
            total = total + wl * (g - t).pow(2).flatten(1).mean(1)
        return total

    return Objective(fn, frozenset(layers), f"style {', '.join(layers)}")


# -- per-image objectives ----------------------------------------------------------------------
def per_image(objectives: Sequence[Objective]) -> Objective:
    """Image ``i`` of the batch gets ``objectives[i]`` (each evaluated on its own image)."""
    objs = list(objectives)
    if not objs or not all(isinstance(o, Objective) for o in objs):
        raise TypeError("per_image needs a list of Objective, one per image")

    def fn(ctx):
        if ctx.batch_size != len(objs):
            raise ValueError(f"per_image has {len(objs)} objectives for a batch of {ctx.batch_size}")
        return torch.cat([o(ctx.select(i)) for i, o in enumerate(objs)])

    layers = frozenset().union(*(o.layers for o in objs))
    return Objective(fn, layers, f"per image [{'; '.join(o.description for o in objs[:3])}"
                                 f"{' ...' if len(objs) > 3 else ''}]")


# -- regularizers (image priors; all take the parametrized image before transforms) -----------
def l2(center: float = 0.5) -> Objective:
    """L2 decay: ``sum (x - center)^2`` per image (Simonyan's class models use ``center`` 0 in
    their mean-subtracted space; mid-grey is its display-space analogue)."""
    return Objective(lambda c: (c.raw - center).pow(2).flatten(1).sum(1), frozenset(),
                     f"L2 decay about {center:g}")


def alpha_norm(alpha: float = 6.0, center: float = 0.5) -> Objective:
    """Mahendran & Vedaldi's alpha-norm prior ``sum |x - center|^alpha``."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    return Objective(lambda c: (c.raw - center).abs().pow(alpha).flatten(1).sum(1), frozenset(),
                     f"alpha-norm (alpha={alpha:g})")


def total_variation(beta: float = 2.0) -> Objective:
    """Total variation with exponent beta (Mahendran & Vedaldi, eq. 5):
    ``sum_ij ((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2)^(beta/2)`` per image."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")

    def fn(ctx):
        x = ctx.raw
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        s = dx.pow(2) + dy.pow(2)
        s = s if beta == 2 else (s + 1e-8).pow(beta / 2)
        return s.flatten(1).sum(1)

    return Objective(fn, frozenset(), f"total variation (beta={beta:g})")


__all__ = [
    "OUTPUT", "Objective", "ObjectiveContext", "alpha_norm", "channel", "class_log_prob",
    "class_logit", "custom", "feature_match", "gram", "l2", "layer", "per_image", "style",
    "total_variation", "unit",
]
