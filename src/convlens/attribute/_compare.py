"""Methods x metrics on the same images: every registered method's maps, scored by deletion and
insertion curves (Petsiuk et al.), ROAD MoRF / LeRF (Rong et al.), the cascading sanity check
(Adebayo et al.), the pointing game where masks exist, and the time per image."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convlens.attribute._checks import check_images
from convlens.attribute._faithful import Curve, perturbation_curve, perturbation_curves
from convlens.attribute._registry import attribute, resolve_targets
from convlens.progress import Callback, notify

#: the methods of ``convlens faithfulness`` (a single image, LIME and occlusion included)
FAITHFULNESS_METHODS = ("saliency", "guided-backprop", "lime", "occlusion", "random")
#: the methods ``convlens compare`` runs by default
COMPARE_METHODS = ("saliency", "guided-backprop", "integrated-gradients", "smoothgrad", "gradcam",
                   "guided-gradcam", "gradcam++", "scorecam", "eigencam", "edge", "random")
COLUMNS = ("method", "deletion", "insertion", "road_morf", "road_lerf", "sanity_spearman",
           "random_label_spearman", "pointing_game", "seconds_per_image")


def attribution_maps(model, image, target=None, *, methods=FAITHFULNESS_METHODS, lime_samples: int = 500,
                     n_segments: int = 50, window: int | None = None,
                     seed: int = 0) -> tuple[int, dict[str, np.ndarray]]:
    """``(target, {method: (H, W) map})`` of one image for registry ``methods``; ``target``
    defaults to the predicted class."""
    x = check_images(model, image)[:1]
    t = int(resolve_targets(model, x, target)[0])
    opts = {"lime": {"samples": lime_samples, "n_segments": n_segments, "seed": seed},
            "occlusion": {"window": window}, "random": {"seed": seed}}
    return t, {name: attribute(model, x, t, method=name, **opts.get(name, {})).maps[0] for name in methods}


def compare_methods(model, image, target=None, *, steps: int = 50, **kw) -> dict[str, Curve]:
    """Deletion and insertion curves (``"method/deletion"``, ``"method/insertion"``) of every
    map of :func:`attribution_maps` on one image."""
    target, maps = attribution_maps(model, image, target, **kw)
    return {f"{name}/{kind}": perturbation_curve(model, image, a, target, kind=kind, steps=steps)
            for name, a in maps.items() for kind in ("deletion", "insertion")}


def write_csv(path: str | Path, header, rows) -> Path:
    """Write a CSV table atomically (a failed run leaves no half-written file)."""
    from convlens.files import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return Path(path)


@dataclass
class Comparison:
    """``rows``: one per method, the :data:`COLUMNS`; ``maps[method]`` ``(N, H, W)``."""

    methods: list[str]
    rows: list[list]
    maps: dict[str, np.ndarray]
    images: np.ndarray
    targets: np.ndarray
    names: list[str]
    meta: dict = field(default_factory=dict)

    def write_csv(self, path: str | Path) -> Path:
        return write_csv(path, COLUMNS, self.rows)

    def save(self, folder: str | Path) -> Path:
        from convlens.files import save_result

        return save_result(folder, "comparison", {
            "images": self.images, "targets": self.targets, **{f"maps/{m}": v for m, v in self.maps.items()}},
            {"methods": self.methods, "rows": self.rows, "names": self.names, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> Comparison:
        from convlens.files import load_result

        a, i = load_result(folder, "comparison")
        maps = {k.split("/", 1)[1]: v for k, v in a.items() if k.startswith("maps/")}
        return cls(i["methods"], i["rows"], maps, a["images"], a["targets"], i["names"], i["meta"])

    def markdown(self) -> str:
        head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
        fmt = lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else (  # noqa: E731
            f"{v:.3f}" if isinstance(v, float) else str(v))
        return head + "".join("| " + " | ".join(fmt(v) for v in r) + " |\n" for r in self.rows)


def compare(model, images, methods=COMPARE_METHODS, target=None, *, masks: np.ndarray | None = None,
            names: list[str] | None = None, steps: int = 20, fractions=None, sanity_images: int = 4,
            options: dict | None = None, seed: int = 0,
            progress: Callback | None = None) -> Comparison:
    """Every method of ``methods`` on ``images``, scored by every metric.

    Parameters
    ----------
    masks : boolean ``(N, H, W)`` object masks for the pointing game; images with an empty mask
        are left out of it (``NaN`` when none has one)
    steps : points of each deletion / insertion curve
    fractions : ROAD's removed shares (default 0.1 ... 0.9)
    sanity_images : images of the cascading randomization test (0 skips it)
    options : ``{method: {option: value}}``
    progress : receives :class:`~convlens.progress.Progress` events ``("methods", done, methods)``
        after each method, then the sanity check's ``("randomization", done, steps)``
    """
    from convlens.attribute._pointing import pointing_game
    from convlens.attribute._road import road
    from convlens.attribute._sanity import sanity_check

    options = options or {}
    x = check_images(model, images)
    targets = resolve_targets(model, x, target)
    names = names or [str(i) for i in range(len(x))]
    rows, maps = [], {}
    # the pointing game counts the images that have a (non-empty) mask
    has = np.zeros(len(x), bool) if masks is None else np.asarray(masks).reshape(len(x), -1).any(1)
    for k, name in enumerate(methods):
        a = attribute(model, x, targets, method=name, **options.get(name, {}))
        maps[name] = a.maps
        dele, ins = ([c.area for c in perturbation_curves(model, x, a.maps, targets, kind=kind, steps=steps)]
                     for kind in ("deletion", "insertion"))
        morf = road(model, x, a.maps, targets, order="morf", fractions=fractions, seed=seed).score
        lerf = road(model, x, a.maps, targets, order="lerf", fractions=fractions, seed=seed).score
        point = float(pointing_game(a.maps[has], masks[has]).mean()) if has.any() else float("nan")
        rows.append([name, float(np.mean(dele)), float(np.mean(ins)), morf, lerf, float("nan"), float("nan"),
                     point, a.seconds / len(x)])
        notify(progress, "methods", k + 1, len(methods), method=name)
    if sanity_images:
        s = sanity_check(model, x[:sanity_images], list(methods), targets[:sanity_images], mode="cascading",
                         seed=seed, options=options,
                         progress=progress)
        for r in rows:
            r[5] = float(s.spearman[r[0]][-1].mean())
            r[6] = float(s.random_label[r[0]].mean())
    # NaN (a metric that does not apply) becomes None: an empty CSV cell, JSON null
    rows = [[r[0], *[None if np.isnan(v) else round(v, 4) for v in r[1:]]] for r in rows]
    return Comparison(list(methods), rows, maps, x.cpu().numpy(), targets.cpu().numpy(), names,
                      {"model": model.name, "steps": steps, "sanity_images": sanity_images, "seed": seed})


def plot_comparison(c: Comparison, max_images: int = 6):
    """The maps side by side: images in rows, the image then one column per method."""
    from convlens.attribute._plot import _show, hwc
    from convlens.figures import subplots


    n = min(max_images, len(c.images))
    cols = 1 + len(c.methods)
    fig, axes = subplots(n, cols, figsize=(1.6 * cols, 1.7 * n), squeeze=False)
    for i in range(n):
        _show(axes[i, 0], hwc(c.images[i]), c.names[i][:18])
        for j, mth in enumerate(c.methods):
            ax = axes[i, j + 1]
            ax.imshow(c.maps[mth][i], cmap="inferno")
            if i == 0:
                ax.set_title(mth, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig
