"""Network inversion by regularized optimization (Mahendran & Vedaldi) for many layers at once,
and feature-map perturbation before inverting (Dosovitskiy & Brox: binarize, dropout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.files import load_result, save_result
from convlens.optimize import objectives, render_chunked
from convlens.progress import Callback
from convlens.runner import capture
from convlens.visualize._common import make_param, model_info

PERTURBATIONS = ("binarize", "dropout")


@dataclass
class Inversion:
    """Images rebuilt from one image's features at each layer.

    ``layers``; ``original (C, H, W)``; ``images (L, C, H, W)``; ``feature_error (L,)``: relative
    Euclidean error ``||phi(x) - phi0|| / ||phi0||`` against the (perturbed) target features;
    ``pixel_error (L,)``: root mean square difference to the original image, in ``[0, 1]``
    units; ``perturb``: ``None``, ``"binarize"`` or ``"dropout"``.
    """

    layers: list[str]
    original: np.ndarray
    images: np.ndarray
    feature_error: np.ndarray
    pixel_error: np.ndarray
    perturb: str | None = None
    params: dict = field(default_factory=dict)

    def table(self) -> list[dict]:
        return [{"layer": name, "feature_error": float(f), "pixel_error": float(p)}
                for name, f, p in zip(self.layers, self.feature_error, self.pixel_error)]

    def save(self, folder: str | Path) -> Path:
        name = f"inversion-{self.perturb}" if self.perturb else "inversion"
        arrays = {"original": self.original, "images": self.images.astype(np.float32),
                  "feature_error": self.feature_error, "pixel_error": self.pixel_error}
        return save_result(folder, name, arrays, {"layers": self.layers, "perturb": self.perturb,
                                                  "params": self.params, "table": self.table()})

    @classmethod
    def load(cls, folder: str | Path, perturb: str | None = None) -> Inversion:
        a, info = load_result(folder, f"inversion-{perturb}" if perturb else "inversion")
        return cls(info["layers"], a["original"], a["images"], a["feature_error"], a["pixel_error"],
                   info["perturb"], info["params"])


def perturb_features(features: torch.Tensor, mode: str, *, seed: int = 0) -> torch.Tensor:
    """Dosovitskiy & Brox's perturbations of one image's features ``(1, ...)``, keeping the
    Euclidean norm: ``"binarize"`` keeps the signs and gives every non-zero value the same
    magnitude; ``"dropout"`` sets a random half of the values to zero and rescales the rest."""
    f = features.detach()
    norm = f.norm()
    if mode == "binarize":
        s = torch.sign(f)
        nz = s.abs().sum()
        return s * (norm / nz.sqrt()) if nz > 0 else f.clone()
    if mode == "dropout":
        g = torch.Generator().manual_seed(seed)
        keep = (torch.rand(f.shape, generator=g) >= 0.5).to(f.device)
        kept = f * keep
        kn = kept.norm()
        return kept * (norm / kn) if kn > 0 else kept
    raise ValueError(f"perturb must be one of {PERTURBATIONS} or None, got {mode!r}")


def invertible_layers(model) -> list[str]:
    """Every leaf module that the forward pass runs, in order (``convlens layers`` order)."""
    from convlens.summary import describe_layers

    named = dict(model.net.named_modules())
    return [i.name for i in describe_layers(model)
            if i.shape is not None and not any(True for _ in named[i.name].children())]


def invert(
    model,
    image: torch.Tensor,
    layers: list[str] | str | None = None,
    *,
    steps: int = 400,
    lr: float = 0.05,
    tv: float = 0.5,
    beta: float = 2.0,
    alpha: float = 6.0,
    alpha_weight: float = 0.0,
    perturb: str | None = None,
    param: str = "pixel",
    seed: int = 0,
    progress: Callback | None = None,
) -> Inversion:
    """Rebuild ``image`` from its features at each of ``layers`` (default: every layer), all
    layers in one batch.

    Minimizes Mahendran & Vedaldi's objective (their eq. 3)
    ``||phi(x) - phi0||^2 / ||phi0||^2 + tv/(HW) R_TV^beta(x) + alpha_weight/(HW) R_alpha(x)``
    over images ``x`` in ``[0, 1]``, where ``R_TV^beta`` is the total variation with exponent
    ``beta`` and ``R_alpha`` the alpha-norm about mid-grey. ``perturb`` (``"binarize"`` or
    ``"dropout"``) changes the target features first (Dosovitskiy & Brox). ``progress``: a
    :mod:`convlens.progress` callback, an event per step over all chunks; ``True`` stops there.
    """
    x0 = _one_image(model, image)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers) if layers else invertible_layers(model)
    if perturb is not None and perturb not in PERTURBATIONS:
        raise ValueError(f"perturb must be one of {PERTURBATIONS} or None, got {perturb!r}")
    targets = capture(model, x0, layers)
    if perturb:
        targets = {k: perturb_features(v, perturb, seed=seed) for k, v in targets.items()}
    n, (h, w) = len(layers), x0.shape[-2:]

    def build(a, b):
        p, proj = make_param(param, b - a, x0.shape[1], (h, w), seed, first=a)
        obj = objectives.per_image([objectives.feature_match(name, targets[name]) for name in layers[a:b]])
        if tv:
            obj = obj + tv / (h * w) * objectives.total_variation(beta)
        if alpha_weight:
            obj = obj + alpha_weight / (h * w) * objectives.alpha_norm(alpha)
        return obj, p, proj

    # chunks over the layers, sized for the deepest (the whole request's objective)
    whole = objectives.per_image([objectives.feature_match(name, targets[name]) for name in layers])
    r = render_chunked(model, n, build, (x0.shape[1], h, w), objective=whole, steps=steps, lr=lr, seed=seed,
                       progress=progress, task="inversion")
    ferr = np.array([float((capture(model, r.images[i:i + 1], [name])[name][0] - targets[name][0]).norm()
                           / targets[name].norm().clamp_min(1e-12)) for i, name in enumerate(layers)])
    perr = (r.images - x0).pow(2).flatten(1).mean(1).sqrt().cpu().numpy()
    return Inversion(layers, x0[0].cpu().numpy(), r.images.cpu().numpy(), ferr, perr, perturb,
                     dict(steps=steps, lr=lr, tv=tv, beta=beta, alpha=alpha, alpha_weight=alpha_weight,
                          param=param, seed=seed, **model_info(model)))


def _one_image(model, image) -> torch.Tensor:
    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim == 3:
        x = x[None]
    c = model.spec.channels
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != c:
        raise ValueError(f"invert takes one image (C, H, W) or (1, C, H, W) with {c} channels in [0, 1], "
                         f"got {tuple(x.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("the image must be in display space [0, 1]; convert it with model.spec.denormalize")
    return x.to(model.device)
