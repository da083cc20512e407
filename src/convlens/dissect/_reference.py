"""A slow reference kept for tests and the benchmark: the per-unit loop of NetDissect-Lite.

NetDissect-Lite (``feature_operation.tally_job``) walks image by image and, inside, unit by
unit: it resizes one unit's map to the mask size, thresholds it, and counts the pixels it shares
with each concept present. This module does the same with the same definitions as
:class:`~convlens.dissect.IoUTally`, so the two must agree exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from convlens.dissect._stats import annotate_present, float32_at_least, upsample_bilinear


def per_unit_tally(acts: torch.Tensor, thresholds: np.ndarray, strict: np.ndarray,
                   labels: list[tuple[np.ndarray, np.ndarray]], annotated: np.ndarray,
                   concept_category: np.ndarray, mask_size: tuple[int, int], upsample=None,
                   skip: bool = True):
    """``(inter, unit_area, label_area)`` counted one image and one unit at a time.

    ``upsample(map (h, w), size) -> (H, W)`` resizes one map: by default convlens's own
    :func:`~convlens.dissect.upsample_bilinear` (so counts must equal :class:`IoUTally`'s exactly);
    the benchmark passes ``F.interpolate`` per map, as NetDissect-Lite calls ``imresize`` per map.
    ``skip`` leaves out maps whose maximum is below the threshold, as NetDissect-Lite does.
    """
    upsample = upsample or upsample_bilinear
    b, u = acts.shape[:2]
    c = len(concept_category)
    inter = np.zeros((u, c), dtype=np.int64)
    unit_area = np.zeros((u, annotated.shape[1]), dtype=np.int64)
    label_area = np.zeros(c, dtype=np.int64)
    annotated = annotate_present(annotated, labels, concept_category)
    t32 = float32_at_least(np.asarray(thresholds, dtype=np.float64))
    for i in range(b):
        ids, masks = labels[i]
        for k, m in zip(ids, masks):
            label_area[k] += int(m.sum())
        for unit in range(u):
            fmap = acts[i, unit].to(torch.float32)
            peak = float(fmap.max())
            if skip and ((peak <= t32[unit]) if strict[unit] else (peak < t32[unit])):
                continue  # NetDissect-Lite skips a map that never reaches the threshold
            a = upsample(fmap, mask_size).numpy()
            mask = a > t32[unit] if strict[unit] else a >= t32[unit]
            area = int(mask.sum())
            unit_area[unit] += area * annotated[i]
            for k, m in zip(ids, masks):
                inter[unit, k] += int(np.logical_and(mask, m).sum())
    return inter, unit_area, label_area
