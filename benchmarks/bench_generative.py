"""Inverse-set sampling on the built-in LeNet: gradient steps and wall time for K = 10, n = 500
(Hada & Carreira-Perpiñán report about 85 sampling steps after seeding), and the diversity of
100 inverse-set samples against 100 multi-start DGN-AM images (mean pairwise distance in E).

    python benchmarks/bench_generative.py [--mnist ../shared/data/mnist.npz] [--threads 2]

Prints one line per measurement; runs in a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def _decoder(model, data, layer: str, epochs: int, limit: int | None):
    from convlens import load_dataset
    from convlens.generative import train_decoder

    ds = load_dataset(data, limit=limit, seed=0)
    t = time.perf_counter()
    dec = train_decoder(model, ds, layer, epochs=epochs, seed=0)
    print(f"decoder {layer} on {ds.name} ({len(ds)} images, {epochs} epochs): "
          f"{time.perf_counter() - t:.1f} s, held-out loss {dec.history[-1].get('val_loss', float('nan')):.3f}")
    return dec


def _ranges(model, data, unit: str, limit: int) -> list[tuple[float, float]]:
    """Two ranges the neuron reaches on real images: its 60-75 % and 85-95 % quantiles."""
    from convlens import load_dataset
    from convlens.data import conform
    from convlens.generative import neuron_values
    from convlens.runner import capture
    from convlens.units import parse_unit

    u = parse_unit(unit)
    x, _ = conform(load_dataset(data, limit=limit, seed=1), model).tensors()
    v = neuron_values(capture(model, x, [u.layer]), [u])[:, 0].numpy()
    q = np.quantile(v, [0.60, 0.75, 0.85, 0.95])
    return [(round(float(q[0]), 2), round(float(q[1]), 2)), (round(float(q[2]), 2), round(float(q[3]), 2))]


def sampling(model, dec, unit: str, ranges, label: str, seeds=(0, 1, 2)) -> None:
    from convlens.generative import inverse_set

    for z1, z2 in ranges:
        for seed in seeds:
            t, c = time.perf_counter(), time.process_time()
            r = inverse_set(model, dec, (unit, z1, z2), n=500, k=10, seed=seed)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            print(f"{label} {unit} in [{z1}, {z2}] seed {seed}: {len(r)} samples, complete={r.complete}, "
                  f"seeding {r.seed_rounds} rounds / {r.seed_steps} steps / {r.seconds['seeding']:.1f} s, "
                  f"sampling {r.sample_steps} steps / {r.seconds['sampling']:.1f} s "
                  f"(minimum {int(np.ceil(490 / 10))}), total {wall:.1f} s wall / {cpu:.1f} s CPU, "
                  f"all in range: {bool(r.in_range().all())}")


def diversity(model, dec, unit: str, ranges) -> None:
    from convlens.generative import Encoder, dgn_am, inverse_set, mean_pairwise_distance

    enc = Encoder(model, dec.layer)
    t = time.perf_counter()
    syn = dgn_am(model, dec, unit, n=100, steps=200, seed=0)
    d_dgn = mean_pairwise_distance(enc, torch.from_numpy(syn.images))
    print(f"DGN-AM {unit}: 100 starts x 200 steps in {time.perf_counter() - t:.1f} s, activation "
          f"{syn.activations.min():.2f}..{syn.activations.max():.2f}, mean pairwise E-distance {d_dgn:.3f}")
    top = (round(float(np.quantile(syn.activations, 0.05)) - 4, 2), round(float(syn.activations.max()), 2))
    for z1, z2 in [*ranges, top]:
        r = inverse_set(model, dec, (unit, z1, z2), n=100, k=10, seed=0)
        d = mean_pairwise_distance(enc, torch.from_numpy(r.images))
        print(f"inverse set {unit} in [{z1}, {z2}]: {len(r)} samples, mean pairwise E-distance {d:.3f}, "
              f"ratio to DGN-AM {d / d_dgn:.2f}")


def _shared() -> Path:
    """``shared/`` beside the repository or beside any folder above it (worktrees)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared"
    return Path(__file__).resolve().parents[2] / "shared"


def inversion(model, layers=("pool1", "pool2", "relu3"), images: int = 8) -> None:
    """Up-convolutional against regularized inversion on the same held-out digits."""
    from convlens import load_dataset
    from convlens.generative import compare_inversion, train_decoders

    ds = load_dataset("digits")
    train, held = ds.split(0.1, seed=0)
    t = time.perf_counter()
    decs = train_decoders(model, train, list(layers), epochs=10, seed=0)
    print(f"decoders {', '.join(layers)} on {len(train)} digits: {time.perf_counter() - t:.1f} s")
    x, _ = held.sample(images, seed=0).tensors()
    cmp = compare_inversion(model, decs, x, steps=400)
    for row in cmp.table():
        print(f"{row['layer']}: up-conv pixel RMS {row['upconv_pixel_error']:.3f} feature "
              f"{row['upconv_feature_error']:.3f} | regularized (400 steps) pixel RMS "
              f"{row['regularized_pixel_error']:.3f} feature {row['regularized_feature_error']:.3f}")
    print(f"time for {images} images, all layers: up-conv {cmp.seconds['upconv']:.3f} s, regularized "
          f"{cmp.seconds['regularized']:.1f} s (ratio {cmp.seconds['regularized'] / cmp.seconds['upconv']:.0f}x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", type=Path, default=_shared() / "data/mnist.npz")
    p.add_argument("--parts", default="digits,diversity,inversion,mnist", help="Comma-separated parts.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--unit", default="fc3:3")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from convlens import load_model

    parts = set(args.parts.split(","))
    model = load_model("lenet-digits")
    if parts & {"digits", "diversity"}:
        dec = _decoder(model, "digits", "relu3", epochs=10, limit=None)
        ranges = _ranges(model, "digits", args.unit, 1797)
    if "digits" in parts:
        sampling(model, dec, args.unit, ranges, "digits decoder:")
    if "diversity" in parts:
        diversity(model, dec, args.unit, ranges)
    if "inversion" in parts:
        inversion(model)
    if "mnist" not in parts:
        return
    if args.mnist.is_file():
        mdec = _decoder(model, f"{args.mnist}:train", "relu3", epochs=3, limit=20000)
        sampling(model, mdec, args.unit, _ranges(model, f"{args.mnist}:test", args.unit, 5000), "MNIST decoder:")
    else:
        print(f"{args.mnist} absent: MNIST measurement skipped")


if __name__ == "__main__":
    main()
