"""The two streaming statistics of network dissection, both mergeable across shards.

- :class:`TopQuantile`: per unit, the threshold ``T`` with ``P(a > T) = q`` over every spatial
  position of every image (Bau et al. 2017, Sec. 3.2; the survey's step (2)). Only the top
  ``q`` of the values can matter, so each unit keeps a bounded buffer of its largest values;
  with the total count known in advance the result equals ``numpy.quantile(all, 1 - q)``
  (``method="linear"``) exactly, and buffers from shards merge exactly.
- :class:`IoUTally`: intersection and union counts per unit and concept (the survey's Eq. 19),
  accumulated for all units of a layer at once by a compiled loop that evaluates the upsampled
  mask only near the cells that reach the threshold (NetDissect-Lite resizes every map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numba
import numpy as np
import torch

MAX_BUFFER_BYTES = 3 * 2**30


def quantile_position(n: int, q: float) -> tuple[int, int, float]:
    """Ascending order-statistic indices ``(lo, hi)`` and weight ``gamma`` that
    ``numpy.quantile(a, 1 - q)`` (linear method) interpolates between, computed as numpy does."""
    p = 1.0 - q
    virtual = (n - 1) * p  # numpy's 'linear' get_virtual_index
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    if virtual < 0:
        return 0, 0, 0.0
    lo = math.floor(virtual)
    return lo, lo + 1, virtual - lo


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """numpy's ``_lerp`` (monotone linear interpolation), so thresholds match it bit for bit."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


@dataclass
class TopQuantile:
    """Exact streaming upper quantile per unit.

    Parameters
    ----------
    units : number of units
    total : how many values each unit will see in all (images x height x width)
    q : upper tail probability (0.005 in Bau et al.)
    """

    units: int
    total: int
    q: float
    buffer: torch.Tensor = field(init=False)
    minimum: torch.Tensor = field(init=False)
    seen: int = field(init=False, default=0)

    def __post_init__(self):
        if not 0 < self.q < 1:
            raise ValueError(f"the quantile must be in (0, 1), got {self.q}")
        lo, _, _ = quantile_position(self.total, self.q)
        self.k = self.total - lo
        need = self.units * self.k * 4
        if need > MAX_BUFFER_BYTES:
            raise ValueError(
                f"an exact {self.q} quantile over {self.total:,} values per unit needs "
                f"{need / 2**30:.1f} GiB for {self.units} units: use fewer images (--limit), "
                "shard over more machines, or a larger quantile")
        self.buffer = torch.full((self.units, 0), -math.inf)
        self.minimum = torch.full((self.units,), math.inf)

    def update(self, values: torch.Tensor) -> None:
        """``values``: ``(units, m)`` float32, any number of new values per unit."""
        values = values.detach().to(torch.float32).cpu()
        if values.shape[1] == 0:
            return
        self.seen += values.shape[1]
        if self.seen > self.total:
            raise ValueError(f"TopQuantile saw {self.seen} values per unit, more than the {self.total} declared")
        self.minimum = torch.minimum(self.minimum, values.min(1).values)
        both = torch.cat([self.buffer, values], 1)
        k = min(self.k, both.shape[1])
        self.buffer = both.topk(k, dim=1, sorted=False).values if k < both.shape[1] else both

    def merge(self, other: TopQuantile) -> TopQuantile:
        """Combine with a shard that saw other values of the same units (exact)."""
        if (other.units, other.total, other.q) != (self.units, self.total, self.q):
            raise ValueError("cannot merge quantile trackers of different units, totals or q")
        out = TopQuantile(self.units, self.total, self.q)
        both = torch.cat([self.buffer, other.buffer], 1)
        k = min(self.k, both.shape[1])
        out.buffer = both.topk(k, dim=1, sorted=False).values if k < both.shape[1] else both
        out.minimum = torch.minimum(self.minimum, other.minimum)
        out.seen = self.seen + other.seen
        return out

    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """``(T, strict)``: the float64 threshold per unit, equal to ``numpy.quantile(a, 1 - q)``,
        and whether the mask must be strict (``a > T``) because ``T`` is the unit's floor (a unit
        that is constant, e.g. zero after a ReLU, on more than ``1 - q`` of the positions)."""
        if self.seen != self.total:
            raise ValueError(f"TopQuantile saw {self.seen} values per unit but {self.total} were declared")
        desc = self.buffer.sort(dim=1, descending=True).values.double().cpu().numpy()
        lo, hi, gamma = quantile_position(self.total, self.q)
        a = desc[:, self.total - 1 - lo]
        b = desc[:, self.total - 1 - hi]
        t = _lerp(a, b, gamma)
        strict = t <= self.minimum.double().cpu().numpy()
        return t, strict


def float32_at_least(t: np.ndarray) -> np.ndarray:
    """The smallest float32 >= each float64 ``t``: ``a >= t`` equals ``a >= float32_at_least(t)``
    for float32 ``a``."""
    t32 = t.astype(np.float32)
    low = t32.astype(np.float64) < t
    t32[low] = np.nextafter(t32[low], np.float32(np.inf))
    return t32


def _axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weights of bilinear resampling along one axis, as PyTorch computes
    them for ``align_corners=False``: ``src = (dst + 0.5) * n_in / n_out - 0.5``, clamped at 0."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    l1 = src - i0.float()
    return i0, i1, 1 - l1, l1


@lru_cache(maxsize=64)
def _axis_table(n_in: int, n_out: int) -> tuple[torch.Tensor, ...]:
    """``(i0, i1, w0, w1)`` of one axis as float32/int64 tensors (cached)."""
    return _axis(n_in, n_out)


@lru_cache(maxsize=64)
def _axis_runs(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """One axis for the compiled tally: for each source cell ``r``, the run of outputs
    ``start[r] : start[r] + count[r]`` whose first source cell is ``r`` (outputs are monotone
    in their source), and the weights ``w0, w1`` of every output, as numpy arrays."""
    i0, _, w0, w1 = _axis(n_in, n_out)
    count = np.bincount(i0.cpu().numpy(), minlength=n_in)
    start = np.cumsum(count) - count
    return start, count, w0.cpu().numpy(), w1.cpu().numpy()


def upsample_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resampling of ``(..., h, w)`` float32 maps to ``size`` with the weights of
    ``F.interpolate(..., align_corners=False)``, elementwise: along x, then along y,

        v = wy0 * (wx0 * a[i0, j0] + wx1 * a[i0, j1]) + wy1 * (wx0 * a[i1, j0] + wx1 * a[i1, j1])

    each product and sum rounded once in float32, in this order. Every value depends on its own
    four cells only, so a map gives the same bits alone or in any batch (shards and batch sizes do
    not change the masks), and :meth:`IoUTally.update_acts`, which evaluates the same expression
    at chosen pixels only, gives the same bits as this dense version (both checked in tests)."""
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    y0, y1, wy0, wy1 = _axis_table(h, size[0])
    x0, x1, wx0, wx1 = _axis_table(w, size[1])
    maps = maps.to(torch.float32)
    along_x = maps.index_select(-1, x0) * wx0 + maps.index_select(-1, x1) * wx1
    return along_x.index_select(-2, y0) * wy0[:, None] + along_x.index_select(-2, y1) * wy1[:, None]


def _cutoff(thresholds: np.ndarray, strict: np.ndarray) -> torch.Tensor:
    """Per unit, the float32 ``c`` with ``(a >= c) == (a > T if strict else a >= T)`` for every
    float32 ``a``: one comparison serves both kinds of unit."""
    t32 = float32_at_least(np.asarray(thresholds, dtype=np.float64))
    strict = np.asarray(strict, dtype=bool)
    t32[strict] = np.nextafter(t32[strict], np.float32(np.inf))
    return torch.from_numpy(t32)


def unit_masks(acts: torch.Tensor, thresholds: np.ndarray, strict: np.ndarray,
               mask_size: tuple[int, int]) -> torch.Tensor:
    """``M_f(x) = S(A_f(x)) >= T_f`` (Bau et al. Eq. 1): activations ``(B, U, h, w)`` upsampled
    bilinearly to ``mask_size`` and thresholded; ``(B, U, H*W)`` bool. Units flagged ``strict``
    use ``>`` (their threshold is their floor)."""
    acts = upsample_bilinear(acts.to(torch.float32), mask_size)
    return (acts >= _cutoff(thresholds, strict).view(1, -1, 1, 1)).flatten(2)


def annotate_present(annotated: np.ndarray, labels: list[tuple[np.ndarray, np.ndarray]],
                     concept_category: np.ndarray) -> np.ndarray:
    """A category is annotated in every image where one of its concepts is present."""
    annotated = np.array(annotated, dtype=bool, copy=True)
    for i, (ids, _) in enumerate(labels):
        annotated[i, concept_category[np.asarray(ids, dtype=np.int64)]] = True
    return annotated


@dataclass
class IoUTally:
    """Counts for the IoU of every unit with every concept, summed over images.

    ``IoU[u, c] = inter[u, c] / (unit_area[u, cat(c)] + label_area[c] - inter[u, c])`` where
    ``unit_area[u, k]`` counts the unit's mask pixels over images that annotate category ``k``
    (as NetDissect does, so an unlabelled category does not count against a unit).
    """

    units: int
    concept_category: np.ndarray
    n_categories: int
    inter: np.ndarray = field(init=False)
    unit_area: np.ndarray = field(init=False)
    label_area: np.ndarray = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self):
        c = len(self.concept_category)
        self.inter = np.zeros((self.units, c), dtype=np.int64)
        self.unit_area = np.zeros((self.units, self.n_categories), dtype=np.int64)
        self.label_area = np.zeros(c, dtype=np.int64)

    def update(self, masks: torch.Tensor, labels: list[tuple[np.ndarray, np.ndarray]],
               annotated: np.ndarray) -> None:
        """``masks``: ``(B, U, P)`` bool unit masks; ``labels``: per image ``(ids, (k, H, W))``;
        ``annotated``: ``(B, n_categories)`` bool."""
        b, u, p = masks.shape
        annotated = annotate_present(annotated, labels, self.concept_category)
        kmax = max(1, max(len(ids) for ids, _ in labels))
        lab = torch.zeros((b, kmax, p), dtype=torch.float32)
        ids = torch.full((b, kmax), len(self.label_area), dtype=torch.int64)
        for i, (cid, m) in enumerate(labels):
            if len(cid):
                lab[i, : len(cid)] = torch.from_numpy(m.reshape(len(cid), -1))
                ids[i, : len(cid)] = torch.from_numpy(cid)
        mf = masks.to(torch.float32)
        inter = torch.bmm(mf, lab.transpose(1, 2))  # (B, U, kmax): exact integer counts in fp32
        acc = torch.zeros((u, len(self.label_area) + 1), dtype=torch.float64)
        acc.index_add_(1, ids.reshape(-1), inter.permute(1, 0, 2).reshape(u, -1).double())
        self.inter += acc[:, :-1].round().long().cpu().numpy()
        area = mf.sum(2).double()  # (B, U)
        self.unit_area += (area.T @ torch.from_numpy(annotated.astype(np.float64))).round().long().cpu().numpy()
        la = torch.zeros(len(self.label_area) + 1, dtype=torch.float64)
        la.index_add_(0, ids.reshape(-1), lab.sum(2).reshape(-1).double())
        self.label_area += la[:-1].round().long().cpu().numpy()
        self.images += b

    def update_acts(self, acts: torch.Tensor, thresholds: np.ndarray, strict: np.ndarray,
                    labels: list[tuple[np.ndarray, np.ndarray]], annotated: np.ndarray,
                    mask_size: tuple[int, int], pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
                    ) -> None:
        """Count a batch from its activations ``(B, U, h, w)`` without upsampling whole maps
        (``pixels``: :func:`pixel_labels` of ``labels``, when several layers share them).

        A bilinear value is a convex combination of its four source cells, so it can reach the
        threshold only where one of them does. Output pixels that share their source cells form
        small tiles (:func:`_axis_runs`); only tiles with a corner at or above the threshold
        are evaluated -- a few per map at the 0.5 % quantile -- with the expression of
        :func:`upsample_bilinear`, so the masks are bit-identical to the dense ones, and each
        pixel that passes is counted against its image's concept masks on the spot. The loop
        over maps is compiled (:func:`_tally_maps`)."""
        b, u, h, w = acts.shape
        size = tuple(mask_size)
        c = len(self.label_area)
        annotated = annotate_present(annotated, labels, self.concept_category)
        lab, ids = pixel_labels(labels, size, c) if pixels is None else pixels
        self.label_area += _label_area(lab, ids, b, c)
        self.images += b
        inter = np.zeros((u, c + 1), dtype=np.int64)
        area = np.zeros((b, u), dtype=np.int64)
        _tally_maps(np.ascontiguousarray(acts.detach().to(torch.float32).cpu().numpy()),
                    _cutoff(thresholds, strict).cpu().numpy(),
                    *_axis_runs(h, size[0]), *_axis_runs(w, size[1]),
                    size[1], lab.cpu().numpy().reshape(b, size[0] * size[1], lab.shape[1]), ids.cpu().numpy(), inter, area)
        self.inter += inter[:, :c]
        self.unit_area += area.T @ annotated.astype(np.int64)

    def merge(self, other: IoUTally) -> IoUTally:
        out = IoUTally(self.units, self.concept_category, self.n_categories)
        out.inter = self.inter + other.inter
        out.unit_area = self.unit_area + other.unit_area
        out.label_area = self.label_area + other.label_area
        out.images = self.images + other.images
        return out

    def iou(self) -> np.ndarray:
        union = self.unit_area[:, self.concept_category] + self.label_area[None] - self.inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, self.inter / np.maximum(union, 1), 0.0)



def pixel_labels(labels: list[tuple[np.ndarray, np.ndarray]], size: tuple[int, int],
                  c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's concept masks as rows of pixels: ``(B * P, kmax)`` uint8 (image-major), and
    the concept ids ``(B, kmax)``, padded with ``c`` (no concept)."""
    p = size[0] * size[1]
    kmax = max((len(ids) for ids, _ in labels), default=0)
    lab = torch.zeros((len(labels), p, kmax), dtype=torch.uint8)
    ids = torch.full((len(labels), kmax), c, dtype=torch.int64)
    for i, (cid, m) in enumerate(labels):
        if len(cid):
            m = m if isinstance(m, torch.Tensor) else torch.from_numpy(np.asarray(m))
            lab[i, :, : len(cid)] = m.reshape(len(cid), p).T.to(torch.uint8)
            ids[i, : len(cid)] = torch.as_tensor(cid, dtype=torch.int64)
    return lab.reshape(len(labels) * p, kmax), ids


def _label_area(lab: torch.Tensor, ids: torch.Tensor, b: int, c: int) -> np.ndarray:
    """Pixels per concept over the batch."""
    per = lab.reshape(b, lab.shape[0] // max(b, 1), lab.shape[1]).sum(1, dtype=torch.int64)  # (B, kmax)
    return np.bincount(ids.cpu().numpy().ravel(), weights=per.cpu().numpy().ravel(), minlength=c + 1)[:c] \
        .round().astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _tally_maps(acts, cut, ystart, ycount, wy0, wy1, xstart, xcount, wx0, wx1, width, lab, ids,
                inter, area):  # pragma: no cover - compiled
    """For every map of ``acts`` ``(B, U, h, w)``: its thresholded mask area ``area[b, u]`` and
    its pixels inside each of the image's concepts, added to ``inter[u, ids[b, j]]``.

    A map that never reaches ``cut[u]`` is skipped. Otherwise each hot cell ``(r, s)`` names the
    tiles that have it as a corner -- the output runs of cells ``r - 1, r`` times ``s - 1, s``
    (:func:`_axis_runs`) -- each evaluated once, every pixel as ``wy0 * (wx0 * a00 + wx1 * a01)
    + wy1 * (wx0 * a10 + wx1 * a11)`` in float32, in the order of :func:`upsample_bilinear`."""
    nb, nu, h, w = acts.shape
    kmax = lab.shape[2]
    seen = np.full((h, w), -1, dtype=np.int64)  # tile last evaluated for map number ...
    local = np.zeros(kmax, dtype=np.int64)
    for b in range(nb):
        for u in range(nu):
            a = acts[b, u]
            t = cut[u]
            reached = False
            for r in range(h):
                for s in range(w):
                    reached |= a[r, s] >= t
            if not reached:  # most maps never reach the threshold
                continue
            tag = b * nu + u
            local[:] = 0
            n = 0
            for r in range(h):
                for s in range(w):
                    if not a[r, s] >= t:
                        continue
                    for ry in range(max(r - 1, 0), r + 1):
                        ry1 = min(ry + 1, h - 1)
                        for sx in range(max(s - 1, 0), s + 1):
                            if seen[ry, sx] == tag:
                                continue
                            seen[ry, sx] = tag
                            sx1 = min(sx + 1, w - 1)
                            a00, a01, a10, a11 = a[ry, sx], a[ry, sx1], a[ry1, sx], a[ry1, sx1]
                            for px in range(xstart[sx], xstart[sx] + xcount[sx]):
                                t0 = a00 * wx0[px] + a01 * wx1[px]
                                t1 = a10 * wx0[px] + a11 * wx1[px]
                                for py in range(ystart[ry], ystart[ry] + ycount[ry]):
                                    if t0 * wy0[py] + t1 * wy1[py] >= t:
                                        n += 1
                                        pixel = py * width + px
                                        for j in range(kmax):
                                            local[j] += lab[b, pixel, j]
            area[b, u] = n
            for j in range(kmax):
                inter[u, ids[b, j]] += local[j]
