"""Pictures from saved results: samples per activation range (Hada & Carreira-Perpiñán, Fig. 1),
an intersection beside its neurons (their Fig. 4), and decoder reconstructions per layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convlens.files import save_figure


def _hwc(img: np.ndarray) -> np.ndarray:
    img = np.clip(np.asarray(img, dtype=np.float32), 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def pick(activations: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` samples spread evenly over the sorted activation of the first neuron
    (so a row shows the low, middle and high end of the range)."""
    n = len(activations)
    if n == 0:
        return np.zeros(0, dtype=int)
    order = np.argsort(activations[:, 0], kind="stable")
    return order[np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))]


def sample_rows(results: Sequence, labels: Sequence[str], path: str | Path, *, per_row: int = 10,
                title: str | None = None) -> Path:
    """One row of ``per_row`` samples per result (an inverse set, or an ``(images,
    activations (n, p))`` pair), its label on the left and each sample's activations above it."""
    from convlens.figures import subplots

    rows = len(results)
    fig, axes = subplots(rows, per_row, figsize=(1.15 * per_row + 1.6, 1.35 * rows + 0.4), squeeze=False)
    for r, (res, label) in enumerate(zip(results, labels)):
        images, acts = res if isinstance(res, tuple) else (res.images, res.activations)
        idx = pick(acts, per_row)
        for c in range(per_row):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(idx):
                img = _hwc(images[idx[c]])
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_title(" ".join(f"{v:.3g}" for v in acts[idx[c]]), fontsize=6)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def range_figure(results: Sequence, path: str | Path, *, per_row: int = 10) -> Path:
    """Their Fig. 1: one neuron, one row per activation range (highest range on top)."""
    results = sorted(results, key=lambda r: -r.constraints[0].z2)
    labels = [f"[{r.constraints[0].z1:g}, {r.constraints[0].z2:g}]\n{len(r)} samples" for r in results]
    unit = results[0].constraints[0].unit if results else "?"
    return sample_rows(results, labels, path, per_row=per_row,
                       title=f"Inverse set of {unit}: samples per activation range")


def intersection_figure(singles: Sequence, joint, path: str | Path, *, per_row: int = 10) -> Path:
    """Their Fig. 4: a row per neuron's own inverse set, then their intersection."""
    labels = [f"{r.constraints[0]}" for r in singles] + ["intersection\n" + "\n".join(map(str, joint.constraints))]
    return sample_rows(list(singles) + [joint], labels, path, per_row=per_row,
                       title="Inverse sets and their intersection (activations above each sample)")


def reconstruction_figure(originals: np.ndarray, rows: dict[str, np.ndarray], path: str | Path) -> Path:
    """Originals on top, then one row of reconstructions per method/layer (``rows``)."""
    from convlens.figures import subplots

    n = len(originals)
    names = ["original", *rows]
    fig, axes = subplots(len(names), n, figsize=(1.1 * n + 1.4, 1.15 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        imgs = originals if r == 0 else rows[name]
        for c in range(n):
            img = _hwc(imgs[c])
            axes[r, c].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center", labelpad=6)
    fig.tight_layout()
    return save_figure(fig, path)
