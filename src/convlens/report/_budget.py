"""Budgets that fit the data: how many images, units, steps and samples a section may spend.

The defaults come from the dataset's size and the model's multiply-adds per image (counted, not
timed, so they do not depend on the machine's load), so a small network on small images uses
every image while VGG16 at 224 px gets a sample.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace

log = logging.getLogger(__name__)

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
        Estimated forward time per image (ms) at the nominal speed, the basis of the defaults;
        0 when not estimated.
    """

    images: int = 1000
    units: int = 8
    steps: int = 64
    samples: int = 8
    seconds: float = 20.0
    forward_ms: float = 0.0

    @property
    def forward_s(self) -> float:
        """Planned seconds of one forward pass on one image (a backward pass: twice that)."""
        return max(self.forward_ms, 1e-3) / 1000

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


# Multiply-adds per second assumed for one CPU core on small batches. Measured with one torch
# thread (process CPU time, float32): SqueezeNet 1.1 at 227 px 1.1-1.4e10 forward (28-35 ms per
# image for 391 M multiply-adds), forward + backward 2.6-2.8x the forward; LeNet ~6e9, VGG16
# ~4e10 (big layers run faster). Plans from it are honest for ImageNet-sized networks and
# pessimistic for tiny ones, whose budgets the clamps below decide anyway.
NOMINAL_MACS_PER_SECOND = 1e10


def count_macs(model) -> int:
    """Multiply-adds of one forward pass on one image of the model's input size: convolutions
    and linear layers exactly, every other leaf module one operation per output value.
    ``model`` may also be a pair ``(module, example input of batch 1)`` (a decoder and a code).
    Deterministic, unlike a timing, so budgets (and the caches keyed on them) do not change
    with the machine's load."""
    import torch
    from torch import nn

    from convlens.probe import frozen, hooks

    total = [0]

    def rec(module, args, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            return
        n = out.numel() // max(1, out.shape[0])
        if isinstance(module, nn.modules.conv._ConvNd):
            k = int(torch.tensor(module.kernel_size).prod())
            total[0] += n * k * module.in_channels // module.groups
        elif isinstance(module, nn.Linear):
            total[0] += n * module.in_features
        else:
            total[0] += n

    net, run = (model[0], lambda: model[0](model[1])) if isinstance(model, tuple) else \
        (model.net, lambda: model(model.example_input(1)))
    leaves = [m for m in net.modules() if not list(m.children())]
    if isinstance(net, torch.jit.ScriptModule):
        leaves = []
    with frozen(net), hooks((m, "forward", rec) for m in leaves), torch.no_grad():
        run()
    return int(total[0])


def fit_count(seconds: float, cost: float, wanted: int, minimum: int = 1) -> int:
    """How many items costing ``cost`` seconds each fit in ``seconds``: at most ``wanted``, at
    least ``minimum`` (never more than ``wanted``). The planning step every section uses to scale
    images, units, steps or classes to its share of ``budget.seconds``."""
    fit = int(seconds / max(cost, 1e-12))
    return int(max(min(minimum, wanted), min(wanted, fit)))


PLAN_SLACK = 1.25  # a plan may overrun budget.seconds by this factor before it warns


def checked_plan(section: str, plan: dict, seconds: float, warn: bool = True) -> dict:
    """``plan`` with ``fits`` added: False, with a logged warning, when even its smallest useful
    sizes (the minimums of :func:`fit_count`) are planned to take more than
    :data:`PLAN_SLACK` x ``seconds``."""
    fits = plan["planned_seconds"] <= PLAN_SLACK * seconds
    if not fits and warn:
        log.warning("%s: the smallest useful plan takes about %.0f s at the nominal speed, more than "
                    "its budget of %.0f s; raise budget.seconds (report config: %s: {budget: {seconds: %d}})",
                    section, plan["planned_seconds"], seconds, section, int(plan["planned_seconds"] + 1))
    return {**plan, "fits": bool(fits)}


def fit_budget(model, dataset, seconds: float = 20.0) -> Budget:
    """Default budget for ``model`` on ``dataset``: a pass over ``images`` and an optimization
    of ``units`` x ``steps`` each take about ``seconds``, at the nominal speed of
    :data:`NOMINAL_MACS_PER_SECOND` for the model's multiply-adds (backward: twice forward)."""
    fwd = max(count_macs(model), 1) / NOMINAL_MACS_PER_SECOND
    fb = 3 * fwd
    n = len(dataset)
    images = min(n, _clamp(seconds / fwd, 64, 5000))
    steps = 128 if fb < 2e-3 else 64 if fb < 2e-2 else 32
    units = _clamp(seconds / (fb * steps), 2, 16)
    samples = min(n, _clamp(seconds / (fb * 50), 2, 8))
    return Budget(images=images, units=units, steps=steps, samples=samples, seconds=float(seconds),
                  forward_ms=round(fwd * 1000, 4))


__all__ = ["BUDGET_KEYS", "NOMINAL_MACS_PER_SECOND", "Budget", "checked_plan", "count_macs", "fit_budget", "fit_count"]
