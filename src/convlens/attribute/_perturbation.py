"""Perturbation methods of the registry: occlusion and LIME, one image at a time (each already
batches its perturbed copies through :mod:`convlens.attribute._blend`)."""

from __future__ import annotations

import numpy as np
import torch

from convlens.attribute._lime import lime
from convlens.attribute._occlusion import occlusion
from convlens.attribute._registry import register_method


def _occlusion_passes(size, o) -> float:
    win = o["window"] or max(2, min(size) // 7)
    st = o["stride"] or max(1, win // 2)
    return float(np.prod([(s - win) // st + 2 for s in size]))


@register_method("occlusion", "perturbation", "Occlusion sensitivity: mean drop of the class "
                 "probability under a grey square (Zeiler & Fergus 2014)", passes=_occlusion_passes)
def occlusion_map(model, x, targets, window: int | None = None, stride: int | None = None) -> torch.Tensor:
    """``window`` defaults to a seventh of the image side, ``stride`` to half the window."""
    win = window or max(2, min(x.shape[-2:]) // 7)
    st = stride or max(1, win // 2)
    return torch.stack([torch.as_tensor(occlusion(model, x[i], int(targets[i]), window=win, stride=st).sensitivity)
                        for i in range(len(x))]).float()


@register_method("lime", "perturbation", "LIME: superpixel weights of a local linear model "
                 "(Ribeiro et al. 2016)", passes=lambda size, o: int(o["samples"]) + 1)
def lime_map(model, x, targets, samples: int = 500, n_segments: int = 50, seed: int = 0) -> torch.Tensor:
    out = []
    for i in range(len(x)):
        t = int(targets[i])
        r = lime(model, x[i], labels=[t], num_samples=samples, n_segments=n_segments, seed=seed)
        out.append(torch.as_tensor(r.heatmap(t)))
    return torch.stack(out).float()
