"""Random transforms applied to the image before each forward pass (robustness priors).

A transform is any callable ``(x, generator) -> x`` over a batch ``(N, C, H, W)``; it draws all
its randomness from the ``torch.Generator`` it is given, so a run is reproducible from its seed.
The built-ins keep the image size (so networks with dense layers still accept the result) and
apply one random draw to the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform_int(g: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (1,), generator=g).item())


class Jitter:
    """Translate by up to ``d`` pixels each way (reflected border, same size)."""

    def __init__(self, d: int):
        if int(d) < 0:
            raise ValueError(f"jitter must be >= 0 pixels, got {d}")
        self.d = int(d)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        d = min(self.d, x.shape[-1] - 1, x.shape[-2] - 1)
        if d == 0:
            return x
        dy, dx = _uniform_int(g, 0, 2 * d), _uniform_int(g, 0, 2 * d)
        padded = F.pad(x, (d, d, d, d), mode="reflect")
        return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]

    def __repr__(self) -> str:
        return f"Jitter({self.d})"


class RandomAffine:
    """Random scale (one of ``scales``) and rotation (uniform in ``±degrees``) about the centre,
    resampled bilinearly to the same size with a reflected border."""

    def __init__(self, scales: Sequence[float] = (1.0,), degrees: float = 0.0):
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive numbers, got {scales!r}")
        self.degrees = float(degrees)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s = self.scales[_uniform_int(g, 0, len(self.scales) - 1)]
        a = math.radians(self.degrees) * (2 * torch.rand(1, generator=g).item() - 1)
        if s == 1.0 and a == 0.0:
            return x
        cos, sin = math.cos(a) / s, math.sin(a) / s
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def __repr__(self) -> str:
        return f"RandomAffine(scales={self.scales}, degrees={self.degrees})"


def random_scale(scales: Sequence[float]) -> RandomAffine:
    return RandomAffine(scales=scales)


def random_rotate(degrees: float) -> RandomAffine:
    return RandomAffine(degrees=degrees)


def _jitter_shift(g: torch.Generator, d: int, h: int, w: int) -> tuple[float, float]:
    """Draw a :class:`Jitter` shift (same draws, same order) as a source offset in the
    normalized coordinates of ``grid_sample``: ``(du, dv)``."""
    d = min(d, w - 1, h - 1)
    if d == 0:
        return 0.0, 0.0
    dy, dx = _uniform_int(g, 0, 2 * d), _uniform_int(g, 0, 2 * d)
    return 2.0 * (dx - d) / w, 2.0 * (dy - d) / h


class JitterScaleRotate:
    """Jitter by up to ``before`` pixels, a random scale (one of ``scales``) and rotation
    (uniform in ``±degrees``) about the centre, then jitter by up to ``after`` pixels: the three
    in one bilinear resampling with a reflected border.

    It draws the same random numbers in the same order as ``Compose([Jitter(before),
    RandomAffine(scales, degrees), Jitter(after)])`` and gives the same image away from the
    border (integer shifts are exact in both); near the border it reflects once, at the end,
    instead of once per stage. One resampling instead of three passes (two padded copies and
    their backward) is what makes it cheaper.
    """

    def __init__(self, before: int = 0, scales: Sequence[float] = (1.0,), degrees: float = 0.0,
                 after: int = 0):
        self.before, self.after = Jitter(before).d, Jitter(after).d
        self.affine = RandomAffine(scales, degrees)

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        t1 = _jitter_shift(g, self.before, h, w)
        s = self.affine.scales[_uniform_int(g, 0, len(self.affine.scales) - 1)]
        a = math.radians(self.affine.degrees) * (2 * torch.rand(1, generator=g).item() - 1)
        t2 = _jitter_shift(g, self.after, h, w)
        if s == 1.0 and a == 0.0 and t1 == t2 == (0.0, 0.0):
            return x
        cos, sin = math.cos(a) / s, math.sin(a) / s
        # sample out(u) = x(R (u + t2) + t1): R the scaled rotation, t1, t2 the two shifts
        ou = cos * t2[0] - sin * t2[1] + t1[0]
        ov = sin * t2[0] + cos * t2[1] + t1[1]
        theta = torch.tensor([[cos, -sin, ou], [sin, cos, ov]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def __repr__(self) -> str:
        return (f"JitterScaleRotate(before={self.before}, scales={self.affine.scales}, "
                f"degrees={self.affine.degrees}, after={self.after})")


class InOrder:
    """Callables applied in order (the one base of :class:`Compose` and the projections' ``Compose``);
    ``kind`` and ``signature`` name what each part must be in the error for one that is not."""

    kind, signature = "part", "(...)"

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        for p in self.parts:
            if not callable(p):
                raise TypeError(f"a {self.kind} must be callable {self.signature}, got {p!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parts})"


class Compose(InOrder):
    """Apply transforms in order."""

    kind, signature = "transform", "(x, generator) -> x"

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for t in self.parts:
            x = t(x, g)
        return x


def standard_transforms(size: int) -> JitterScaleRotate:
    """Jitter, scale and rotation sized to the image (Lucent's defaults, scaled to ``size``),
    in one resampling (:class:`JitterScaleRotate`)."""
    j = max(1, round(size / 28))
    return JitterScaleRotate(2 * j, scales=(1.0, 0.975, 1.025, 0.95, 1.05), degrees=5.0, after=j)
