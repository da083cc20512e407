"""Adversarial examples on the input-optimization engine (survey §7.2).

An attack is one run of :func:`convlens.optimize.render` over a :class:`~convlens.optimize.Perturbation`
``x0 + delta``: the objective is the cross-entropy to the target class (targeted) or minus the
cross-entropy to the true class (untargeted); the optimizer is steepest descent for the budget's
norm (the sign of the gradient for L-inf, the gradient over its L2 norm for L2); after every step
the engine projects ``delta`` onto the budget ball and ``x0 + delta`` onto ``[0, 1]``
(``LinfBall`` / ``L2Ball``); a callback stops each image as soon as it is misclassified as wanted.

- FGSM (Goodfellow et al. 2015, ``x + eps * sign(grad)``) is one step of size ``eps``; with
  ``norm="l2"`` it is the fast gradient method ``x + eps * grad / ||grad||_2``.
- PGD (Kurakin et al. 2016; Madry et al. 2018) is ``steps`` such steps of ``step_size``
  (default ``2.5 * eps / steps``), optionally from a uniform random start.

The engine projects in float32; :func:`enforce_budget` then makes the returned images satisfy
the budget exactly: ``||x_adv - x0|| <= eps`` computed in float64 on the stored float32 values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.attribute import check_images, resolve_class
from convlens.files import load_result, save_result
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)

NORMS = ("linf", "l2")
METHODS = ("pgd", "fgsm")
TARGET_RULES = ("random", "runner-up", "next", "least-likely")


class SteepestDescent:
    """Steepest descent under a norm, per image: ``p -= lr * sign(g)`` (L-inf) or
    ``p -= lr * g / ||g||_2`` (L2, the norm taken over each image). Parameters are batch-first.

    The render loop's optimizer protocol (``zero_grad``, ``step``); not a ``torch.optim``
    subclass, whose constructor imports TorchDynamo (seconds) for nothing here.
    """

    def __init__(self, params, lr: float, norm: str = "linf"):
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.params, self.lr, self.norm = list(params), float(lr), norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            g = p.grad
            if self.norm == "linf":
                p.add_(g.sign(), alpha=-self.lr)
            else:
                n = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
                p.sub_(self.lr * g / n)


# -- the exact budget ----------------------------------------------------------------------------
def perturbation_norms(x0: np.ndarray | torch.Tensor, adv: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(linf, l2)`` of ``adv - x0`` per image, computed in float64."""
    d = np.asarray(adv, dtype=np.float64) - np.asarray(x0, dtype=np.float64)
    d = d.reshape(len(d), -1)
    return np.abs(d).max(1) if d.size else np.zeros(len(d)), np.sqrt((d * d).sum(1))


def _round_inward(bound: torch.Tensor, up: bool) -> torch.Tensor:
    """float64 bounds -> float32 values inside them (rounded up for a lower bound)."""
    b32 = bound.float()
    if up:
        return torch.where(b32.double() < bound, torch.nextafter(b32, torch.full_like(b32, np.inf)), b32)
    return torch.where(b32.double() > bound, torch.nextafter(b32, torch.full_like(b32, -np.inf)), b32)


def enforce_budget(x0: torch.Tensor, adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Return float32 images within ``eps`` of ``x0`` (in ``norm``, measured in float64) and
    inside ``[0, 1]``: the exact version of the engine's float32 projection."""
    x0, adv = x0.detach().cpu().float(), adv.detach().cpu().float()
    if norm == "linf":
        lo = _round_inward((x0.double() - eps).clamp(0, 1), up=True)
        hi = _round_inward((x0.double() + eps).clamp(0, 1), up=False)
        return torch.minimum(torch.maximum(adv, lo), hi)
    out = adv.clone()
    for i in range(len(x0)):
        scale = 1.0
        for _ in range(60):
            d = out[i].double() - x0[i].double()
            n = float(d.norm())
            if n <= eps:
                break
            scale = min(scale, eps / n) * (1 - 1e-7)
            out[i] = (x0[i].double() + (adv[i].double() - x0[i].double()) * scale).clamp(0, 1).float()
    return out


# -- results ------------------------------------------------------------------------------------
_ARRAYS = ("clean", "adversarial", "labels", "targets", "pred_before", "pred_after", "conf_before",
           "conf_after", "target_prob_before", "target_prob_after", "label_prob_after", "steps_used",
           "linf", "l2")


@dataclass
class AttackResult:
    """Clean images, their adversarial twins and what the attack did to the decision.

    Arrays have one row per image: ``labels`` (-1: none), ``targets`` (-1: untargeted),
    ``pred_before``/``pred_after`` (the model's class), ``conf_before``/``conf_after`` (the
    softmax probability of that class), ``target_prob_*`` (of the target; NaN untargeted),
    ``label_prob_after`` (of the true class; NaN without labels), ``steps_used`` (steps until
    success, or the cap), ``linf``/``l2`` (the perturbation's size, float64). ``params`` holds
    the attack's settings; ``ids`` name the images.
    """

    clean: np.ndarray
    adversarial: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    pred_before: np.ndarray
    pred_after: np.ndarray
    conf_before: np.ndarray
    conf_after: np.ndarray
    target_prob_before: np.ndarray
    target_prob_after: np.ndarray
    label_prob_after: np.ndarray
    steps_used: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    ids: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clean)

    @property
    def targeted(self) -> bool:
        return bool(self.params.get("targeted"))

    @property
    def perturbation(self) -> np.ndarray:
        return self.adversarial.astype(np.float64) - self.clean.astype(np.float64)

    @property
    def attempted(self) -> np.ndarray:
        """Images the success rate counts: all for targeted attacks; for untargeted attacks
        those the model classified correctly before (all when there are no labels)."""
        if self.targeted or not (self.labels >= 0).any():
            return np.ones(len(self), dtype=bool)
        return self.pred_before == self.labels

    @property
    def success(self) -> np.ndarray:
        if self.targeted:
            return self.pred_after == self.targets
        ref = np.where(self.labels >= 0, self.labels, self.pred_before)
        return self.pred_after != ref

    @property
    def success_rate(self) -> float:
        a = self.attempted
        return float(self.success[a].mean()) if a.any() else float("nan")

    def summary(self) -> dict:
        """Success rate, perturbation sizes and confidences over the attempted images."""
        a, s = self.attempted, self.success & self.attempted

        def med(v, mask):
            v = v[mask & np.isfinite(v)]
            return float(np.median(v)) if len(v) else None

        return {
            "images": len(self), "attempted": int(a.sum()), "succeeded": int(s.sum()),
            "success_rate": self.success_rate, "method": self.params.get("method"),
            "norm": self.params.get("norm"), "eps": self.params.get("eps"),
            "targeted": self.targeted, "steps": self.params.get("steps"),
            "median_steps_to_success": med(self.steps_used.astype(float), s),
            "max_linf": float(self.linf.max()) if len(self) else None,
            "max_l2": float(self.l2.max()) if len(self) else None,
            "median_linf": med(self.linf, a), "median_l2": med(self.l2, a),
            "median_conf_before": med(self.conf_before, a), "median_conf_after": med(self.conf_after, a),
            "median_target_prob_before": med(self.target_prob_before, a),
            "median_target_prob_after": med(self.target_prob_after, a),
            "skipped": self.params.get("skipped", 0),
        }

    def subset(self, mask_or_index) -> AttackResult:
        idx = np.arange(len(self))[mask_or_index]
        return AttackResult(**{k: getattr(self, k)[idx] for k in _ARRAYS},
                            ids=[self.ids[i] for i in idx] if self.ids else [], params=dict(self.params))

    @classmethod
    def concat(cls, parts: Sequence[AttackResult], params: dict | None = None) -> AttackResult:
        if not parts:
            raise ValueError("nothing to concatenate: no images were attacked")
        return cls(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in _ARRAYS},
                   ids=[i for p in parts for i in p.ids], params=dict(params or parts[0].params))

    def save(self, folder: str | Path) -> Path:
        arrays = {k: getattr(self, k) for k in _ARRAYS}
        return save_result(folder, "attack", arrays, {"ids": self.ids, "params": self.params,
                                                      "summary": _finite(self.summary())})

    @classmethod
    def load(cls, folder: str | Path) -> AttackResult:
        a, info = load_result(folder, "attack")
        return cls(**{k: a[k] for k in _ARRAYS}, ids=info["ids"], params=info["params"])


def _finite(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


# -- checks ---------------------------------------------------------------------------------------
def check_attack_args(eps, norm: str, method: str, steps: int, step_size=None) -> None:
    """Fail with one clear message on a bad budget, norm, method, step cap or step size."""
    if norm not in NORMS:
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if method not in METHODS:
        raise ValueError(f"method must be 'pgd' or 'fgsm', got {method!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(
            f"the budget eps must be a number > 0 (the largest {norm} size of the perturbation, "
            f"in display-space units where pixels are in [0, 1]; e.g. 0.1 for L-inf), got {eps!r}"
        )
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")


def _probs(model, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax probabilities (CPU), at most ``batch_size`` images a pass, fewer when the memory
    budget (:mod:`convlens.runner`) allows fewer."""
    from convlens.runner import outputs

    return torch.softmax(outputs(model, x, limit=batch_size).flatten(1).float(), 1).cpu()


def resolve_targets(model, target, pred: np.ndarray, probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """One target class per image, or ``-1`` for untargeted attacks.

    ``target``: ``None`` (untargeted); a class index or name (every image); one per image;
    ``"random"`` (a seeded class other than the prediction); ``"runner-up"`` (the second most
    likely class: the nearest other decision region, the easiest target); ``"next"``
    (prediction + 1); ``"least-likely"`` (the class the model finds least likely, the hardest). Fails on a class out of range
    and on an image the model already puts in its target class.
    """
    n, k = len(pred), probs.shape[1]
    if target is None:
        return np.full(n, -1, dtype=np.int64)
    if isinstance(target, str) and target in TARGET_RULES:
        if k < 2:
            raise ValueError("a targeted attack needs a model with at least 2 classes")
        if target == "next":
            return ((pred + 1) % k).astype(np.int64)
        if target == "least-likely":
            return probs.argmin(1).astype(np.int64)
        if target == "runner-up":
            return np.argsort(-probs, axis=1, kind="stable")[:, 1].astype(np.int64)
        rng = np.random.default_rng(seed)
        return ((pred + rng.integers(1, k, size=n)) % k).astype(np.int64)
    if isinstance(target, (str, int, np.integer)):
        t = np.full(n, resolve_class(model, target), dtype=np.int64)
    else:
        t = np.array([resolve_class(model, v if isinstance(v, str) else int(v)) for v in target], dtype=np.int64)
        if len(t) != n:
            raise ValueError(f"got {len(t)} targets for {n} images: give one target, or one per image")
    if (t >= k).any():
        raise ValueError(f"class {int(t.max())} is out of range: the model has {k} outputs (0-{k - 1})")
    hit = np.flatnonzero(t == pred)
    if len(hit):
        i = int(hit[0])
        names = list(model.class_names)
        name = f" ({names[t[i]]!r})" if t[i] < len(names) else ""
        raise ValueError(
            f"image {i} is already classified as the target class {int(t[i])}{name} "
            f"({len(hit)} of {n} images are): a targeted attack needs a target other than the "
            "prediction; choose another class, or target='random' / --target random, which never "
            "picks the predicted class"
        )
    return t


# -- the attack ---------------------------------------------------------------------------------
def attack(model, images, labels=None, *, eps: float, norm: str = "linf", target=None, method: str = "pgd",
           steps: int = 40, step_size: float | None = None, random_start: bool = False,
           stop_on_success: bool = True, seed: int = 0, ids: Sequence[str] | None = None,
           progress: Callback | None = None, memory: int | float | str | None = None) -> AttackResult:
    """Adversarial twins of ``images`` under an ``eps`` budget, on the optimization engine.

    Parameters
    ----------
    model : a :class:`convlens.Model` (display-space input)
    images : ``(N, C, H, W)`` floats in ``[0, 1]`` at the model's input size
    labels : true classes (untargeted attacks move away from them; default: the prediction)
    eps : the budget, ``||x_adv - x|| <= eps`` in ``norm`` (pixels in ``[0, 1]``), > 0
    norm : ``"linf"`` or ``"l2"``
    target : ``None`` (untargeted), a class (index or name), one per image, or ``"random"``,
        ``"runner-up"``, ``"next"``, ``"least-likely"`` (see :func:`resolve_targets`)
    method : ``"pgd"`` (``steps`` projected steps) or ``"fgsm"`` (one step of size ``eps``)
    steps, step_size : the step cap and the step length (default ``2.5 * eps / steps``)
    random_start : start PGD from a uniform point of the L-inf ball (Madry et al.)
    stop_on_success : stop each image once the attack succeeds (keeps the smallest number of steps)
    progress : receives a :class:`~convlens.progress.Progress` event ``("attack", image-steps done,
        images x steps)`` after every engine step, with the mean ``loss``; ``True`` stops the attack
        there (every image keeps its current perturbation)
    memory : the memory budget (:mod:`convlens.runner`; default: the current one); the images
        are attacked in chunks that fit it, with the results of one batch

    Returns
    -------
    AttackResult

    Examples
    --------
    >>> r = attack(load_model("lenet-digits"), x, y, eps=0.1, target="random")  # doctest: +SKIP
    >>> r.success_rate, r.linf.max() <= 0.1                                      # doctest: +SKIP
    """
    from convlens.runner import memory_budget

    check_attack_args(eps, norm, method, steps, step_size)
    x0, y = _check_inputs(model, images, labels)
    with memory_budget(memory):
        p0 = _probs(model, x0).cpu().numpy()
    targets = resolve_targets(model, target, p0.argmax(1), p0, seed)
    targeted = bool((targets >= 0).any())
    if method == "fgsm":
        steps, step_size, random_start = 1, float(eps), False
    step_size = float(step_size if step_size is not None else 2.5 * eps / steps)
    goal = torch.as_tensor(targets if targeted else np.where(y >= 0, y, p0.argmax(1)))
    r = _optimize(model, x0, goal, targeted, eps=eps, norm=norm, steps=steps, step_size=step_size,
                  random_start=random_start, stop_on_success=stop_on_success, seed=seed, memory=memory,
                  progress=progress)
    adv = enforce_budget(x0, r.images, eps, norm)
    with memory_budget(memory):
        p1 = _probs(model, adv).cpu().numpy()
    params = {"method": method, "norm": norm, "eps": float(eps), "steps": int(steps), "step_size": step_size,
              "random_start": bool(random_start), "targeted": targeted, "seed": int(seed),
              "stop_on_success": bool(stop_on_success), "model": getattr(model, "name", "model"),
              "engine": "convlens.optimize.render", "interrupted": bool(r.interrupted)}
    return _result(x0, adv, y, targets, p0, p1, r, ids, params)


def _check_inputs(model, images, labels) -> tuple[torch.Tensor, np.ndarray]:
    """The images (display space, checked) and one label per image (-1: none given)."""
    x0 = check_images(model, images).detach()
    if float(x0.min()) < 0 or float(x0.max()) > 1:
        raise ValueError("images must be in display space [0, 1]; convert them with "
                         "convlens.data.conform or model.spec.denormalize")
    y = np.full(len(x0), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(x0):
        raise ValueError(f"got {len(y)} labels for {len(x0)} images")
    return x0, y


def _optimize(model, x0: torch.Tensor, goal: torch.Tensor, targeted: bool, *, eps, norm, steps, step_size,
              random_start, stop_on_success, seed, memory, progress: Callback | None):
    """The attack on the engine: every image's perturbation optimized towards (targeted) or away
    from its ``goal`` class, in chunks that fit the memory budget; each image stops at its first
    success when ``stop_on_success``. Returns the engine's :class:`~convlens.optimize.RenderResult`."""
    from convlens.optimize import (
        L2Ball,
        LinfBall,
        Perturbation,
        image_seeds,
        objectives,
        render_chunked,
    )

    n = len(x0)
    start_eps = eps if norm == "linf" else eps / np.sqrt(x0[0].numel())
    budget = LinfBall(eps) if norm == "linf" else L2Ball(eps)
    span, stopped = [0, 0], [False]

    def build(a, b):  # images a:b, each started from its own seed
        span[:] = [a, b]
        g = goal[a:b]
        objective = objectives.class_log_prob(g) if targeted else -objectives.class_log_prob(g)
        param = Perturbation(x0[a:b], init="uniform" if random_start else "zeros", eps=start_eps,
                             seed=image_seeds(seed, a, b))
        return objective, param, budget

    def on_step(step, loss, state):
        a, b = span
        if stopped[0] or notify(progress, "attack", a * steps + (step + 1) * (b - a), n * steps, loss=loss):
            stopped[0] = True  # later chunks stop at once too
            return True
        if not stop_on_success:
            return None
        pred = state.acts[objectives.OUTPUT].flatten(1).argmax(1).cpu()
        return pred == goal[a:b] if targeted else pred != goal[a:b]

    r = render_chunked(model, n, build, tuple(x0.shape[1:]), memory=memory, steps=steps, lr=step_size,
                       optimizer=lambda params: SteepestDescent(params, step_size, norm), seed=seed,
                       callback=on_step)
    if not stopped[0]:
        notify(progress, "attack", n * steps, n * steps)  # images that succeeded early are done too
    return r


def _result(x0, adv, y, targets, p0, p1, r, ids, params) -> AttackResult:
    """The :class:`AttackResult` of clean and adversarial images, their probabilities ``p0`` and
    ``p1`` and the engine's run ``r``."""
    n = len(x0)
    rows = np.arange(n)
    pred0, pred1 = p0.argmax(1), p1.argmax(1)
    linf, l2 = perturbation_norms(x0.cpu().numpy(), adv.cpu().numpy())
    used = np.where(r.stopped_at >= 0, r.stopped_at, r.steps) if r.stopped_at is not None else np.full(n, r.steps)
    nan = np.full(n, np.nan)
    targeted = params["targeted"]
    return AttackResult(
        clean=x0.cpu().numpy(), adversarial=adv.cpu().numpy(), labels=y, targets=targets,
        pred_before=pred0, pred_after=pred1, conf_before=p0[rows, pred0], conf_after=p1[rows, pred1],
        target_prob_before=p0[rows, targets] if targeted else nan,
        target_prob_after=p1[rows, targets] if targeted else nan.copy(),
        label_prob_after=np.where(y >= 0, p1[rows, np.clip(y, 0, p1.shape[1] - 1)], np.nan),
        steps_used=used.astype(np.int64), linf=linf, l2=l2,
        ids=list(ids) if ids is not None else [str(i) for i in range(n)], params=params,
    )


def attack_dataset(
    model,
    dataset,
    *,
    eps: float,
    norm: str = "linf",
    target=None,
    method: str = "pgd",
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = False,
    batch_size: int = 64,
    seed: int = 0,
    progress: Callback | None = None,
) -> AttackResult:
    """:func:`attack` over every image of a dataset (already conformed to the model), batch by
    batch; the success rate, sizes and confidences are in ``result.summary()``. ``progress``
    receives a :class:`~convlens.progress.Progress` event ``("attack", images done, images)``
    after each batch.

    With one fixed target class, images the model already puts in that class are skipped (they
    cannot be attacked towards it) and counted in ``params["skipped"]``; ``"random"`` targets
    never skip.
    """
    check_attack_args(eps, norm, method, steps, step_size)
    parts, skipped, done = [], 0, 0
    fixed = target is not None and not (isinstance(target, str) and target in TARGET_RULES)
    for x, y, idx in dataset.batches(batch_size):
        ids = [dataset.ids[int(i)] for i in idx]
        tgt = target
        if fixed:
            t = resolve_class(model, target)
            keep = _probs(model, check_images(model, x)).argmax(1).cpu().numpy() != t
            skipped += int((~keep).sum())
            x, y, ids = x[torch.as_tensor(keep)], y[torch.as_tensor(keep)], [i for i, k in zip(ids, keep) if k]
            tgt = t
        if len(x):
            parts.append(attack(model, x, y.cpu().numpy(), eps=eps, norm=norm, target=tgt, method=method,
                                steps=steps, step_size=step_size, random_start=random_start,
                                seed=seed + done, ids=ids))
        done += len(idx)
        notify(progress, "attack", done, len(dataset))
    if skipped:
        log.info("%d images already classified as the target were skipped", skipped)
    res = AttackResult.concat(parts)
    res.params.update({"skipped": skipped, "dataset": getattr(dataset, "name", "data"), "seed": int(seed),
                       "targeted": target is not None})
    return res
