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

from convlens.optimize._param import Parametrization, to_param
from convlens.optimize._project import Compose as ComposeProjections
from convlens.optimize._relu import redirected_relus
from convlens.optimize._transforms import Compose as ComposeTransforms
from convlens.optimize.objectives import OUTPUT, Objective, ObjectiveContext

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
        from convlens.files import save_result

        return save_result(directory, "render", {
            "images": self.images.cpu().numpy(), "losses": self.losses, "stopped_at": self.stopped_at}, {
            "history": self.history, "steps": self.steps, "interrupted": self.interrupted,
            "description": self.description, "precision": self.precision})

    @classmethod
    def load(cls, directory: str | Path) -> RenderResult:
        from convlens.files import load_result

        a, meta = load_result(directory, "render")
        if meta["format_version"] == 0:  # the arrays were in images.npz, an empty stopped_at for None
            with np.load(Path(directory) / "images.npz") as z:
                a = {k: z[k] for k in z.files if k != "stopped_at" or z[k].size}
        return cls(torch.from_numpy(a["images"]), a["losses"], meta["history"], meta["steps"],
                   a.get("stopped_at"), meta["interrupted"], meta["description"],
                   meta.get("precision", "float32"))


def _as_model(model):
    if hasattr(model, "net") and hasattr(model, "spec"):
        return model
    if isinstance(model, torch.nn.Module):
        from convlens.model import Model, _default_spec_for

        return Model(model, _default_spec_for(model), type(model).__name__)
    raise TypeError(f"model must be a convlens Model or a torch.nn.Module, got {type(model).__name__}")


def _runner(model, objective: Objective, *, grad: bool, precision: str = "float32", memory=None):
    """The :class:`convlens.runner.Runner` that gives ``objective`` its activations (the layers
    it reads, and the output when it reads that)."""
    from convlens.runner import Runner

    layers = [name for name in objective.layers if name != OUTPUT]
    return Runner(model, layers, output=OUTPUT in objective.layers, grad=grad, precision=precision,
                  memory=memory)


def _acts(run, objective: Objective, x: torch.Tensor) -> dict:
    """The activations ``objective`` needs on ``x`` (float32); nothing runs when it needs none."""
    if not objective.layers:
        return {}
    acts = run.step(x)
    return {k: v for k, v in acts.items() if k in objective.layers}


def objective_loss(model, objective: Objective, images: torch.Tensor, *, memory=None) -> torch.Tensor:
    """The objective's loss per image on ``images`` (no transforms, no gradient, float32),
    the network run in chunks that fit the memory budget."""
    model = _as_model(model)
    if not objective.layers:
        acts = {}
    else:
        acts = _runner(model, objective, grad=False, memory=memory).all(images)
    with torch.no_grad():
        return objective(ObjectiveContext(acts, images, images)).detach()


def evaluate(model, objective: Objective, images: torch.Tensor, *, memory=None) -> torch.Tensor:
    """Deprecated name of :func:`objective_loss`."""
    import warnings

    warnings.warn("convlens.optimize.evaluate is now objective_loss", DeprecationWarning, stacklevel=2)
    return objective_loss(model, objective, images, memory=memory)


def extra_bytes(param: Parametrization, image_shape: Sequence[int]) -> int:
    """Bytes per image an optimization holds besides the network's activations: the parameters
    with their gradients and two Adam moments, and the raw and transformed images with theirs."""
    n = max(1, param.batch_size)
    params = sum(p.numel() * p.element_size() for p in param.parameters()) / n
    image = 4 * int(np.prod(image_shape))
    return int(4 * params + 4 * image)


def images_per_render(model, objective: Objective, image_shape: Sequence[int], *, param_bytes: int | None = None,
                      precision: str = "float32", memory=None, limit: int | None = None, extra: int = 0) -> int:
    """How many images of ``image_shape`` (C, H, W) one :func:`render` of ``objective`` can
    optimize at once within the memory budget (the network's activations with gradients, plus
    ``param_bytes`` per image for the parametrization: default, a pixel grid, and ``extra``
    bytes per image for anything else the caller runs, such as a generator). Callers split
    larger requests (64 units, 1 000 classes) into chunks of this size.
    Raises :class:`convlens.runner.MemoryBudgetError` when not even one image fits."""
    model = _as_model(model)
    image = 4 * int(np.prod(image_shape))
    extra = 4 * (image if param_bytes is None else int(param_bytes)) + 4 * image + int(extra)
    return _runner(model, objective, grad=True, precision=precision, memory=memory).batch_size(
        tuple(image_shape), limit, extra=extra)


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
    memory: int | float | str | None = None,
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
        transforms, objectives and the final :func:`objective_loss` stay in float32. The network
        always runs with channels-last weights (same results as NCHW up to rounding).
    memory : the memory budget (:mod:`convlens.runner`; default: the current one): the batch
        must fit it with gradients, or this fails before the first step naming the need (see
        :func:`images_per_render` to chunk a larger request)

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
    run = _runner(model, objective, grad=True, precision=precision, memory=memory)
    if n and objective.layers:  # the whole batch must fit the budget: callers chunk larger requests
        with torch.no_grad():
            shape = tuple(tf(param.image(), torch.Generator().manual_seed(0)).shape[1:])
        fit = run.batch_size(shape, extra=extra_bytes(param, shape))
        if fit < n:
            from convlens.runner import MemoryBudgetError, format_bytes

            raise MemoryBudgetError(
                f"optimizing {n} images of shape {shape} at once does not fit the memory budget "
                f"{format_bytes(run.memory)} (at most {fit} do): split the request (the convlens.visualize "
                "functions chunk by themselves; convlens.optimize.images_per_render says how many fit) "
                "or raise --memory")
    done = torch.zeros(n, dtype=torch.bool)
    stopped_at = np.full(n, -1, dtype=int)
    history: list[float] = []
    interrupted, step = False, 0
    with (redirected_relus(model.net) if redirect_relu else nullcontext()), run:  # ReLUs first, hooks after
        try:
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                raw = param.image()
                x = tf(raw, gen)
                acts = _acts(run, objective, x)
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
    with torch.no_grad():
        images = param.image().detach().clamp(0, 1)
    final = objective_loss(model, objective, images, memory=run.memory) if n else torch.zeros(0)
    dtype = run.dtype
    return RenderResult(images, final.cpu().numpy(), history, len(history), stopped_at,
                        interrupted, objective.description, str(dtype).removeprefix("torch."))


def render_chunked(
    model,
    n: int,
    build: Callable[[int, int], tuple[Objective, Parametrization, Callable | Sequence[Callable] | None]],
    image_shape: Sequence[int],
    *,
    objective: Objective | None = None,
    limit: int | None = None,
    precision: str = "float32",
    memory: int | float | str | None = None,
    extra: int = 0,
    on_chunk: Callable[[int, int, RenderResult], None] | None = None,
    **render_kwargs,
) -> RenderResult:
    """:func:`render` of ``n`` independent images in chunks that fit the memory budget.

    ``build(start, stop)`` returns ``(objective, param, project)`` for images ``start:stop``;
    for the chunked result to equal one batch, ``param`` must draw each image from its own seed
    (:func:`convlens.optimize.image_seeds`) and the objective be one loss per image -- then each
    chunk runs with the same ``seed`` (transforms draw once per step for the whole batch).
    ``objective``: the one that sizes the chunks (default: ``build(0, 1)``'s; give the whole
    request's when the images' objectives reach different depths). ``limit``: the most images per
    chunk; ``extra``: bytes per image the parametrization costs beyond a pixel grid (a
    generator's activations). ``on_chunk(start, stop, result)`` after each chunk. The rest goes to :func:`render`.
    An interrupted chunk stops the run (``KeyboardInterrupt``) when chunks remain."""
    from convlens.runner import spans

    model = _as_model(model)
    size = images_per_render(model, objective if objective is not None else build(0, min(1, n))[0],
                             image_shape, precision=precision, memory=memory, limit=limit, extra=extra) if n else 1
    parts = []
    chunks = spans(n, size)
    for j, (a, b) in enumerate(chunks):
        obj, p, proj = build(a, b)
        r = render(model, obj, p, project=proj, precision=precision, memory=memory, **render_kwargs)
        parts.append(r)
        if on_chunk is not None:
            on_chunk(a, b, r)
        if r.interrupted and j + 1 < len(chunks):
            raise KeyboardInterrupt
    if len(parts) == 1:
        return parts[0]
    log.info("rendered %d images in %d chunks of at most %d (memory budget)", n, len(parts), size)
    return _merge(parts)


def _merge(parts: list[RenderResult]) -> RenderResult:
    steps = max(r.steps for r in parts)
    weights = [len(r.images) for r in parts]
    history = []
    for i in range(steps):
        have = [(w, r.history[i]) for w, r in zip(weights, parts) if i < len(r.history)]
        history.append(sum(w * h for w, h in have) / sum(w for w, _ in have))
    stopped = None if any(r.stopped_at is None for r in parts) else np.concatenate([r.stopped_at for r in parts])
    return RenderResult(torch.cat([r.images for r in parts]), np.concatenate([r.losses for r in parts]), history,
                        steps, stopped, any(r.interrupted for r in parts), parts[0].description,
                        parts[0].precision)


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
