"""Figures made from saved results (never inside the computation)."""

from __future__ import annotations

import textwrap

import numpy as np

from convlens.figures import subplots


def hwc(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W, 3)`` or ``(H, W)`` for imshow."""
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def is_grey(images: np.ndarray) -> bool:
    """True when images ``(..., C, H, W)`` are grey: one channel, or three equal ones."""
    images = np.asarray(images)
    return images.shape[-3] == 1 or bool(np.abs(images - images[..., :1, :, :]).max() < 1e-6)


def projection_image(p: np.ndarray, percentile: float = 99.5, grey: bool = False) -> np.ndarray:
    """A projection ``(C, H, W)`` shown as Zeiler & Fergus do: zero at grey, scaled so that
    the ``percentile`` of absolute values reaches black/white (a few extreme pixels would
    otherwise leave large images almost uniformly grey); 100 scales by the maximum. ``grey``
    (for grey data) draws the channels' sum, since colour there is an artefact of the RGB input."""
    if grey:
        p = np.asarray(p).sum(0, keepdims=True)
    a = np.abs(p)
    m = float(np.percentile(a[a > 0], percentile)) if (a > 0).any() else 0.0
    return hwc(0.5 + p / (2 * m) if m > 0 else np.full_like(p, 0.5))


def _crop(a: np.ndarray, box) -> np.ndarray:
    y0, y1, x0, x1 = (int(v) for v in box)
    return a[..., y0:y1, x0:x1] if y1 > y0 and x1 > x0 else a


def _show(ax, img, title=None, cmap="gray"):
    ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0 if img.ndim == 2 else None,
              vmax=1 if img.ndim == 2 else None, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def plot_projections(projs: dict, images: np.ndarray, titles: list[str] | None = None):
    """Rows of images, then one row per method (``{name: Projection}``); ``titles`` are image
    ids, shown short (:func:`convlens.data.short_id`). Projections of grey images are grey."""
    from convlens.data import short_id

    n = len(images)
    grey = is_grey(images)
    fig, axes = subplots(1 + len(projs), n, figsize=(1.6 * n, 1.7 * (1 + len(projs))), squeeze=False)
    for j in range(n):
        _show(axes[0, j], hwc(images[j]), short_id(titles[j], 14) if titles else None)
        for i, (name, p) in enumerate(projs.items(), start=1):
            if name.startswith("saliency"):
                s = p.saliency()[j]
                _show(axes[i, j], s / s.max() if s.max() > 0 else s, cmap="hot")
            else:
                _show(axes[i, j], projection_image(p.maps[j], grey=grey))
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return fig


def plot_top_images(top, units=None, *, max_units: int = 16):
    """Zeiler & Fergus, Fig. 2: for each unit, its top images' projections (left) and the image
    patches (right), both cropped to the unit's receptive field."""
    if top.projections is None:
        raise ValueError("these top images have no projections: run top_images(..., project=True)")
    rows = [top.row(u) for u in (units if units is not None else top.units[:max_units])]
    k = top.indices.shape[1]
    grey = top.images is not None and is_grey(top.images)
    fig, axes = subplots(len(rows), 2 * k, figsize=(0.8 * 2 * k, 0.85 * len(rows) + 0.3), squeeze=False)
    for i, r in enumerate(rows):
        for j in range(k):
            box = top.boxes[r, j]
            _show(axes[i, j], projection_image(_crop(top.projections[r, j], box), grey=grey))
            _show(axes[i, k + j], hwc(_crop(top.images[r, j], box)))
        axes[i, 0].set_ylabel(f"{int(top.units[r])}", fontsize=7, rotation=0, labelpad=8)
    fig.suptitle(f"{top.layer}: top {k} images per unit — projections | patches (receptive field)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_activation_grid(grid, layer: str, *, max_channels: int = 64):
    """Lees' grid: every channel's map, the strongest framed in red, the map size in the title."""
    maps = grid.maps[layer]
    c = min(len(maps), max_channels)
    cols = int(np.ceil(np.sqrt(c)))
    rows = int(np.ceil(c / cols))
    fig, axes = subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows + 0.4), squeeze=False)
    best = grid.strongest[layer]
    hi = float(maps.max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= c:
            continue
        ax.imshow(maps[i], cmap="viridis", vmin=min(0.0, float(maps.min())), vmax=hi, interpolation="nearest")
        ax.set_title(str(i), fontsize=6, color="red" if i == best else "black")
        if i == best:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_color("red")
                s.set_linewidth(2.5)
    more = f" (first {c} of {len(maps)})" if c < len(maps) else ""
    fig.suptitle(f"{layer}: {len(maps)} maps of {maps.shape[1]}x{maps.shape[2]}{more}; strongest: {best}",
                 fontsize=8)
    fig.tight_layout()
    return fig


def _lime_panels(r, label, k: int, k_both: int, min_weight: float):
    from skimage.segmentation import mark_boundaries

    img = hwc(r.image)
    rgb = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img
    grey = np.full_like(rgb, 0.5)
    pos = r.mask(label, k)
    both = r.mask(label, k_both, positive_only=False)
    strong = r.mask(label, len(r.weights(label)), positive_only=False, min_weight=min_weight)
    only = np.where(pos[..., None] > 0, rgb, grey)
    shade = rgb.copy()
    shade[both > 0] = 0.55 * shade[both > 0] + 0.45 * np.array([0.0, 1.0, 0.0])
    shade[both < 0] = 0.55 * shade[both < 0] + 0.45 * np.array([1.0, 0.0, 0.0])
    return [
        ("original", mark_boundaries(rgb, r.segments, color=(1, 1, 0), mode="inner")),
        (f"top {k} superpixels", mark_boundaries(only, pos, color=(1, 1, 0))),
        (f"top {k}, rest shown", mark_boundaries(rgb, pos, color=(1, 1, 0))),
        (f"top {k_both} pros (green) / cons (red)", mark_boundaries(shade, both + 1, color=(1, 1, 0))),
        (f"|weight| >= {min_weight:g}", mark_boundaries(np.where(strong[..., None] != 0, rgb, grey),
                                                       strong + 1, color=(1, 1, 0))),
    ]


def plot_lime(r, labels=None, *, k: int = 5, k_both: int = 10, min_weight: float | None = None):
    """Lees' Figs. 24-25, one row per class: the image with its superpixels, the top ``k``
    positive superpixels alone, the same with the rest of the image, the top ``k_both`` positive
    (green) and negative (red) ones, and those whose weight reaches ``min_weight`` (default: a
    tenth of the largest weight; Lees used 0.1)."""
    from convlens.data import short_name

    if r.meta.get("warning"):  # nothing to explain: say so beside the image, not five empty panels
        fig, ax = subplots(1, 1, figsize=(6, 2.4))
        ax.imshow(hwc(r.image), cmap="gray" if r.image.shape[0] == 1 else None, vmin=0, vmax=1,
                  extent=(0, 1, 0, 1))
        ax.set_xlim(0, 2.6)
        ax.text(1.08, 0.5, "LIME: " + textwrap.fill(r.meta["warning"], 44), va="center", fontsize=8,
                color="#a00")
        ax.axis("off")
        fig.tight_layout()
        return fig
    labels = list(labels) if labels is not None else r.labels
    fig, axes = subplots(len(labels), 5, figsize=(10, 2.2 * len(labels)), squeeze=False)
    for i, label in enumerate(labels):
        w = np.abs(r.weights(label))
        mw = min_weight if min_weight is not None else 0.1 * float(w.max())
        row = r.labels[r._row(label)]
        name = short_name(r.class_names[row]) if row < len(r.class_names) else str(row)
        for j, (title, img) in enumerate(_lime_panels(r, label, k, k_both, mw)):
            _show(axes[i, j], img, title)
        axes[i, 0].set_ylabel(f"{name}\np={r.probs[row]:.3f}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_occlusion(o, class_names=()):
    fig, axes = subplots(1, 4, figsize=(9, 2.4))
    _show(axes[0], hwc(o.image), "image")
    name = class_names[o.target] if o.target < len(class_names) else str(o.target)
    im = axes[1].imshow(o.probs, cmap="jet", vmin=0, vmax=max(o.base_prob, 1e-6))
    axes[1].set_title(f"p({name}) by occluder position", fontsize=7)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].imshow(o.labels, cmap="tab20", interpolation="nearest")
    axes[2].set_title("most probable label", fontsize=7)
    _show(axes[3], o.sensitivity / max(float(np.abs(o.sensitivity).max()), 1e-12), "sensitivity", cmap="hot")
    for ax in axes[1:3]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_curves(curves: dict):
    """Deletion/insertion curves, ``{method: Curve}``, with their areas in the legend."""
    kinds = sorted({c.kind for c in curves.values()})
    fig, axes = subplots(1, len(kinds), figsize=(4 * len(kinds), 3), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for name, c in curves.items():
            if c.kind == kind:
                ax.plot(c.fractions, c.probs, label=f"{name.split('/')[0]} (area {c.area:.3f})")
        ax.set_xlabel(f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}")
        ax.set_ylabel("class probability")
        ax.set_title(kind, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_monitor(mon):
    """Rows: snapshots (step); columns: the unit's top projections cropped to its receptive field."""
    t, k = mon.values.shape
    fig, axes = subplots(t, k, figsize=(0.9 * k, 0.95 * t + 0.3), squeeze=False)
    for i in range(t):
        for j in range(k):
            _show(axes[i, j], projection_image(_crop(mon.projections[i, j], mon.boxes[i, j])))
        axes[i, 0].set_ylabel(f"step {int(mon.steps[i])}", fontsize=7)
    fig.suptitle(f"{mon.unit}: top projections over training", fontsize=8)
    fig.tight_layout()
    return fig
