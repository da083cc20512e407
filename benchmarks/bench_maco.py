"""MaCo against free Fourier optimization at equal steps, on the SqueezeNet's features.12.

    python benchmarks/bench_maco.py [--units 0-15] [--steps 64] [--size 128]
        [--data /path/cifar10-small.npz] [--grey-data /path/mnist.npz] [--out DIR]

For the colour data (CIFAR-10 by default) and the grey data (MNIST, through a grey-replicated
SqueezeNet input): the data's mean Fourier magnitude (``data_spectrum``, resampled from 32/28 px
to ``--size``), then activation maximization of the units, one batch, with Fourier (the
engine's defaults: decorrelated colour or one grey channel, the standard transforms, lr 0.05)
and with MaCo (that magnitude fixed, the phase optimized; ``--maco-transforms`` noise or crops,
lr 0.5); the channel mean (the objective both maximize) and the map maximum on the final,
untransformed images; how many units MaCo brings at least to Fourier's activation; and how
closely each set's mean spectrum follows the data's (``spectrum_match``: correlation of the log
amplitudes, 1 = the same shape). CPU seconds, wall seconds, peak RSS and the load are printed;
``--out`` gets the side-by-side galleries (Fourier / MaCo / MaCo's transparency).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

SHARED = next((p / "shared" for p in Path(__file__).resolve().parents if (p / "shared").is_dir()),
              Path("../shared"))


def _load(a):
    from convlens import load_model

    w = Path(a.weights)
    if not w.is_file():
        raise SystemExit(f"{w} is absent: give --weights (the SqueezeNet 1.1 Caffe state dict)")
    return load_model("squeezenet1_1", weights=str(w), input_spec="caffe")


def _channel_means(model, layer, images, units):
    from convlens.runner import capture

    a = capture(model, torch.as_tensor(images), [layer])[layer]
    return a.mean(dim=(2, 3))[torch.arange(len(units)), torch.as_tensor(units)].numpy()


def run(model, name: str, data: str, a) -> None:
    from convlens import load_dataset
    from convlens.optimize import data_spectrum, spectrum_match
    from convlens.units import parse_unit_list
    from convlens.visualize import activation_maximization, comparison_figure

    units = parse_unit_list(a.units, 512)
    t0, c0 = time.perf_counter(), time.process_time()
    spec = data_spectrum(load_dataset(data), (a.size, a.size), max_images=a.spectrum_images)
    print(f"[{name}] {spec.describe()}; {time.process_time() - c0:.1f} s CPU", flush=True)
    out = {}
    for kind, kw in (("Fourier", dict(param="fourier")),
                     ("MaCo", dict(param="maco", spectrum=spec, transforms=a.maco_transforms))):
        c0, t0 = time.process_time(), time.perf_counter()
        r = activation_maximization(model, a.layer, units, size=a.size, steps=a.steps,
                                    grey=spec.grey, batch_size=len(units), seed=a.seed, **kw)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        mean = _channel_means(model, a.layer, r.images, units)
        match = spectrum_match(torch.as_tensor(r.images), spec)
        out[kind] = (r, mean)
        print(f"[{name}] {kind:7s}: channel mean median {np.median(mean):8.2f} (min {mean.min():.2f}), "
              f"map max median {np.median(r.reached):8.2f}; spectrum match {match:.3f}; "
              f"{cpu:.1f} s CPU, {wall:.1f} s wall", flush=True)
    (rf, mf), (rm, mm) = out["Fourier"], out["MaCo"]
    wins = int((mm >= mf).sum())
    wins_max = int((rm.reached >= rf.reached).sum())
    print(f"[{name}] MaCo >= Fourier (channel mean, the objective): {wins}/{len(units)} units "
          f"({wins / len(units):.0%}; target >= 80%); map maximum: {wins_max}/{len(units)}; "
          f"ratio MaCo/Fourier median {np.median(mm / mf):.2f}", flush=True)
    print(f"[{name}] per unit (Fourier, MaCo channel mean): "
          + ", ".join(f"{u}: {x:.0f}/{y:.0f}" for u, x, y in zip(units, mf, mm)), flush=True)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        path = comparison_figure({"Fourier": rf, "MaCo": rm}, a.out / f"{name}_fourier_vs_maco.png")
        rf.save(a.out / f"{name}_fourier")
        rm.save(a.out / f"{name}_maco")
        print(f"[{name}] gallery {path}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=str(SHARED / "models" / "squeezenet1_1-caffe.pth"))
    ap.add_argument("--layer", default="features.12")
    ap.add_argument("--units", default="0-15")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(SHARED / "data" / "cifar10-small.npz"))
    ap.add_argument("--grey-data", default=str(SHARED / "data" / "mnist.npz"))
    ap.add_argument("--spectrum-images", type=int, default=2000)
    ap.add_argument("--maco-transforms", default="noise", help="noise (default) or crops")
    ap.add_argument("--photos", default=None, help="a second colour data set (e.g. a CSV manifest "
                                                   "of ../shared/data/photos)")
    ap.add_argument("--only", default="colour,photos,grey")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.layer} units {a.units}, {a.size} px, {a.steps} steps, {a.threads} thread(s); "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    model = _load(a)
    if "colour" in a.only:
        run(model, "colour", a.data, a)
    if "photos" in a.only and a.photos:
        run(model, "photos", a.photos, a)
    if "grey" in a.only:
        run(model, "grey", a.grey_data, a)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
