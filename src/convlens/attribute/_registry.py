"""One registry of attribution methods: ``name -> method(model, x, targets, **options) -> maps``.

Every method takes checked images ``x`` ``(N, C, H, W)`` (display space, on the model's device),
one target per image (class indices, ``(N,)`` long tensor, or a :class:`convlens.Unit` for the
methods that take units) and returns maps ``(N, H, W)`` (float32 tensor, CPU): larger = more
important. :func:`attribute` is the public entry: it validates images, targets, layers and
options once, at the boundary, and times the call. The CLI, ``convlens compare``, the sanity
checks, the report and the tests all iterate over :data:`METHODS`, so a new method is one
:func:`register_method` call (the built-in ones register when ``convlens.attribute`` imports
their modules).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.attribute._checks import check_images, resolve_class
from convlens.probe import frozen


@dataclass(frozen=True)
class Method:
    """A registered attribution method.

    ``kind`` is ``gradient``, ``cam``, ``perturbation`` or ``baseline`` (model-independent
    references: random order, edge detector). ``units``: it explains units as well as classes.
    ``check_layer(model, layer) -> layer`` (methods that take a ``layer``): the default layer, or
    a ValueError saying why a layer will not do. ``passes(size, options) -> float``: forward-pass
    equivalents the method spends on one image of ``size`` (H, W) with ``options`` (its defaults
    filled in; a backward pass counts as two forward passes), the basis of the report's plans
    (:func:`forward_passes`)."""

    name: str
    fn: Callable
    kind: str
    summary: str
    units: bool = False
    check_layer: Callable | None = None
    passes: Callable | None = None

    @property
    def takes_layer(self) -> bool:
        return self.check_layer is not None

    def options(self) -> list[str]:
        return [p for p in list(inspect.signature(self.fn).parameters)[3:] if p != "layer"]


METHODS: dict[str, Method] = {}


def register_method(name: str, kind: str, summary: str, *, units: bool = False,
                    check_layer: Callable | None = None, passes: Callable | float | None = None) -> Callable:
    """Decorator: add ``fn(model, x, targets, **options)`` to :data:`METHODS` under ``name``
    (with ``check_layer``, ``fn`` takes ``layer=``). ``passes``: a number or
    ``passes(size, options)``, the forward-pass equivalents per image (default: one forward and
    one backward pass, 3, for gradient and CAM methods; 0 for baselines)."""
    if kind not in ("gradient", "cam", "perturbation", "baseline"):
        raise ValueError(f"kind must be gradient, cam, perturbation or baseline, got {kind!r}")

    def add(fn: Callable) -> Callable:
        cost = passes if callable(passes) or passes is None else (lambda size, options, n=float(passes): n)
        METHODS[name] = Method(name, fn, kind, summary, units, check_layer, cost)
        return fn

    return add


def get_method(name: str) -> Method:
    if name in METHODS:
        return METHODS[name]
    import difflib

    close = difflib.get_close_matches(name, list(METHODS), n=3, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise ValueError(f"unknown attribution method {name!r}.{hint} Methods: {', '.join(METHODS)}")


def method_names(kind: str | None = None) -> list[str]:
    return [n for n, m in METHODS.items() if kind is None or m.kind == kind]


def forward_passes(name: str, size: tuple[int, int], options: dict | None = None) -> float:
    """Forward-pass equivalents method ``name`` spends on one image of ``size`` (H, W) with
    ``options`` (the rest at their defaults): what the report plans its time from. CAM methods
    count one more pass, the layer check of :func:`attribute`."""
    m = get_method(name)
    params = list(inspect.signature(m.fn).parameters.values())[3:]
    full = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    full.update(options or {})
    if m.passes is not None:
        n = float(m.passes(tuple(size), full))
    else:
        n = 0.0 if m.kind == "baseline" else 3.0
    return n + (1.0 if m.takes_layer else 0.0)


@dataclass
class Attribution:
    """Maps ``(N, H, W)`` of ``method`` for ``targets`` (one per image), with the options used
    and the seconds the call took."""

    method: str
    maps: np.ndarray
    targets: np.ndarray
    layer: str | None = None
    seconds: float = 0.0
    options: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        from convlens.files import save_result

        return save_result(folder, "attribution", {"maps": self.maps, "targets": self.targets},
                           {"method": self.method, "layer": self.layer, "seconds": self.seconds,
                            "options": self.options})

    @classmethod
    def load(cls, folder: str | Path) -> Attribution:
        from convlens.files import load_result

        a, i = load_result(folder, "attribution")
        return cls(i["method"], a["maps"], a["targets"], i["layer"], i["seconds"], i["options"])


def predicted(model, x: torch.Tensor) -> torch.Tensor:
    """Each image's predicted class ``(N,)``."""
    with frozen(model.net), torch.no_grad():
        return model(x).argmax(1)


def resolve_targets(model, x: torch.Tensor, target) -> torch.Tensor:
    """One class index per image: ``None`` (predicted), a class (index or name) for all, or one
    per image."""
    if target is None:
        return predicted(model, x).cpu()
    if isinstance(target, (int, np.integer, str)):
        return torch.full((len(x),), resolve_class(model, target), dtype=torch.long)
    t = [resolve_class(model, int(c) if isinstance(c, (np.integer, torch.Tensor)) else c) for c in target]
    if len(t) != len(x):
        raise ValueError(f"{len(t)} targets for {len(x)} images: give one class, or one per image")
    return torch.as_tensor(t, dtype=torch.long)


def attribute(model, images, target=None, *, method: str = "gradcam", layer: str | None = None,
              **options) -> Attribution:
    """Attribution maps of ``method`` (a name in :data:`METHODS`) for ``target``.

    Parameters
    ----------
    model : a :class:`convlens.Model`
    images : ``(N, C, H, W)`` or ``(C, H, W)`` display-space images of the model's size
    target : a class (index or name) for every image, one per image, or ``None`` (the predicted
        class); a unit ``"layer:index"`` for methods registered with ``units=True``
    layer : for CAM methods, the layer (default: the deepest layer with spatial maps)
    options : the method's own keywords (``Method.options()``)

    Returns
    -------
    Attribution
    """
    m = get_method(method)
    x = check_images(model, images)
    bad = sorted(set(options) - set(m.options()))
    if bad:
        raise TypeError(f"method {method!r} takes no option {bad[0]!r}; it takes: {', '.join(m.options()) or 'none'}")
    if layer is not None and not m.takes_layer:
        raise ValueError(f"method {method!r} takes no layer (only the CAM methods: {', '.join(method_names('cam'))})")
    if isinstance(target, str) and ":" in target:
        if not m.units:
            raise ValueError(f"method {method!r} explains classes, not units; give a class index or name")
        from convlens.attribute._checks import as_unit

        targets = as_unit(target)
        shown = np.array([str(targets)])
    else:
        targets = resolve_targets(model, x, target)
        shown = targets.cpu().numpy()
    if m.takes_layer:
        layer = m.check_layer(model, layer)
        options["layer"] = layer
    start = time.perf_counter()
    maps = m.fn(model, x, targets, **options)
    seconds = time.perf_counter() - start
    options.pop("layer", None)
    return Attribution(method, maps.detach().float().cpu().numpy(), shown, layer, seconds,
                       {k: v for k, v in options.items() if isinstance(v, (int, float, str, bool))})
