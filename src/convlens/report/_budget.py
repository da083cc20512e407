"""Budgets that fit the data: how many images, units, steps and samples a section may spend.

The defaults come from the dataset's size and one timed forward/backward pass of the model, so
a small network on small images uses every image while VGG16 at 224 px gets a sample.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

BUDGET_KEYS = ("images", "units", "steps", "samples", "seconds")


@dataclass(frozen=True)
class Budget:
    """What one section may spend.

    Attributes
    ----------
    images : int
        Images for passes over the dataset (embedding, top images, dissection).
    units : int
        Units per layer for per-unit work (activation maximization, inverse sets).
    steps : int
        Optimization steps per batch of units or images.
    samples : int
        Sample images for per-image analyses (attribution, adversarial examples).
    seconds : float
        The wall-clock time a section should aim for (a target, not a hard stop).
    forward_ms : float
        Measured forward time per image (ms), the basis of the defaults; 0 when not measured.
    """

    images: int = 1000
    units: int = 8
    steps: int = 64
    samples: int = 8
    seconds: float = 20.0
    forward_ms: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def updated(self, values: dict | None, where: str = "budget") -> Budget:
        """A copy with ``values`` (a subset of :data:`BUDGET_KEYS`) replaced, validated."""
        if not values:
            return self
        if not isinstance(values, dict):
            raise ValueError(f"{where} must be a mapping of {', '.join(BUDGET_KEYS)}; got {values!r}")
        unknown = sorted(set(values) - set(BUDGET_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown budget key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(BUDGET_KEYS)}")
        clean = {}
        for k, v in values.items():
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            if not ok or (k != "seconds" and int(v) != v):
                kind = "a positive number" if k == "seconds" else "a positive integer"
                raise ValueError(f"{where}.{k} must be {kind}; got {v!r}")
            clean[k] = float(v) if k == "seconds" else int(v)
        return replace(self, **clean)


def _clamp(v: float, lo: int, hi: int) -> int:
    return int(max(lo, min(hi, v)))


def time_forward(model, batch: int = 8, repeats: int = 2) -> tuple[float, float]:
    """Seconds per image for a forward pass and for a forward+backward pass on the model's
    example input: best of ``repeats`` after one warm-up pass; a slow model (over 0.1 s for
    one image) is timed once on one image."""
    import torch

    from convlens.probe import frozen

    fwd, fb = float("inf"), float("inf")
    with frozen(model.net):
        one = model.example_input(1)
        with torch.no_grad():
            model(one)  # warm-up: lazy initialisation makes the first call slow
            t0 = time.perf_counter()
            model(one)
        if time.perf_counter() - t0 > 0.1:
            batch, repeats = 1, 1
        x = model.example_input(batch)
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                model(x)
            fwd = min(fwd, (time.perf_counter() - t0) / batch)
            xi = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            model(xi).float().sum().backward()
            fb = min(fb, (time.perf_counter() - t0) / batch)
    return fwd, fb


def fit_budget(model, dataset, seconds: float = 20.0) -> Budget:
    """Default budget for ``model`` on ``dataset``: a pass over ``images`` and an optimization
    of ``units`` x ``steps`` each take about ``seconds`` at the measured speed."""
    fwd, fb = time_forward(model)
    n = len(dataset)
    images = min(n, _clamp(seconds / max(fwd, 1e-6), 64, 5000))
    steps = 128 if fb < 2e-3 else 64 if fb < 2e-2 else 32
    units = _clamp(seconds / max(fb * steps, 1e-6), 2, 16)
    samples = min(n, _clamp(seconds / max(fb * 50, 1e-6), 2, 8))
    return Budget(images=images, units=units, steps=steps, samples=samples, seconds=float(seconds),
                  forward_ms=round(fwd * 1000, 4))


__all__ = ["BUDGET_KEYS", "Budget", "fit_budget", "time_forward"]
