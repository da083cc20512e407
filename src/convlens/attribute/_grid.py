"""Activation grids (Lees, Sec. 4.2): every channel's feature map of a layer for one image, the
strongest channel marked and the map size shown -- for every layer of a model in one pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.attribute._checks import check_images
from convlens.files import load_result, save_result
from convlens.runner import capture


@dataclass
class ActivationGrid:
    """``maps[layer]`` is ``(C, H, W)`` for one image; ``strongest[layer]`` the channel with
    the largest activation."""

    image: np.ndarray
    layers: list[str]
    maps: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    @property
    def strongest(self) -> dict[str, int]:
        return {name: int(m.reshape(len(m), -1).max(1).argmax()) for name, m in self.maps.items()}

    def save(self, folder: str | Path) -> Path:
        arrays = {"image": self.image, **{f"map{i}": self.maps[n] for i, n in enumerate(self.layers)}}
        return save_result(folder, "activations", arrays, {"layers": self.layers, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> ActivationGrid:
        a, info = load_result(folder, "activations")
        return cls(a["image"], info["layers"], {n: a[f"map{i}"] for i, n in enumerate(info["layers"])},
                   info["meta"])


def spatial_layers(model) -> list[str]:
    """Leaf layers whose output is a stack of feature maps ``(C, H, W)``, in forward order."""
    from convlens.summary import describe_layers

    leaves = {n for n, m in model.net.named_modules() if n and not any(True for _ in m.children())}
    return [i.name for i in describe_layers(model) if i.name in leaves and i.shape is not None and len(i.shape) == 3]


def activation_grid(model, image, layers: list[str] | None = None) -> ActivationGrid:
    """Feature maps of ``layers`` (every spatial leaf layer by default) for one image."""
    x = check_images(model, image)
    if len(x) != 1:
        raise ValueError(f"one image at a time, got a batch of {len(x)}")
    layers = list(layers) if layers else spatial_layers(model)
    if not layers:
        raise ValueError("this model has no layer with feature maps (C, H, W); name layers explicitly")
    acts = capture(model, x, layers)
    bad = [n for n in layers if acts[n].ndim != 4]
    if bad:
        raise ValueError(f"layers {bad} have no spatial maps (outputs {[tuple(acts[n].shape[1:]) for n in bad]}); "
                         "activation grids show (C, H, W) layers")
    return ActivationGrid(x[0].cpu().numpy(), layers, {n: acts[n][0].cpu().numpy() for n in layers},
                          {"model": model.name})
