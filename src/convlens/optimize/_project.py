"""Projections: in-place steps on the parameters after each optimizer update.

A projection is any callable ``(param, step) -> None`` that changes ``param``'s tensors in
place (the render loop calls it under ``torch.no_grad()``; the built-ins also work outside). Budgets of adversarial
perturbations, pixel bounds, and the survey's non-differentiable regularizers (blur every N
steps, clipping pixels of small norm or small contribution) are projections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from convlens.optimize._param import Parametrization, PixelImage
from convlens.optimize._transforms import InOrder

Projection = Callable[[Parametrization, int], None]


def _pixels(param: Parametrization, who: str) -> torch.Tensor:
    if not isinstance(param, PixelImage) or param.squash != "none" or param.decorrelate:
        raise TypeError(
            f"{who} changes pixels directly: it needs PixelImage(..., squash='none', "
            f"decorrelate=False), got {param!r}"
        )
    return param.pixels


def _delta(param: Parametrization, who: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    delta = getattr(param, "delta", None)
    if not isinstance(delta, torch.Tensor):
        raise TypeError(f"{who} bounds a perturbation: it needs a parametrization with a `delta` "
                        f"tensor (Perturbation(x0)), got {param!r}")
    return delta, getattr(param, "x0", None)


def _per_image(value, n: int, ref: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=ref.dtype, device=ref.device)
    if v.ndim == 0:
        v = v.expand(n)
    if v.shape != (n,):
        raise ValueError(f"a budget needs one value or one per image ({n}), got {tuple(v.shape)}")
    return v.view(n, *([1] * (ref.ndim - 1)))


class ClampPixels:
    """Keep pixels in ``[lo, hi]`` (display space)."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0):
        if lo >= hi:
            raise ValueError(f"ClampPixels needs lo < hi, got {lo}, {hi}")
        self.lo, self.hi = lo, hi

    @torch.no_grad()
    def __call__(self, param: Parametrization, step: int) -> None:
        _pixels(param, "ClampPixels").clamp_(self.lo, self.hi)

    def __repr__(self) -> str:
        return f"ClampPixels({self.lo}, {self.hi})"


class _Ball:
    """A budget on ``delta`` (one ``eps`` or one per image), then ``x0 + delta`` kept in
    ``[0, 1]``. Subclasses implement ``_shrink(delta, eps)``."""

    def __init__(self, eps: float | Sequence[float] | torch.Tensor):
        if (torch.as_tensor(eps, dtype=torch.float32) < 0).any():
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = eps

    def _shrink(self, delta: torch.Tensor, eps: torch.Tensor) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, param: Parametrization, step: int) -> None:
        delta, x0 = _delta(param, type(self).__name__)
        self._shrink(delta, _per_image(self.eps, delta.shape[0], delta))
        if x0 is not None:
            delta.copy_((x0 + delta).clamp(0, 1) - x0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.eps})"


class LinfBall(_Ball):
    """Project ``delta`` onto ``||delta||_inf <= eps`` per image (clipping), and keep
    ``x0 + delta`` inside ``[0, 1]``."""

    def _shrink(self, delta: torch.Tensor, eps: torch.Tensor) -> None:
        delta.copy_(torch.maximum(torch.minimum(delta, eps), -eps))


class L2Ball(_Ball):
    """Project ``delta`` onto ``||delta||_2 <= eps`` per image (rescaling), and keep
    ``x0 + delta`` inside ``[0, 1]``."""

    def _shrink(self, delta: torch.Tensor, eps: torch.Tensor) -> None:
        norm = delta.flatten(1).norm(dim=1).view_as(eps)
        delta.mul_(torch.clamp(eps / norm.clamp_min(1e-12), max=1.0))


def _gaussian_kernel(sigma: float, channels: int, ref: torch.Tensor) -> torch.Tensor:
    r = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=ref.dtype, device=ref.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    return (k[:, None] * k[None, :]).expand(channels, 1, 2 * r + 1, 2 * r + 1)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``(N, C, H, W)`` with a Gaussian of standard deviation ``sigma`` pixels."""
    k = _gaussian_kernel(sigma, x.shape[1], x)
    r = k.shape[-1] // 2
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), k, groups=x.shape[1])


class BlurEvery:
    """Gaussian blur of the pixels every ``every`` steps (Yosinski et al.'s regularizer)."""

    def __init__(self, sigma: float = 0.5, every: int = 4):
        if sigma <= 0 or every < 1:
            raise ValueError(f"BlurEvery needs sigma > 0 and every >= 1, got {sigma}, {every}")
        self.sigma, self.every = sigma, int(every)

    @torch.no_grad()
    def __call__(self, param: Parametrization, step: int) -> None:
        if (step + 1) % self.every == 0:
            p = _pixels(param, "BlurEvery")
            p.copy_(gaussian_blur(p, self.sigma))


class ClipSmallNorm:
    """Set pixels whose norm (over channels, about ``fill``) is below the ``percentile``-th
    percentile of their image to ``fill`` (Yosinski et al.)."""

    def __init__(self, percentile: float = 10.0, fill: float = 0.5):
        if not 0 <= percentile < 100:
            raise ValueError(f"percentile must be in [0, 100), got {percentile}")
        self.percentile, self.fill = percentile, fill

    def _score(self, p: torch.Tensor) -> torch.Tensor | None:
        return (p - self.fill).norm(dim=1)  # (N, H, W)

    @torch.no_grad()
    def __call__(self, param: Parametrization, step: int) -> None:
        p = _pixels(param, type(self).__name__)
        score = self._score(p)
        if score is not None:
            _clip_below(p, score, self.percentile, self.fill)


class ClipSmallContribution(ClipSmallNorm):
    """Set pixels of small contribution to ``fill`` (Yosinski et al.): the contribution is
    ``|sum_c (x - fill) * grad|``, the first-order change of the objective when the pixel is
    set to ``fill``; pixels below the ``percentile``-th percentile of their image are cleared."""

    def _score(self, p: torch.Tensor) -> torch.Tensor | None:
        return None if p.grad is None else ((p - self.fill) * p.grad).sum(1).abs()


def _clip_below(p: torch.Tensor, score: torch.Tensor, percentile: float, fill: float) -> None:
    if percentile == 0:
        return
    q = torch.quantile(score.flatten(1), percentile / 100, dim=1).view(-1, 1, 1)
    mask = (score < q).unsqueeze(1).expand_as(p)
    p.masked_fill_(mask, fill)


class Compose(InOrder):
    """Apply projections in order."""

    kind, signature = "projection", "(param, step) -> None"

    @torch.no_grad()
    def __call__(self, param: Parametrization, step: int) -> None:
        for pr in self.parts:
            pr(param, step)
