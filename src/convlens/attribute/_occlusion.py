"""Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7): a grey square slid over the image; at
each position the probability of the class, the most probable label and, optionally, a unit's
total activity are recorded. The per-pixel map (the mean drop of the class probability over the
windows covering a pixel) is what Captum's ``Occlusion`` computes; the test checks both agree."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convlens.attribute._blend import DEFAULT_PRECISION, blend_probs, chunks
from convlens.attribute._checks import as_unit, check_images, resolve_class
from convlens.files import load_result, save_result


@dataclass
class OcclusionResult:
    """``probs``/``labels``/``unit_activity`` over occluder positions ``(P_rows, P_cols)``
    (top-left corners ``rows`` x ``cols``); ``sensitivity (H, W)`` per pixel."""

    image: np.ndarray
    target: int
    window: int
    stride: int
    rows: np.ndarray
    cols: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    sensitivity: np.ndarray
    base_prob: float
    unit_activity: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "occlusion", {
            "image": self.image, "rows": self.rows, "cols": self.cols, "probs": self.probs,
            "labels": self.labels, "sensitivity": self.sensitivity, "unit_activity": self.unit_activity},
            {"target": self.target, "window": self.window, "stride": self.stride,
             "base_prob": self.base_prob, "meta": self.meta})

    @classmethod
    def load(cls, folder: str | Path) -> OcclusionResult:
        a, i = load_result(folder, "occlusion")
        return cls(a["image"], i["target"], i["window"], i["stride"], a["rows"], a["cols"], a["probs"],
                   a["labels"], a["sensitivity"], i["base_prob"], a.get("unit_activity"), i["meta"])


def occlusion(model, image, target=None, *, window: int = 8, stride: int = 4, value: float = 0.5,
              unit=None, batch_size: int | None = None, precision: str = DEFAULT_PRECISION) -> OcclusionResult:
    """Slide a ``window`` x ``window`` square of grey ``value`` with ``stride`` over one image.

    ``target`` is a class (index or name; the predicted class by default); ``unit`` (e.g.
    ``"conv2:3"``) also records that unit's summed activity at each position. ``batch_size``
    (``None``: from the image size) and ``precision`` (``"auto"``, ``"float32"``,
    ``"bfloat16"``) are as in :func:`convlens.attribute.lime`."""
    x = check_images(model, image)
    if len(x) != 1:
        raise ValueError(f"one image at a time, got a batch of {len(x)}")
    _, c, h, w = x.shape
    if not 1 <= window <= min(h, w):
        raise ValueError(f"window must be between 1 and {min(h, w)} pixels, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    rows = np.arange(0, h - window + 1, stride)
    cols = np.arange(0, w - window + 1, stride)
    corners = [(r, q) for r in rows for q in cols]
    u = as_unit(unit) if unit is not None else None
    r0 = torch.as_tensor([r for r, _ in corners], device=x.device)
    c0 = torch.as_tensor([q for _, q in corners], device=x.device)
    ii, jj = torch.arange(h, device=x.device), torch.arange(w, device=x.device)

    def masks():  # the image itself, then (B, H, W) batches: True inside each window
        yield torch.zeros(1, h, w, dtype=torch.bool, device=x.device)
        for a, b in chunks(len(corners), batch_size, (h, w)):
            rows_in = (ii >= r0[a:b, None]) & (ii < r0[a:b, None] + window)
            cols_in = (jj >= c0[a:b, None]) & (jj < c0[a:b, None] + window)
            yield rows_in[:, :, None] & cols_in[:, None, :]

    acts = []
    all_probs, dtype = blend_probs(
        model, x[0], torch.full_like(x[0], value), masks(), total=len(corners) + 1, precision=precision,
        layer=u.layer if u else None,
        on_batch=(lambda _p, a: acts.append(a[:, u.index].flatten(1).sum(1).float().cpu())) if u else None)
    target = int(all_probs[0].argmax()) if target is None else resolve_class(model, target)
    base = float(all_probs[0, target])
    probs_t = all_probs[1:, target].double()
    labels = all_probs[1:].argmax(1)
    drop = np.zeros((h, w))
    count = np.zeros((h, w))
    for (r, q), p in zip(corners, probs_t.tolist()):
        drop[r : r + window, q : q + window] += base - p
        count[r : r + window, q : q + window] += 1
    sens = np.divide(drop, count, out=np.zeros_like(drop), where=count > 0)
    shape = (len(rows), len(cols))
    return OcclusionResult(
        x[0].cpu().numpy(), target, window, stride, rows, cols, probs_t.cpu().numpy().reshape(shape),
        labels.cpu().numpy().reshape(shape), sens, base,
        torch.cat(acts)[1:].cpu().numpy().reshape(shape) if u else None, {"value": value, "unit": str(u) if u else None,
                                                          "dtype": str(dtype).removeprefix("torch.")},
    )
