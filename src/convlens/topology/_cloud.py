"""Spatial-filter clouds (Gabrielsson & Carlsson, Sec. 1 and 5): every ``w x h`` slice of a
convolution kernel, one per (output channel, input channel) pair, mean-centred and scaled to unit
Euclidean norm, with its provenance (network, layer, channels, training step) kept beside it.

Sources may be one model, many model or checkpoint files, a training run folder
(``run/snapshots/step_NNNNNNN.pt``) or a study folder holding many runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.files import load_result, read_json, save_result
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

_CONST_TOL = 1e-6  # a filter whose centred norm is below this share of its raw norm is constant


@dataclass
class FilterCloud:
    """Normalised spatial filters with provenance; one row of ``points`` per filter.

    ``network[i]`` indexes ``sources``, ``layer[i]`` indexes ``layers``; ``step[i]`` is the
    training step of the snapshot (-1 when unknown).
    """

    points: np.ndarray  # (n, h*w) float32, mean-centred, unit norm
    shape: tuple[int, int]  # (h, w) of one spatial filter
    network: np.ndarray  # (n,) int32
    layer: np.ndarray  # (n,) int32
    out_channel: np.ndarray  # (n,) int32
    in_channel: np.ndarray  # (n,) int32
    step: np.ndarray  # (n,) int64
    sources: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    n_constant: int = 0  # constant filters dropped (they have no direction)

    def __len__(self) -> int:
        return len(self.points)

    def __repr__(self) -> str:
        return (f"FilterCloud({len(self)} filters of {self.shape[0]}x{self.shape[1]} from "
                f"{len(self.sources)} network(s), layers {self.layers}, {self.n_constant} constant dropped)")

    def subset(self, index: np.ndarray) -> FilterCloud:
        """The filters at ``index`` (an index array or a boolean mask), provenance kept."""
        idx = np.asarray(index)
        return FilterCloud(self.points[idx], self.shape, self.network[idx], self.layer[idx],
                           self.out_channel[idx], self.in_channel[idx], self.step[idx],
                           list(self.sources), list(self.layers), self.n_constant)

    def images(self) -> np.ndarray:
        """The filters as ``(n, h, w)`` arrays."""
        return self.points.reshape(len(self), *self.shape)

    def provenance(self, i: int) -> dict:
        return {"network": self.sources[self.network[i]], "layer": self.layers[self.layer[i]],
                "out_channel": int(self.out_channel[i]), "in_channel": int(self.in_channel[i]),
                "step": int(self.step[i])}

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "cloud", {k: getattr(self, k) for k in _CLOUD_ARRAYS},
                           {"shape": list(self.shape), "sources": self.sources, "layers": self.layers,
                            "n_constant": self.n_constant, "n": len(self)})

    @classmethod
    def load(cls, folder: str | Path) -> FilterCloud:
        z, meta = load_result(folder, "cloud")
        return cls(z["points"], tuple(meta["shape"]), *(z[k] for k in _CLOUD_ARRAYS[1:]),
                   meta["sources"], meta["layers"], meta["n_constant"])

    @classmethod
    def concat(cls, clouds: Sequence[FilterCloud]) -> FilterCloud:
        """One cloud from many (same filter shape); source and layer indices are remapped."""
        if not clouds:
            raise ValueError("concat needs at least one filter cloud")
        shapes = {c.shape for c in clouds}
        if len(shapes) > 1:
            raise ValueError(f"cannot pool filters of different sizes {sorted(shapes)}: pick layers "
                             "with the same kernel size")
        sources: list[str] = []
        layers: list[str] = []
        parts = {k: [] for k in ("points", "network", "layer", "out_channel", "in_channel", "step")}
        for c in clouds:
            smap = np.array([_index_of(sources, s) for s in c.sources] or [0], dtype=np.int32)
            lmap = np.array([_index_of(layers, s) for s in c.layers] or [0], dtype=np.int32)
            parts["points"].append(c.points)
            parts["network"].append(smap[c.network])
            parts["layer"].append(lmap[c.layer])
            for k in ("out_channel", "in_channel", "step"):
                parts[k].append(getattr(c, k))
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(cat["points"], clouds[0].shape, cat["network"], cat["layer"], cat["out_channel"],
                   cat["in_channel"], cat["step"], sources, layers, sum(c.n_constant for c in clouds))


_CLOUD_ARRAYS = ("points", "network", "layer", "out_channel", "in_channel", "step")


def _index_of(items: list[str], item: str) -> int:
    if item not in items:
        items.append(item)
    return items.index(item)


def normalize_filters(filters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-centre each row and scale it to unit norm (the paper's preprocessing).

    Returns ``(points, kept)``: ``kept`` is the boolean mask of rows that were not constant
    (a constant filter centres to zero and has no direction).
    """
    x = np.asarray(filters, dtype=np.float64)
    x = x.reshape(len(x), -1)
    raw = np.linalg.norm(x, axis=1)
    centred = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1)
    kept = (norm > _CONST_TOL * raw) & (norm > 0)
    points = centred[kept] / norm[kept, None]
    return points.astype(np.float32), kept


def spatial_filters(weight, *, name: str = "weight") -> tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray]:
    """Every ``h x w`` spatial filter of a convolution kernel ``(out, in, h, w)``.

    Returns ``(filters, (h, w), out_channel, in_channel)`` with filters raw (not normalised).
    """
    w = weight.detach().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight)
    if w.ndim != 4:
        raise ValueError(f"{name} has shape {tuple(w.shape)}; a 2-D convolution kernel is "
                         "(out_channels, in_channels, h, w): pick a Conv2d layer")
    o, i, h, wd = w.shape
    if h * wd < 2:
        raise ValueError(f"{name} has {h}x{wd} filters: 1x1 filters have no spatial structure; "
                         "pick a layer with kernels of at least 2 pixels (e.g. 3x3)")
    out_ch, in_ch = np.meshgrid(np.arange(o, dtype=np.int32), np.arange(i, dtype=np.int32), indexing="ij")
    return w.reshape(o * i, h * wd), (h, wd), out_ch.ravel(), in_ch.ravel()


def conv_layers(net) -> list[str]:
    """Names of the 2-D convolutions of ``net`` with spatial kernels (not 1x1)."""
    from torch import nn

    return [n for n, m in net.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] * m.kernel_size[1] > 1]


def layer_weight(net, layer: str):
    from torch import nn

    from convlens.probe import get_layer

    module = get_layer(net, layer)
    if not isinstance(module, nn.Conv2d):
        convs = conv_layers(net)
        raise ValueError(f"layer {layer!r} is a {type(module).__name__}, not a convolution; "
                         f"convolution layers: {', '.join(convs) or 'none'}")
    if module.kernel_size[0] * module.kernel_size[1] < 2:
        convs = conv_layers(net)
        shown = ", ".join(convs[:8]) + (f" ... ({len(convs)} in all)" if len(convs) > 8 else "")
        raise ValueError(f"layer {layer!r} has 1x1 filters: 1x1 filters have no spatial structure (no "
                         "edge, no orientation, no circle); pick a layer with kernels of at least 2 "
                         f"pixels: {shown or 'this network has none'}")
    return module.weight


def _state_weight(state: dict, layer: str, source: str):
    key = f"{layer}.weight"
    if key not in state or getattr(state[key], "ndim", 0) != 4:
        convs = [k[: -len(".weight")] for k, v in state.items()
                 if k.endswith(".weight") and getattr(v, "ndim", 0) == 4]
        what = "has no layer" if key not in state else "layer is not a convolution:"
        raise ValueError(f"{source} {what} {layer!r}; convolution layers: {', '.join(convs) or 'none'}")
    return state[key]


def _cloud_from_weight(weight, layer: str, source: str, step: int) -> FilterCloud:
    raw, shape, out_ch, in_ch = spatial_filters(weight, name=f"{source} layer {layer!r}")
    points, kept = normalize_filters(raw)
    n = int(kept.sum())
    return FilterCloud(points, shape, np.zeros(n, np.int32), np.zeros(n, np.int32), out_ch[kept],
                       in_ch[kept], np.full(n, step, np.int64), [source], [layer],
                       int((~kept).sum()))


def model_filters(model, layer: str, *, source: str | None = None, step: int = -1) -> FilterCloud:
    """The filter cloud of one convolution ``layer`` of a :class:`~convlens.model.Model` (or a
    bare ``nn.Module``)."""
    net = getattr(model, "net", model)
    name = source or getattr(model, "name", type(net).__name__)
    return _cloud_from_weight(layer_weight(net, layer), layer, name, step)


def _is_run(path: Path) -> bool:
    return (path / "snapshots").is_dir() or (path / "model.pt").is_file()


def _run_files(run: Path, step) -> list[tuple[Path, int]]:
    """(file, step) pairs of a training run for ``step``: None/'last' (final model, else the last
    snapshot), 'all' (every snapshot), an int or a list of ints."""
    from convlens.training import list_snapshots, snapshot_step

    snaps = [(s, snapshot_step(s)) for s in list_snapshots(run)]
    if step in (None, "last"):
        final = run / "model.pt"
        if final.is_file():
            card = read_json(final.with_suffix(".json")) if final.with_suffix(".json").is_file() else {}
            hist = ((card.get("train") or {}).get("history")) or []
            return [(final, int(hist[-1]["step"]) if hist else -1)]
        if not snaps:
            raise FileNotFoundError(f"{run} has neither model.pt nor snapshots")
        return [snaps[-1]]
    if step == "all":
        if not snaps:
            raise FileNotFoundError(f"{run} has no snapshots (train with --snapshot-every)")
        return snaps
    wanted = [int(step)] if isinstance(step, (int, np.integer)) else [int(s) for s in step]
    have = {s: p for p, s in snaps}
    missing = [s for s in wanted if s not in have]
    if missing:
        raise ValueError(f"{run} has no snapshot at step(s) {missing}; it has {sorted(have)}")
    return [(have[s], s) for s in wanted]


def expand_sources(sources, step=None) -> list[tuple[object, str, int]]:
    """Resolve models, files, run folders and study folders into ``(item, name, step)``."""
    if isinstance(sources, (str, Path)) or not isinstance(sources, Iterable):
        sources = [sources]
    out: list[tuple[object, str, int]] = []
    for src in sources:
        if not isinstance(src, (str, Path)):
            out.append((src, getattr(src, "name", type(src).__name__), -1))
            continue
        p = Path(src)
        if p.is_dir():
            runs = [p] if _is_run(p) else sorted(d for d in p.iterdir() if d.is_dir() and _is_run(d))
            if not runs:
                raise FileNotFoundError(f"{p} holds no training run (snapshots/ or model.pt) and no "
                                        "study of runs; give model files, a run folder or a study folder")
            for run in runs:
                for f, s in _run_files(run, step):
                    out.append((f, f"{run.name}" if f.name == "model.pt" else f"{run.name}@{s}", s))
        elif p.is_file() or not str(src).endswith((".pt", ".pth", ".safetensors", ".npz")):
            out.append((str(src), p.stem if p.is_file() else str(src), -1))
        else:
            raise FileNotFoundError(f"model file not found: {p}")
    return out


def _weight_of(item, layer: str, name: str, arch: str | None):
    """The kernel of ``layer`` from a model object or file; state dicts are read directly (fast),
    anything else goes through :func:`convlens.model.load_model`."""
    from convlens.model import load_model, read_state_dict

    if not isinstance(item, (str, Path)):
        return layer_weight(getattr(item, "net", item), layer)
    path = Path(item)
    if path.is_file() and path.suffix in (".pt", ".pth", ".safetensors", ".npz", ".bin", ".ckpt"):
        try:
            state = read_state_dict(path)
        except (ValueError, RuntimeError, TypeError) as e:
            log.debug("%s is not a plain state dict (%s); loading it as a model", path, e)
        else:
            if isinstance(state, dict):
                return _state_weight(state, layer, name)
    model = load_model(arch, weights=path, device="cpu") if arch else load_model(str(item), device="cpu")
    return layer_weight(model.net, layer)


def _card_arch(item) -> str | None:
    """The architecture recorded beside a run's model or snapshot file (None if unknown)."""
    if not isinstance(item, (str, Path)):
        return None
    card = Path(item).with_suffix(".json")
    try:
        return read_json(card).get("arch") if card.is_file() else None
    except (ValueError, OSError):
        return None


def _check_one_architecture(items) -> None:
    """Filters pooled over networks must come from one architecture: a 3x3 conv1 of M(64,0,64)
    and one of C(64,32,64) have the same shape but are not the same study."""
    archs: dict[str, list[str]] = {}
    for item, name, _ in items:
        a = _card_arch(item)
        if a is not None:
            archs.setdefault(a, []).append(name.split("@")[0])
    if len(archs) > 1:
        parts = "; ".join(f"{a}: {', '.join(sorted(set(n))[:3])}{' ...' if len(set(n)) > 3 else ''}"
                          for a, n in sorted(archs.items()))
        raise ValueError(f"the sources mix architectures ({parts}); pool filters of one architecture "
                         "at a time: give the run folders of one, or move the others to their own study folder")


def filter_cloud(sources, layers: str | Sequence[str], *, step=None, arch: str | None = None,
                 progress: Callback | None = None) -> FilterCloud:
    """Pool the spatial filters of ``layers`` over ``sources``.

    Parameters
    ----------
    sources : Model, path, or a list of them
        Models, model/checkpoint files, a training-run folder, or a study folder of runs.
    layers : str or list of str
        Convolution layer name(s); pooled layers must share the kernel size.
    step : None, 'last', 'all', int or list of int
        Which snapshots of run folders to use (None: the final model).
    arch : str, optional
        Architecture for bare state-dict files that are not convlens snapshots.
    progress : callable, optional
        Receives a :class:`~convlens.progress.Progress` event ``("sources", done, sources)``
        after each source.

    Examples
    --------
    >>> cloud = filter_cloud(load_model("lenet-digits"), "conv2")      # doctest: +SKIP
    >>> cloud = filter_cloud("runs/study", "conv1", step="all")        # doctest: +SKIP
    """
    layer_list = [layers] if isinstance(layers, str) else list(layers)
    if not layer_list:
        raise ValueError("name at least one convolution layer")
    items = expand_sources(sources, step)
    _check_one_architecture(items)
    clouds = []
    for j, (item, name, s) in enumerate(items):
        for layer in layer_list:
            clouds.append(_cloud_from_weight(_weight_of(item, layer, name, arch), layer, name, s))
        notify(progress, "sources", j + 1, len(items))
    return FilterCloud.concat(clouds)
