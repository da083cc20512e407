"""DGN-AM (Nguyen et al. 2016): activation maximization in the code space of a generator,
``max_c f(G(c)) - w ||c||^2`` -- the optimization engine with a code parametrization."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.generative._decoder import Decoder
from convlens.generative._generator import (
    check_generator,
    code_param,
    starting_codes,
)
from convlens.generative._neurons import make_constraint, neuron_values, validate_units
from convlens.optimize import objectives, render_chunked
from convlens.progress import Callback, notify
from convlens.runner import Runner, capture
from convlens.units import Unit, parse_unit


@dataclass
class Synthesis:
    """Images ``G(c)`` that maximize one neuron, one per start.

    ``images (n, C, H, W)`` in ``[0, 1]``; ``codes (n, *code)``; ``activations (n,)`` of the neuron
    on the final images; ``history``: mean loss per step; ``params``: how they were made.
    """

    unit: Unit
    images: np.ndarray
    codes: np.ndarray
    activations: np.ndarray
    history: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def save(self, folder: str | Path) -> Path:
        from convlens.files import save_result

        return save_result(folder, "dgn-am", {"images": self.images.astype(np.float32),
                                              "codes": self.codes.astype(np.float32),
                                              "activations": self.activations},
                           {"unit": str(self.unit), "history": self.history, "params": self.params})

    @classmethod
    def load(cls, folder: str | Path) -> Synthesis:
        from convlens.files import load_result

        a, info = load_result(folder, "dgn-am")
        return cls(parse_unit(info["unit"]), a["images"], a["codes"], a["activations"],
                   info["history"], info["params"])


def neuron(unit: Unit) -> objectives.Objective:
    """The neuron's activation, negated (as the engine minimizes); conv channels without a
    position are averaged over positions, as in the inverse-set constraints."""
    return objectives.custom(lambda ctx: -neuron_values(ctx.acts, [unit])[:, 0], [unit.layer],
                             f"neuron {unit}")


def code_l2(code: torch.Tensor) -> objectives.Objective:
    """``||c||^2`` per image for the code tensor ``code`` (Nguyen et al.'s small L2 prior)."""
    return objectives.custom(lambda ctx: code.pow(2).flatten(1).sum(1), [], "L2 of the code")


def _synthesize(model, generator, u: Unit, codes: torch.Tensor, weight: float, project, *, steps: int,
                progress: Callback | None = None, **render_kw):
    """The engine over the codes, in chunks that fit the memory budget (the generator's own
    activations counted per image); the codes were drawn for every start first, so the chunks
    start as one batch would. Returns the merged result, the final codes and the unit's values."""
    finals, acts, span, stopped = [], [], [0, 0], [False]

    def build(a, b):
        span[:] = [a, b]
        param, c = code_param(generator, codes[a:b])
        finals.append(c)
        return (neuron(u) + weight * code_l2(c) if weight else neuron(u)), param, project

    def on_step(step, loss, state):  # image-steps over all the chunks; once stopped, later chunks stop at once
        a, b = span
        stopped[0] = stopped[0] or notify(progress, "DGN-AM", a * steps + (step + 1) * (b - a), len(codes) * steps,
                                          loss=loss)
        return stopped[0]

    def chunk_done(a, b, r):
        acts.append(neuron_values(capture(model, r.images, [u.layer]), [u])[:, 0])

    with torch.no_grad():
        image_shape = tuple(generator(codes[:1]).shape[1:])
    g_bytes = Runner(generator.net if isinstance(generator, Decoder) else generator, grad=True).cost(
        tuple(codes.shape[1:]))[0]
    r = render_chunked(model, len(codes), build, image_shape, objective=neuron(u), extra=g_bytes,
                       on_chunk=chunk_done, steps=steps, callback=on_step, **render_kw)
    return r, torch.cat([c.detach() for c in finals]), torch.cat(acts)


def dgn_am(
    model,
    generator,
    unit: str | Unit,
    n: int = 1,
    *,
    steps: int = 200,
    lr: float = 0.05,
    weight: float = 1e-3,
    code_shape=None,
    init="images",
    box: bool = True,
    seed: int = 0,
    progress: Callback | None = None,
) -> Synthesis:
    """Maximize ``unit`` over the generator's codes from ``n`` random starts (in chunks that fit
    the memory budget, each start its own code: the results of one batch).

    Parameters
    ----------
    model : a :class:`convlens.Model`
    generator : a :class:`Decoder` (or an ``nn.Module`` with ``code_shape``)
    unit : ``"fc3:5"``, ``"conv2:3@4,4"``, or ``"conv2:3"`` (a channel's mean)
    n : starts (multi-start DGN-AM: ``n`` different random codes)
    steps, lr : engine steps and Adam's rate as a fraction of the codes' typical spread
    weight : the L2 penalty on the code, ``weight * ||c||^2``
    init : ``"images"``, ``"normal"`` or codes (see :func:`inverse_set`)
    box : clip the codes to the range of the decoder's training codes after each step (Nguyen
        et al. clip their fc6 codes likewise)
    seed : seeds the starting codes
    progress : receives a :class:`~convlens.progress.Progress` event ``("DGN-AM", image-steps done,
        n x steps)`` after every engine step, with the mean ``loss``; ``True`` stops there
    """
    u = make_constraint(unit, 0.0, 1.0).unit  # parse and check the address
    validate_units(model, [u])
    code_shape = check_generator(model, generator, code_shape)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if weight < 0:
        raise ValueError(f"weight (the L2 penalty on the code) must be >= 0, got {weight}")
    codes, scale, project = starting_codes(model, generator, n, init, code_shape, seed, box)
    r, final, acts = _synthesize(model, generator, u, codes, weight, project, steps=steps, lr=lr * scale,
                                 seed=seed, progress=progress)
    return Synthesis(u, r.images.cpu().numpy(), final.cpu().numpy(), acts.cpu().numpy(), r.history,
                     dict(n=n, steps=r.steps, lr=lr, weight=weight, box=box, seed=seed,
                          init=init if isinstance(init, str) else "given", code_scale=scale,
                          model=getattr(model, "name", "model"),
                          generator_layer=getattr(generator, "layer", None)))
