"""Activation maximization: a batched step against the bare forward+backward of the same
network at the same batch (the limit); 64 units of one layer optimized together (one batch)
against one after another with the same steps; and against Lucent on the same units with its
defaults.

    python benchmarks/bench_visualize.py [--steps 32] [--sequential 8] [--lucent 2] [--size 128]
        [--precisions float32,bfloat16] [--settings limit,vgg4,squeezenet,squeezenet7,lenet]
        [--repeats 3] [--limit-batch 16]

``limit``: for LeNet (conv2, 28 px, 64 images) and the SqueezeNet (features.12 at 128 and 227
px, ``--limit-batch`` images), Fourier and MaCo: the engine's step time per unit (the median
interval between steps of ``render``) against plain PyTorch's forward to the same layer and
backward to the input at the same batch, float32; the ratio limit / step (target >= 0.8).

Settings: Lees' VGG4 (CIFAR-10 size, 32 px; random weights -- the time does not depend on them),
layer ``conv3`` (64 channels); the SqueezeNet in ../shared/models when present (else the same
architecture with random weights), layer ``features.3.expand1x1`` (64 channels) and, deeper,
``features.7`` (units 0-63 of 256), at ``--size`` px; the built-in LeNet, ``conv2`` (16 channels,
each visualized 4 times with another seed so that 64 images run). Channel objectives, Fourier
parametrization with decorrelated colour and the standard transforms, Adam 0.05; the engine's
options are the same for both sides, one after another is the same ``render`` call with one unit.
"One after another" and Lucent run a sample of the units (``--sequential``, ``--lucent``); all
times are per unit. Each measurement is the best of ``--repeats`` rounds, and the rounds
interleave the two sides, because the machine is shared; the load (``uptime``) is printed.
For bfloat16 the activation each unit reaches (evaluated in float32) is compared with float32.

Lucent (``torch-lucent``) depends on torchvision, which cannot be imported beside our CPU torch;
it is used when importable, e.g. from a throwaway folder:

    pip install --target /tmp/lucent_env --no-deps torch-lucent kornia kornia_rs decorator
    PYTHONPATH=/tmp/lucent_stubs:/tmp/lucent_env python benchmarks/bench_visualize.py

where ``/tmp/lucent_stubs`` provides ``torchvision.transforms.Normalize`` (mean/std) and an
empty ``IPython.display`` (see the note of issue 5). Lucent's defaults: ``param.image(128)``
(FFT, decorrelated, sigmoid), its standard transforms, ImageNet normalisation, upsampling to
224 px, Adam 0.05, every module hooked and the whole network run at each step.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np
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


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "uptime unavailable"


def ours(model, units: list[int], steps: int, size: int, layer: str, precision: str,
         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seconds (wall, CPU) for one ``render`` of ``units`` (one image each), and the activations
    reached."""
    from convlens.optimize import FourierImage, objectives, render, standard_transforms

    channels = model.spec.channels
    t, c = time.perf_counter(), time.process_time()
    r = render(model, objectives.channel(layer, units), FourierImage(len(units), channels, size, seed=seed),
               steps=steps, transforms=standard_transforms(size), seed=seed, precision=precision)
    return np.array([time.perf_counter() - t, time.process_time() - c]), -r.losses


def compare(model, layer: str, size: int, steps: int, sequential: int, units: list[int],
            precisions: list[str], repeats: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per precision: seconds (wall, CPU) per unit for ``units`` in one batch and one unit per
    run (best of ``repeats`` interleaved rounds)."""
    out, reached = {}, {}
    for precision in precisions:
        ours(model, units[:1], 2, size, layer, precision)  # warm-up
        best_t, best_s = np.full(2, np.inf), np.full(2, np.inf)
        for _ in range(repeats):  # rounds interleave the two sides
            dt, reached[precision] = ours(model, units, steps, size, layer, precision)
            best_t = np.minimum(best_t, dt / len(units))
            seq = sum(ours(model, [u], steps, size, layer, precision, seed=i)[0]
                      for i, u in enumerate(units[:sequential])) / sequential
            best_s = np.minimum(best_s, seq)
        out[precision] = (best_t, best_s)
        print(f"  [{precision}] {len(units)} units together : {best_t[0]:8.4f} s wall, {best_t[1]:8.4f} s CPU per unit")
        print(f"  [{precision}] one after another  : {best_s[0]:8.4f} s wall, {best_s[1]:8.4f} s CPU per unit "
              f"({sequential} units)")
        print(f"  [{precision}] ratio one-after-another / together: {best_s[0] / best_t[0]:.1f}x wall, "
              f"{best_s[1] / best_t[1]:.1f}x CPU (target >= 10x)")
    if "float32" in reached and "bfloat16" in reached:
        r = reached["bfloat16"] / np.where(reached["float32"] == 0, np.nan, reached["float32"])
        print(f"  activation reached (evaluated in float32, {len(units)} units): mean float32 "
              f"{reached['float32'].mean():.4g}, bfloat16 {reached['bfloat16'].mean():.4g}; per unit "
              f"bfloat16 / float32: median {np.nanmedian(r):.3f}, min {np.nanmin(r):.3f}, "
              f"max {np.nanmax(r):.3f}")
    return out


def lucent(model, layer: str, units: list[int], steps: int, repeats: int) -> np.ndarray | None:
    """Seconds (wall, CPU) per unit with Lucent's defaults (best of ``repeats`` rounds)."""
    try:
        import kornia
        from kornia.geometry import transform as kt
        from lucent.optvis import render
    except Exception as e:  # ImportError, or torchvision failing beside a CPU torch
        print(f"  Lucent: not run ({type(e).__name__}: {e})")
        return None
    # lucent 0.1.8 calls kornia's old top-level names, which kornia 0.9 dropped: alias them
    kornia.get_rotation_matrix2d = getattr(kornia, "get_rotation_matrix2d", kt.get_rotation_matrix2d)
    kornia.warp_affine = getattr(kornia, "warp_affine", kt.warp_affine)
    name = layer.replace(".", "_")
    best = np.full(2, np.inf)
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        for u in units:
            render.render_vis(model.net, f"{name}:{u}", thresholds=(steps,), progress=False,
                              show_image=False)
        best = np.minimum(best, np.array([time.perf_counter() - t, time.process_time() - c]) / len(units))
    return best


class _Stop(Exception):
    pass


def bare_step(model, layer: str, batch: int, size: int, repeats: int = 5) -> float:
    """Seconds of the bare forward (up to ``layer``, where the engine stops too) and backward
    to the input of the same network at the same batch, in plain PyTorch with the engine's
    memory layout (channels-last weights and input, :func:`convlens.fast.fast`): the limit of
    a step. Without the layout, plain NCHW PyTorch is slower than the engine's whole step."""
    from convlens.fast import fast
    from convlens.probe import get_layer

    net = model.net.eval()
    grads = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    held = {}

    def hook(_m, _i, out):
        held["out"] = out
        raise _Stop

    h = get_layer(net, layer).register_forward_hook(hook)
    x = torch.rand(batch, model.spec.channels, size, size).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    idx = torch.arange(batch) % 16
    times = []
    try:
        with fast(net, "float32", grad=True, autocast=False):
            times = _bare_loop(net, x, idx, held, repeats)
    finally:
        h.remove()
        for p, g in zip(net.parameters(), grads):
            p.requires_grad_(g)
    return float(np.median([t for t, _ in times[1:]])), float(np.median([c for _, c in times[1:]]))


def _bare_loop(net, x, idx, held, repeats):
    times = []
    batch = x.shape[0]
    for _ in range(repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        try:
            net(x)
        except _Stop:
            pass
        out = held.pop("out")
        out.mean(dim=(2, 3))[torch.arange(batch), idx].sum().backward()
        x.grad = None
        times.append((time.perf_counter() - t, time.process_time() - c))
    return times


def am_step(model, layer: str, batch: int, size: int, param: str, steps: int = 6) -> float:
    """Seconds of one activation-maximization step of ``batch`` units (the engine's own loop:
    parametrization, transforms, forward, backward, update), the median interval between steps."""
    from convlens.optimize import objectives as O
    from convlens.optimize import render
    from convlens.visualize._common import make_param, make_transforms

    p, proj = make_param(param, batch, model.spec.channels, (size, size), 0)
    tf = make_transforms("auto", (size, size), steps, param)
    stamps = []
    render(model, O.channel(layer, [u % 16 for u in range(batch)]), p, steps=steps, transforms=tf,
           project=proj, lr=0.05,
           callback=lambda *_: stamps.append((time.perf_counter(), time.process_time())))
    d = np.diff(np.array(stamps), axis=0)
    return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


def step_vs_limit(settings: list[tuple], repeats: int) -> None:
    """The table of the note: per setting and parametrization, a batched step's time per unit
    and the bare forward+backward's (the limit), and their ratio (target >= 0.8), in wall and
    in CPU seconds (one thread: CPU time is what a shared machine does not inflate)."""
    print("| model, layer, size | batch | param | AM step / unit (wall, CPU) | limit / unit (wall, CPU) "
          "| limit / step (wall) | limit / step (CPU) |")
    print("|---|---|---|---|---|---|---|")
    for label, model, layer, size, batch in settings:
        for param in ("fourier", "maco"):
            s = np.full(2, np.inf)
            lim = np.full(2, np.inf)
            for _ in range(repeats):  # interleaved, best of: the machine is shared
                s = np.minimum(s, am_step(model, layer, batch, size, param))
                lim = np.minimum(lim, bare_step(model, layer, batch, size))
            s, lim = 1e3 * s / batch, 1e3 * lim / batch
            print(f"| {label}, {layer}, {size} px | {batch} | {param} | {s[0]:.2f}, {s[1]:.2f} ms "
                  f"| {lim[0]:.2f}, {lim[1]:.2f} ms | {lim[0] / s[0]:.2f} | **{lim[1] / s[1]:.2f}** |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--sequential", type=int, default=8, help="units run one after another")
    ap.add_argument("--lucent", type=int, default=2, help="units run with Lucent (0: skip)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--settings", default="limit,vgg4,squeezenet,squeezenet7,lenet")
    ap.add_argument("--limit-batch", type=int, default=16, help="units per step for the limit table")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from convlens import load_model

    precisions = a.precisions.split(",")
    settings = a.settings.split(",")
    print(f"{a.steps} steps, {a.threads} thread(s), best of {a.repeats} interleaved rounds; "
          f"{_uptime()}")
    if "limit" in settings:
        print(f"step vs limit, float32, best of {a.repeats}; {_uptime()}")
        sq, kind = load()
        lenet = load_model("lenet-digits")
        step_vs_limit([("lenet-digits", lenet, "conv2", 28, 64),
                       (f"squeezenet1_1 ({kind})", sq, "features.12", 128, a.limit_batch),
                       (f"squeezenet1_1 ({kind})", sq, "features.12", 227, a.limit_batch)], a.repeats)
        print(f"peak RSS {_peak_mib():.0f} MiB; {_uptime()}")
    if "vgg4" in settings:
        torch.manual_seed(0)
        print(f"vgg4 (Lees' CIFAR-10 net, random weights), layer conv3, 32 px; {_uptime()}")
        compare(load_model("vgg4"), "conv3", 32, a.steps, 64, list(range(64)), precisions, a.repeats)
    model, kind = load() if {"squeezenet", "squeezenet7"} & set(settings) else (None, "")
    if "squeezenet" in settings:
        print(f"squeezenet1_1 ({kind}), layer {LAYER}, {a.size} px; {_uptime()}")
        res = compare(model, LAYER, a.size, a.steps, a.sequential, list(range(64)), precisions,
                      a.repeats)
        luc = lucent(model, LAYER, list(range(a.lucent)), a.steps, a.repeats) if a.lucent else None
        if luc is not None:
            print(f"  Lucent defaults, one per call: {luc[0]:8.3f} s wall, {luc[1]:8.3f} s CPU per unit "
                  f"({a.lucent} units; its 128 px image is upsampled to 224 px)")
            for precision, (together, seq) in res.items():
                print(f"  [{precision}] ratio Lucent / convlens together: {luc[0] / together[0]:.1f}x wall, "
                      f"{luc[1] / together[1]:.1f}x CPU; Lucent / convlens one after another: "
                      f"{luc[0] / seq[0]:.1f}x wall, {luc[1] / seq[1]:.1f}x CPU")
    if "squeezenet7" in settings:
        print(f"squeezenet1_1 ({kind}), layer features.7 (units 0-63), {a.size} px; {_uptime()}")
        compare(model, "features.7", a.size, a.steps, a.sequential, list(range(64)), precisions,
                a.repeats)
    if "lenet" in settings:
        print(f"lenet-digits (trained), layer conv2 (16 units x 4 seeds), 28 px; {_uptime()}")
        compare(load_model("lenet-digits"), "conv2", 28, a.steps, 16,
                [u % 16 for u in range(64)], precisions, a.repeats)
    print(f"done; {_uptime()}")


if __name__ == "__main__":
    main()
