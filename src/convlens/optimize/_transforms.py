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


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"a transform must be callable (x, generator) -> x, got {t!r}")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, g)
        return x

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def standard_transforms(size: int) -> Compose:
    """Jitter, scale and rotation sized to the image (Lucent's defaults, scaled to ``size``)."""
    j = max(1, round(size / 28))
    return Compose([Jitter(2 * j), RandomAffine(scales=(1.0, 0.975, 1.025, 0.95, 1.05),
                                                degrees=5.0), Jitter(j)])
