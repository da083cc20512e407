"""Pictures made from saved results (never inside the computation): the clustered map with
wrong assignments marked (Kitahara & Holm, Fig. 5), the scree plot (Fig. 3), the perplexity
sweep (Fig. 6), the confusion matrix (Fig. 7), and maps across training as small multiples and
an animated GIF (Lees, Fig. 21)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from convlens.figures import subplots
from convlens.files import atomic_path


def _names(class_names, k: int) -> list[str]:
    names = list(class_names)
    return [names[i] if i < len(names) else str(i) for i in range(k)]


def _cmap(k: int):
    from matplotlib import colormaps

    return colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]


def _scatter(ax, coords, values, k, size=8):
    cmap = _cmap(k)
    for v in range(k):
        sel = values == v
        if sel.any():
            ax.scatter(coords[sel, 0], coords[sel, 1], s=size, color=cmap(v / max(1, k - 1) if k > 20 else v),
                       linewidths=0)


def plot_map(cmap_result, color_by: str = "label", title: str | None = None, size: float = 14):
    """The 2-D map coloured by true label or by cluster; with labels, correctly assigned images
    are circles and wrongly assigned ones crosses (Fig. 5)."""
    if color_by not in ("label", "cluster"):
        raise ValueError(f"color_by must be 'label' or 'cluster', got {color_by!r}")
    r = cmap_result
    has = r.predicted is not None
    values = r.labels if (color_by == "label" and has) else r.clusters
    k = int(values.max()) + 1
    names = _names(r.class_names, k) if values is r.labels else [f"cluster {i}" for i in range(k)]
    fig, ax = subplots(figsize=(6.2, 5.4))
    cm = _cmap(k)
    ok = r.correct if has else np.ones(len(values), bool)
    for v in range(k):
        color = cm(v / max(1, k - 1) if k > 20 else v)
        sel = values == v
        ax.scatter(r.coords[sel & ok, 0], r.coords[sel & ok, 1], s=size, marker="o", facecolors="none",
                   edgecolors=[color], linewidths=0.8, label=names[v])
        if has:
            ax.scatter(r.coords[sel & ~ok, 0], r.coords[sel & ~ok, 1], s=size * 1.6, marker="x",
                       color=color, linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    sub = ""
    if r.scores:
        sub = f" — accuracy {r.scores['accuracy']:.1%}, NMI {r.scores['nmi']:.3f}, ARI {r.scores['ari']:.3f}"
    ax.set_title((title or r.pipeline) + sub, fontsize=9)
    if k <= 20:
        ax.legend(fontsize=7, markerscale=1.2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if has:
        ax.text(0.01, 0.01, "○ correct   × wrong cluster", transform=ax.transAxes, fontsize=7)
    return fig


def plot_scree(scree):
    """Cumulative explained variance and, when computed, accuracy against components (Fig. 3)."""
    fig, ax = subplots(figsize=(6, 3.6))
    n = np.arange(1, len(scree.cumulative) + 1)
    ax.plot(n, scree.cumulative, color="C0", label="cumulative explained variance")
    ax.axvline(scree.chosen, color="grey", ls=":", lw=1)
    ax.set_xlabel("principal components")
    ax.set_ylabel("explained variance", color="C0")
    ax.set_ylim(0, 1.02)
    if scree.accuracy:
        ax2 = ax.twinx()
        ax2.plot(scree.ks, scree.accuracy, "o-", color="C3", label="k-means accuracy")
        ax2.set_ylabel("k-means accuracy", color="C3")
        ax2.set_ylim(0, 1.02)
    ax.set_xscale("log")
    return fig


def plot_sweep(sweep, labels=None, class_names=()):
    """One map per perplexity (Fig. 6), coloured by label when given."""
    p = len(sweep.perplexities)
    fig, axes = subplots(1, p, figsize=(3.2 * p, 3.3), squeeze=False)
    lab = np.zeros(sweep.maps.shape[1], int) if labels is None else np.asarray(labels)
    k = int(lab.max()) + 1
    for ax, perp, z, i in zip(axes[0], sweep.perplexities, sweep.maps, range(p)):
        _scatter(ax, z, lab, k, size=4)
        t = f"perplexity {perp:g}"
        if sweep.accuracy:
            t += f"\naccuracy {sweep.accuracy[i]:.1%}"
        ax.set_title(t, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_confusion(confusion: np.ndarray, class_names=()):
    """Rows true class, columns the matched class of the cluster (Fig. 7)."""
    cm = np.asarray(confusion)
    k = cm.shape[0]
    names = _names(class_names, k)
    cols = names + (["unmatched"] if cm.shape[1] > k else [])
    fig, ax = subplots(figsize=(1.0 + 0.5 * cm.shape[1], 0.8 + 0.45 * k))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted (matched cluster)")
    ax.set_ylabel("true")
    return fig


def plot_training_maps(maps, cols: int = 4):
    """Small multiples: one map per snapshot, coloured by label (Fig. 21)."""
    s = len(maps.steps)
    cols = min(cols, s)
    rows = -(-s // cols)
    fig, axes = subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    lab = np.where(maps.labels >= 0, maps.labels, 0)
    k = int(lab.max()) + 1
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= s:
            ax.axis("off")
            continue
        _scatter(ax, maps.coords[i], lab, k, size=3)
        t = f"step {maps.steps[i]}"
        if maps.accuracy:
            t += f" · acc {maps.accuracy[i]:.0%}"
        ax.set_title(t, fontsize=8)
    return fig


def save_training_gif(maps, path: str | Path, seconds_per_frame: float = 0.6, size: float = 4.0) -> Path:
    """An animated GIF of the maps across training, one frame per snapshot."""
    from PIL import Image

    lab = np.where(maps.labels >= 0, maps.labels, 0)
    k = int(lab.max()) + 1
    frames = []
    for i, step in enumerate(maps.steps):
        fig, ax = subplots(figsize=(size, size))
        _scatter(ax, maps.coords[i], lab, k, size=4)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{maps.layer} · step {step}", fontsize=9)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        buf.seek(0)
        frames.append(Image.open(buf).convert("P", palette=Image.Palette.ADAPTIVE))
    path = Path(path)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                       duration=int(seconds_per_frame * 1000), loop=0)
    return path
