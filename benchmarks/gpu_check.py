"""Every method once on the ImageNet SqueezeNet 1.1 of ../shared, on one device, timed.

For a machine with a GPU (``benchmarks/gpu_check.sh`` runs it with ``--device cuda``); with
``--device cpu`` it checks the same path here. Prints one row per method: wall seconds
(synchronised with the device), CPU seconds (time.process_time), peak device memory (CUDA:
torch.cuda.max_memory_allocated; CPU: the process's peak RSS so far) and the result's size, or
the one-line reason a method failed. Exit status 1 when any method failed.

    python benchmarks/gpu_check.py --device cuda [--images 16] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _shared(arg: str | None) -> Path:
    for p in ([Path(arg)] if arg else []) + [Path(os.environ.get("CONVLENS_SHARED", "/nonexistent")),
                                            HERE.parent.parent / "shared", Path("/work/shared")]:
        if (p / "models" / "squeezenet1_1-caffe.pth").is_file():
            return p
    sys.exit("the SqueezeNet of ../shared was not found: pass --shared PATH (the folder holding models/)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _peak(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB (device)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB (RSS)"


def methods(m, x, ds, concepts, layer: str):
    """``(name, thunk)`` for every method; each thunk returns a short description of its result."""
    import convlens as cl
    from convlens.dissect import dissect

    unit = f"{layer}:0"
    return [
        ("capture", lambda: tuple(cl.capture(m, x, [layer])[layer].shape)),
        ("top images", lambda: cl.top_images(m, ds, layer, k=4, units=list(range(8)), batch_size=8).values.shape),
        ("deconvnet", lambda: cl.deconvnet(m, x[:4], unit, spread="map").maps.shape),
        ("guided backprop", lambda: cl.guided_backprop(m, x[:4], unit, spread="map").maps.shape),
        ("saliency", lambda: cl.saliency(m, x[:4]).maps.shape),
        ("lime (200 samples)", lambda: cl.lime(m, x[0], num_samples=200, n_segments=30, top_labels=1).coefs.shape),
        ("occlusion (win 32 / 16)", lambda: np.asarray(cl.occlusion(m, x[0], window=32, stride=16).sensitivity).shape),
        ("activation max. (8 units, 32 steps)",
         lambda: np.asarray(cl.activation_maximization(m, layer, list(range(8)), steps=32).images).shape),
        ("inversion (32 steps)", lambda: np.asarray(cl.invert(m, x[0], [layer], steps=32).images).shape),
        ("dissection (generated, 64 images)", lambda: dissect(m, concepts, layer, batch_size=16)[layer].iou.shape),
        ("adversarial (PGD, 10 steps)", lambda: tuple(cl.attack(m, x[:4], eps=4 / 255, steps=10).images.shape)),
        ("filter topology (features.0)", lambda: cl.filter_cloud(m, "features.0").points.shape),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cpu, cuda, cuda:N or mps (default cuda)")
    ap.add_argument("--images", type=int, default=16, help="photos to use (default 16)")
    ap.add_argument("--shared", default=None, help="the ../shared folder (models/, data/)")
    ap.add_argument("--layer", default="features.7", help="the layer units are taken from")
    a = ap.parse_args(argv)

    from convlens import load_model
    from convlens.data import conform
    from convlens.devices import resolve_device
    from convlens.dissect import make_concepts

    try:
        device = resolve_device(a.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shared = _shared(a.shared)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# convlens gpu_check: SqueezeNet 1.1 (caffe), {a.images} photos at 227 px, device {device} ({name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load {os.getloadavg()[0]:.1f}")
    m = load_model("squeezenet1_1", weights=shared / "models" / "squeezenet1_1-caffe.pth", input_spec="caffe",
                   classes=shared / "models" / "imagenet_classes.txt", device=device)
    photos = sorted(p for p in (shared / "data" / "photos").iterdir() if p.suffix.lower() in (".jpg", ".png")
                    and "segmentation" not in p.name)[: a.images]
    ds = conform(_photo_set(photos), m)
    x = torch.stack([ds.image(i) for i in range(len(ds))])
    concepts = make_concepts(64, 64, seed=0)
    failed, table = 0, methods(m, x, ds, concepts, a.layer)
    print(f"{'method':40s} {'wall s':>8s} {'cpu s':>8s}  {'peak memory':>22s}  result")
    for label, fn in table:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            out = fn()
            _sync(device)
            what = str(tuple(out) if not isinstance(out, str) else out)
        except Exception as e:  # report and go on: the table shows every method
            failed += 1
            what = f"FAILED {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if os.environ.get("GPU_CHECK_TRACE"):
                traceback.print_exc()
        print(f"{label:40s} {time.perf_counter() - t0:8.2f} {time.process_time() - c0:8.2f}  {_peak(device):>22s}  {what}",
              flush=True)
    print(f"# {failed} of {len(table)} methods failed" if failed else "# every method ran")
    return 1 if failed else 0


def _photo_set(paths):
    from convlens.data import ImageDataset, read_image

    return ImageDataset([str(p) for p in paths], lambda i: read_image(paths[i]), name="photos")


if __name__ == "__main__":
    sys.exit(main())
