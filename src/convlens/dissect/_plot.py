"""Figures made from saved dissection results (never inside the computation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from convlens.dissect._concepts import ConceptSet
from convlens.dissect._result import Dissection, LayerDissection
from convlens.dissect._stats import unit_masks

CATEGORY_COLOURS = {"color": "#d62728", "texture": "#2ca02c", "shape": "#1f77b4", "object": "#9467bd",
                    "part": "#8c564b", "material": "#e377c2", "scene": "#17becf"}


def region_overlay(image: torch.Tensor, fmap: np.ndarray, threshold: float, strict: bool,
                   mask_size: tuple[int, int]) -> np.ndarray:
    """The image (at mask size) with everything outside the unit's thresholded region dimmed."""
    m = unit_masks(torch.from_numpy(fmap)[None, None], np.array([threshold]), np.array([strict]),
                   mask_size)[0, 0].reshape(mask_size).cpu().numpy()
    x = image[None].float()
    if x.shape[1] == 1:
        x = x.expand(1, 3, -1, -1)
    x = F.interpolate(x, size=mask_size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).cpu().numpy()
    return np.where(m[..., None], x, 0.15 * x + 0.1)


def plot_detector_images(ld: LayerDissection, concepts: ConceptSet, units: Sequence[int] | None = None,
                    max_units: int = 8):
    """A grid: one row per unit (best IoU first by default), its top images with the thresholded
    region shown; the row title gives the unit's label and IoU."""
    from convlens.figures import subplots

    if units is None:
        units = [r["unit"] for r in ld.table()[:max_units]]
    n = ld.top_images.shape[1]
    fig, axes = subplots(len(units), n, figsize=(1.6 * n, 1.75 * len(units)), squeeze=False)
    for r, u in enumerate(units):
        c = ld.best[u]
        label = ld.concepts[c] if ld.is_detector[u] else f"({ld.concepts[c]})"
        for j in range(n):
            ax = axes[r, j]
            ax.axis("off")
            i = int(ld.top_images[u, j])
            if i < 0 or not np.isfinite(ld.top_values[u, j]):
                continue
            ax.imshow(region_overlay(concepts.images.image(i), ld.top_maps[u, j], ld.thresholds[u],
                                     bool(ld.strict[u]), concepts.mask_size))
            if j == 0:
                ax.set_title(f"unit {u}: {label} IoU {ld.best_iou[u]:.2f}", fontsize=8, loc="left")
    fig.suptitle(f"{ld.layer}: top images, thresholded regions", fontsize=9)
    fig.tight_layout()
    return fig


def plot_detector_counts(dissections: dict[str, Dissection]):
    """Unique detectors per category for each layer (and model, side by side): Fig. 17."""
    from convlens.figures import subplots

    groups = [(m, layer, d[layer]) for m, d in dissections.items() for layer in d.layers]
    cats = list(dict.fromkeys(c for _, _, ld in groups for c in ld.categories))
    fig, ax = subplots(figsize=(max(4.0, 0.9 * len(groups) + 1.5), 3.2))
    bottom = np.zeros(len(groups))
    for cat in cats:
        vals = np.array([ld.unique_detectors().get(cat, 0) for _, _, ld in groups], dtype=float)
        ax.bar(range(len(groups)), vals, bottom=bottom, label=cat, color=CATEGORY_COLOURS.get(cat))
        bottom += vals
    multi = len(dissections) > 1
    ax.set_xticks(range(len(groups)), [f"{m}\n{layer}" if multi else layer for m, layer, _ in groups],
                  fontsize=7, rotation=0)
    ax.set_ylabel("unique detectors")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig
