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
            a = upsample(fmap, mask_size).cpu().numpy()
            mask = a > t32[unit] if strict[unit] else a >= t32[unit]
            area = int(mask.sum())
            unit_area[unit] += area * annotated[i]
            for k, m in zip(ids, masks):
                inter[unit, k] += int(np.logical_and(mask, m).sum())
    return inter, unit_area, label_area


def label_planes(ids: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """One image's concept masks as NetDissect's pixel label planes ``(planes, H, W)``: concept
    ``k`` is stored as ``k + 1`` (0 = none) in the first plane where it overlaps nothing, as
    Broden stacks overlapping labels of a category."""
    planes: list[np.ndarray] = []
    for k, m in zip(ids, np.asarray(masks, dtype=bool)):
        for plane in planes:
            if not (plane[m] != 0).any():
                plane[m] = k + 1
                break
        else:
            planes.append(np.where(m, k + 1, 0).astype(np.int64))
    return np.stack(planes) if planes else np.zeros((0, *np.shape(masks)[1:]), np.int64)


def netdissect_lite_tally(acts: np.ndarray, thresholds: np.ndarray, pixels: list[np.ndarray],
                          annotated: np.ndarray, concept_category: np.ndarray,
                          mask_size: tuple[int, int]):
    """``(inter, unit_area)`` counted as NetDissect-Lite's ``tally_job`` does, line for line:
    per image and unit, skip a map whose maximum does not exceed the threshold, resize it with
    PIL's bilinear filter (``scipy.misc.imresize(..., mode='F')``), ``argwhere`` the pixels above
    the threshold and ``bincount`` the label planes there. Unit areas are NetDissect-Lite's:
    per category, the mask's pixels in images where the mask touches that category (convlens
    counts images that annotate the category, see :class:`IoUTally`), so only ``inter`` is
    comparable with convlens's counts."""
    from PIL import Image

    b, u = acts.shape[:2]
    c = len(concept_category)
    labelcat = np.zeros((c + 1, annotated.shape[1]))
    labelcat[np.arange(c) + 1, concept_category] = 1
    tally_both = np.zeros((u, c + 1), dtype=np.float64)
    tally_units_cat = np.zeros((u, annotated.shape[1]), dtype=np.float64)
    size = (mask_size[1], mask_size[0])
    for i in range(b):
        planes = pixels[i]
        for unit_id in range(u):
            feature_map = acts[i, unit_id]
            if feature_map.max() > thresholds[unit_id]:
                mask = np.asarray(Image.fromarray(feature_map).resize(size, Image.BILINEAR))
                indexes = np.argwhere(mask > thresholds[unit_id])
                tally_cat = np.zeros(labelcat.shape[1])
                if len(planes) > 0:
                    tally_bt = np.bincount(planes[:, indexes[:, 0], indexes[:, 1]].ravel())
                    if len(tally_bt) > 0:
                        tally_bt[0] = 0
                    tally_cat = np.dot(tally_bt[None, :], labelcat[:len(tally_bt), :])[0]
                    tally_both[unit_id, :len(tally_bt)] += tally_bt
                tally_units_cat[unit_id] += len(indexes) * (tally_cat > 0)
    return tally_both[:, 1:].astype(np.int64), tally_units_cat.astype(np.int64)
