"""Activation maximization (Erhan et al.; Simonyan et al.; Yosinski et al.; Lees): an image per
unit of a layer, many units per batch, dead units skipped and listed, each unit compared with
the highest activation a reference dataset gives it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import natural_spectrum, objectives, render_chunked
from convlens.probe import get_layer
from convlens.progress import Callback
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


@dataclass
class _Plan:
    """What :func:`activation_maximization` optimizes, checked before any work: the units, the
    image size and channels, the parametrization with its spectrum, the objective."""

    layer: str
    units: list[int]
    size: tuple[int, int]
    channels: int
    param: str
    objective: str
    ndim: int
    steps: int
    lr: float
    grey: bool
    spectrum: object
    transforms: object
    tv: float
    l2: float
    seed: int

    def build(self, a: int, b: int):
        """``(objective, parametrization, projections)`` of units ``a:b`` (one chunk)."""
        h, w = self.size
        p, proj = make_param(self.param, b - a, self.channels, self.size, self.seed, first=a,
                             spectrum=self.spectrum, grey=self.grey)
        if hasattr(self.transforms, "reset"):  # crops count their steps: each chunk starts at step 0
            self.transforms.reset()
        obj = _objective(self.objective, self.layer, self.units[a:b], self.ndim)
        if self.tv:
            obj = obj + self.tv / (h * w) * objectives.total_variation()
        if self.l2:
            obj = obj + self.l2 / (h * w) * objectives.l2()
        return obj, p, proj


def _plan(model, layer, units, *, size, steps, lr, param, objective, transforms, spectrum, grey,
          tv, l2, batch_size, seed) -> _Plan:
    get_layer(model.net, layer)
    if param not in DEFAULT_LR:
        raise ValueError(f"param must be 'fourier', 'pixel' or 'maco', got {param!r}")
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
    return _Plan(layer, sel, (h, w), c, param, objective, probe.ndim, steps,
                 DEFAULT_LR[param] if lr is None else lr, bool(grey), spectrum,
                 make_transforms(transforms, (h, w), steps, param), tv, l2, seed)


def _optimize(model, plan: _Plan, *, batch_size, normalize_grad, redirect_relu, progress,
              precision, memory):
    """Render the plan's units in chunks; ``(images, reached, moved, ran, transparency)``:
    each unit's activation on its image (map maximum, measured per chunk while its maps are
    small), whether its parameters ever got a gradient, whether its chunk ran at all (not
    when ``progress`` stopped the run before it), and MaCo's transparency maps."""
    n = len(plan.units)
    moved = torch.zeros(n, dtype=torch.bool, device=model.device)
    ran = torch.ones(n, dtype=torch.bool)
    span, current, values, transparency = [0, 0], {}, [], []

    def build(a, b):
        span[:] = [a, b]
        obj, p, proj = plan.build(a, b)
        current["param"] = p
        return obj, p, proj

    def watch(step, loss, state):
        for t in state.param.parameters():
            if t.grad is not None:
                moved[span[0]:span[1]] |= t.grad.flatten(1).abs().amax(1) > 0

    def chunk_done(a, b, r):
        values.append(_map_max(capture(model, r.images, [plan.layer], memory=memory)[plan.layer],
                               torch.as_tensor(plan.units[a:b])))
        ran[a:b] = r.steps > 0 or plan.steps == 0
        t = transparency_of(current["param"])
        if t is not None:
            transparency.append(t.cpu().numpy())

    r = render_chunked(model, n, build, (plan.channels, *plan.size), limit=batch_size, steps=plan.steps,
                       lr=plan.lr, transforms=plan.transforms, normalize_grad=normalize_grad,
                       redirect_relu=redirect_relu, seed=plan.seed, callback=watch, progress=progress,
                       task="activation maximization", precision=precision, memory=memory,
                       on_chunk=chunk_done)
    return (r.images.cpu().numpy(), torch.cat(values).cpu().numpy(), moved.cpu().numpy(), ran.cpu().numpy(),
            np.concatenate(transparency) if transparency else None)


def activation_maximization(
    model, layer: str, units: str | list[int] | None = "all", *,
    size: int | tuple[int, int] | None = None, steps: int = 256, lr: float | None = None,
    param: str = "fourier", objective: str = "channel", transforms: str | None = "auto",
    spectrum=None, grey: bool | None = None, tv: float = 0.0, l2: float = 0.0,
    normalize_grad: bool = False, redirect_relu: bool = True, batch_size: int | None = None,
    reference=None, seed: int = 0, progress: Callback | None = None, precision: str = "float32",
    memory: int | float | str | None = None,
) -> UnitVisualization:
    """An image that maximizes each unit of ``layer`` (``convlens layers MODEL`` lists them),
    as many units per optimization as the memory budget ``memory`` allows (at most
    ``batch_size``); a chunked run gives the images one batch would.

    ``units``: ``"all"``, ``"0-63"``, ``"1,5,9-12"`` or indices. ``size``: the image size
    (default the model's input). ``steps``, ``lr``: Adam's steps and rate (default 0.05, or 0.5
    for MaCo, whose parameters are angles). ``param``: ``"fourier"`` (decorrelated colour),
    ``"pixel"`` (clamped to [0, 1]) or ``"maco"`` (Fel et al.: the Fourier magnitude fixed to
    ``spectrum``, a :class:`~convlens.optimize.Spectrum` such as
    :func:`~convlens.optimize.data_spectrum` of the user's data, default the built-in natural
    one, resampled and logged when computed at another size; the phase optimized).
    ``objective``: ``"channel"``, the map's mean (Lees, Yosinski), or ``"unit"``, the centre
    neuron (a dense layer's unit). ``transforms``: ``"auto"`` (noise for MaCo, else
    ``"standard"``), ``"standard"`` (jitter, scale, rotation), ``"crops"``, ``"noise"`` or
    ``None``. ``grey``: one grey channel fed replicated to the model's channels (default: when
    the spectrum or the model's input is grey). ``tv``, ``l2``: total-variation and L2 priors
    (per pixel). ``normalize_grad``: gradients divided by their RMS (Lees). ``redirect_relu``:
    Lucid's redirected ReLU gradients, so that a unit off everywhere on the starting image can
    still be raised (it stays dead only if even these cannot move it). ``reference``: an
    :class:`~convlens.data.ImageDataset` conformed to the model; each unit is compared with
    the highest activation (map maximum) an image of it gives. ``progress``: a
    :mod:`convlens.progress` callback, an event per step over all chunks (task ``"activation
    maximization"``); ``True`` stops there, the units not reached keep their starting images
    and are listed in ``params["not_optimized"]``. ``precision``: the network's dtype during
    the optimization (:func:`convlens.optimize.render`); the activations reached are measured
    in float32 either way.
    """
    plan = _plan(model, layer, units, size=size, steps=steps, lr=lr, param=param, objective=objective,
                 transforms=transforms, spectrum=spectrum, grey=grey, tv=tv, l2=l2, batch_size=batch_size,
                 seed=seed)
    images, reached, moved, ran, transparency = _optimize(
        model, plan, batch_size=batch_size, normalize_grad=normalize_grad, redirect_relu=redirect_relu,
        progress=progress, precision=precision, memory=memory)
    out = _result(model, plan, images, reached, moved, ran, transparency,
                  dict(transforms=transforms, normalize_grad=normalize_grad, redirect_relu=redirect_relu,
                       batch_size=batch_size))
    if reference is not None:
        out.reference_max, out.reference_images, out.reference_ids = _reference(
            model, reference, layer, out.units, 128)
        out.params["reference"] = {"name": reference.name, "images": len(reference),
                                   "fingerprint": reference.fingerprint}
    return out


def _result(model, plan: _Plan, images, reached, moved, ran, transparency, options: dict) -> UnitVisualization:
    sel = plan.units
    dead = [u for u, v, m, r in zip(sel, reached.tolist(), moved.tolist(), ran.tolist()) if r and (not m or v <= 1e-6)]
    if dead:
        log.info("layer %s: dead units skipped (no gradient or stuck at zero): %s", plan.layer, dead)
    h, w = plan.size
    out = UnitVisualization(plan.layer, np.array(sel), images, reached, dead,
                            params=dict(size=[h, w], steps=plan.steps, lr=plan.lr, param=plan.param,
                                        objective=plan.objective, tv=plan.tv, l2=plan.l2, seed=plan.seed,
                                        grey=plan.grey, **options, **model_info(model)),
                            transparency=transparency)
    if not ran.all():
        out.params["not_optimized"] = [u for u, r in zip(sel, ran.tolist()) if not r]
        log.info("layer %s: stopped before units %s", plan.layer, out.params["not_optimized"])
    if plan.param == "maco":
        out.params["spectrum"] = (plan.spectrum.describe() if plan.spectrum is not None
                                  else natural_spectrum((h, w), 1 if plan.grey else 3).describe())
    return out
