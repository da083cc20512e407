"""Feature accentuation (Hamblin, Fel, Saha, Konkle & Alvarez, 2024): start from a real image
and push a unit while staying close to it, so that the result shows *what in this image* the
unit responds to (a ``seed``-anchored activation maximization).

The image is a :class:`~convlens.optimize.FourierImage` initialised to the seed (its spectrum
inverted exactly; decorrelated colour, or one grey channel fed replicated), optimized with the
standard transforms to maximize ``activation / |activation on the seed|`` minus
``penalty * mean((x - seed)^2)`` (Horama's recipe, with the activation made relative so that
one ``penalty`` suits every unit and network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import objectives, render
from convlens.probe import get_layer
from convlens.progress import Callback
from convlens.runner import capture
from convlens.visualize._am import _map_max, _objective, select_units
from convlens.visualize._common import make_param, make_transforms, model_info


@dataclass
class Accentuation:
    """``images (U, C, H, W)``: the seed accentuated for each unit; ``before``/``after (U,)``:
    the unit's objective value (channel mean or centre neuron) on the seed and on its image;
    ``distance (U,)``: RMS pixel distance to the seed."""

    layer: str
    units: np.ndarray
    seed_image: np.ndarray
    images: np.ndarray
    before: np.ndarray
    after: np.ndarray
    distance: np.ndarray
    params: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "accentuation",
                           {"units": self.units, "seed_image": self.seed_image, "images": self.images,
                            "before": self.before, "after": self.after, "distance": self.distance},
                           {"layer": self.layer, "params": self.params})

    @classmethod
    def load(cls, folder: str | Path) -> Accentuation:
        a, info = load_result(folder, "accentuation")
        return cls(info["layer"], a["units"], a["seed_image"], a["images"], a["before"], a["after"],
                   a["distance"], info["params"])


def feature_accentuation(model, layer: str, units, image: torch.Tensor, *, steps: int = 128,
                         lr: float = 0.05, penalty: float = 10.0, objective: str = "channel",
                         transforms: str | None = "standard", grey: bool | None = None,
                         seed: int = 0, precision: str = "float32",
                         progress: Callback | None = None) -> Accentuation:
    """Accentuate ``units`` of ``layer`` in ``image`` (``(C, H, W)`` in ``[0, 1]``, fitted to
    the model), one optimized copy per unit, all in one batch.

    ``penalty`` weighs the mean squared pixel distance to the seed against the activation
    relative to its value on the seed (larger: closer to the seed). ``grey``: optimize one
    channel fed replicated (default: when the seed's channels are equal, e.g. a grey data set
    through a colour input). ``progress``: a :mod:`convlens.progress` callback, an event per
    step (task ``"optimization"``); ``True`` stops there.
    """
    get_layer(model.net, layer)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != model.spec.channels:
        raise ValueError(f"the seed image must be a (C, H, W) tensor with the model's "
                         f"{model.spec.channels} channels, got {getattr(image, 'shape', type(image))}")
    if not torch.isfinite(image).all():
        raise ValueError("the seed image contains NaN or infinity")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    x0 = image.detach().float().clamp(0, 1).to(model.device)
    acts0 = capture(model, x0[None], [layer])[layer]
    sel = select_units(units, acts0.shape[1], layer)
    if grey is None:
        grey = x0.shape[0] == 1 or bool((x0 == x0[:1]).all())
    h, w = x0.shape[1:]
    seeds = x0[None].expand(len(sel), -1, -1, -1)
    obj = _objective(objective, layer, sel, acts0.ndim)
    # the activation on the seed, per unit, by the same objective: the scale of the push
    from convlens.optimize import objective_loss

    before = -objective_loss(model, obj, seeds.contiguous())
    scale = before.abs().clamp_min(1e-3).detach()
    base = seeds.clone()
    rel = objectives.custom(lambda ctx: obj.fn(ctx) / scale.to(ctx.raw.device), obj.layers,
                            f"{obj.description} / its value on the seed")
    near = objectives.custom(lambda ctx: (ctx.raw - base).pow(2).flatten(1).mean(1), (),
                             "mean squared distance to the seed")
    p, proj = make_param("fourier", len(sel), x0.shape[0], (h, w), seed, init=seeds, grey=bool(grey))
    r = render(model, rel + penalty * near, p, steps=steps, lr=lr,
               transforms=make_transforms(transforms, (h, w), steps), project=proj,
               redirect_relu=False, seed=seed, precision=precision, progress=progress)
    after = -objective_loss(model, obj, r.images)
    dist = (r.images - seeds).pow(2).flatten(1).mean(1).sqrt()
    peak = _map_max(capture(model, r.images, [layer])[layer], torch.as_tensor(sel))
    return Accentuation(layer, np.array(sel), x0.cpu().numpy(), r.images.cpu().numpy(),
                        before.cpu().numpy(), after.cpu().numpy(), dist.cpu().numpy(),
                        dict(steps=steps, lr=lr, penalty=penalty, objective=objective,
                             transforms=transforms, grey=bool(grey), seed=seed,
                             peak=peak.cpu().numpy().tolist(), **model_info(model)))


__all__ = ["Accentuation", "feature_accentuation"]
