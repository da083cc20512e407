"""Dissection's IoU pass: all units of a layer at once against a per-unit loop (NetDissect-Lite).

Both see the same activations, thresholds and masks; the forward pass, common to both, is
timed separately. Prints seconds per image for each and the ratio (target >= 10x), and checks
that the two give identical counts.

    python benchmarks/bench_dissect.py [--images 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.dissect import IoUTally, TopQuantile, make_concepts
from convlens.dissect._dissect import _batches
from convlens.dissect._reference import per_unit_tally
from convlens.inputspec import InputSpec
from convlens.model import Model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models"


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
    weights = SHARED / "squeezenet1_1-caffe.pth"
    if weights.is_file():
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
    t0 = time.perf_counter()
    tally = IoUTally(u, cs.concept_category, len(cs.category_names))
    step = 8
    for s in range(0, n, step):
        tally.update_acts(acts[s:s + step], t, strict, labels[s:s + step], annotated[s:s + step],
                          cs.mask_size)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    inter, unit_area, label_area = per_unit_tally(acts, t, strict, labels, annotated, cs.concept_category,
                                                  cs.mask_size, upsample=_interpolate_one)
    t_loop = time.perf_counter() - t0
    peer = IoUTally(u, cs.concept_category, len(cs.category_names))
    peer.inter, peer.unit_area, peer.label_area = inter, unit_area, label_area
    diff = float(np.abs(peer.iou() - tally.iou()).max())
    return {"model": model.name, "layer": layer, "units": u, "map": f"{h}x{w}", "images": n,
            "forward_ms": 1000 * t_fwd / n, "vectorised_ms": 1000 * t_vec / n,
            "per_unit_ms": 1000 * t_loop / n, "ratio": t_loop / t_vec, "iou_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), masks 64x64, {a.images} generated images")
    for model, layer in models():
        r = bench(model, layer, a.images)
        print(f"{r['model']} {r['layer']} ({r['units']} units, {r['map']}): forward {r['forward_ms']:.1f} ms/img "
              f"(both); IoU pass all units at once {r['vectorised_ms']:.1f} ms/img, per-unit loop "
              f"{r['per_unit_ms']:.1f} ms/img -> {r['ratio']:.1f}x (target >= 10x); largest IoU difference "
              f"{r['iou_diff']:.1e} (F.interpolate rounds differently near thresholds)")


if __name__ == "__main__":
    main()
