"""Class models (Simonyan et al.) and fooling images (Nguyen et al.): images that drive class
scores up, with a record of the confidence the network gives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import BlurEvery, objectives, render_chunked
from convlens.optimize.objectives import OUTPUT
from convlens.progress import Callback, notify
from convlens.visualize._common import image_size, make_param, make_transforms, model_info

log = logging.getLogger(__name__)


@dataclass
class ClassImages:
    """Images made for classes: ``classes (K,)``, ``names``, ``images (K, C, H, W)``,
    ``scores (K,)`` (the class score before softmax), ``confidence (K,)`` (softmax
    probability of the class), ``steps (K,)`` (steps taken; for fooling images the step at which
    the target confidence was reached, -1 if never), and the parameters."""

    kind: str
    classes: np.ndarray
    names: list[str]
    images: np.ndarray
    scores: np.ndarray
    confidence: np.ndarray
    steps: np.ndarray
    params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = {"kind": self.kind, "classes": len(self.classes),
               "min_confidence": float(self.confidence.min()) if len(self.confidence) else None}
        if self.kind == "fooling":
            target = self.params.get("target", 0.9999)
            out.update(reached=int((self.confidence >= target).sum()),
                       max_steps=int(self.steps.max()) if len(self.steps) else 0)
        return out

    def save(self, folder: str | Path) -> Path:
        arrays = {"classes": self.classes, "images": self.images.astype(np.float32),
                  "scores": self.scores, "confidence": self.confidence, "steps": self.steps}
        return save_result(folder, self.kind, arrays, {"kind": self.kind, "names": self.names,
                                                       "params": self.params, "summary": self.summary()})

    @classmethod
    def load(cls, folder: str | Path, kind: str = "class_model") -> ClassImages:
        a, info = load_result(folder, kind)
        return cls(info["kind"], a["classes"], info["names"], a["images"], a["scores"],
                   a["confidence"], a["steps"], info["params"])


def resolve_classes(model, classes) -> list[int]:
    """``"all"``, a class name, an index, or a list of them -> indices."""
    names = list(model.class_names)
    n = _n_classes(model)
    if classes is None or (isinstance(classes, str) and classes.lower() == "all"):
        return list(range(n))
    items = classes if isinstance(classes, (list, tuple)) else [classes]
    from convlens.inputspec import find_class

    return [find_class(names, c, n) for c in items]


def _n_classes(model) -> int:
    with torch.no_grad():
        return int(model(model.example_input(1)).shape[1])


def _scores(model, images: torch.Tensor, classes: list[int], memory=None) -> tuple[np.ndarray, np.ndarray]:
    from convlens.runner import outputs

    logits = outputs(model, images, memory=memory).flatten(1)
    idx = torch.arange(len(classes)), torch.as_tensor(classes)
    return logits[idx].cpu().numpy(), torch.softmax(logits, 1)[idx].cpu().numpy()


def _names(model, classes: list[int]) -> list[str]:
    names = list(model.class_names)
    return [names[c] if c < len(names) else str(c) for c in classes]


def class_model(
    model,
    classes="all",
    *,
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    lr: float = 0.05,
    l2: float = 50.0,
    param: str = "pixel",
    transforms: str | None = "standard",
    tv: float = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
    memory: int | float | str | None = None,
    progress: Callback | None = None,
) -> ClassImages:
    """Simonyan et al.'s class model: ``argmax_I S_c(I) - lambda ||I||^2`` for each class,
    as many classes per optimization as the memory budget ``memory`` allows (at most
    ``batch_size``); a chunked run gives the images one batch would (each image its own seed).
    ``progress``: a :mod:`convlens.progress` callback, an event per step over all chunks;
    ``True`` stops there (the classes not reached keep their starting images).

    ``S_c`` is the class score before softmax; ``l2`` is ``lambda`` per pixel (the penalty is
    ``l2 / (H W) * sum (I - 0.5)^2``, about mid-grey since images live in ``[0, 1]``). ``param``
    ``"pixel"`` is the paper's; ``"fourier"`` and ``transforms="standard"`` give more natural
    images on large networks.
    """
    cls = resolve_classes(model, classes)
    h, w = image_size(model, size)
    c = model.spec.channels

    def build(a, b):
        p, proj = make_param(param, b - a, c, (h, w), seed, first=a)
        obj = objectives.class_logit(cls[a:b])
        if l2:
            obj = obj + l2 / (h * w) * objectives.l2()
        if tv:
            obj = obj + tv / (h * w) * objectives.total_variation()
        return obj, p, proj

    r = render_chunked(model, len(cls), build, (c, h, w), limit=batch_size, memory=memory, steps=steps,
                       lr=lr, seed=seed, transforms=make_transforms(transforms, (h, w)),
                       progress=progress, task="class models")
    s, conf = _scores(model, r.images, cls, memory)
    return ClassImages("class_model", np.array(cls), _names(model, cls), r.images.cpu().numpy(), s,
                       conf, np.full(len(cls), r.steps),
                       dict(size=[h, w], steps=steps, lr=lr, l2=l2, tv=tv, param=param,
                            transforms=transforms, seed=seed, **model_info(model)))


def fooling_images(
    model, classes="all", *, target: float = 0.9999, max_steps: int = 500, lr: float = 0.05,
    regularize: bool = False, l2: float = 0.1, blur: float = 0.5,
    size: int | tuple[int, int] | None = None, seed: int = 0, progress: Callback | None = None,
    batch_size: int | None = None, memory: int | float | str | None = None,
) -> ClassImages:
    """Nguyen et al.'s fooling images: ascend each class score from noise until the softmax
    confidence of the class reaches ``target`` (99.99 % by default) or ``max_steps`` pass.

    Without ``regularize`` the pixels are free (kept in ``[0, 1]``); with it, an L2 decay
    (``l2`` per pixel) and a Gaussian blur of ``blur`` px every 4 steps make the images
    smoother, usually at the cost of more steps. Each image stops as soon as it reaches the
    target; ``steps`` records when (-1: never). Classes run in chunks that fit ``memory`` (at
    most ``batch_size``), with the results of one batch. ``progress``: a
    :mod:`convlens.progress` callback, an event per step (``max_steps`` per chunk) with the
    lowest confidence of the chunk; ``True`` stops there.
    """
    if not 0 < target < 1:
        raise ValueError(f"target confidence must be in (0, 1), got {target}")
    cls = resolve_classes(model, classes)
    h, w = image_size(model, size)
    span, worst = [0, 0], [0.0]

    def build(a, b):
        span[:] = [a, b]
        p, proj = make_param("pixel", b - a, model.spec.channels, (h, w), seed, first=a)
        obj = objectives.class_logit(cls[a:b])
        if regularize:
            obj = obj + l2 / (h * w) * objectives.l2()
            proj = proj + [BlurEvery(blur, every=4)]
        return obj, p, proj

    def reached(step, loss, state):
        idx = torch.arange(span[1] - span[0]), torch.as_tensor(cls[span[0]:span[1]])
        conf = torch.softmax(state.acts[OUTPUT].flatten(1), 1)[idx]
        worst[0] = float(conf.min())
        return conf >= target

    def step_done(e):
        return notify(progress, e.task, e.done, e.total, **{"lowest p": worst[0]})

    r = render_chunked(model, len(cls), build, (model.spec.channels, h, w), limit=batch_size, memory=memory,
                       steps=max_steps, lr=lr, seed=seed, callback=reached,
                       progress=step_done if progress is not None else None, task="fooling images")
    s, conf = _scores(model, r.images, cls, memory)
    missed = [c for c, st in zip(cls, r.stopped_at) if st < 0]
    if missed:
        log.warning("fooling images: classes %s did not reach %.4f in %d steps", missed, target, max_steps)
    return ClassImages("fooling", np.array(cls), _names(model, cls), r.images.cpu().numpy(), s, conf,
                       r.stopped_at.copy(), dict(target=target, max_steps=max_steps, lr=lr,
                                                 regularize=regularize, l2=l2, blur=blur, size=[h, w],
                                                 seed=seed, **model_info(model)))
