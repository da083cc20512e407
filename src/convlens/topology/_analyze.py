"""One analysis of a filter cloud (density filtration, Mapper, barcodes, primary-circle and
three-circle scores, circular coordinates and their agreement with each filter's fitted
orientation), and grids of them: layers x training steps of a study (the paper's Figs. 8 and 13) or the layers
of one pretrained model (Fig. 14)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.files import load_result, save_result, slug
from convlens.progress import Callback, notify
from convlens.topology._circular import (
    NoCircleError,
    angle_agreement,
    circular_coordinates,
    filter_orientation,
)
from convlens.topology._cloud import FilterCloud, conv_layers, filter_cloud, model_filters
from convlens.topology._density import density_filtration
from convlens.topology._mapper import Mapper, MapperGraph
from convlens.topology._persistence import Barcodes, barcodes
from convlens.topology._reference import (
    CircleScore,
    ThreeCircleScore,
    _nearest_on_circle,
    primary_circle_score,
    three_circle_score,
)

log = logging.getLogger(__name__)


@dataclass
class CloudAnalysis:
    """Everything computed on one filter cloud; ``cloud`` is the cloud after filtration."""

    label: str
    n_filters: int
    k: int | None
    p: float | None
    cloud: FilterCloud
    graph: MapperGraph
    barcodes: Barcodes
    score: CircleScore
    seconds: dict = field(default_factory=dict)
    three: ThreeCircleScore | None = None
    angles: dict = field(default_factory=dict)  # circular coordinates: histogram, agreement or message
    angle_values: np.ndarray | None = None  # per filter of ``cloud`` (radians), None without a circle

    def summary(self) -> dict:
        bars = self.barcodes.long_bars(1, 3)
        return {
            "label": self.label, "filters": self.n_filters, "kept": len(self.cloud),
            "constant_dropped": self.cloud.n_constant, "k": self.k, "p": self.p,
            "networks": len(self.cloud.sources), "mapper": self.graph.summary(),
            "h1_long_bars": [round(b.length, 4) for b in bars],
            "h1_dominance": _finite(self.barcodes.dominance(1)),  # None: no second bar
            "circle": self.score.to_dict(),
            "three_circles": self.three.to_dict() if self.three is not None else None,
            "angles": self.angles, "seconds": self.seconds,
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.cloud.save(folder)
        self.graph.save(folder)
        self.barcodes.save(folder)
        return save_result(folder, "analysis", {"angle_values": self.angle_values,
                                                "circle_angles": self.score.angles},
                           {**self.summary(), "dominance": _finite(self.barcodes.dominance(1))})

    @classmethod
    def load(cls, folder: str | Path) -> CloudAnalysis:
        folder = Path(folder)
        a, r = load_result(folder, "analysis")
        c = dict(r["circle"])
        score = CircleScore(c["share"], c["coverage"], c["threshold"], c["n"], c["histogram"], c["noise_share"],
                            a.get("circle_angles"))
        t = r.get("three_circles")
        three = ThreeCircleScore(**{k: v for k, v in t.items() if k != "gain"}) if t else None
        values = a.get("angle_values")
        if r["format_version"] == 0 and (folder / "angles.npy").is_file():
            values = np.load(folder / "angles.npy")
        return cls(r["label"], r["filters"], r["k"], r["p"], FilterCloud.load(folder), MapperGraph.load(folder),
                   Barcodes.load(folder), score, r["seconds"], three, r.get("angles") or {}, values)


def _finite(v: float):
    return None if v == float("inf") else v


def analyze_cloud(cloud: FilterCloud, *, k: int | None = None, p: float | None = None,
                  resolution: int = 30, gain: float = 3.0, lenses: int = 2, clusterer=None,
                  n_landmarks: int = 100, method: str = "ripser", maxdim: int = 1,
                  label: str = "", seed: int = 0) -> CloudAnalysis:
    """rho(k, p) (skipped when ``k`` or ``p`` is None), then Mapper(resolution, gain) with PCA
    lenses, barcodes on ``n_landmarks`` maxmin landmarks, and the primary-circle score.

    Examples
    --------
    >>> a = analyze_cloud(filter_cloud("runs/mnist", "conv1"), k=200, p=0.3)    # doctest: +SKIP
    >>> a.summary()["h1_long_bars"], a.score.share                              # doctest: +SKIP
    """
    if not isinstance(cloud, FilterCloud):
        raise TypeError(f"analyze_cloud takes a FilterCloud (see filter_cloud), got {type(cloud).__name__}")
    n = len(cloud)
    times = {}
    t0 = time.perf_counter()
    core = cloud if k is None or p is None else cloud.subset(density_filtration(cloud, k, p))
    times["filtration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = Mapper(resolution=resolution, gain=gain, lenses=lenses, clusterer=clusterer).fit(core).graph_
    times["mapper"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bc = barcodes(core, method=method, maxdim=maxdim, n_landmarks=n_landmarks, seed=seed)
    times["barcodes"] = time.perf_counter() - t0
    score = primary_circle_score(core, seed=seed)
    t0 = time.perf_counter()
    angles, values = filter_angles(core, n_landmarks=n_landmarks, seed=seed)
    times["angles"] = time.perf_counter() - t0
    return CloudAnalysis(label, n, k, p, core, graph, bc, score, times, three_circle_score(core, seed=seed),
                         angles, values)


def filter_angles(cloud: FilterCloud, *, n_landmarks: int = 100, threshold: float = 0.5, bins: int = 16,
                  min_dominance: float = 2.0, seed: int = 0) -> tuple[dict, np.ndarray | None]:
    """An angle for every filter of ``cloud`` from the circular coordinates of its longest H1
    class, and how well it agrees with the orientation fitted directly to each filter (over the
    filters within ``threshold`` of the primary circle, and over all). Without a long H1 class:
    ``({"message": ...}, None)``."""
    try:
        cc = circular_coordinates(cloud, n_landmarks=n_landmarks, min_dominance=min_dominance, seed=seed)
    except NoCircleError as e:
        return {"message": str(e)}, None
    fitted, explained = filter_orientation(cloud)
    near = _nearest_on_circle(np.asarray(cloud.points, dtype=np.float64), cloud.shape)[0] <= threshold
    out = {**cc.to_dict(), "histogram": cc.histogram(bins), "message": None,
           "agreement_all": angle_agreement(cc.angles, fitted),
           "agreement": angle_agreement(cc.angles[near], fitted[near]) if near.sum() >= 3 else None,
           "near_circle": int(near.sum()), "edge_energy": float(np.median(explained))}
    return out, cc.angles


@dataclass
class TopologyGrid:
    """Analyses laid out as rows x columns (layers x steps, or one model x layers)."""

    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], CloudAnalysis]
    title: str = ""

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        names = {}
        for (r, c), a in self.cells.items():
            name = slug(f"{r}__{c}")
            a.save(folder / "cells" / name)
            names[f"{r}|{c}"] = name
        return save_result(folder, "grid", {}, {
            "rows": self.rows, "cols": self.cols, "title": self.title, "cells": names,
            "summary": {k: self.cells[tuple(k.split("|", 1))].summary() for k in names}})

    @classmethod
    def load(cls, folder: str | Path) -> TopologyGrid:
        folder = Path(folder)
        _, r = load_result(folder, "grid")
        cells = {tuple(k.split("|", 1)): CloudAnalysis.load(folder / "cells" / v) for k, v in r["cells"].items()}
        return cls(r["rows"], r["cols"], cells, r.get("title", ""))


def analyze_study(sources, layers: str | Sequence[str], *, steps="all", params: dict | None = None,
                  arch: str | None = None, progress: Callback | None = None, **kwargs) -> TopologyGrid:
    """Grid of analyses: one row per layer, one column per training step (Figs. 8, 13).

    ``sources`` is a study folder, a run folder or model files; ``steps`` is 'all', 'last', an
    int or a list; ``params`` maps a layer to its own :func:`analyze_cloud` settings (e.g.
    ``{"conv2": {"k": 15, "p": 0.5, "resolution": 70, "gain": 2}}``); other keyword arguments
    apply to every cell. ``progress`` receives a :class:`~convlens.progress.Progress` event
    ``("cells", done, cells)`` after each cell, naming it in ``info["cell"]``.
    """
    layer_list = [layers] if isinstance(layers, str) else list(layers)
    clouds = {layer: filter_cloud(sources, layer, step=steps, arch=arch) for layer in layer_list}
    step_values = sorted({int(s) for c in clouds.values() for s in c.step})
    cols = [("final" if s < 0 else f"step {s}") for s in step_values]
    cells = {}
    total, done = len(layer_list) * len(step_values), 0
    for layer, cloud in clouds.items():
        for s, col in zip(step_values, cols):
            sub = cloud.subset(cloud.step == s)
            kw = {**kwargs, **((params or {}).get(layer) or {})}
            cells[(layer, col)] = analyze_cloud(sub, label=f"{layer} {col}", **kw)
            done += 1
            notify(progress, "cells", done, total, cell=f"{layer} {col}")
    return TopologyGrid(layer_list, cols, cells, title=str(sources) if isinstance(sources, (str, Path)) else "")


def analyze_layers(model, layers: Sequence[str] | None = None, *, params: dict | None = None,
                   progress: Callback | None = None, **kwargs) -> TopologyGrid:
    """Layer-by-layer analysis of one (pretrained) model, as the paper's VGG16 study (Fig. 14):
    one row, one column per convolution with spatial kernels (all by default). ``progress``
    receives a :class:`~convlens.progress.Progress` event ``("layers", done, layers)`` after each."""
    net = getattr(model, "net", model)
    layer_list = list(layers) if layers else conv_layers(net)
    if not layer_list:
        raise ValueError("this model has no convolution with spatial (larger than 1x1) kernels")
    name = getattr(model, "name", "model")
    cells = {}
    for j, layer in enumerate(layer_list):
        cloud = model_filters(model, layer)
        kw = {**kwargs, **((params or {}).get(layer) or {})}
        if kw.get("k") is not None and kw["k"] >= len(cloud):
            kw["k"] = max(1, len(cloud) // 4)
            log.info("layer %s has %d filters: k lowered to %d", layer, len(cloud), kw["k"])
        cells[(name, layer)] = analyze_cloud(cloud, label=f"{name} {layer}", **kw)
        notify(progress, "layers", j + 1, len(layer_list), layer=layer)
    return TopologyGrid([name], layer_list, cells, title=name)
