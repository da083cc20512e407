"""Dissection's IoU pass: all units of a layer at once against a per-unit loop (NetDissect-Lite).

Both see the same activations, thresholds and masks; the forward pass, common to both, is
timed separately. Prints seconds per image for each and the ratio (target >= 10x), and checks
that the two give identical counts.

    python benchmarks/bench_dissect.py [--images 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.dissect import IoUTally, TopQuantile, make_concepts, unit_masks
from convlens.dissect._dissect import _batches
from convlens.dissect._reference import per_unit_tally
from convlens.inputspec import InputSpec
from convlens.model import Model


def _shared_models() -> Path | None:
    """``../shared/models`` beside the checkout or any folder above it (worktrees), if present."""
    if os.environ.get("CONVLENS_SHARED"):
        return Path(os.environ["CONVLENS_SHARED"]) / "models"
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "models").is_dir():
            return parent / "shared" / "models"
    return None


def _interpolate_one(fmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One map resized by the library call, as NetDissect-Lite calls ``imresize`` per unit."""
    return F.interpolate(fmap[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def conv5_like(units: int = 256) -> Model:
    """A seeded random network whose last layer has ``units`` maps of 14x14 (like conv5)."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 64, 7, stride=4, padding=3))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(64, units, 3, stride=2, padding=1))
    net.add_module("relu2", nn.ReLU())
    return Model(net, InputSpec(size=(112, 112), channels=3), name=f"conv5-like-{units}")


def models() -> list[tuple[Model, str]]:
    out = [(conv5_like(), "relu2")]
    shared = _shared_models()
    weights = shared / "squeezenet1_1-caffe.pth" if shared else None
    if weights is not None and weights.is_file():
        from convlens.model import load_model

        out.append((load_model("squeezenet1_1", weights=weights, input_spec="caffe"), "features.7"))
    return out


def bench(model: Model, layer: str, n: int) -> dict:
    cs = make_concepts(n, 64, seed=0)
    t0 = time.perf_counter()
    acts = torch.cat([a[layer] for _, a in _batches(model, cs, np.arange(n), [layer], 16)])
    t_fwd = time.perf_counter() - t0
    u, h, w = acts.shape[1:]
    tq = TopQuantile(u, n * h * w, 0.005)
    tq.update(acts.permute(1, 0, 2, 3).reshape(u, -1))
    t, strict = tq.thresholds()
    labels = [cs.masks(i) for i in range(n)]
    annotated = cs.annotated
    active = float((acts.amax((2, 3)) >= torch.from_numpy(t).float()).float().mean())
    tally, t_vec = _timed(lambda: _vectorised(acts, t, strict, labels, annotated, cs, sparse=True))
    dense, t_dense = _timed(lambda: _vectorised(acts, t, strict, labels, annotated, cs, sparse=False))
    counts, t_loop = _timed(lambda: per_unit_tally(acts, t, strict, labels, annotated, cs.concept_category,
                                                   cs.mask_size, upsample=_interpolate_one))
    _, t_loop_all = _timed(lambda: per_unit_tally(acts, t, strict, labels, annotated, cs.concept_category,
                                                  cs.mask_size, upsample=_interpolate_one, skip=False))
    peer = IoUTally(u, cs.concept_category, len(cs.category_names))
    peer.inter, peer.unit_area, peer.label_area = counts
    diff = float(np.abs(peer.iou() - tally.iou()).max())
    same = np.array_equal(dense.inter, tally.inter) and np.array_equal(dense.unit_area, tally.unit_area)
    ms = 1000 / n
    return {"model": model.name, "layer": layer, "units": u, "map": f"{h}x{w}", "images": n,
            "active": active, "forward_ms": t_fwd * ms, "vectorised_ms": t_vec * ms,
            "per_unit_ms": t_loop * ms, "ratio": t_loop / t_vec, "dense_ms": t_dense * ms,
            "per_unit_all_ms": t_loop_all * ms, "ratio_all": t_loop_all / t_dense, "iou_diff": diff,
            "sparse_equals_dense": same}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _vectorised(acts, t, strict, labels, annotated, cs, sparse: bool, step: int = 8) -> IoUTally:
    tally = IoUTally(acts.shape[1], cs.concept_category, len(cs.category_names))
    for s in range(0, len(acts), step):
        if sparse:
            tally.update_acts(acts[s:s + step], t, strict, labels[s:s + step], annotated[s:s + step],
                              cs.mask_size)
        else:
            tally.update(unit_masks(acts[s:s + step], t, strict, cs.mask_size), labels[s:s + step],
                         annotated[s:s + step])
    return tally


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), masks 64x64, {a.images} generated images")
    for model, layer in models():
        r = bench(model, layer, a.images)
        print(f"{r['model']} {r['layer']} ({r['units']} units, {r['map']}, {r['active']:.0%} of the maps reach "
              f"the threshold): forward {r['forward_ms']:.1f} ms/img (common to both)")
        print(f"  maps that reach the threshold only (NetDissect-Lite skips the rest): all units at once "
              f"{r['vectorised_ms']:.1f} ms/img, per-unit loop {r['per_unit_ms']:.1f} ms/img -> "
              f"{r['ratio']:.1f}x (target >= 10x)")
        print(f"  every map: all units at once {r['dense_ms']:.1f} ms/img, per-unit loop "
              f"{r['per_unit_all_ms']:.1f} ms/img -> {r['ratio_all']:.1f}x")
        print(f"  largest IoU difference to the loop {r['iou_diff']:.1e} (F.interpolate rounds differently "
              f"at the threshold); sparse == dense counts: {r['sparse_equals_dense']}")

if __name__ == "__main__":
    main()
