"""What an adversarial perturbation changes inside the network (survey §7.2, Fig. 20).

For a clean image ``x`` and its adversarial twin ``x'``, every layer ``l`` gets the relative
distance ``||a_l(x') - a_l(x)|| / ||a_l(x)||`` (``convlens.probe.Capture`` over all layers in one
forward pass per batch); every unit of every layer gets the size of its change (the L2 norm of its
map's difference, over the layer's mean clean unit norm, so the numbers compare across layers);
the units that changed most are listed per layer, and the maps of chosen units are kept for the
side-by-side figure (the survey shows CL2-97 and CL5-87 of AlexNet this way). The layer at which
the two representations *part* is the first whose median relative distance reaches
``part_threshold`` (0.5 by default: the change is half the size of the clean activation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convlens.attribute import check_images
from convlens.files import load_result, save_result
from convlens.probe import get_layer
from convlens.runner import Runner
from convlens.units import parse_unit

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def default_layers(model) -> list[str]:
    """Every module the forward pass runs, in the order it runs, except plain containers
    (``Sequential``: their output is their last child's)."""
    from convlens.summary import describe_layers

    mods = dict(model.net.named_modules())
    names = [i.name for i in describe_layers(model)
             if i.shape is not None and not isinstance(mods[i.name], _CONTAINERS)]
    if not names:
        raise ValueError(f"{getattr(model, 'name', 'the model')} has no layers that its forward pass runs")
    return list(Runner(model, names, stop=False, output=False).all(model.example_input(1)))  # in the order they ran


@dataclass
class RepresentationShift:
    """Clean vs adversarial activations, layer by layer.

    ``distance (N, L)``: the relative distance of each image at each of ``layers``;
    ``input_distance (N,)``: the same at the input; ``unit_change[layer] (N, U)``: each unit's
    change over the layer's mean clean unit norm; ``top_units[layer]``: the ``top_k`` units with the
    largest mean change; ``map_units``: the units whose maps are kept, for the images ``examples``:
    ``maps_clean[k]``/``maps_adv[k]`` ``(len(examples), H, W)`` (dense units: ``(E, 1, 1)``),
    with ``clean``/``adversarial`` the example images.
    """

    layers: list[str]
    distance: np.ndarray
    input_distance: np.ndarray
    unit_change: dict[str, np.ndarray]
    top_units: dict[str, list[int]]
    map_units: list[str] = field(default_factory=list)
    maps_clean: list[np.ndarray] = field(default_factory=list)
    maps_adv: list[np.ndarray] = field(default_factory=list)
    examples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    clean: np.ndarray | None = None
    adversarial: np.ndarray | None = None
    part_threshold: float = 0.5
    meta: dict = field(default_factory=dict)

    @property
    def median_distance(self) -> np.ndarray:
        return np.median(self.distance, axis=0)

    @property
    def parting_index(self) -> int:
        """The first layer whose median relative distance reaches ``part_threshold``; the layer of
        the largest median distance when none does."""
        med = self.median_distance
        hits = np.flatnonzero(med >= self.part_threshold)
        return int(hits[0]) if len(hits) else int(np.argmax(med))

    @property
    def parting_layer(self) -> str:
        return self.layers[self.parting_index]

    @property
    def parting_per_image(self) -> np.ndarray:
        """Per image, the index of the first layer at ``part_threshold`` (-1: never)."""
        above = self.distance >= self.part_threshold
        return np.where(above.any(1), above.argmax(1), -1)

    @property
    def largest_jump_layer(self) -> str:
        """The layer that multiplies the median relative distance most (the input counts as the
        layer before the first)."""
        med = np.concatenate([[np.median(self.input_distance)], self.median_distance])
        ratio = med[1:] / np.maximum(med[:-1], 1e-12)
        return self.layers[int(np.argmax(ratio))]

    def table(self) -> list[dict]:
        """One row per layer: median and spread of the distance, the units that changed most."""
        rows = []
        for j, name in enumerate(self.layers):
            d = self.distance[:, j]
            rows.append({"layer": name, "median": float(np.median(d)), "q25": float(np.quantile(d, 0.25)),
                         "q75": float(np.quantile(d, 0.75)), "top_units": self.top_units.get(name, [])})
        return rows

    def save(self, folder: str | Path) -> Path:
        arrays = {"distance": self.distance, "input_distance": self.input_distance,
                  "examples": self.examples, "clean": self.clean, "adversarial": self.adversarial}
        arrays.update({f"unit_change_{j}": self.unit_change[n] for j, n in enumerate(self.layers)
                       if n in self.unit_change})
        arrays.update({f"map_clean_{k}": m for k, m in enumerate(self.maps_clean)})
        arrays.update({f"map_adv_{k}": m for k, m in enumerate(self.maps_adv)})
        info = {"layers": self.layers, "top_units": self.top_units, "map_units": self.map_units,
                "part_threshold": self.part_threshold, "meta": self.meta,
                "parting_layer": self.parting_layer, "largest_jump_layer": self.largest_jump_layer,
                "table": self.table()}
        return save_result(folder, "representation_shift", arrays, info)

    @classmethod
    def load(cls, folder: str | Path) -> RepresentationShift:
        a, info = load_result(folder, "representation_shift")
        layers = info["layers"]
        k = len(info["map_units"])
        return cls(layers, a["distance"], a["input_distance"],
                   {n: a[f"unit_change_{j}"] for j, n in enumerate(layers) if f"unit_change_{j}" in a},
                   {n: list(v) for n, v in info["top_units"].items()}, info["map_units"],
                   [a[f"map_clean_{i}"] for i in range(k)], [a[f"map_adv_{i}"] for i in range(k)],
                   a["examples"], a.get("clean"), a.get("adversarial"), info["part_threshold"], info["meta"])


def _relative(da: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return da.flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1).clamp_min(1e-12)


def _unit_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """``(N, U)``: each unit's change over the layer's mean clean unit norm (None: no unit axis)."""
    if a.ndim < 2:
        return None
    diff = (b - a).flatten(2).norm(dim=2) if a.ndim > 2 else (b - a).abs()
    scale = a.flatten(2).norm(dim=2) if a.ndim > 2 else a.abs()
    return diff / scale.mean(1, keepdim=True).clamp_min(1e-12)


def _default_map_units(model, layers: list[str], change: dict[str, np.ndarray]) -> list[str]:
    """Fig. 20's choice: the most changed units of the convolutions (2 each of at most 2 layers,
    or 1 each of 4 layers spread over the depth)."""
    convs = [n for n in layers if isinstance(get_layer(model.net, n), nn.Conv2d) and n in change]
    if not convs:
        convs = [n for n in layers if n in change][-2:]
    if len(convs) <= 2:
        picks = [(n, 2) for n in convs]
    else:
        idx = np.unique(np.linspace(0, len(convs) - 1, 4).round().astype(int))
        picks = [(convs[i], 1) for i in idx]
    out = []
    for name, k in picks:
        order = np.argsort(-change[name].mean(0), kind="stable")[:k]
        out.extend(f"{name}:{int(u)}" for u in order)
    return out


def representation_shift(
    model,
    clean,
    adversarial,
    *,
    layers: list[str] | None = None,
    top_k: int = 5,
    map_units: list[str] | None = None,
    examples: int | list[int] = 4,
    part_threshold: float = 0.5,
    batch_size: int = 16,
) -> RepresentationShift:
    """Compare the network's representations of ``clean`` images and their ``adversarial`` twins.

    Parameters
    ----------
    model : a :class:`convlens.Model`
    clean, adversarial : ``(N, C, H, W)`` in ``[0, 1]`` (e.g. ``AttackResult.clean`` and
        ``.adversarial``)
    layers : layer names (default: every layer that runs, :func:`default_layers`)
    top_k : units listed per layer
    map_units : ``"layer:index"`` units whose maps are kept (default: the most changed conv units)
    examples : how many images (the first ones), or which, to keep maps for
    part_threshold : the relative distance at which the representations count as parted

    Returns
    -------
    RepresentationShift
    """
    x, xa = check_images(model, clean), check_images(model, adversarial)
    if x.shape != xa.shape:
        raise ValueError(f"clean and adversarial images differ in shape: {tuple(x.shape)} vs {tuple(xa.shape)}")
    if not part_threshold > 0:
        raise ValueError(f"part_threshold must be > 0, got {part_threshold}")
    layers = default_layers(model) if layers is None else list(layers)
    for name in layers:
        get_layer(model.net, name)
    n = len(x)
    dist, unit_change = _distances(model, x, xa, layers, batch_size)
    top = {k: np.argsort(-v.mean(0), kind="stable")[:top_k].astype(int).tolist() for k, v in unit_change.items()}
    ex = np.arange(min(int(examples), n)) if isinstance(examples, (int, np.integer)) else np.asarray(examples, int)
    units = _default_map_units(model, layers, unit_change) if map_units is None else list(map_units)
    maps_c, maps_a = _unit_maps(model, x[ex], xa[ex], units)
    return RepresentationShift(
        layers, dist, _relative(xa - x, x).cpu().numpy(), unit_change, top, units, maps_c, maps_a,
        ex.astype(np.int64), x[ex].cpu().numpy(), xa[ex].cpu().numpy(), float(part_threshold),
        {"model": getattr(model, "name", "model"), "images": n},
    )


def _distances(model, x, xa, layers: list[str], batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per image and layer the relative distance, and per layer each unit's change: batches of
    at most ``batch_size`` that fit the memory budget (a batch's clean and adversarial results
    are held together, so they count per image)."""
    n = len(x)
    dist = np.zeros((n, len(layers)))
    change: dict[str, list[np.ndarray]] = {}
    run = Runner(model, layers)
    with run:
        shape = tuple(x.shape[1:])
        batch_size = run.batch_size(shape, batch_size, extra=2 * run.cost(shape)[2]) if n else 1
        for s in range(0, n, batch_size):
            a, b = run.step(x[s:s + batch_size]), run.step(xa[s:s + batch_size])
            for j, name in enumerate(layers):
                dist[s:s + batch_size, j] = _relative(b[name] - a[name], a[name]).cpu().numpy()
                uc = _unit_change(a[name], b[name])
                if uc is not None:
                    change.setdefault(name, []).append(uc.cpu().numpy())
    return dist, {k: np.concatenate(v) for k, v in change.items()}


def _unit_maps(model, x, xa, units: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if not units or not len(x):
        return [], []
    parsed = [parse_unit(u) for u in units]
    names = list(dict.fromkeys(u.layer for u in parsed))
    run = Runner(model, names)
    a, b = run.all(x), run.all(xa)
    out_c, out_a = [], []
    for u in parsed:
        u.validate(tuple(a[u.layer].shape[1:]))
        ca, cb = a[u.layer][:, u.index], b[u.layer][:, u.index]
        while ca.ndim < 3:
            ca, cb = ca[..., None], cb[..., None]
        out_c.append(ca.cpu().numpy())
        out_a.append(cb.cpu().numpy())
    return out_c, out_a
