"""Activation maximization (Erhan et al.; Simonyan et al.; Yosinski et al.; Lees): an image per
unit of a layer, many units per batch, dead units skipped and listed, each unit compared with
the highest activation a reference dataset gives it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import natural_spectrum, objectives, render_chunked
from convlens.probe import get_layer
from convlens.runner import capture
from convlens.units import parse_unit_list
from convlens.visualize._common import (
    DEFAULT_LR,
    image_size,
    make_param,
    make_transforms,
    model_info,
    transparency_of,
)

log = logging.getLogger(__name__)


@dataclass
class UnitVisualization:
    """Activation maximization of units of one layer.

    ``units (U,)``; ``images (U, C, H, W)`` in ``[0, 1]``; ``reached (U,)``: the unit's
    activation on its image (the maximum of its map, as for ``reference_max``); ``dead``: units
    skipped (no gradient, or stuck at or below zero); ``reference_max (U,)`` and
    ``reference_images (U, C, H, W)``: the highest activation any image of the reference data
    gives the unit, and that image (when a dataset was given). ``order``: the live units, highest
    activation first. ``transparency (U, H, W)``: with ``param="maco"``, the accumulated
    ``|d loss / d image|`` of each image (summed over channels): where the unit looks.
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    reached: np.ndarray
    dead: list[int] = field(default_factory=list)
    reference_max: np.ndarray | None = None
    reference_images: np.ndarray | None = None
    reference_ids: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    transparency: np.ndarray | None = None

    @property
    def live(self) -> np.ndarray:
        return np.array([u not in set(self.dead) for u in self.units.tolist()], dtype=bool)

    @property
    def order(self) -> list[int]:
        """Rows of the live units, highest activation reached first."""
        rows = np.flatnonzero(self.live)
        return [int(r) for r in rows[np.argsort(-self.reached[rows], kind="stable")]]

    @property
    def ratio(self) -> np.ndarray | None:
        """Activation reached over the dataset maximum, per unit (NaN where the maximum <= 0)."""
        if self.reference_max is None:
            return None
        ref = self.reference_max.astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ref > 0, self.reached / ref, np.nan)

    def summary(self) -> dict:
        out = {"layer": self.layer, "units": len(self.units), "dead": self.dead}
        r = self.ratio
        if r is not None:
            ok = r[self.live & np.isfinite(r)]
            out.update(median_ratio=float(np.median(ok)) if ok.size else None,
                       fraction_at_least_dataset_max=float((ok >= 1).mean()) if ok.size else None)
        return out

    def save(self, folder: str | Path) -> Path:
        arrays = {"units": self.units, "images": self.images.astype(np.float32), "reached": self.reached,
                  "reference_max": self.reference_max, "reference_images": self.reference_images,
                  "transparency": self.transparency}
        return save_result(folder, "units", arrays, {"layer": self.layer, "dead": self.dead,
                                                     "reference_ids": self.reference_ids,
                                                     "params": self.params, "summary": self.summary()})

    @classmethod
    def load(cls, folder: str | Path) -> UnitVisualization:
        a, info = load_result(folder, "units")
        return cls(info["layer"], a["units"], a["images"], a["reached"], info["dead"],
                   a.get("reference_max"), a.get("reference_images"), info["reference_ids"],
                   info["params"], a.get("transparency"))


def select_units(units, n: int, layer: str) -> list[int]:
    """``"all"``, ``"0-63"``, ``"1,5,9-12"`` or a list of indices, each checked against the
    ``n`` units of ``layer``."""
    sel = parse_unit_list(units, n) if units is None or isinstance(units, str) else [int(u) for u in units]
    for u in sel:
        if not 0 <= u < n:
            raise ValueError(f"unit {u} is out of range: layer {layer!r} has {n} units (0-{n - 1})")
    return sel


def _map_max(acts: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Each row's own unit: the maximum of its map (its value for a dense layer)."""
    a = acts[torch.arange(len(units)), units]
    return a.flatten(1).amax(1) if a.ndim > 1 else a


def _objective(kind: str, layer: str, idx: list[int], ndim: int):
    if kind == "channel":
        if ndim != 4:
            raise ValueError(
                f"a channel objective needs a layer with spatial dimensions; {layer!r} gives "
                f"{ndim}-D outputs. Use objective='unit' for a dense layer"
            )
        return objectives.channel(layer, idx)
    if kind == "unit":
        return objectives.unit(layer, idx)
    raise ValueError(f"objective must be 'channel' or 'unit', got {kind!r}")


def _reference(model, dataset, layer: str, units: np.ndarray, batch_size: int):
    from convlens.attribute import top_images

    top = top_images(model, dataset, layer, k=1, units=[int(u) for u in units], batch_size=batch_size)
    images = torch.stack([dataset.image(int(i)) for i in top.indices[:, 0]]).cpu().numpy()
    return top.values[:, 0], images, [row[0] for row in top.ids]


def activation_maximization(
    model,
    layer: str,
    units: str | list[int] | None = "all",
    *,
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    lr: float | None = None,
    param: str = "fourier",
    objective: str = "channel",
    transforms: str | None = "auto",
    spectrum=None,
    grey: bool | None = None,
    tv: float = 0.0,
    l2: float = 0.0,
    normalize_grad: bool = False,
    redirect_relu: bool = True,
    batch_size: int | None = None,
    reference=None,
    seed: int = 0,
    callback: Callable[[int, int], None] | None = None,
    precision: str = "float32",
    memory: int | float | str | None = None,
) -> UnitVisualization:
    """An image that maximizes each unit of ``layer``, as many units per optimization as the
    memory budget allows (at most ``batch_size``); a chunked run gives the images one batch would.

    Parameters
    ----------
    model : a :class:`convlens.Model`
    layer : layer name (``convlens layers MODEL`` lists them)
    units : ``"all"``, ``"0-63"``, ``"1,5,9-12"`` or a list of indices
    size : image size (default: the model's input size)
    steps, lr : optimizer steps and Adam's learning rate (default: 0.05, or 0.5 for MaCo)
    param : ``"fourier"`` (decorrelated colour, default), ``"pixel"`` (clamped to [0, 1]) or
        ``"maco"`` (Fel et al.: fixed Fourier magnitude ``spectrum``, optimized phase; use a
        larger ``lr``, default 0.5, since the parameters are angles)
    objective : ``"channel"`` -- the map's mean (Lees, Yosinski) -- or ``"unit"`` -- the centre
        neuron (or a dense layer's unit)
    transforms : ``"auto"`` (MaCo's random crops for ``param="maco"``, else ``"standard"``),
        ``"standard"`` (jitter, scale, rotation), ``"crops"`` or ``None``
    spectrum : for ``param="maco"``: a :class:`~convlens.optimize.Spectrum`
        (:func:`~convlens.optimize.data_spectrum` of the user's data), default the built-in
        natural spectrum; resampled (and logged) when computed at another size
    grey : optimize one grey channel, fed replicated to the model's channels; default: when
        the spectrum is grey (a grey data set), or the model's input has one channel
    tv, l2 : weights of the total-variation and L2-decay priors (per pixel)
    normalize_grad : divide gradients by their RMS (Lees' Keras recipe)
    redirect_relu : redirected ReLU gradients (Lucid), so that units off everywhere on the
        starting image can still be raised; a unit stays dead only if even these cannot move it
    reference : an :class:`~convlens.data.ImageDataset` conformed to the model; each unit is
        compared with the highest activation an image of it gives (same statistic: map maximum)
    batch_size : the most units per optimization (default: as many as fit ``memory``)
    memory : the memory budget (:mod:`convlens.runner`; default: the current one)
    callback : ``callback(units_done, units_total)``
    precision : the network's dtype during the optimization, ``"float32"`` (default),
        ``"bfloat16"`` or ``"auto"`` (see :func:`convlens.optimize.render`); the activations
        reached are measured in float32 either way

    Returns
    -------
    UnitVisualization
    """
    get_layer(model.net, layer)
    if param not in DEFAULT_LR:
        raise ValueError(f"param must be 'fourier', 'pixel' or 'maco', got {param!r}")
    lr = DEFAULT_LR[param] if lr is None else lr
    h, w = image_size(model, size)
    c = model.spec.channels
    probe = capture(model, torch.full((1, c, h, w), 0.5, device=model.device), [layer])[layer]
    sel = select_units(units, probe.shape[1], layer)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    _objective(objective, layer, sel[:1], probe.ndim)  # validate before any work
    if grey is None:
        grey = c == 1 or (param == "maco" and spectrum is not None and spectrum.grey)
    if param == "maco" and spectrum is not None:
        spectrum = spectrum.to_size((h, w))  # resampled (and logged) when computed at another size
    tf = make_transforms(transforms, (h, w), steps, param)
    moved = torch.zeros(len(sel), dtype=torch.bool, device=model.device)

    span = [0, 0]  # the rows of the chunk being optimized
    current = {}  # the chunk's parametrization (its transparency map)

    def build(a, b):
        span[:] = [a, b]
        p, proj = make_param(param, b - a, c, (h, w), seed, first=a, spectrum=spectrum,
                             grey=bool(grey))
        current["param"] = p
        if hasattr(tf, "reset"):  # crops count their steps: each chunk starts at step 0
            tf.reset()
        obj = _objective(objective, layer, sel[a:b], probe.ndim)
        if tv:
            obj = obj + tv / (h * w) * objectives.total_variation()
        if l2:
            obj = obj + l2 / (h * w) * objectives.l2()
        return obj, p, proj

    def watch(step, loss, state):
        for t in state.param.parameters():
            if t.grad is not None:
                moved[span[0]:span[1]] |= t.grad.flatten(1).abs().amax(1) > 0

    values, transparency = [], []

    def chunk_done(a, b, r):  # each chunk's own units, measured while its maps are small
        values.append(_map_max(capture(model, r.images, [layer], memory=memory)[layer], torch.as_tensor(sel[a:b])))
        t = transparency_of(current["param"])
        if t is not None:
            transparency.append(t.cpu().numpy())
        if callback:
            callback(b, len(sel))

    r = render_chunked(model, len(sel), build, (c, h, w), limit=batch_size, steps=steps, lr=lr,
                       transforms=tf, normalize_grad=normalize_grad, redirect_relu=redirect_relu, seed=seed,
                       callback=watch, precision=precision, memory=memory, on_chunk=chunk_done)
    value = torch.cat(values)
    dead = [u for u, v, m in zip(sel, value.tolist(), moved.tolist()) if not m or v <= 1e-6]
    images, reached = [r.images.cpu().numpy()], [value.cpu().numpy()]
    if dead:
        log.info("layer %s: dead units skipped (no gradient or stuck at zero): %s", layer, dead)
    out = UnitVisualization(layer, np.array(sel), np.concatenate(images), np.concatenate(reached),
                            dead, params=dict(size=[h, w], steps=steps, lr=lr, param=param,
                                              objective=objective, transforms=transforms, tv=tv, l2=l2,
                                              normalize_grad=normalize_grad, redirect_relu=redirect_relu,
                                              batch_size=batch_size, seed=seed, grey=bool(grey),
                                              **model_info(model)),
                            transparency=np.concatenate(transparency) if transparency else None)
    if param == "maco":
        out.params["spectrum"] = (spectrum.describe() if spectrum is not None
                                  else natural_spectrum((h, w), 1 if grey else 3).describe())
    if reference is not None:
        out.reference_max, out.reference_images, out.reference_ids = _reference(
            model, reference, layer, out.units, 128)
        out.params["reference"] = {"name": reference.name, "images": len(reference),
                                   "fingerprint": reference.fingerprint}
    return out


