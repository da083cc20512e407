"""Figures from saved results (never inside the computation): the per-layer distance curve,
the survey's Fig. 20 (chosen units' maps for a clean image and its adversarial twin), the ROC."""

from __future__ import annotations

import numpy as np


def _show(ax, img: np.ndarray, title: str = "", **kw) -> None:
    img = np.asarray(img)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.clip(img.transpose(1, 2, 0), 0, 1)
    ax.imshow(img, cmap=kw.pop("cmap", "gray") if img.ndim == 2 else None, **kw)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_layer_distances(shift, path=None):
    """Median relative distance per layer with its interquartile band; the parting layer marked."""
    from convlens.figures import subplots

    d = shift.distance
    x = np.arange(len(shift.layers))
    fig, ax = subplots(figsize=(max(5.0, 0.22 * len(x) + 2), 3.2))
    ax.fill_between(x, np.quantile(d, 0.25, 0), np.quantile(d, 0.75, 0), alpha=0.25, label="25-75 %")
    ax.plot(x, np.median(d, 0), "o-", ms=3, label="median ||a(x')-a(x)|| / ||a(x)||")
    ax.axhline(float(np.median(shift.input_distance)), color="gray", ls=":", label="input")
    ax.axhline(shift.part_threshold, color="red", ls="--", lw=0.8, label=f"threshold {shift.part_threshold:g}")
    ax.axvline(shift.parting_index, color="red", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(shift.layers, rotation=90, fontsize=6 if len(x) > 20 else 8)
    ax.set_ylabel("relative distance")
    ax.set_title(f"clean vs adversarial, {d.shape[0]} images; part at {shift.parting_layer}", fontsize=9)
    ax.legend(fontsize=6)
    if path is not None:
        from convlens.files import save_figure

        return save_figure(fig, path)
    return fig


def plot_unit_maps(shift, example: int = 0, class_names=(), labels=None, path=None):
    """Fig. 20: the clean image, its adversarial twin and the amplified perturbation, then for each
    chosen unit its map on the clean image, on the twin, and the difference (shared colour scale)."""
    from convlens.figures import subplots

    k = len(shift.map_units)
    fig, axes = subplots(3, k + 1, figsize=(1.6 * (k + 1), 4.9), squeeze=False)
    clean, adv = shift.clean[example], shift.adversarial[example]
    cap = labels[example] if labels is not None else ("", "")
    _show(axes[0, 0], clean, f"clean {cap[0]}")
    _show(axes[1, 0], adv, f"adversarial {cap[1]}")
    pert = adv.astype(np.float64) - clean
    lim = max(float(np.abs(pert).max()), 1e-12)
    _show(axes[2, 0], pert.mean(0) if pert.shape[0] > 1 else pert[0], f"perturbation (±{lim:.3g})",
          cmap="seismic", vmin=-lim, vmax=lim)
    for j, unit in enumerate(shift.map_units, start=1):
        a, b = shift.maps_clean[j - 1][example], shift.maps_adv[j - 1][example]
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        _show(axes[0, j], a, unit, vmin=lo, vmax=hi, cmap="viridis")
        _show(axes[1, j], b, unit, vmin=lo, vmax=hi, cmap="viridis")
        diff = b - a
        m = max(float(np.abs(diff).max()), 1e-12)
        _show(axes[2, j], diff, f"change (±{m:.3g})", cmap="seismic", vmin=-m, vmax=m)
    fig.tight_layout()
    if path is not None:
        from convlens.files import save_figure

        return save_figure(fig, path)
    return fig


def plot_roc(detection, path=None):
    from convlens.figures import subplots

    fig, ax = subplots(figsize=(3.4, 3.2))
    ax.plot(detection.fpr, detection.tpr, label=f"detector, AUC {detection.auc:.3f}")
    ax.plot([0, 1], [0, 1], color="gray", ls=":")
    ax.set_xlabel("false positive rate (clean flagged)")
    ax.set_ylabel("true positive rate")
    p = detection.params
    ax.set_title(f"held out: {p.get('test_clean')} clean, {p.get('test_adversarial')} adversarial", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    if path is not None:
        from convlens.files import save_figure

        return save_figure(fig, path)
    return fig
