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

from convlens.attribute._blend import DEFAULT_PRECISION, fit_batch
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
    x = check_images(model, image)
    if len(x) != 1:
        raise ValueError(f"one image at a time, got a batch of {len(x)}")
    return perturbation_curves(model, x, [attribution], None if target is None else [target], kind=kind,
                               steps=steps, baseline=baseline, batch_size=batch_size, precision=precision)[0]


def perturbation_curves(model, images, attributions, targets=None, *, kind: str = "deletion", steps: int = 50,
                        baseline=None, batch_size: int | None = None,
                        precision: str = DEFAULT_PRECISION) -> list[Curve]:
    """:func:`perturbation_curve` of every image of ``images`` ``(N, C, H, W)`` with its map of
    ``attributions`` (``N`` maps) and target (``None``: each image's predicted class), batched over
    images *and* steps: the ``N x (steps + 1)`` perturbed images run through the one evaluation
    path (:class:`convlens.runner.Runner`) in batches that fit the memory budget (at most
    ``batch_size``, default :data:`~convlens.attribute._blend.BATCH_PIXELS` pixels), each picked
    pixel by pixel from the two normalised images (see :mod:`convlens.attribute._blend`)."""
    from convlens.runner import OUTPUT, Runner

    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind must be 'deletion' or 'insertion', got {kind!r}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    x = check_images(model, images)
    if len(attributions) != len(x):
        raise ValueError(f"{len(attributions)} attribution maps for {len(x)} images: give one per image")
    n, (h, w) = len(x), x.shape[-2:]
    rank = torch.empty((n, h * w), dtype=torch.long)
    for i, a in enumerate(attributions):
        rank[i, torch.as_tensor(_order(a, (h, w)))] = torch.arange(h * w)
    rank = rank.view(n, h, w).to(x.device)
    default = 0.0 if kind == "deletion" else "blur"
    base = torch.stack([_baseline(x[i], baseline if baseline is not None else default) for i in range(n)]).to(x.device)
    start, end = (x, base) if kind == "deletion" else (base, x)
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long().to(x.device)
    rows, out = n * (steps + 1), []
    run = Runner(model, [], output=True, precision=precision, fuse=True)
    with run, torch.inference_mode():
        # (N, H, W, C) in the dtype the network runs in: each perturbed image is picked pixel by
        # pixel from the two (exact), and its NCHW view is channels-last without a copy
        s, e = (model.spec.normalize(im.to(run.device, torch.float32)).to(run.dtype).permute(0, 2, 3, 1).contiguous()
                for im in (start, end))
        b = fit_batch(model, x, batch_size=batch_size, run=run)
        for r0 in range(0, rows, b):
            r = torch.arange(r0, min(r0 + b, rows), device=x.device)
            img, k = r // (steps + 1), r % (steps + 1)
            keep = (rank[img] < counts[k].view(-1, 1, 1))[..., None]
            batch = torch.where(keep, e[img], s[img]).permute(0, 3, 1, 2)
            out.append(torch.softmax(run.step(batch, normalized=True)[OUTPUT].float().flatten(1), 1).cpu())
    probs = torch.cat(out).view(n, steps + 1, -1)
    unchanged = probs[:, 0] if kind == "deletion" else probs[:, -1]  # the images themselves
    if targets is None:
        chosen = unchanged.argmax(1).tolist()
    else:
        if len(targets) != n:
            raise ValueError(f"{len(targets)} targets for {n} images: give one per image")
        chosen = [resolve_class(model, int(t) if isinstance(t, (np.integer, torch.Tensor)) else t) for t in targets]
    fractions = (counts.double() / (h * w)).cpu().numpy()
    return [Curve(kind, int(t), fractions, probs[i, :, t].double().cpu().numpy()) for i, t in enumerate(chosen)]


def deletion_curve(model, image, attribution, target=None, **kw) -> Curve:
    return perturbation_curve(model, image, attribution, target, kind="deletion", **kw)


def insertion_curve(model, image, attribution, target=None, **kw) -> Curve:
    return perturbation_curve(model, image, attribution, target, kind="insertion", **kw)


def random_order(shape, seed: int = 0) -> np.ndarray:
    """A random attribution map: the baseline every method should beat."""
    return np.random.default_rng(seed).random(shape)
