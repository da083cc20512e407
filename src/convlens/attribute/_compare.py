"""Several attribution maps of one image, scored by the same deletion and insertion curves."""

from __future__ import annotations

import numpy as np
import torch

from convlens.attribute._backprop import guided_backprop, saliency
from convlens.attribute._checks import check_images, resolve_class
from convlens.attribute._faithful import Curve, perturbation_curve, random_order
from convlens.attribute._lime import lime
from convlens.attribute._occlusion import occlusion
from convlens.probe import frozen


def attribution_maps(model, image, target=None, *, lime_samples: int = 500, n_segments: int = 50,
                     window: int | None = None, seed: int = 0) -> tuple[int, dict[str, np.ndarray]]:
    """``(target, {method: (H, W) map})`` for saliency, guided backprop, LIME, occlusion and a
    random order; ``target`` defaults to the predicted class."""
    x = check_images(model, image)[:1]
    if target is None:
        with frozen(model.net), torch.no_grad():
            target = int(model(x).argmax(1))
    target = resolve_class(model, target)
    h, w = x.shape[-2:]
    win = window or max(2, min(h, w) // 7)
    r = lime(model, x, labels=[target], num_samples=lime_samples, n_segments=n_segments, seed=seed)
    maps = {
        "saliency": saliency(model, x, target).saliency()[0],
        "guided backprop": np.abs(guided_backprop(model, x, target).maps[0]).sum(0),
        "LIME": r.heatmap(target),
        "occlusion": occlusion(model, x, target, window=win, stride=max(1, win // 2)).sensitivity,
        "random": random_order((h, w), seed),
    }
    return target, maps


def compare_methods(model, image, target=None, *, steps: int = 50, **kw) -> dict[str, Curve]:
    """Deletion and insertion curves (``"method/deletion"``, ``"method/insertion"``) of every
    map of :func:`attribution_maps` on one image."""
    target, maps = attribution_maps(model, image, target, **kw)
    return {f"{name}/{kind}": perturbation_curve(model, image, a, target, kind=kind, steps=steps)
            for name, a in maps.items() for kind in ("deletion", "insertion")}
