"""Faithfulness of an attribution map: deletion and insertion curves (Petsiuk et al. 2018,
RISE). Pixels are removed (deletion: replaced by a baseline) or restored (insertion: onto a
blurred copy) from the most to the least important; the target probability is recorded after
each step, and the area under the curve summarises it: low for deletion and high for insertion
mean the map found what the model uses. Any map of the image's size works, so methods can be
compared on the same images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convlens.attribute._blend import DEFAULT_PRECISION, blend_probs, chunks
from convlens.attribute._checks import check_images, resolve_class


@dataclass
class Curve:
    """``probs[i]`` of class ``target`` after a ``fractions[i]`` share of the pixels changed."""

    kind: str
    target: int
    fractions: np.ndarray
    probs: np.ndarray

    @property
    def area(self) -> float:
        """Area under the curve (trapezoids over fractions in [0, 1])."""
        f, p = self.fractions, self.probs
        return float(np.sum((f[1:] - f[:-1]) * (p[1:] + p[:-1]) / 2))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "area": self.area,
                "fractions": self.fractions.tolist(), "probs": self.probs.tolist()}


def _order(attribution, shape) -> np.ndarray:
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:  # (C, H, W): sum over channels
        a = a.sum(0)
    if a.shape != tuple(shape):
        raise ValueError(f"attribution map of shape {a.shape} does not match the image's {tuple(shape)}")
    return np.argsort(-a.ravel(), kind="stable")


def blurred(x: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """A Gaussian-blurred copy of display-space images ``(N, C, H, W)``."""
    from skimage.filters import gaussian

    a = x.detach().cpu().numpy()
    out = np.stack([gaussian(img, sigma=sigma, channel_axis=0) for img in a])
    return torch.as_tensor(out, dtype=x.dtype)


def _baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "blur":
            return blurred(x[None])[0]
        raise ValueError(f"baseline must be 'blur' or a number, got {baseline!r}")
    return torch.full_like(x, float(baseline))


def perturbation_curve(model, image, attribution, target=None, *, kind: str = "deletion", steps: int = 50,
                       baseline=None, batch_size: int | None = None,
                       precision: str = DEFAULT_PRECISION) -> Curve:
    """Deletion or insertion curve of one image for ``attribution`` ``(H, W)`` (or ``(C, H, W)``,
    summed over channels). ``target`` defaults to the predicted class; ``baseline`` defaults to
    0 (black) for deletion and ``"blur"`` for insertion. ``batch_size`` and ``precision`` are as
    in :func:`convlens.attribute.lime` (``precision="float32"`` for exact probabilities)."""
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    x = check_images(model, image)
    if len(x) != 1:
        raise ValueError(f"one image at a time, got a batch of {len(x)}")
    x = x[0]
    c, h, w = x.shape
    order = torch.as_tensor(_order(attribution, (h, w)))
    rank = torch.empty(h * w, dtype=torch.long)
    rank[order] = torch.arange(h * w)
    rank = rank.view(1, h, w).to(x.device)
    base = _baseline(x, baseline if baseline is not None else (0.0 if kind == "deletion" else "blur"))
    start, end = (x, base) if kind == "deletion" else (base, x)
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()
    masks = (rank < counts[a:b].to(x.device).view(-1, 1, 1)
             for a, b in chunks(len(counts), batch_size, (h, w)))
    probs, _ = blend_probs(model, start, end, masks, total=len(counts), precision=precision)
    unchanged = probs[0] if kind == "deletion" else probs[-1]  # the image itself
    target = int(unchanged.argmax()) if target is None else resolve_class(model, target)
    probs = probs[:, target]
    return Curve(kind, target, (counts.double() / (h * w)).cpu().numpy(), probs.double().cpu().numpy())


def deletion_curve(model, image, attribution, target=None, **kw) -> Curve:
    return perturbation_curve(model, image, attribution, target, kind="deletion", **kw)


def insertion_curve(model, image, attribution, target=None, **kw) -> Curve:
    return perturbation_curve(model, image, attribution, target, kind="insertion", **kw)


def random_order(shape, seed: int = 0) -> np.ndarray:
    """A random attribution map: the baseline every method should beat."""
    return np.random.default_rng(seed).random(shape)
