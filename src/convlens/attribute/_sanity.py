"""Sanity checks for saliency maps (Adebayo et al. 2018): does a map change when the model does?

- **Cascading randomization**: re-initialise the layers from the top (logits) down, one more at
  each step, and compare each method's map with the map of the trained model.
- **Independent randomization**: re-initialise one layer at a time, the others trained.
- **Random label** (the cheap variant of the data-randomization test): the map for a random other
  class against the map for the target.

Similarity is the Spearman rank correlation of the absolute maps and the SSIM of the maps scaled
to [0, 1], per image; a faithful method falls towards 0 as layers are randomized, while a method
that shows the image (the edge detector, or guided backprop per the paper) stays high. The user's
model is never modified: every randomization happens on a deep copy. Layers are randomized by
their own ``reset_parameters()`` (PyTorch's default initialisation) under a seed, others (no such
method) by a normal draw with each tensor's own standard deviation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlens.attribute._registry import attribute, resolve_targets
from convlens.files import load_result, save_result
from convlens.progress import Callback, notify


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of each row of ``a`` with the same row of ``b`` (average ranks
    for ties, as :func:`scipy.stats.spearmanr`), ``(N, ...)`` -> ``(N,)``; 0 for a constant row."""
    from scipy.stats import rankdata

    ra = rankdata(np.asarray(a, dtype=np.float64).reshape(len(a), -1), axis=1)
    rb = rankdata(np.asarray(b, dtype=np.float64).reshape(len(b), -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), 0.0)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> np.ndarray:
    """Mean structural similarity of maps ``(N, H, W)`` already in [0, 1] (``data_range`` 1), with
    scikit-image's defaults: a ``win x win`` uniform window, sample covariance, K1 0.01, K2 0.03,
    averaged over the window positions that fit. Batched; ``tests`` check it against
    :func:`skimage.metrics.structural_similarity`."""
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))[:, None]
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))[:, None]
    win = min(win, x.shape[-1], x.shape[-2])
    win -= 1 - win % 2  # odd
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    n = win * win
    cov = n / (n - 1)
    ux, uy = pool(x), pool(y)
    vx = cov * (pool(x * x) - ux * ux)
    vy = cov * (pool(y * y) - uy * uy)
    vxy = cov * (pool(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).cpu().numpy()


def _unit_range(m: np.ndarray) -> np.ndarray:
    flat = m.reshape(len(m), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.where(hi > lo, hi - lo, 1)).reshape(m.shape)


def randomizable_groups(net: torch.nn.Module) -> list[str]:
    """Module names to randomize, top (output) first: layers with parameters, grouped by the first
    two parts of their name when a model has more than 12 of them (SqueezeNet's Fire modules,
    ResNet's blocks), as Adebayo et al. randomized Inception by block."""
    leaves = [n for n, m in net.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    if len(leaves) > 12:
        leaves = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in leaves))
    return leaves[::-1]


def copy_model(model):
    """A deep copy of ``model`` whose weights can be re-initialised, or a ValueError saying why
    not (TorchScript, a module that cannot be copied)."""
    from convlens.model import Model

    if isinstance(model.net, torch.jit.ScriptModule):
        raise ValueError("sanity checks randomize the layers of a copy of the model, which a TorchScript "
                         "model does not allow: load it from its architecture and state dict instead "
                         "(e.g. `squeezenet1_1 --weights FILE.pth`)")
    try:
        net = copy.deepcopy(model.net)
    except Exception as e:  # noqa: BLE001 - any failure to copy means the same to the user
        raise ValueError(f"cannot copy the model to randomize it ({type(e).__name__}: {e}); the sanity "
                         "checks never modify the model itself, so they need a copyable nn.Module") from None
    from convlens.runner import share_costs

    share_costs(net, model.net)  # same layers, same bytes per input: measured once
    return Model(net, model.spec, f"{model.name} (randomized)", model.meta)


def randomize(net: torch.nn.Module, name: str, seed: int) -> None:
    """Re-initialise every parameterised module inside ``name`` of ``net`` (in place, seeded)."""
    root = dict(net.named_modules())[name]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in root.modules():
            own = list(m.parameters(recurse=False))
            if not own:
                continue
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
            else:
                for p in own:
                    p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.01)


@dataclass
class SanityResult:
    """Similarities ``spearman[method]`` and ``ssim[method]``, ``(steps + 1, N)``: row 0 is the
    trained model (1 by definition), row ``i`` after randomizing ``layers[i - 1]`` (cascading: it
    and every layer above it)."""

    mode: str
    methods: list[str]
    layers: list[str]
    spearman: dict[str, np.ndarray]
    ssim: dict[str, np.ndarray]
    random_label: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def mean(self, metric: str = "spearman") -> dict[str, np.ndarray]:
        d = self.spearman if metric == "spearman" else self.ssim
        return {k: v.mean(1) for k, v in d.items()}

    def rows(self) -> list[list]:
        """``[method, layer, spearman, ssim]`` for every step (means over images)."""
        out = []
        for mth in self.methods:
            for i, ly in enumerate(["(trained)", *self.layers]):
                out.append([mth, ly, round(float(self.spearman[mth][i].mean()), 4),
                            round(float(self.ssim[mth][i].mean()), 4)])
        return out

    def save(self, folder: str | Path) -> Path:
        arrays = {f"{k}/{m}": v for k, d in (("spearman", self.spearman), ("ssim", self.ssim),
                                              ("random_label", self.random_label)) for m, v in d.items()}
        arrays = {k.replace("/", "__"): v for k, v in arrays.items()}
        return save_result(folder, f"sanity-{self.mode}", arrays,
                           {"mode": self.mode, "methods": self.methods, "layers": self.layers, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path, mode: str = "cascading") -> SanityResult:
        a, info = load_result(folder, f"sanity-{mode}")
        pick = lambda k: {m: a[f"{k}__{m}"] for m in info["methods"] if f"{k}__{m}" in a}  # noqa: E731
        return cls(info["mode"], info["methods"], info["layers"], pick("spearman"), pick("ssim"),
                   pick("random_label"), info.get("meta", {}))


def sanity_check(model, images, methods: list[str], target=None, *, mode: str = "cascading",
                 layers: list[str] | None = None, random_label: bool = True, seed: int = 0,
                 margin: int = 0, options: dict | None = None,
                 progress: Callback | None = None) -> SanityResult:
    """Adebayo et al.'s model-parameter randomization test for ``methods`` (registry names).

    Parameters
    ----------
    mode : ``"cascading"`` (top layer down, cumulative) or ``"independent"`` (one layer at a time)
    layers : module names to randomize, top first (default :func:`randomizable_groups`)
    random_label : also compare with the map for a random other class (on the trained model)
    margin : leave a frame of this many pixels out of the similarities. Zero padding gives every
        network, trained or random, the same low gradient near the border: on the built-in LeNet
        (5x5 convolutions, padding 2) the saliency of a fully randomized copy keeps a Spearman
        correlation of 0.29-0.34 with the trained one over the whole image, 0.08-0.11 without a
        4-pixel frame (three seeds, 16 digits)
    options : ``{method: {option: value}}`` passed to :func:`convlens.attribute.attribute`
    progress : receives a :class:`~convlens.progress.Progress` event ``("randomization", done,
        steps)`` after each randomization step
    """
    if mode not in ("cascading", "independent"):
        raise ValueError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    options = options or {}
    work = copy_model(model)  # fail before any work when the model cannot be copied
    from convlens.attribute._checks import check_images

    x = check_images(model, images)
    targets = resolve_targets(model, x, target)
    groups = list(layers) if layers else randomizable_groups(model.net)
    known = dict(model.net.named_modules())
    bad = [g for g in groups if g not in known]
    if bad:
        from convlens.probe import get_layer

        get_layer(model.net, bad[0])

    h, w = x.shape[-2:]
    if not 0 <= margin < min(h, w) // 2:
        raise ValueError(f"margin must be in [0, {min(h, w) // 2}) for {h}x{w} images, got {margin}")

    def maps_of(m, t):
        return {name: attribute(m, x, t, method=name, **options.get(name, {})).maps[:, margin : h - margin,
                                                                                  margin : w - margin]
                for name in methods}

    ref = maps_of(model, targets)
    sp, ss = _randomized(model, work, groups, mode, seed, lambda m: maps_of(m, targets), ref, progress)
    rl = {}
    if random_label:
        n_cls = int(model(x[:1]).shape[1])
        rng = np.random.default_rng(seed)
        other = (targets.cpu().numpy() + rng.integers(1, n_cls, len(x))) % n_cls
        rand = maps_of(model, torch.as_tensor(other))
        rl = {k: spearman(np.abs(ref[k]), np.abs(rand[k])) for k in methods}
    return SanityResult(mode, list(methods), groups, {k: np.stack(v) for k, v in sp.items()},
                        {k: np.stack(v) for k, v in ss.items()}, rl,
                        {"model": model.name, "images": len(x), "seed": seed, "margin": margin})


def _randomized(model, work, groups, mode, seed, maps_of, ref, progress):
    """Spearman and SSIM ``{method: [trained, after step 1, ...]}`` of the maps of ``work`` as
    ``groups`` are randomized (cumulatively, or each on a fresh copy)."""
    n = len(next(iter(ref.values())))
    sp = {k: [np.ones(n)] for k in ref}
    ss = {k: [np.ones(n)] for k in ref}
    for i, g in enumerate(groups):
        if mode == "independent":
            work = copy_model(model)
        randomize(work.net, g, seed + i)
        now = maps_of(work)
        for k in ref:
            sp[k].append(spearman(np.abs(ref[k]), np.abs(now[k])))
            ss[k].append(ssim(_unit_range(ref[k]), _unit_range(now[k])))
        notify(progress, "randomization", i + 1, len(groups), layer=g)
    return sp, ss


def plot_sanity(result: SanityResult):
    """Adebayo et al.'s Fig. 2 curve: mean Spearman and SSIM per method, trained model on the left,
    then each randomization step."""
    from convlens.figures import subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.2), sharey=True)
    ticks = ["trained", *result.layers]
    for ax, metric in zip(axes, ("spearman", "ssim")):
        for k, v in result.mean(metric).items():
            ax.plot(range(len(v)), v, marker="o", ms=3, label=k)
        ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(-0.1, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{metric} with the trained model's map ({result.mode})", fontsize=9)
    axes[0].set_ylabel("similarity (mean over images)")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
