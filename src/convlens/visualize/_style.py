"""Style transfer (Gatys et al.): content of one image at one layer, style (Gram matrices) of
another over several layers, traded off by alpha/beta; several trade-offs in one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import ClampPixels, PixelImage, objective_loss, objectives, render
from convlens.runner import capture
from convlens.visualize._common import model_info
from convlens.visualize._invert import _one_image


@dataclass
class StyleTransfer:
    """``images (K, C, H, W)``, one per ``ratios`` value ``alpha/beta``; ``content_loss (K,)``
    and ``style_loss (K,)`` of each final image; ``content``/``style`` the two inputs."""

    content: np.ndarray
    style: np.ndarray
    images: np.ndarray
    ratios: np.ndarray
    content_loss: np.ndarray
    style_loss: np.ndarray
    params: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        arrays = {k: getattr(self, k) for k in ("content", "style", "images", "ratios",
                                                "content_loss", "style_loss")}
        return save_result(folder, "style", arrays, {"params": self.params})

    @classmethod
    def load(cls, folder: str | Path) -> StyleTransfer:
        a, info = load_result(folder, "style")
        return cls(a["content"], a["style"], a["images"], a["ratios"], a["content_loss"],
                   a["style_loss"], info["params"])


def style_transfer(
    model,
    content: torch.Tensor,
    style: torch.Tensor,
    *,
    content_layer: str,
    style_layers: Sequence[str],
    ratios: Sequence[float] = (1e-3,),
    steps: int = 300,
    lr: float = 0.02,
    init: str = "content",
    seed: int = 0,
) -> StyleTransfer:
    """Gatys et al.'s ``alpha L_content + beta L_style`` for each ``alpha/beta`` in ``ratios``
    (one image per ratio, all in one batch).

    ``L_content`` is the relative squared feature error at ``content_layer``
    (``||F - P||^2 / ||P||^2``); ``L_style`` the mean over ``style_layers`` of the mean squared
    difference of Gram matrices (``convlens.optimize.objectives.gram``), divided by that of the
    style image's own Gram matrices so both terms start near 1. The optimization runs with
    ``beta = 1`` and ``alpha = ratio``. ``init``: ``"content"``, ``"style"`` or ``"noise"``.
    """
    xc, xs = _one_image(model, content), _one_image(model, style)
    if xc.shape != xs.shape:
        raise ValueError(f"content and style images must have the same size, got {tuple(xc.shape)} "
                         f"and {tuple(xs.shape)}; resize one of them")
    style_layers = list(style_layers)
    if not style_layers:
        raise ValueError("style_layers must name at least one layer")
    ratios = [float(r) for r in ratios]
    if not ratios or any(r < 0 for r in ratios):
        raise ValueError(f"ratios (alpha/beta) must be non-negative numbers, got {ratios}")
    k = len(ratios)
    target_c = capture(model, xc, [content_layer])[content_layer]
    s_acts = capture(model, xs, style_layers)
    grams = [objectives.gram(s_acts[name]) for name in style_layers]
    scale = sum(float(g.pow(2).mean()) for g in grams) / len(grams)
    content_obj = objectives.feature_match(content_layer, target_c)
    style_obj = objectives.style(style_layers, grams) / max(scale, 1e-12)
    alpha = torch.tensor(ratios)
    obj = objectives.custom(lambda c: alpha.to(c.raw) * content_obj(c), [content_layer],
                            "alpha * content") + style_obj
    start = {"content": xc, "style": xs}.get(init)
    if start is None and init != "noise":
        raise ValueError(f"init must be 'content', 'style' or 'noise', got {init!r}")
    param = (PixelImage(init=start.expand(k, -1, -1, -1)) if start is not None
             else PixelImage(k, xc.shape[1], tuple(xc.shape[-2:]), sd=0.1, seed=seed))
    r = render(model, obj, param, steps=steps, lr=lr, project=ClampPixels(), seed=seed)
    return StyleTransfer(xc[0].cpu().numpy(), xs[0].cpu().numpy(), r.images.cpu().numpy(), np.array(ratios),
                         objective_loss(model, content_obj, r.images).cpu().numpy(),
                         objective_loss(model, style_obj, r.images).cpu().numpy(),
                         dict(content_layer=content_layer, style_layers=style_layers, steps=steps, lr=lr,
                              init=init, seed=seed, **model_info(model)))
