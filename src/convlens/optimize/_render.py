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
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

StepHook = Callable[[int, float, "RenderState"], "bool | torch.Tensor | None"]


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
    ``halted``: stopped by the ``progress`` callback (likewise);
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
    halted: bool = False  # a progress callback asked to stop (not saved: it says how this run went)

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


def _check_request(objective, steps) -> None:
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective (see convlens.optimize.objectives), got "
                        f"{type(objective).__name__}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def _composed(parts, compose):
    return compose(parts if isinstance(parts, (list, tuple)) else ([parts] if parts is not None else []))


def _check_fits(run, param: Parametrization, tf) -> None:
    """Raise :class:`~convlens.runner.MemoryBudgetError` before the first step when the whole
    batch does not fit the memory budget with its gradients (callers chunk larger requests)."""
    n = param.batch_size
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


@dataclass
class _Loop:
    """The step loop of :func:`render`: its parts, and what it records (the loss history, the
    step at which each image stopped)."""

    param: Parametrization
    objective: Objective
    run: object
    tf: Callable
    proj: Callable
    opt: torch.optim.Optimizer
    gen: torch.Generator
    normalize_grad: bool
    callback: StepHook | None
    progress: Callback | None
    history: list[float] = field(default_factory=list)
    halted: bool = False

    def __post_init__(self):
        self.params = self.param.parameters()
        self.n = self.param.batch_size
        self.done = torch.zeros(self.n, dtype=torch.bool)
        self.stopped_at = np.full(self.n, -1, dtype=int)

    def steps(self, steps: int) -> None:
        """Run up to ``steps`` steps, until a callback or the progress callback stops them."""
        for step in range(steps):
            self.opt.zero_grad(set_to_none=True)
            raw = self.param.image()
            x = self.tf(raw, self.gen)
            acts = _acts(self.run, self.objective, x)
            losses = self.objective(ObjectiveContext(acts, x, raw, step))
            losses.sum().backward()
            _check_finite(self.params, losses.detach(), step, self.objective.description)
            live = ~self.done
            self.history.append(float(losses.detach()[live].mean()) if live.any() else float("nan"))
            if self.callback is not None and self._verdict(step, losses, x, raw, acts):
                return
            if notify(self.progress, "optimization", step + 1, steps, loss=self.history[-1]):
                self.halted = True
                return
            if self.normalize_grad:
                _normalize_grads(self.params, self.n)
            _update(self.opt, self.params, self.done, self.n, step, self.proj, self.param)

    def _verdict(self, step, losses, x, raw, acts) -> bool:
        """Ask the callback; record the images it stops. ``True``: stop the run."""
        state = RenderState(step, losses.detach(), x.detach(), raw.detach(),
                            {k: v.detach() for k, v in acts.items()}, self.done.clone(), self.param)
        verdict = self.callback(step, self.history[-1], state)
        if isinstance(verdict, torch.Tensor):
            newly = verdict.to(torch.bool).cpu() & ~self.done
            self.stopped_at[newly.cpu().numpy()] = step
            self.done |= newly
            return bool(self.done.all())
        if verdict:
            self.stopped_at[~self.done.cpu().numpy()] = step
        return bool(verdict)


def render(
    model, objective: Objective, param: Parametrization, *, steps: int = 256, lr: float = 0.05,
    optimizer: str | Callable = "adam", transforms: Callable | Sequence[Callable] | None = None,
    project: Callable | Sequence[Callable] | None = None, normalize_grad: bool = False,
    redirect_relu: bool = False, seed: int | torch.Generator = 0, callback: StepHook | None = None,
    progress: Callback | None = None, precision: str = "float32",
    memory: int | float | str | None = None,
) -> RenderResult:
    """Optimize ``param`` so that the network's response minimizes ``objective``.

    ``model``: a :class:`convlens.Model` (or an ``nn.Module``) taking display-space images; its
    mode and parameters' ``requires_grad`` are restored afterwards. ``objective``: an
    :class:`~convlens.optimize.objectives.Objective`, one loss per image. ``param``: a
    :class:`Parametrization` (or a ``(params, make_image)`` pair). ``steps``: the most optimizer
    steps; ``lr``, ``optimizer``: ``"adam"`` (default), ``"sgd"`` or ``params -> Optimizer``.
    ``transforms``: callables ``(x, generator) -> x`` before each forward pass, drawing from a
    generator seeded ``seed`` (or a ``torch.Generator``). ``project``: callables ``(param,
    step) -> None`` after each update (budgets, bounds, blur, clipping). ``normalize_grad``:
    each image's gradient divided by its RMS before the update (Lees). ``redirect_relu``:
    Lucid's redirected gradients through ``nn.ReLU`` modules, so that a unit off everywhere on
    the starting image can still be raised (forward unchanged).

    ``callback``: the step hook ``(step, loss, state: RenderState) -> stop?``, after the
    backward pass and before the update; ``True`` stops the run, a bool tensor ``(N,)`` stops
    those images (batch-first parameters; a stopped image keeps the state the hook saw).
    ``progress``: a :mod:`convlens.progress` callback, a :class:`~convlens.progress.Progress`
    event (task ``"optimization"``, ``done`` of ``steps``, the mean ``loss``) after each step;
    ``True`` stops the run there (the images as they are).

    ``precision``: ``"float32"`` (default), ``"bfloat16"`` or ``"auto"`` (bfloat16 where the
    hardware runs it natively, :mod:`convlens.fast`) for the network's convolutions and matrix
    products; the parametrization, transforms, objectives and the final :func:`objective_loss` stay in
    float32, and the network runs channels-last. ``memory``: the budget (:mod:`convlens.runner`)
    the batch must fit with gradients, or this fails before the first step naming the need
    (:func:`images_per_render` says how to chunk a larger request).
    """
    model, param = _as_model(model), to_param(param)
    _check_request(objective, steps)
    tf = _composed(transforms, ComposeTransforms)
    run = _runner(model, objective, grad=True, precision=precision, memory=memory)
    if param.batch_size and objective.layers:
        _check_fits(run, param, tf)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    loop = _Loop(param, objective, run, tf, _composed(project, ComposeProjections),
                 _make_optimizer(optimizer, param.parameters(), lr), gen, normalize_grad, callback, progress)
    interrupted = False
    with (redirected_relus(model.net) if redirect_relu else nullcontext()), run:  # ReLUs first, hooks after
        try:
            loop.steps(steps)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("optimization interrupted at step %d; returning the current images", len(loop.history))
    with torch.no_grad():
        images = param.image().detach().clamp(0, 1)
    final = objective_loss(model, objective, images, memory=run.memory) if param.batch_size else torch.zeros(0)
    return RenderResult(images, final.cpu().numpy(), loop.history, len(loop.history), loop.stopped_at,
                        interrupted, objective.description, str(run.dtype).removeprefix("torch."), loop.halted)


def render_chunked(
    model, n: int, build: Callable[[int, int], tuple[Objective, Parametrization, Callable | Sequence[Callable] | None]],
    image_shape: Sequence[int], *, objective: Objective | None = None, limit: int | None = None,
    precision: str = "float32", memory: int | float | str | None = None, extra: int = 0,
    on_chunk: Callable[[int, int, RenderResult], None] | None = None, steps: int = 256,
    progress: Callback | None = None, task: str = "optimization", **render_kwargs,
) -> RenderResult:
    """:func:`render` of ``n`` independent images in chunks that fit the memory budget.

    ``build(start, stop)`` returns ``(objective, param, project)`` for images ``start:stop``;
    for the chunked result to equal one batch, ``param`` must draw each image from its own seed
    (:func:`convlens.optimize.image_seeds`) and the objective be one loss per image -- then each
    chunk runs with the same ``seed`` (transforms draw once per step for the whole batch).
    ``objective``: the one that sizes the chunks (default: ``build(0, 1)``'s; give the whole
    request's when the images' objectives reach different depths). ``limit``: the most images per
    chunk; ``extra``: bytes per image the parametrization costs beyond a pixel grid (a
    generator's activations). ``on_chunk(start, stop, result)`` after each chunk.
    ``progress``: a :mod:`convlens.progress` callback, one event per step of ``task`` counted
    over all chunks (``steps`` times the number of chunks); ``True`` stops there (``halted``),
    and the chunks not yet run keep their starting images. The rest goes to :func:`render`.
    An interrupted chunk stops the run (``KeyboardInterrupt``) when chunks remain."""
    from convlens.runner import spans

    model = _as_model(model)
    size = images_per_render(model, objective if objective is not None else build(0, min(1, n))[0],
                             image_shape, precision=precision, memory=memory, limit=limit, extra=extra) if n else 1
    parts, chunks, stop = [], spans(n, size), []

    def chunk_progress(j):
        def step_done(e):
            if notify(progress, task, j * steps + e.done, steps * len(chunks), **e.info):
                stop.append(j)
                return True
            return False
        return step_done if progress is not None else None

    for j, (a, b) in enumerate(chunks):
        obj, p, proj = build(a, b)
        r = render(model, obj, p, project=proj, precision=precision, memory=memory,
                   steps=0 if stop else steps, progress=chunk_progress(j), **render_kwargs)
        r.halted = bool(stop)  # asked to stop in this chunk or an earlier one (these never moved)
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
                        parts[0].precision, any(r.halted for r in parts))


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
