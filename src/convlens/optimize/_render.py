"""The one optimization loop: parametrize, transform, forward (hooks on the needed layers only),
loss per image, backward, callback, update, project."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.fast import autocast_to, fast
from convlens.optimize._param import Parametrization, to_param
from convlens.optimize._project import Compose as ComposeProjections
from convlens.optimize._relu import redirected_relus
from convlens.optimize._transforms import Compose as ComposeTransforms
from convlens.optimize.objectives import OUTPUT, Objective, ObjectiveContext
from convlens.probe import Capture, frozen

log = logging.getLogger(__name__)

Callback = Callable[[int, float, "RenderState"], "bool | torch.Tensor | None"]


@dataclass
class RenderState:
    """What a callback sees at one step, *before* the update of that step.

    ``losses``: the loss of each image ``(N,)``; ``image``: what the network saw (after
    transforms), ``raw``: the parametrized images; ``acts``: the captured activations
    (``acts[OUTPUT]`` the output, when an objective used it), all detached; ``done``: images
    already stopped; ``param``: the parametrization.
    """

    step: int
    losses: torch.Tensor
    image: torch.Tensor
    raw: torch.Tensor
    acts: dict[str, torch.Tensor]
    done: torch.Tensor
    param: Parametrization


@dataclass
class RenderResult:
    """The optimized images and how the optimization went.

    ``images``: ``(N, C, H, W)`` in display space; ``losses``: the objective of each final image
    without transforms; ``history``: the mean loss at each step; ``steps``: steps run;
    ``stopped_at``: the step at which a callback stopped each image (-1: ran to the end);
    ``interrupted``: stopped by ``KeyboardInterrupt`` (the images are the last ones);
    ``precision``: the dtype the network ran in during the optimization (``losses`` are always
    float32).
    """

    images: torch.Tensor
    losses: np.ndarray
    history: list[float] = field(default_factory=list)
    steps: int = 0
    stopped_at: np.ndarray | None = None
    interrupted: bool = False
    description: str = ""
    precision: str = "float32"

    def save(self, directory: str | Path) -> Path:
        from convlens.files import atomic_path, write_json

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        with atomic_path(d / "images.npz") as tmp:
            np.savez_compressed(tmp, images=self.images.cpu().numpy(), losses=self.losses,
                                stopped_at=self.stopped_at if self.stopped_at is not None else [])
        write_json(d / "render.json", {"history": self.history, "steps": self.steps,
                                       "interrupted": self.interrupted,
                                       "description": self.description,
                                       "precision": self.precision})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> RenderResult:
        from convlens.files import read_json

        d = Path(directory)
        with np.load(d / "images.npz") as z:
            images, losses, stopped = z["images"], z["losses"], z["stopped_at"]
        meta = read_json(d / "render.json")
        return cls(torch.from_numpy(images), losses, meta["history"], meta["steps"],
                   stopped if stopped.size else None, meta["interrupted"], meta["description"],
                   meta.get("precision", "float32"))


def _as_model(model):
    if hasattr(model, "net") and hasattr(model, "spec"):
        return model
    if isinstance(model, torch.nn.Module):
        from convlens.model import Model, _default_spec_for

        return Model(model, _default_spec_for(model), type(model).__name__)
    raise TypeError(f"model must be a convlens Model or a torch.nn.Module, got {type(model).__name__}")


class _Normalized:
    """``model(x)`` with the input spec's normalisation done as one channel mix plus a bias
    (:meth:`InputSpec.affine`, applied with ``baddbmm``), instead of a channel flip and four elementwise passes, each with its backward.
    The same map up to float rounding; only for a plain :class:`convlens.Model`, whose call is
    ``net(spec.normalize(x))``."""

    def __init__(self, model):
        self.model, self.net = model, model.net
        mix, bias = model.spec.affine()
        c = self.channels = model.spec.channels
        self.identity = bool((mix == torch.eye(c)).all() and (bias == 0).all())
        device = next(self.net.parameters(), torch.zeros(0)).device
        self.mix = mix.float().to(device)[None]
        self.bias = bias.float().to(device).view(1, c, 1)

    @staticmethod
    def applies(model) -> bool:
        from convlens.model import Model

        return isinstance(model, Model) and type(model).__call__ is Model.__call__

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            return self.model(x)  # the spec's own message for a wrong shape
        if self.identity:
            return self.net(x)
        n, c, h, w = x.shape
        z = torch.baddbmm(self.bias, self.mix.expand(n, c, c), x.reshape(n, c, h * w))
        return self.net(z.view(n, c, h, w))


def _forward(model, objective: Objective, cap: Capture | None, x: torch.Tensor,
             dtype: torch.dtype = torch.float32) -> dict:
    """Run the network on ``x`` (in ``dtype``: bfloat16 autocast or float32) and return the
    activations the objective needs, in float32. ``model`` is a convlens Model or the
    :class:`_Normalized` form of one."""
    with autocast_to(dtype, x.device):
        acts = _run(model, objective, cap, x)
    if dtype != torch.float32:
        acts = {k: v.float() if v.is_floating_point() else v for k, v in acts.items()}
    return acts


def _run(model, objective: Objective, cap: Capture | None, x: torch.Tensor) -> dict:
    if cap is None:
        out = model(x) if OUTPUT in objective.layers else None
        return {OUTPUT: out} if out is not None else {}
    if OUTPUT in objective.layers:
        cap.stop = False
        out = None

        def run(inp):
            nonlocal out
            out = model(inp)
            return out

        acts = cap.run(run, x)
        acts[OUTPUT] = out
        return acts
    return cap.run(model, x)


def evaluate(model, objective: Objective, images: torch.Tensor) -> torch.Tensor:
    """The objective's loss per image on ``images`` (no transforms, no gradient, float32)."""
    model = _as_model(model)
    layers = [name for name in objective.layers if name != OUTPUT]
    with frozen(model.net), fast(model.net), torch.no_grad():
        if layers:
            with Capture(model.net, layers, detach=True) as cap:
                acts = _forward(model, objective, cap, images)
        else:
            acts = _forward(model, objective, None, images)
        return objective(ObjectiveContext(acts, images, images)).detach()


def _batch_first(p: torch.Tensor, n: int) -> bool:
    return p.ndim >= 1 and p.shape[0] == n


def _normalize_grads(params: Sequence[torch.Tensor], n: int) -> None:
    """Divide each image's gradient by its root mean square (Lees' Keras recipe: the gradient
    "normalised by its L2 norm", ``g / (sqrt(mean(g^2)) + 1e-5)``)."""
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        if _batch_first(p, n):
            rms = g.pow(2).flatten(1).mean(1).sqrt().view(-1, *([1] * (g.ndim - 1)))
        else:
            rms = g.pow(2).mean().sqrt()
        g.div_(rms + 1e-5)


def _check_finite(params: Sequence[torch.Tensor], losses: torch.Tensor, step: int, desc: str) -> None:
    bad_loss = not torch.isfinite(losses).all()
    # one reduction per gradient: its sum is NaN or infinite when any element is
    bad_grad = any(p.grad is not None and not torch.isfinite(p.grad.sum()) for p in params)
    if bad_loss or bad_grad:
        what = "loss" if bad_loss else "gradient"
        raise FloatingPointError(
            f"NaN or infinity in the {what} at step {step} (objective {desc!r}). Lower the "
            "learning rate, turn on gradient normalisation, or check the objective (e.g. a root "
            "or log of a value that can reach zero)"
        )


def _make_optimizer(optimizer, params, lr):
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params)
    table = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if optimizer not in table:
        raise ValueError(f"optimizer must be 'adam', 'sgd' or a callable params -> Optimizer, got {optimizer!r}")
    if optimizer == "adam" and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params):
        # one fused kernel per step: 7x cheaper than the per-op Adam on a 128 px spectrum
        return torch.optim.Adam(params, lr=lr, fused=True)
    return table[optimizer](params, lr=lr)


def render(
    model,
    objective: Objective,
    param: Parametrization,
    *,
    steps: int = 256,
    lr: float = 0.05,
    optimizer: str | Callable = "adam",
    transforms: Callable | Sequence[Callable] | None = None,
    project: Callable | Sequence[Callable] | None = None,
    normalize_grad: bool = False,
    redirect_relu: bool = False,
    seed: int | torch.Generator = 0,
    callback: Callback | None = None,
    precision: str = "float32",
) -> RenderResult:
    """Optimize ``param`` so that the network's response minimizes ``objective``.

    Parameters
    ----------
    model : a :class:`convlens.Model` (or an ``nn.Module``); it takes display-space images. Its
        mode and parameters' ``requires_grad`` are restored afterwards.
    objective : an :class:`~convlens.optimize.objectives.Objective`, one loss per image
    param : a :class:`Parametrization` (or a ``(params, make_image)`` pair)
    steps : the most optimizer steps
    lr, optimizer : ``"adam"`` (default), ``"sgd"`` or a callable ``params -> Optimizer``
    transforms : callables ``(x, generator) -> x`` applied before each forward pass
    project : callables ``(param, step) -> None`` applied after each update (budgets, bounds,
        blur, clipping)
    normalize_grad : divide each image's gradient by its RMS before the update (Lees)
    redirect_relu : give the network's ``nn.ReLU`` modules Lucid's redirected gradients, so
        that a unit off everywhere on the starting image can still be raised (forward unchanged)
    seed : seeds the transforms' generator (or pass a ``torch.Generator``)
    callback : ``(step, loss, state) -> stop?`` called after the backward pass and before the
        update; return ``True`` to stop, or a bool tensor ``(N,)`` to stop those images (needs
        batch-first parameters; a stopped image keeps the state the callback saw)
    precision : ``"float32"`` (default), ``"bfloat16"`` or ``"auto"`` (bfloat16 where the
        hardware runs it natively; see :mod:`convlens.fast`): the dtype of the network's
        convolutions and matrix products during the optimization. The parametrization,
        transforms, objectives and the final :func:`evaluate` stay in float32. The network
        always runs with channels-last weights (same results as NCHW up to rounding).

    Returns
    -------
    RenderResult
    """
    model = _as_model(model)
    param = to_param(param)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective (see convlens.optimize.objectives), got "
                        f"{type(objective).__name__}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    tf = ComposeTransforms(transforms if isinstance(transforms, (list, tuple)) else
                           ([transforms] if transforms is not None else []))
    proj = ComposeProjections(project if isinstance(project, (list, tuple)) else
                              ([project] if project is not None else []))
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    params = param.parameters()
    n = param.batch_size
    opt = _make_optimizer(optimizer, params, lr)
    layers = [name for name in objective.layers if name != OUTPUT]
    try:
        call = _Normalized(model) if _Normalized.applies(model) else model
    except RuntimeError:  # mean/std that do not broadcast over the channels: the spec's own path
        call = model
    done = torch.zeros(n, dtype=torch.bool)
    stopped_at = np.full(n, -1, dtype=int)
    history: list[float] = []
    interrupted, step = False, 0
    with frozen(model.net), fast(model.net, precision, grad=True, autocast=False) as dtype, \
            (redirected_relus(model.net) if redirect_relu else nullcontext()):
        cap = Capture(model.net, layers, detach=False) if layers else None  # after the ReLU hooks
        try:
            if cap is not None:
                cap.__enter__()
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                raw = param.image()
                x = tf(raw, gen)
                acts = _forward(call, objective, cap, x, dtype)
                losses = objective(ObjectiveContext(acts, x, raw, step))
                losses.sum().backward()
                _check_finite(params, losses.detach(), step, objective.description)
                history.append(float(losses.detach()[~done].mean()) if (~done).any() else float("nan"))
                if callback is not None:
                    state = RenderState(step, losses.detach(), x.detach(), raw.detach(),
                                        {k: v.detach() for k, v in acts.items()}, done.clone(), param)
                    verdict = callback(step, history[-1], state)
                    if isinstance(verdict, torch.Tensor):
                        newly = verdict.to(torch.bool).cpu() & ~done
                        stopped_at[newly.cpu().numpy()] = step
                        done |= newly
                        if done.all():
                            break
                    elif verdict:
                        stopped_at[~done.cpu().numpy()] = step
                        break
                if normalize_grad:
                    _normalize_grads(params, n)
                _update(opt, params, done, n, step, proj, param)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("optimization interrupted at step %d; returning the current images", step)
        finally:
            if cap is not None:
                cap.__exit__(None, None, None)
        with torch.no_grad():
            images = param.image().detach().clamp(0, 1)
        # inside the block: the weights are channels-last already, evaluate converts nothing
        final = evaluate(model, objective, images) if n else torch.zeros(0)
    return RenderResult(images, final.cpu().numpy(), history, len(history), stopped_at,
                        interrupted, objective.description, str(dtype).removeprefix("torch."))


def _update(opt, params, done: torch.Tensor, n: int, step: int, proj, param) -> None:
    """Optimizer step and projections, then restore the stopped images."""
    if done.any():
        if not all(_batch_first(p, n) for p in params):
            raise ValueError("stopping single images needs batch-first parameters (first "
                             "dimension = batch size); return True to stop the whole run instead")
        keep = [p.detach()[done].clone() for p in params]
    opt.step()
    with torch.no_grad():
        proj(param, step)
        if done.any():  # after the projections too: a stopped image stays exactly as it was seen
            for p, k in zip(params, keep):
                p[done] = k
