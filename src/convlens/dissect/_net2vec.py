"""Net2Vec (Fong & Vedaldi 2018): a concept as a weighted combination of a layer's units.

For each concept ``c``, ``M(x; w) = sigma(sum_k w_k I(A_k(x) > T_k) + b)`` (the survey's Eq. 20)
over the thresholded, upsampled unit masks of one layer, trained by SGD with momentum on
per-pixel binary cross-entropy weighted by ``alpha = 1 - (concept pixels / all pixels)`` (their
Eq. 2), and scored on held-out images by the set IoU of ``M > 0.5`` (Eq. 21) against the best
single unit (chosen on the training images, scored on the same held-out ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convlens.dissect._concepts import ConceptSet
from convlens.dissect._stats import IoUTally, unit_masks
from convlens.files import load_result, save_result
from convlens.progress import Callback, notify

log = logging.getLogger(__name__)
CACHE_ELEMENTS = 2**25  # unit masks kept in memory as float32 (128 MiB) when they fit


@dataclass
class Net2VecResult:
    """Concept weights over one layer's units, and held-out IoU against the best single unit."""

    layer: str
    concepts: tuple[str, ...]
    weights: np.ndarray  # (concepts, units)
    bias: np.ndarray  # (concepts,)
    iou: np.ndarray  # held-out IoU of the combination
    single_unit: np.ndarray  # best single unit per concept (chosen on training images)
    single_iou: np.ndarray  # its held-out IoU
    loss: list[float] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def units_for(self, mass: float = 0.8) -> np.ndarray:
        """Per concept, how many units (largest positive weights first) carry ``mass`` of the
        total positive weight."""
        out = []
        for w in self.weights:
            pos = np.sort(np.clip(w, 0, None))[::-1]
            total = pos.sum()
            out.append(0 if total <= 0 else int(np.searchsorted(np.cumsum(pos), mass * total) + 1))
        return np.array(out)

    def table(self) -> list[dict]:
        k = self.units_for()
        return [{"concept": c, "net2vec_iou": float(self.iou[i]), "best_unit": int(self.single_unit[i]),
                 "best_unit_iou": float(self.single_iou[i]), "units_for_80pct": int(k[i])}
                for i, c in enumerate(self.concepts)]

    def save(self, folder: str | Path) -> Path:
        return save_result(folder, "net2vec", {
            "weights": self.weights, "bias": self.bias, "iou": self.iou, "single_unit": self.single_unit,
            "single_iou": self.single_iou}, {"layer": self.layer, "concepts": list(self.concepts),
                                             "loss": self.loss, "params": self.params, "table": self.table()})

    @classmethod
    def load(cls, folder: str | Path) -> Net2VecResult:
        z, meta = load_result(folder, "net2vec")
        return cls(meta["layer"], tuple(meta["concepts"]), z["weights"], z["bias"], z["iou"],
                   z["single_unit"], z["single_iou"], meta["loss"], meta["params"])


def _features(model, concepts: ConceptSet, layer: str, indices: np.ndarray, batch_size: int) -> torch.Tensor:
    from convlens.dissect._dissect import _batches

    return torch.cat([acts[layer] for _, acts in _batches(model, concepts, indices, [layer], batch_size)])


def _targets(concepts: ConceptSet, chosen: list[int], indices: np.ndarray) -> torch.Tensor:
    p = concepts.mask_size[0] * concepts.mask_size[1]
    out = torch.zeros((len(indices), len(chosen), p), dtype=torch.bool)
    where = {c: j for j, c in enumerate(chosen)}
    for n, i in enumerate(indices):
        ids, masks = concepts.masks(int(i))
        for c, m in zip(ids, masks):
            if int(c) in where:
                out[n, where[int(c)]] = torch.from_numpy(m.reshape(-1))
    return out


def _set_iou(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Set IoU per concept over images: ``pred``/``target`` ``(N, C, P)`` bool."""
    inter = (pred & target).sum((0, 2)).double()
    union = (pred | target).sum((0, 2)).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union)).cpu().numpy()


def net2vec(model, concepts: ConceptSet, layer: str, names: Sequence[str] | None = None, *,
            thresholds: tuple[np.ndarray, np.ndarray] | None = None, quantile: float = 0.005,
            val_fraction: float = 0.25, epochs: int = 30, batch_size: int = 16, lr: float = 0.5,
            momentum: float = 0.9, limit: int | None = None, seed: int = 0,
            progress: Callback | None = None) -> Net2VecResult:
    """Learn Net2Vec weights for ``names`` (all concepts with pixels by default) over ``layer``.

    Parameters
    ----------
    thresholds : ``(T, strict)`` per unit, e.g. from a dissection
        (``(d[layer].thresholds, d[layer].strict)``); computed over these images when omitted
    val_fraction : images held out for the IoU comparison (seeded split)
    epochs, batch_size, lr, momentum : SGD with momentum on the weighted per-pixel BCE
    limit : use at most this many images (activations of the layer are kept in memory)
    progress : receives a :class:`~convlens.progress.Progress` event ``("net2vec", epoch, epochs)``
        with the epoch's ``loss`` after each epoch; ``True`` stops the training there (the weights
        so far are evaluated and returned; ``params["epochs"]`` counts the epochs run)
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs, batch_size and lr must be positive, got {epochs}, {batch_size}, {lr}")
    rng = np.random.default_rng(seed)
    n = len(concepts) if limit is None else min(limit, len(concepts))
    idx = np.sort(rng.permutation(len(concepts))[:n])
    feats, units = _unit_features(model, concepts, layer, idx, thresholds, quantile)
    chosen = _choose(concepts, names, idx)
    targets = _targets(concepts, chosen, idx)
    perm = rng.permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if len(train) == 0:
        raise ValueError(f"{n} images leave none for training at val_fraction={val_fraction}")
    w, b, losses = _train(feats, targets, train, len(chosen), units, epochs, batch_size, lr,
                          momentum, seed, progress)
    single, single_iou = _best_single(feats, targets, train, val, concepts, chosen, batch_size,
                                      concepts.annotated[idx])
    with torch.no_grad():
        pred = torch.cat([(torch.einsum("cu,bup->bcp", w, feats(val[s:s + batch_size])) + b[:, None] > 0)
                          for s in range(0, len(val), batch_size)])
    iou = _set_iou(pred, targets[val])
    params = {"quantile": quantile, "val_fraction": val_fraction, "epochs": len(losses), "batch_size": batch_size,
              "lr": lr, "momentum": momentum, "images": n, "seed": seed, "model": getattr(model, "name", "model")}
    return Net2VecResult(layer, tuple(concepts.concepts[c] for c in chosen), w.cpu().numpy(), b.cpu().numpy(), iou,
                         single, single_iou, losses, params)


def _unit_features(model, concepts: ConceptSet, layer: str, idx: np.ndarray, thresholds, quantile: float):
    """What Net2Vec weighs: ``feats(rows)``, the thresholded unit masks ``(B, U, P)`` of the
    images ``idx[rows]`` at the concepts' mask size (thresholds computed over ``idx`` when not
    given; cached once when they fit ``CACHE_ELEMENTS``), and the layer's unit count ``U``."""
    from convlens.dissect._dissect import _merge, pass_thresholds, spatial_shapes

    shape = spatial_shapes(model, concepts, [layer])[layer]
    n = len(idx)
    if thresholds is None:
        p1 = pass_thresholds(model, concepts, [layer], idx, {layer: shape}, n, quantile, 1, 32)
        thresholds = _merge([p1[layer]]).q.thresholds()
    acts = _features(model, concepts, layer, idx, 32)
    t, strict = thresholds

    def feats(rows: np.ndarray) -> torch.Tensor:
        return unit_masks(acts[rows], t, strict, concepts.mask_size).float()

    if n * shape[0] * concepts.mask_size[0] * concepts.mask_size[1] <= CACHE_ELEMENTS:  # threshold and upsample once
        cached = torch.cat([feats(np.arange(s, min(s + 64, n))) for s in range(0, n, 64)])
        return (lambda rows: cached[torch.as_tensor(rows)]), shape[0]
    return feats, shape[0]


def _choose(concepts: ConceptSet, names: Sequence[str] | None, idx: np.ndarray) -> list[int]:
    counts = np.zeros(len(concepts.concepts), dtype=np.int64)
    for i in idx:
        ids, m = concepts.masks(int(i))
        np.add.at(counts, ids, m.reshape(len(ids), -1).sum(1))
    if names is None:
        chosen = [c for c in range(len(counts)) if counts[c] > 0]
        if not chosen:
            raise ValueError("no concept has any pixels in these images")
        return chosen
    chosen = [concepts.concept_index(nm) for nm in names]
    empty = [concepts.concepts[c] for c in chosen if counts[c] == 0]
    if empty:
        raise ValueError(f"concept(s) {', '.join(empty)} have no pixels in the {len(idx)} images used: "
                         "Net2Vec needs examples of a concept; choose another or use more images")
    return chosen


def _train(feats, targets, train, n_concepts, units, epochs, batch_size, lr, momentum, seed, progress):
    g = torch.Generator().manual_seed(seed)
    frac = targets[train].float().mean((0, 2)).clamp(1e-6, 1 - 1e-6)
    alpha = 1 - frac  # Fong & Vedaldi's weight for positive pixels
    w = (0.01 * torch.randn(n_concepts, units, generator=g)).requires_grad_()
    b = torch.zeros(n_concepts, requires_grad=True)  # balanced loss: the prior is 1/2
    velocity = [torch.zeros_like(w), torch.zeros_like(b)]
    losses = []
    for epoch in range(epochs):
        order = train[torch.randperm(len(train), generator=g).cpu().numpy()]
        total = 0.0
        for s in range(0, len(order), batch_size):
            rows = np.sort(order[s:s + batch_size])
            x, y = feats(rows), targets[rows].float()
            logits = torch.einsum("cu,bup->bcp", w, x) + b[:, None]
            weight = torch.where(y > 0, alpha[:, None], 1 - alpha[:, None])
            loss = F.binary_cross_entropy_with_logits(logits, y, weight=weight.expand_as(y)) * 2
            gw, gb = torch.autograd.grad(loss, [w, b])
            with torch.no_grad():  # SGD with momentum as torch.optim.SGD (no dampening)
                for param, vel, grad in ((w, velocity[0], gw), (b, velocity[1], gb)):
                    vel.mul_(momentum).add_(grad)
                    param.sub_(lr * vel)
            total += float(loss.detach()) * len(rows)
        losses.append(total / len(train))
        if notify(progress, "net2vec", epoch + 1, epochs, loss=losses[-1]):
            break
    return w.detach(), b.detach(), losses


def _best_single(feats, targets, train, val, concepts, chosen, batch_size, annotated):
    """Best unit per concept by IoU on the training images; its IoU on the held-out ones."""
    cat = concepts.concept_category[chosen]
    ncat = len(concepts.category_names)

    def tally(rows):
        t = None
        for s in range(0, len(rows), batch_size):
            r = rows[s:s + batch_size]
            m = feats(r).bool()
            y = targets[r].reshape(len(r), len(chosen), *concepts.mask_size).cpu().numpy()
            labels = [(np.arange(len(chosen)), y[j]) for j in range(len(r))]
            if t is None:
                t = IoUTally(m.shape[1], cat, ncat)
            t.update(m, labels, annotated[r])
        return t.iou()

    tr = tally(train)
    best = tr.argmax(0)
    va = tally(val)
    return best, va[best, np.arange(len(chosen))]
