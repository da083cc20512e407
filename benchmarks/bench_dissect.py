"""Dissection's IoU pass: all units of a layer at once against NetDissect-Lite's per-unit loop.

The peer is :func:`convlens.dissect._reference.netdissect_lite_tally`, NetDissect-Lite's
``tally_job`` line for line (per image and unit: skip a map whose maximum stays below the
threshold, ``imresize`` it with PIL's bilinear filter, ``argwhere`` above the threshold,
``bincount`` the label planes there). Both sides get the same activations, thresholds and
concept masks; the peer's label planes are built before its clock starts, ours inside. The
forward pass and the threshold pass, which both need, are timed on their own. Each side runs
``--repeat`` times, interleaved; the best time counts. Times are CPU seconds of this process
(``time.process_time``, one thread), so that other processes on a shared machine do not
count.

    python benchmarks/bench_dissect.py [--images 60] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convlens.dissect import IoUTally, TopQuantile, make_concepts
from convlens.dissect._dissect import _batches
from convlens.dissect._reference import label_planes, netdissect_lite_tally
from convlens.dissect._stats import _cutoff
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


def conv5_like(units: int = 256) -> Model:
    """A seeded random network whose last layer has ``units`` maps of 14x14 (like conv5)."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 64, 7, stride=4, padding=3))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(64, units, 3, stride=2, padding=1))
    net.add_module("relu2", nn.ReLU())
    return Model(net, InputSpec(size=(112, 112), channels=3), name=f"conv5-like-{units}")


def cases() -> list[tuple[Model, str]]:
    out = [(conv5_like(), "relu2")]
    shared = _shared_models()
    weights = shared / "squeezenet1_1-caffe.pth" if shared else None
    if weights is not None and weights.is_file():
        from convlens.model import load_model

        squeeze = load_model("squeezenet1_1", weights=weights, input_spec="caffe")
        out += [(squeeze, "features.7"), (squeeze, "features.12")]
    else:
        print("../shared/models/squeezenet1_1-caffe.pth not found: SqueezeNet cases skipped")
    return out


def _best(fn, repeat: int) -> tuple[object, float]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return out, best


def bench(model: Model, layer: str, n: int, repeat: int, chunk: int = 16) -> dict:
    cs = make_concepts(n, 64, seed=0)
    acts, t_fwd = _best(lambda: torch.cat([a[layer] for _, a in _batches(model, cs, np.arange(n), [layer], 16)]), 1)
    u, h, w = acts.shape[1:]

    def thresholds():
        tq = TopQuantile(u, n * h * w, 0.005)
        for s in range(0, n, chunk):
            tq.update(acts[s:s + chunk].permute(1, 0, 2, 3).reshape(u, -1))
        return tq.thresholds()

    (t, strict), t_thr = _best(thresholds, 1)
    labels = [cs.masks(i) for i in range(n)]
    planes = [label_planes(*lab) for lab in labels]
    # NetDissect-Lite keeps `a > T`; the largest float32 below our cutoff makes it our `a >= T`
    below = np.nextafter(_cutoff(t, strict).numpy(), np.float32(-np.inf)).astype(np.float64)
    acts_np = acts.numpy()

    def ours():
        tally = IoUTally(u, cs.concept_category, len(cs.category_names))
        for s in range(0, n, chunk):
            tally.update_acts(acts[s:s + chunk], t, strict, labels[s:s + chunk], cs.annotated[s:s + chunk],
                              cs.mask_size)
        return tally

    def peer():
        return netdissect_lite_tally(acts_np, below, planes, cs.annotated, cs.concept_category, cs.mask_size)

    ours()  # compile the kernel outside the clock
    t_ours, t_peer = float("inf"), float("inf")
    for _ in range(repeat):  # interleaved, so that load from other processes hits both sides
        tally, dt = _best(ours, 1)
        t_ours = min(t_ours, dt)
        (inter, _), dt = _best(peer, 1)
        t_peer = min(t_peer, dt)
    diff = np.abs(inter - tally.inter)
    active = float((acts.amax((2, 3)) >= _cutoff(t, strict)).float().mean())
    ms = 1000 / n
    return {"model": model.name, "layer": layer, "units": u, "map": f"{h}x{w}", "images": n,
            "active": active, "forward_ms": t_fwd * ms, "threshold_ms": t_thr * ms, "ours_ms": t_ours * ms,
            "peer_ms": t_peer * ms, "ratio": t_peer / t_ours,
            "end_to_end": (t_fwd + t_thr + t_peer) / (t_fwd + t_thr + t_ours),
            "inter_total": int(tally.inter.sum()), "inter_diff": int(diff.sum()), "inter_max": int(diff.max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), generated concepts, masks 64x64, "
          f"{a.images} images, best of {a.repeat} interleaved, CPU time; load average {os.getloadavg()[0]:.1f}")
    for model, layer in cases():
        r = bench(model, layer, a.images, a.repeat)
        print(f"{r['model']} {r['layer']} ({r['units']} units of {r['map']}, {r['active']:.0%} of the maps "
              f"reach their threshold)")
        print(f"  common to both: forward {r['forward_ms']:.1f} ms/img, threshold pass {r['threshold_ms']:.2f} ms/img")
        print(f"  IoU pass: convlens, all units at once {r['ours_ms']:.2f} ms/img; NetDissect-Lite per-unit "
              f"loop {r['peer_ms']:.2f} ms/img -> {r['ratio']:.1f}x (target >= 10x); with the common parts "
              f"{r['end_to_end']:.1f}x")
        print(f"  intersections: {r['inter_total']} pixels counted, {r['inter_diff']} differ from the peer "
              f"(largest per unit and concept {r['inter_max']}; PIL rounds the resized maps on its own)")


if __name__ == "__main__":
    main()
