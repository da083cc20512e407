"""Gradient methods of the registry: saliency, guided backpropagation, integrated gradients,
SmoothGrad; and the model-independent references: a random order and an edge detector.

All are batched to :func:`convlens.attribute._blend.fit_batch` images (or interpolation steps,
or noisy copies) per forward/backward pass: the memory budget's share from the one evaluation
path (:mod:`convlens.runner`, gradients counted), so memory stays bounded whatever ``N`` is. Integrated
gradients use Captum's Gauss-Legendre rule (``tests`` check them against Captum's
``IntegratedGradients`` to 1e-5, and completeness); SmoothGrad draws its noise from a seeded
``torch.Generator`` (Captum's ``NoiseTunnel`` draws from the global RNG).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from convlens.attribute._backprop import backproject
from convlens.attribute._blend import fit_batch
from convlens.attribute._registry import register_method
from convlens.probe import Capture, frozen


def scores(model, x: torch.Tensor, targets) -> torch.Tensor:
    """The score explained, ``(N,)``: the class logit of each image's target, or a unit's mean
    activation over its map (its value at the unit's position, if it has one)."""
    if isinstance(targets, torch.Tensor):
        out = model(x)
        return out[torch.arange(len(x), device=out.device), targets.to(out.device)]
    with Capture(model.net, [targets.layer], stop=True, detach=False) as cap:
        a = cap.run(model, x)[targets.layer]
    targets.validate(tuple(a.shape[1:]))
    a = a[:, targets.index]
    if a.ndim == 1:
        return a
    if targets.position is not None:
        return a[:, targets.position[0], targets.position[1]]
    return a.flatten(1).mean(1)


def input_gradients(model, x: torch.Tensor, targets) -> torch.Tensor:
    """``d score / d x`` ``(N, C, H, W)``, in batches of :func:`fit_batch` images."""
    b = fit_batch(model, x, grad=True)
    parts = []
    with frozen(model.net), torch.enable_grad():
        for i in range(0, len(x), b):
            xi = x[i : i + b].detach().clone().requires_grad_(True)
            t = targets[i : i + b] if isinstance(targets, torch.Tensor) else targets
            (g,) = torch.autograd.grad(scores(model, xi, t).sum(), xi)
            parts.append(g.detach())
    return torch.cat(parts)


def _by_rule(model, x, targets, rule: str) -> torch.Tensor:
    """Backprojections ``(N, C, H, W)`` with a ReLU rule, grouped by target class."""
    if not isinstance(targets, torch.Tensor):
        return torch.as_tensor(backproject(model, x, str(targets), rule=rule, spread="map", scale="one").maps)
    out = torch.empty_like(x, device="cpu")
    b = fit_batch(model, x, grad=True)
    for c in targets.unique().tolist():
        idx = torch.nonzero(targets == c).flatten()
        for i in range(0, len(idx), b):
            j = idx[i : i + b]
            out[j] = torch.as_tensor(backproject(model, x[j.to(x.device)], int(c), rule=rule).maps)
    return out


@register_method("saliency", "gradient", "Gradient saliency, max over channels of |d score / d x| "
                 "(Simonyan et al. 2014)", units=True)
def saliency_map(model, x, targets) -> torch.Tensor:
    return input_gradients(model, x, targets).abs().amax(1).cpu()


@register_method("guided-backprop", "gradient", "Guided backpropagation, |.| summed over channels "
                 "(Springenberg et al. 2015)", units=True, passes=9)
def guided_map(model, x, targets) -> torch.Tensor:
    return _by_rule(model, x, targets, "guided").abs().sum(1)


def make_baseline(x: torch.Tensor, baseline, seed: int = 0) -> torch.Tensor:
    """A baseline ``(N, C, H, W)`` for integrated gradients: ``"black"`` (0), ``"white"`` (1),
    ``"mean"`` (each image's mean colour), ``"blur"`` (Gaussian, sigma 5 px), ``"uniform"``
    (seeded noise in [0, 1]), a number, an array of one image's or the batch's shape, or a
    ``.npy`` file holding one."""
    if isinstance(baseline, str) and baseline.endswith(".npy"):
        from pathlib import Path

        if not Path(baseline).is_file():
            raise FileNotFoundError(f"baseline file not found: {baseline}")
        baseline = np.load(baseline, allow_pickle=False)
    if isinstance(baseline, str):
        if baseline == "black":
            return torch.zeros_like(x)
        if baseline == "white":
            return torch.ones_like(x)
        if baseline == "mean":
            return x.mean((2, 3), keepdim=True).expand_as(x).clone()
        if baseline == "blur":
            from convlens.attribute._faithful import blurred

            return blurred(x).to(x.device)
        if baseline == "uniform":
            g = torch.Generator().manual_seed(seed)
            return torch.rand(x.shape, generator=g).to(x.device)
        raise ValueError(f"baseline must be black, white, mean, blur, uniform, a number or an image; got {baseline!r}")
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(np.asarray(baseline), dtype=x.dtype).to(x.device)
    if b.shape == x.shape[1:]:
        b = b.expand_as(x)
    if b.shape != x.shape:
        shown = "x".join(map(str, b.shape))
        raise ValueError(f"baseline of shape {shown} does not fit images of shape "
                         f"{'x'.join(map(str, x.shape[1:]))}: give one image (C x H x W) or one per image")
    return b.clone()


def ig_steps(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre points ``alphas`` in (0, 1) and weights (Captum's default rule)."""
    if n_steps < 1:
        raise ValueError(f"n_steps must be positive, got {n_steps}")
    pts, w = np.polynomial.legendre.leggauss(n_steps)
    return torch.as_tensor(0.5 * (pts + 1)), torch.as_tensor(0.5 * w)


def integrated_gradients_raw(model, x, targets, *, baseline="black", n_steps: int = 50,
                             seed: int = 0) -> torch.Tensor:
    """Integrated gradients ``(N, C, H, W)`` (Sundararajan et al. 2017) of the target scores:
    ``(x - b) * sum_k w_k grad(b + a_k (x - b))``; sums to ``f(x) - f(b)`` up to the rule's error."""
    base = make_baseline(x, baseline, seed)
    alphas, weights = ig_steps(n_steps)
    alphas, weights = alphas.to(x), weights.to(x)
    n, rest = len(x), x.shape[1:]
    b = fit_batch(model, x, grad=True)
    total = torch.zeros_like(x)
    # rows (image, step) in one flat range, cut into batches: memory is one batch's graph
    flat = n * n_steps
    for s in range(0, flat, b):
        rows = torch.arange(s, min(s + b, flat), device=x.device)
        img, k = rows // n_steps, rows % n_steps
        a = alphas[k].view(-1, *[1] * len(rest))
        xi = (base[img] + a * (x[img] - base[img])).detach().requires_grad_(True)
        t = targets[img.cpu()] if isinstance(targets, torch.Tensor) else targets
        with frozen(model.net), torch.enable_grad():
            (g,) = torch.autograd.grad(scores(model, xi, t).sum(), xi)
        total.index_add_(0, img, g * weights[k].view(-1, *[1] * len(rest)))
    return (x - base) * total


@register_method("integrated-gradients", "gradient", "Integrated gradients, summed over channels "
                 "(Sundararajan et al. 2017)", units=True, passes=lambda size, o: 3 * int(o["n_steps"]))
def integrated_gradients(model, x, targets, baseline="black", n_steps: int = 50, seed: int = 0) -> torch.Tensor:
    return integrated_gradients_raw(model, x, targets, baseline=baseline, n_steps=n_steps, seed=seed).sum(1).cpu()


@register_method("smoothgrad", "gradient", "SmoothGrad: |gradient| averaged over noisy copies, max "
                 "over channels (Smilkov et al. 2017)", units=True, passes=lambda size, o: 3 * int(o["samples"]))
def smoothgrad(model, x, targets, samples: int = 25, noise: float = 0.15, seed: int = 0) -> torch.Tensor:
    """``noise`` is the standard deviation as a share of each image's value range (the paper's
    10-20 %)."""
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    g = torch.Generator().manual_seed(seed)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    acc = torch.zeros_like(x)
    for _ in range(samples):
        eps = torch.randn(x.shape, generator=g).to(x) * noise * span
        acc += input_gradients(model, x + eps, targets).abs()
    return (acc / samples).amax(1).cpu()


@register_method("random", "baseline", "A random order: the floor every method should beat")
def random_map(model, x, targets, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((len(x), *x.shape[-2:]), generator=g)


@register_method("edge", "baseline", "Sobel edge magnitude of the image: Adebayo et al.'s "
                 "model-independent reference", passes=1)
def edge_map(model, x, targets) -> torch.Tensor:
    k = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=x.device)
    grey = x.mean(1, keepdim=True)
    gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k.t().reshape(1, 1, 3, 3))
    return torch.sqrt(gx**2 + gy**2)[:, 0].cpu()
