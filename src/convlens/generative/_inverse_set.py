"""Sampling the inverse set of neurons (Hada & Carreira-Perpiñán 2019): diverse images ``G(c)``
whose activations lie in ``[z1, z2]`` for every constrained neuron.

Two stages, both run by the optimization engine (:func:`convlens.optimize.render`) over the
generator's codes:

1. **Seeds** (their eqs. 7-8): ``K`` codes maximize their spread in the encoder space ``E``,
   ``sum_ij ||E(G(c_i)) - E(G(c_j))||^2``, under the activation constraints, by the
   bound-constrained augmented Lagrangian with slack variables ``s >= 0``: coordinate descent in
   ``s`` (closed form, ``s = max(0, c - lambda / mu)``, before every gradient step) and in ``C``
   (gradient steps, at most ``inner_steps`` per round), then ``lambda <- max(lambda - mu c, 0)``
   and ``mu <- a mu``; stop as soon as every seed is inside the range.
2. **Sampling** (their eqs. 9-10): from the seeds ``C0``, single gradient steps of the same
   Lagrangian with ``lambda*``, ``mu*`` frozen, plus the spread from the current ``C0``; after each
   step the codes inside the range are new samples and replace their rows of ``C0``; until ``n``.

Ranges on both sides
--------------------
Their eq. 7 writes the range as one inequality, ``z2 - f <= eps`` with ``eps = z2 - z1``, which
is ``f >= z1`` only: nothing keeps ``f <= z2``. Here each range gives two constraints of the
same form, ``c_lo = f - (z2 - eps0) >= 0`` (theirs) and its mirror ``c_hi = (z1 + eps0) - f >= 0``,
each with its own slack and multiplier; ``eps0 = margin * eps`` with ``margin = 1/2`` (their
``eps0 = eps / 2``), so both aim at the middle of the range and seeds sit well inside it, while a
sample is accepted anywhere in ``[z1, z2]``. Intersections (their eqs. 11-12) add the constraints
of every neuron, in one layer or in several.

Step length
-----------
Their sampling step is ``C' = C - beta dL/dC``. The size of that gradient scales with ``mu*``
and with the encoder's units, so here each code's gradient is divided by its root mean square
before the step (the engine's ``normalize_grad``) and ``beta = step_size * s_c``, with ``s_c``
the typical spread of the training codes: ``step_size`` is a fraction of that spread, the same
for any model. The seeding rounds use Adam (``lr = seed_lr * s_c``), which is scale-free.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.generative._generator import (
    check_generator,
    code_param,
    starting_codes,
)
from convlens.generative._neurons import (
    Constraint,
    Encoder,
    as_constraints,
    neuron_values,
    pairwise_sq_dists,
    validate_units,
)
from convlens.optimize import objectives, render
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)


class RangeNotReachedWarning(RuntimeWarning):
    """The sampler stopped at its step budget before the samples asked for were in range."""


@dataclass
class InverseSet:
    """Samples of an inverse set (or of an intersection of inverse sets).

    ``images (n, C, H, W)`` in ``[0, 1]``; ``codes (n, *code)``; ``activations (n, p)`` of the
    ``p`` constrained neurons; ``found_at (n,)``: the sampling step that produced each sample
    (``0``: a seed); ``seed_steps``/``seed_rounds``: gradient steps and augmented-Lagrangian
    rounds of the seeding; ``sample_steps``: gradient steps after seeding; ``complete``: ``n``
    samples were found within the budgets (else ``message`` says what stopped it);
    ``lam``/``mu``: ``lambda*`` (one column per bound: lower bounds of every neuron, then upper
    bounds) and ``mu*``; ``seconds``: ``{"seeding", "sampling"}`` wall time.
    """

    constraints: list[Constraint]
    images: np.ndarray
    codes: np.ndarray
    activations: np.ndarray
    found_at: np.ndarray
    seed_steps: int = 0
    seed_rounds: int = 0
    sample_steps: int = 0
    complete: bool = True
    message: str = ""
    lam: np.ndarray | None = None
    mu: float = 0.0
    seconds: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        what = " and ".join(map(str, self.constraints))
        return (f"InverseSet({what}: {len(self)} samples, {self.seed_steps} seeding steps, "
                f"{self.sample_steps} sampling steps{'' if self.complete else ', INCOMPLETE'})")

    def in_range(self) -> np.ndarray:
        """``(n,)`` whether every constrained activation of each sample is in its range."""
        lo = np.array([c.z1 for c in self.constraints])
        hi = np.array([c.z2 for c in self.constraints])
        return ((self.activations >= lo) & (self.activations <= hi)).all(1)

    def save(self, folder: str | Path) -> Path:
        from convlens.files import save_result

        info = {"constraints": [{"unit": str(c.unit), "z1": c.z1, "z2": c.z2} for c in self.constraints],
                "seed_steps": self.seed_steps, "seed_rounds": self.seed_rounds,
                "sample_steps": self.sample_steps, "complete": self.complete, "message": self.message,
                "mu": self.mu, "seconds": self.seconds, "params": self.params, "n": len(self)}
        arrays = {"images": self.images.astype(np.float32), "codes": self.codes.astype(np.float32),
                  "activations": self.activations, "found_at": self.found_at,
                  "lam": self.lam if self.lam is not None else np.zeros(0)}
        return save_result(folder, "inverse-set", arrays, info)

    @classmethod
    def load(cls, folder: str | Path) -> InverseSet:
        from convlens.files import load_result
        from convlens.generative._neurons import make_constraint

        a, info = load_result(folder, "inverse-set")
        cons = [make_constraint(c["unit"], c["z1"], c["z2"]) for c in info["constraints"]]
        return cls(cons, a["images"], a["codes"], a["activations"], a["found_at"], info["seed_steps"],
                   info["seed_rounds"], info["sample_steps"], info["complete"], info["message"],
                   a["lam"] if a["lam"].size else None, info["mu"], info["seconds"], info["params"])


class _Lagrangian:
    """Eqs. 8 and 10 as an engine objective: minus the spread in ``E`` plus the augmented
    Lagrangian terms of the constraints with their slack variables. Remembers the neuron values
    and ``E`` features of its last call (the sampler's acceptance step reads them)."""

    def __init__(self, constraints: list[Constraint], encoder: Encoder, shares_net: bool, k: int,
                 margin: float, mu: float):
        self.units = [c.unit for c in constraints]
        eps0 = torch.tensor([margin * c.eps for c in constraints])
        self.lo_target = torch.tensor([c.z2 for c in constraints]) - eps0  # their  z2 - eps0
        self.hi_target = torch.tensor([c.z1 for c in constraints]) + eps0  # mirror: z1 + eps0
        self.z1 = torch.tensor([c.z1 for c in constraints])
        self.z2 = torch.tensor([c.z2 for c in constraints])
        self.tol = 1e-5 * torch.maximum(self.z1.abs().maximum(self.z2.abs()), torch.ones(len(constraints)))
        self.encoder, self.shares_net = encoder, shares_net
        self.lam = torch.zeros(k, 2 * len(constraints))
        self.mu = float(mu)
        self.e0: torch.Tensor | None = None  # E(G(C0)) during sampling (eq. 10's second sum)
        self.last_f = self.last_e = None

    def residuals(self, f: torch.Tensor) -> torch.Tensor:
        """``(N, 2p)`` constraint values ``c(C)``, feasible when ``>= 0``."""
        return torch.cat([f - self.lo_target.to(f), self.hi_target.to(f) - f], 1)

    def feasible(self, f: torch.Tensor) -> torch.Tensor:
        """Inside ``[z1, z2]`` for every neuron (a hair inside, so that a recomputation on
        another batch size cannot round a sample out of its range)."""
        z1, z2, tol = self.z1.to(f), self.z2.to(f), self.tol.to(f)
        return ((f >= z1 + tol) & (f <= z2 - tol)).all(1)

    def update_multipliers(self, f: torch.Tensor, factor: float) -> None:
        """``lambda <- max(lambda - mu c, 0)``, then ``mu <- a mu`` (their sec. 3.4)."""
        self.lam = (self.lam.to(f) - self.mu * self.residuals(f.detach())).clamp_min(0)
        self.mu *= factor

    def objective(self) -> objectives.Objective:
        layers = {u.layer for u in self.units} | ({self.encoder.layer} if self.shares_net else set())

        def fn(ctx):
            f = neuron_values(ctx.acts, self.units)
            e = (ctx.acts[self.encoder.layer].flatten(1) if self.shares_net
                 else self.encoder(ctx.image, grad=True))
            self.last_f, self.last_e = f.detach(), e.detach()
            c = self.residuals(f)
            lam = self.lam.to(c)
            s = (c.detach() - lam / self.mu).clamp_min(0)  # argmin over s >= 0, in closed form
            r = c - s
            penalty = -(lam * r).sum(1) + 0.5 * self.mu * r.pow(2).sum(1)
            spread = pairwise_sq_dists(e, e).sum(1)
            if self.e0 is not None:
                spread = spread + pairwise_sq_dists(e, self.e0.to(e)).sum(1)
            return penalty - spread

        return objectives.custom(fn, layers, "inverse-set augmented Lagrangian")


def inverse_set(model, generator, constraints, n: int = 500, *, k: int = 10, encoder: Encoder | str | None = None,
                code_shape=None, init="images", margin: float = 0.5, mu0: float = 10.0, mu_factor: float = 10.0,
                inner_steps: int = 100, max_rounds: int = 8, seed_lr: float = 0.05, step_size: float = 0.05,
                max_steps: int | None = None, box: bool = True, seed: int = 0,
                progress: Callback | None = None) -> InverseSet:
    """Sample ``n`` images in the inverse set of one neuron, or in the intersection of several.

    Parameters
    ----------
    model : a :class:`convlens.Model`
    generator : ``G``: a :class:`Decoder` (``train_decoder``) or an ``nn.Module`` with
        ``code_shape``; its images must fit the model's input
    constraints : ``("fc3:5", z1, z2)``, a :class:`Constraint`, or a list (an intersection; the
        neurons may be in different layers)
    n : samples wanted, the ``k`` seeds included
    k : seeds, and codes moved at each sampling step (their ``K``)
    encoder : ``E`` (an :class:`Encoder` or a layer name of ``model``); default the decoder's
        own layer of ``model`` (as in the paper, where ``G`` inverts ``E``'s output)
    init : ``"images"`` (random images through the model, their choice), ``"normal"``, or codes
    margin : ``eps0 = margin * (z2 - z1)`` (their ``eps0 = eps / 2``)
    mu0, mu_factor : the penalty's start and its factor per round (their 10 and 10)
    inner_steps, max_rounds : gradient steps per round (their 100) and the rounds allowed
    seed_lr, step_size : Adam's rate in the seeding and ``beta`` in the sampling, both as a
        fraction of the codes' typical spread (see the module notes)
    max_steps : sampling step budget (default ``20 * ceil((n - k) / k) + 50``)
    box : keep codes inside the range of the decoder's training codes (a projection)
    seed : seeds the starting codes
    progress : receives :class:`~convlens.progress.Progress` events ``("inverse set: seeds",
        gradient steps, inner_steps x max_rounds)`` while seeding (which ends as soon as every
        seed is in range), then ``("inverse set: samples", samples found, n)`` with the ``step``;
        ``True`` stops there and returns what was found

    Returns
    -------
    InverseSet : when a budget runs out first, it holds what was found, ``complete`` is False,
    ``message`` says so, and a :class:`RangeNotReachedWarning` is issued.
    """
    cons = as_constraints(constraints)
    validate_units(model, [c.unit for c in cons])
    code_shape = check_generator(model, generator, code_shape)
    _check_settings(n=n, k=k, inner_steps=inner_steps, max_rounds=max_rounds, margin=margin, mu0=mu0,
                    mu_factor=mu_factor)
    if max_steps is None:
        max_steps = 20 * -(-(n - k) // k) + 50
    enc = _resolve_encoder(model, generator, encoder)
    codes, scale, project = starting_codes(model, generator, k, init, code_shape, seed, box)
    al = _Lagrangian(cons, enc, enc.shares(model), k, margin, mu0)
    params = dict(n=n, k=k, margin=margin, mu0=mu0, mu_factor=mu_factor, inner_steps=inner_steps,
                  max_rounds=max_rounds, seed_lr=seed_lr, step_size=step_size, max_steps=max_steps,
                  box=box, seed=seed, code_scale=scale, encoder=enc.layer,
                  init=init if isinstance(init, str) else "given", model=getattr(model, "name", "model"),
                  generator_layer=getattr(generator, "layer", None))
    return _seed_then_sample(model, generator, cons, al, codes, project, params, progress)


def _seed_then_sample(model, generator, cons, al: _Lagrangian, codes, project, params: dict,
                      progress: Callback | None) -> InverseSet:
    """The two stages from the starting ``codes``: the ``k`` seeds (eq. 8), then the samples
    (eqs. 9-10), each timed; a stage that runs out of budget ends the work with what it found."""
    n, k, scale = params["n"], params["k"], params["code_scale"]
    asked = [False]

    def relay(p) -> bool:  # a stop asked while seeding skips the sampling too
        asked[0] = asked[0] or bool(progress(p))
        return asked[0]

    t0 = time.perf_counter()
    codes, images, f, seed_steps, rounds = _seed(model, generator, al, codes, scale * params["seed_lr"],
                                                 params["inner_steps"], params["max_rounds"], params["mu_factor"],
                                                 project, relay if progress is not None else None)
    t_seed = time.perf_counter() - t0
    ok = al.feasible(f)
    if asked[0] or not bool(ok.all()):
        msg = (f"seeding stopped after {rounds} rounds ({seed_steps} gradient steps) with "
               f"{int(ok.sum())} of {k} seeds in range for {' and '.join(map(str, cons))}; "
               "returning those. " + ("(Stopped by the progress callback.)" if asked[0] else
                                      "Try a range the neuron reaches on real images, more rounds "
                                      "(max_rounds / --rounds), or another generator"))
        return _finish(cons, al, [(codes[ok], images[ok], f[ok], 0)], seed_steps, rounds, 0, msg,
                       {"seeding": t_seed, "sampling": 0.0}, params)
    found, sample_steps = _sample(model, generator, al, codes, images, f, n, scale * params["step_size"],
                                  params["max_steps"], project, progress)
    t_sample = time.perf_counter() - t0 - t_seed
    total = sum(len(b[0]) for b in found)
    msg = "" if total >= n else (
        f"the sampling stopped at its budget of {params['max_steps']} gradient steps with {total} of {n} "
        f"samples in range for {' and '.join(map(str, cons))}; returning those. Raise "
        "max_steps (--max-steps), or lower step_size so fewer steps leave the range")
    return _finish(cons, al, found, seed_steps, rounds, sample_steps, msg,
                   {"seeding": t_seed, "sampling": t_sample}, params, n)


def _check_settings(*, n, k, inner_steps, max_rounds, margin, mu0, mu_factor) -> None:
    """A ``ValueError`` naming the first bad setting of :func:`inverse_set`."""
    for name, v in (("n", n), ("k", k), ("inner_steps", inner_steps), ("max_rounds", max_rounds)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if k > n:
        raise ValueError(f"k (seeds, {k}) cannot exceed n (samples, {n})")
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1] (eps0 = margin * (z2 - z1)), got {margin}")
    if mu0 <= 0 or mu_factor <= 1:
        raise ValueError(f"need mu0 > 0 and mu_factor > 1, got {mu0} and {mu_factor}")


def _resolve_encoder(model, generator, encoder) -> Encoder:
    if isinstance(encoder, Encoder):
        return encoder
    if isinstance(encoder, str):
        return Encoder(model, encoder)
    if encoder is None and hasattr(generator, "layer"):
        return Encoder(model, generator.layer)
    raise TypeError("give encoder= (an Encoder or a layer name of the model): E measures the "
                    "distance between samples")


def _seed(model, generator, al: _Lagrangian, codes, lr, inner_steps, max_rounds, factor, project,
          progress: Callback | None):
    """Eq. 8 by rounds of the engine; stops as soon as every seed is feasible. Returns the codes,
    their images and neuron values, the gradient steps taken and the rounds run."""
    steps, obj = 0, al.objective()
    for rnd in range(1, max_rounds + 1):
        param, c = code_param(generator, codes)
        asked = False

        def stop(step, loss, state, offset=steps, round_=rnd):
            nonlocal asked
            if bool(al.feasible(al.last_f).all()):
                return True
            asked = notify(progress, "inverse set: seeds", offset + step + 1, inner_steps * max_rounds,
                           round=round_)
            return asked

        r = render(model, obj, param, steps=inner_steps, lr=lr, optimizer="adam", project=project,
                   callback=stop)
        stopped = r.stopped_at is not None and int(r.stopped_at.max()) >= 0
        steps += int(r.stopped_at.max()) if stopped else r.steps
        codes = c.detach().clone()
        images, f = _evaluate(model, generator, al, codes)
        log.info("seeding round %d: %d steps, %d of %d feasible, mu=%g", rnd, steps,
                 int(al.feasible(f).sum()), len(codes), al.mu)
        if bool(al.feasible(f).all()) or asked:
            break
        al.update_multipliers(f, factor)
    return codes, images, f, steps, rnd


def _evaluate(model, generator, al: _Lagrangian, codes: torch.Tensor):
    from convlens.runner import capture

    with torch.no_grad():
        images = generator(codes)
        acts = capture(model, images, sorted({u.layer for u in al.units}))
    return images, neuron_values(acts, al.units)


def _sample(model, generator, al: _Lagrangian, seeds, images, f_seeds, n, beta, max_steps, project,
            progress: Callback | None):
    """Eqs. 9-10: single normalized gradient steps from the current codes; the feasible ones are
    new samples and replace their rows of ``C0``."""
    found = [(seeds.clone(), images, f_seeds.clone(), 0)]
    count = len(seeds)
    if count >= n:
        return found, 0
    param, c = code_param(generator, seeds)
    with torch.no_grad():
        al.e0 = al.encoder(images)
    taken = 0

    def accept(step, loss, state):
        nonlocal count, taken
        taken = step
        if step == 0:  # C = C0, the seeds themselves
            return False
        ok = al.feasible(al.last_f)
        if bool(ok.any()):
            codes = state.param.parameters()[0].detach()
            found.append((codes[ok].clone(), state.raw[ok].clone(), al.last_f[ok].clone(), step))
            al.e0[ok] = al.last_e[ok]
            count += int(ok.sum())
        if notify(progress, "inverse set: samples", min(count, n), n, step=step):
            return True
        return count >= n

    render(model, al.objective(), param, steps=max_steps + 1, lr=beta, optimizer="sgd",
           normalize_grad=True, project=project, callback=accept)
    return found, taken


def _finish(cons, al, found, seed_steps, rounds, sample_steps, message, seconds, params,
            n=None) -> InverseSet:
    codes = torch.cat([b[0] for b in found])
    images = torch.cat([b[1] for b in found])
    acts = torch.cat([b[2] for b in found])
    steps = np.concatenate([np.full(len(b[0]), b[3]) for b in found]).astype(np.int64)
    if n is not None:
        codes, images, acts, steps = codes[:n], images[:n], acts[:n], steps[:n]
    if message:
        log.warning(message)
        warnings.warn(message, RangeNotReachedWarning, stacklevel=4)
    return InverseSet(cons, images.cpu().numpy(), codes.cpu().numpy(), acts.cpu().numpy(), steps,
                      seed_steps, rounds, sample_steps, not message, message, al.lam.cpu().numpy(),
                      al.mu, {k: round(v, 3) for k, v in seconds.items()}, params)
