"""Activation maximization: 64 units of one layer optimized together (one batch) against one
after another with the same steps, and against Lucent on the same units with its defaults.

    python benchmarks/bench_visualize.py [--steps 32] [--sequential 8] [--lucent 4] [--size 128]

Two settings: Lees' VGG4 (CIFAR-10 size, 32 px; random weights -- the time does not depend on
them), layer ``conv3`` (64 channels); and the SqueezeNet in ../shared/models when present (else
the same architecture with random weights), layer ``features.3.expand1x1`` (64 channels). Channel
objectives, Fourier parametrization with decorrelated colour and the standard transforms.
"One after another" and Lucent run a sample of the 64 units (``--sequential``, ``--lucent``) and
report the time per unit. Lucent (``torch-lucent``) depends on torchvision, which cannot be
imported beside our CPU torch; it is used when importable, e.g. from a throwaway folder:

    pip install --target /tmp/lucent_env --no-deps torch-lucent kornia kornia_rs decorator
    PYTHONPATH=/tmp/lucent_stubs:/tmp/lucent_env python benchmarks/bench_visualize.py

where ``/tmp/lucent_stubs`` provides ``torchvision.transforms.Normalize`` (mean/std) and an
empty ``IPython.display`` (see the note of issue 5). Lucent's defaults: ``param.image(128)``
(FFT, decorrelated, sigmoid), its standard transforms, ImageNet normalisation, upsampling to
224 px, Adam 0.05, every module hooked and the whole network run at each step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

LAYER = "features.3.expand1x1"


def _shared_models() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "models").is_dir():
            return parent / "shared" / "models"
    return None


def load():
    from convlens import load_model

    shared = _shared_models()
    if shared is not None and (shared / "squeezenet1_1-caffe.pth").is_file():
        w = shared / "squeezenet1_1-caffe.pth"
        return load_model("squeezenet1_1", weights=str(w), input_spec="caffe"), "trained"
    torch.manual_seed(0)
    return load_model("squeezenet1_1", input_spec="caffe"), "random weights"


def ours(model, units: list[int], steps: int, size: int, layer: str = LAYER) -> float:
    from convlens.optimize import FourierImage, objectives, render, standard_transforms

    t = time.perf_counter()
    render(model, objectives.channel(layer, units), FourierImage(len(units), 3, size, seed=0),
           steps=steps, transforms=standard_transforms(size), seed=0)
    return time.perf_counter() - t


def compare(model, layer: str, size: int, steps: int, sequential: int) -> tuple[float, float]:
    """Seconds per unit: 64 units in one batch, and one unit per run."""
    ours(model, [0], 2, size, layer)  # warm-up
    together = ours(model, list(range(64)), steps, size, layer) / 64
    seq = sum(ours(model, [u], steps, size, layer) for u in range(sequential)) / sequential
    print(f"  convlens, 64 units together : {together:8.4f} s per unit")
    print(f"  convlens, one after another : {seq:8.4f} s per unit ({sequential} units)")
    print(f"  ratio one-after-another / together: {seq / together:.1f}x (target >= 10x)")
    return together, seq


def lucent(model, units: list[int], steps: int) -> float | None:
    try:
        import kornia
        from kornia.geometry import transform as kt
        from lucent.optvis import render
    except Exception as e:  # ImportError, or torchvision failing beside a CPU torch
        print(f"Lucent: not run ({type(e).__name__}: {e})")
        return None
    # lucent 0.1.8 calls kornia's old top-level names, which kornia 0.9 dropped: alias them
    kornia.get_rotation_matrix2d = getattr(kornia, "get_rotation_matrix2d", kt.get_rotation_matrix2d)
    kornia.warp_affine = getattr(kornia, "warp_affine", kt.warp_affine)
    name = LAYER.replace(".", "_")
    t = time.perf_counter()
    for u in units:
        render.render_vis(model.net, f"{name}:{u}", thresholds=(steps,), progress=False,
                          show_image=False)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=8, help="units run one after another")
    ap.add_argument("--lucent", type=int, default=4, help="units run with Lucent")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from convlens import load_model

    torch.manual_seed(0)
    print(f"vgg4 (Lees' CIFAR-10 net, random weights), layer conv3, {a.steps} steps, 32 px, "
          f"{a.threads} thread(s)")
    compare(load_model("vgg4"), "conv3", 32, a.steps, 64)
    model, kind = load()
    print(f"squeezenet1_1 ({kind}), layer {LAYER}, {a.steps} steps, {a.size} px, "
          f"{a.threads} thread(s)")
    together, seq = compare(model, LAYER, a.size, a.steps, a.sequential)
    luc = lucent(model, list(range(a.lucent)), a.steps) if a.lucent else None
    if luc is not None:
        luc /= a.lucent
        print(f"  Lucent defaults, one per call: {luc:8.3f} s per unit ({a.lucent} units; its "
              f"128 px image is upsampled to 224 px)")
        print(f"  ratio Lucent / convlens together: {luc / together:.1f}x; "
              f"Lucent / convlens one after another: {luc / seq:.1f}x")


if __name__ == "__main__":
    main()
