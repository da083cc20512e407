"""Figures and PNGs made from saved results (never inside the computation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convlens.files import save_figure, write_png


def _hwc(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` or ``(H, W, 3)`` for matplotlib and PIL."""
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def save_png(img: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write one ``(C, H, W)`` image in [0, 1] as a PNG (nearest-neighbour enlarged ``scale``x)."""
    return write_png(path, img, scale=scale)


def _show(ax, img, title=None, fontsize=7):
    a = _hwc(img)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def _grid(n: int, cols: int, cell: float = 1.3, rows_per_item: int = 1):
    from convlens.figures import subplots

    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols)) * rows_per_item
    fig, axes = subplots(rows, cols, figsize=(cell * cols, cell * rows * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def unit_gallery(result, path: str | Path, *, cols: int = 8, max_units: int | None = None) -> Path:
    """The live units of a :class:`UnitVisualization`, highest activation first; each with the
    dataset image that excites it most underneath (when a reference was given)."""
    order = result.order[:max_units] if max_units else result.order
    has_ref = result.reference_images is not None
    n = max(1, len(order))
    fig, axes = _grid(n, cols, rows_per_item=2 if has_ref else 1)
    cols = axes.shape[1]
    for k, row in enumerate(order):
        r, c = divmod(k, cols)
        ax = axes[r * (2 if has_ref else 1), c]
        ax.axis("on")
        _show(ax, result.images[row], f"{result.units[row]}: {result.reached[row]:.3g}")
        if has_ref:
            ax2 = axes[r * 2 + 1, c]
            ax2.axis("on")
            _show(ax2, result.reference_images[row], f"data max {result.reference_max[row]:.3g}")
    dead = f"; dead (skipped): {result.dead}" if result.dead else ""
    fig.suptitle(f"{result.layer}: units by activation reached{dead}", fontsize=9)
    return save_figure(fig, path)


def save_unit_pngs(result, folder: str | Path, scale: int = 1) -> list[Path]:
    """One PNG per live unit: ``folder/unit_0005.png``."""
    folder = Path(folder)
    return [save_png(result.images[row], folder / f"unit_{int(result.units[row]):04d}.png", scale)
            for row in result.order]


def class_gallery(result, path: str | Path, *, cols: int = 5) -> Path:
    """Class models or fooling images with their class (short), score and confidence."""
    from convlens.data import short_name

    fig, axes = _grid(len(result.classes), cols, cell=1.6)
    cols = axes.shape[1]
    for k in range(len(result.classes)):
        ax = axes[k // cols, k % cols]
        ax.axis("on")
        extra = f", step {result.steps[k]}" if result.kind == "fooling" else ""
        _show(ax, result.images[k], f"{short_name(result.names[k])}\np={result.confidence[k]:.5f}{extra}")
    fig.suptitle("fooling images" if result.kind == "fooling" else "class models", fontsize=9)
    return save_figure(fig, path)


def inversion_figure(results, path: str | Path) -> Path:
    """One row per :class:`Inversion` (plain, binarized, dropout): the original, then each layer's
    reconstruction with its relative feature error and pixel error."""
    results = list(results)
    n = len(results[0].layers) + 1
    fig, axes = _grid(n * len(results), n, cell=1.2)
    for r, inv in enumerate(results):
        _show(axes[r, 0], inv.original, f"original\n{inv.perturb or 'features'}")
        axes[r, 0].axis("on")
        for k, name in enumerate(inv.layers):
            ax = axes[r, k + 1]
            ax.axis("on")
            _show(ax, inv.images[k], f"{name}\nf {inv.feature_error[k]:.2g} p {inv.pixel_error[k]:.2g}", 6)
    return save_figure(fig, path)


def style_figure(result, path: str | Path) -> Path:
    """Content, style, then one image per alpha/beta with its content and style losses."""
    n = len(result.ratios) + 2
    fig, axes = _grid(n, n, cell=1.6)
    _show(axes[0, 0], result.content, "content")
    _show(axes[0, 1], result.style, "style")
    for k, ratio in enumerate(result.ratios):
        _show(axes[0, k + 2], result.images[k], f"a/b={ratio:g}\nLc {result.content_loss[k]:.2g} "
                                                f"Ls {result.style_loss[k]:.2g}")
    for ax in axes.flat:
        ax.axis("on")
    return save_figure(fig, path)


def _overlay(img: np.ndarray, transparency: np.ndarray) -> np.ndarray:
    """The image over white, opaque where the accumulated gradient is large (MaCo's display)."""
    t = np.asarray(transparency, dtype=np.float32)
    hi = float(np.percentile(t, 99)) or 1.0
    alpha = np.clip(t / hi, 0, 1)[None]
    return np.asarray(img, dtype=np.float32) * alpha + (1 - alpha)


def comparison_figure(results: dict, path: str | Path, *, max_units: int = 16) -> Path:
    """Several :class:`UnitVisualization` of the same units side by side, one row per result
    (``{"Fourier": r1, "MaCo": r2}``), each image titled with its activation; a result with a
    transparency map gets a second row showing the image through it."""
    names = list(results)
    units = list(results[names[0]].units[:max_units])
    rows = sum(2 if results[k].transparency is not None else 1 for k in names)
    fig, axes = _grid(len(units) * rows, len(units), cell=1.1)
    r = 0
    for name in names:
        res = results[name]
        for c, u in enumerate(units):
            i = int(np.flatnonzero(res.units == u)[0])
            axes[r, c].axis("on")
            _show(axes[r, c], res.images[i], f"{name} {u}: {res.reached[i]:.3g}", 6)
            if res.transparency is not None:
                axes[r + 1, c].axis("on")
                _show(axes[r + 1, c], _overlay(res.images[i], res.transparency[i]),
                      f"{name} {u} transparency", 6)
        r += 2 if res.transparency is not None else 1
    fig.suptitle(f"{results[names[0]].layer}: {' vs '.join(names)} (map maximum reached)", fontsize=9)
    return save_figure(fig, path)


def accentuation_figure(result, path: str | Path, *, cols: int = 8) -> Path:
    """The seed, then each unit's accentuated image with its activation before -> after."""
    n = len(result.units) + 1
    fig, axes = _grid(n, cols, cell=1.4)
    cols = axes.shape[1]
    axes[0, 0].axis("on")
    _show(axes[0, 0], result.seed_image, "seed")
    for k in range(len(result.units)):
        ax = axes[(k + 1) // cols, (k + 1) % cols]
        ax.axis("on")
        _show(ax, result.images[k], f"{result.units[k]}: {result.before[k]:.3g}->{result.after[k]:.3g}\n"
                                    f"rms {result.distance[k]:.2f}", 6)
    fig.suptitle(f"{result.layer}: feature accentuation", fontsize=9)
    return save_figure(fig, path)
