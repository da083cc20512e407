"""ROAD and pixel flipping: convlens against Quantus 0.6 on the same model, images and maps.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_attribute_road.py \
        [--quantus-python /work/wt/quantus-venv/bin/python] [--images 4]

Quantus is never a convlens dependency: it runs in its own environment (torch 2.13.0 first, then
Quantus with ``--no-deps``), given by ``--quantus-python``; this script hands it the model as
TorchScript (input normalisation folded in), the images and the maps as an ``.npz``, and runs
itself there with ``--quantus-side``. Both sides use the SqueezeNet at 224 px (224^2 splits into
16 equal pixel-flipping steps, which Quantus requires), the photos, gradient saliency maps, ROAD
MoRF at 10 ... 90 % with noisy linear imputation, and pixel flipping (deletion to black) in 16
steps. Prints the hardware limit of each (the same imputation solves and bare batched float32
forward passes, measured alone), wall and CPU seconds (``time.process_time``; the child's from its own process),
peak memory (``ru_maxrss``) and the load average, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CONVLENS_SHARED", ROOT.parent / "shared"))  # ../shared beside the checkout
FRACTIONS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
FLIP_STEPS = 16


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quantus_side(npz: str, model_path: str) -> None:
    """Run in Quantus' environment: time its ROAD and PixelFlipping, print JSON."""
    import quantus

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    d = np.load(npz)
    x, a, y = d["x_norm"], d["maps"][:, None], d["targets"]
    net = torch.jit.load(model_path).eval()
    out = {"quantus": quantus.__version__}
    h, w = x.shape[-2:]
    road = quantus.ROAD(noise=0.01, percentages=[int(f * 100) for f in FRACTIONS], display_progressbar=False,
                        abs=False, normalise=False)
    # Quantus 0.6.0's ROAD broadcasts a (N, 1, H, W) map to the images' (N, 3, H, W) and ranks the
    # 3HW values, but its imputation takes *pixel* indices < HW: on colour images it fails with an
    # IndexError (index 74297 out of bounds for size 50176 at 224 px). Work-around with the same
    # meaning: hand it the map per channel, channel c lowered by c x (range + 1), so its ranking
    # lists channel 0 -- the pixel indices in the map's order -- first, and fix its share's base
    # a_size to H x W (what its docstring asks for) so p % means p % of the pixels.
    span = float(a.max() - a.min()) + 1.0
    a3 = np.concatenate([a - c * span for c in range(x.shape[1])], axis=1)
    road.a_size = h * w
    t, c = time.perf_counter(), time.process_time()
    r = road(model=net, x_batch=x, y_batch=y, a_batch=a3, device="cpu")
    out["road"] = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                   "curve": [float(v) for v in (r.values() if isinstance(r, dict) else np.ravel(r))][:20]}
    flip = quantus.PixelFlipping(features_in_step=h * w // FLIP_STEPS, perturb_baseline="black",
                                 display_progressbar=False, abs=False, normalise=False)
    t, c = time.perf_counter(), time.process_time()
    flip(model=net, x_batch=x, y_batch=y, a_batch=a, device="cpu")
    out["flip"] = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
    out["peak_mb"] = _peak_mb()
    print(json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best of each is printed")
    p.add_argument("--quantus-python", default=str(ROOT.parent / "quantus-venv" / "bin" / "python"))
    p.add_argument("--quantus-side", nargs=2, metavar=("NPZ", "MODEL"))
    args = p.parse_args()
    if args.quantus_side:
        quantus_side(*args.quantus_side)
        return

    from dataclasses import replace

    from torch import nn

    from convlens import load_model
    from convlens.attribute import attribute
    from convlens.data import Resize, ToChannels, read_image

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    m = load_model("squeezenet1_1", weights=SHARED / "models/squeezenet1_1-caffe.pth", input_spec="caffe")
    m.spec = replace(m.spec, size=(224, 224))
    photos = sorted((SHARED / "data/photos").glob("*.jpg"))[: args.images]
    x = torch.stack([Resize((224, 224))(ToChannels(3)(read_image(f))) for f in photos])
    a = attribute(m, x, method="saliency")
    maps, targets = a.maps, a.targets
    print(f"SqueezeNet 1.1 at 224 px, {len(x)} photos, saliency maps; torch threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        net = nn.Sequential(_Normalize(m.spec), m.net).eval()
        torch.jit.trace(net, x[:1]).save(f"{tmp}/model.pt")
        with torch.no_grad():
            xn = m.spec.normalize(x).numpy()
        np.savez(f"{tmp}/data.npz", x_norm=xn, maps=maps, targets=targets)
        py = Path(args.quantus_python)
        if not py.is_file():
            print(f"Quantus not run: no interpreter at {py} (make its venv: see the module docstring)")
        rounds = [_round(m, x, maps, targets, py, tmp) for _ in range(args.repeat)]  # interleaved
    ours = {k: _best([r[0][k] for r in rounds]) for k in ("road", "flip", "limit")}
    ours["peak_mb"] = _peak_mb()
    theirs = None
    if all(r[1] for r in rounds):
        theirs = {k: _best([r[1][k] for r in rounds]) for k in ("road", "flip")}
        theirs.update(peak_mb=max(r[1]["peak_mb"] for r in rounds), quantus=rounds[0][1]["quantus"],
                      curve=rounds[0][1]["road"]["curve"])
    print(f"convlens ROAD MoRF curve (mean over images): {np.round(rounds[0][0]['curve'], 3).tolist()}")
    print(f"best of {args.repeat} interleaved rounds each:")
    _report(ours, theirs, len(x))


def _best(runs: list[dict]) -> dict:
    return {k: min(r[k] for r in runs) for k in runs[0] if k != "curve"}


def _round(m, x, maps, targets, py: Path, tmp: str):
    """One round: convlens ROAD and pixel flipping, the limit, then Quantus in its own process."""
    from convlens.attribute import perturbation_curves, road

    t, c = time.perf_counter(), time.process_time()
    curve = road(m, x, maps, targets, order="morf", fractions=FRACTIONS).probs.mean(0)
    ours = {"road": {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}, "curve": curve}
    t, c = time.perf_counter(), time.process_time()
    perturbation_curves(m, x, maps, targets, kind="deletion", steps=FLIP_STEPS, baseline=0.0, precision="float32")
    ours["flip"] = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
    ours["limit"] = _limit(m, x, maps)
    if not py.is_file():
        return ours, None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(py), __file__, "--quantus-side", f"{tmp}/data.npz", f"{tmp}/model.pt"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print("Quantus failed:\n" + proc.stderr[-3000:])
        return ours, None
    return ours, json.loads(proc.stdout.strip().splitlines()[-1])


def _limit(model, x, maps) -> dict:
    """What the hardware needs for the same work, measured alone (CPU s): the imputation solves,
    and bare float32 forward passes of as many normalized images (batches of 16, no gradients)."""
    from convlens.attribute._road import road_images

    g = torch.Generator().manual_seed(0)
    c = time.process_time()
    imputed = torch.cat([road_images(x[i], torch.as_tensor(maps[i]), FRACTIONS, "morf", noise=0.01, generator=g)
                         for i in range(len(x))])
    solves = time.process_time() - c

    def forwards(n: int) -> float:  # the faster of NCHW and channels-last, after a warm-up pass
        best = float("inf")
        for layout in (torch.contiguous_format, torch.channels_last):
            net = model.net.to(memory_format=layout)
            batch = model.spec.normalize(x[:1].expand(16, -1, -1, -1)).contiguous(memory_format=layout)
            with torch.no_grad():
                net(batch)
                c = time.process_time()
                for k in range(0, n, 16):
                    net(batch[: min(16, n - k)])
            best = min(best, time.process_time() - c)
        model.net.to(memory_format=torch.contiguous_format)
        return best

    return {"road": solves + forwards(len(imputed)), "road_solves": solves,
            "flip": forwards(len(x) * (FLIP_STEPS + 1))}


class _Normalize(torch.nn.Module):
    """The model's input normalisation as a module (for the TorchScript handed to Quantus)."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec

    def forward(self, x):
        return self.spec.normalize(x)


def _report(ours: dict, theirs: dict | None, n: int) -> None:
    for k, label in (("road", "ROAD MoRF, 9 fractions"), ("flip", f"pixel flipping, {FLIP_STEPS} steps")):
        line = (f"{label:28s} limit {ours['limit'][k]:6.2f} s CPU | convlens {ours[k]['wall']:7.2f} s wall "
                f"{ours[k]['cpu']:7.2f} s CPU ({ours['limit'][k] / ours[k]['cpu']:.2f} of the limit)")
        if theirs:
            line += (f" | Quantus {theirs[k]['wall']:7.2f} s wall {theirs[k]['cpu']:7.2f} s CPU"
                     f" | ratio {theirs[k]['wall'] / ours[k]['wall']:5.1f}x wall, "
                     f"{theirs[k]['cpu'] / ours[k]['cpu']:5.1f}x CPU")
        print(line)
    print(f"peak memory: convlens {ours['peak_mb']:.0f} MB" +
          (f", Quantus {theirs['peak_mb']:.0f} MB (Quantus {theirs['quantus']})" if theirs else ""))
    print(f"the limit: ROAD = its imputation solves alone ({ours['limit']['road_solves']:.2f} s) + bare "
          f"float32 forward passes of the imputed images; pixel flipping = bare forward passes of "
          f"{n} x {FLIP_STEPS + 1} images")
    print(f"{n} images; load average after: {os.getloadavg()[0]:.1f}")
    if theirs:
        print(f"Quantus ROAD curve: {theirs['curve']}")


if __name__ == "__main__":
    sys.exit(main())
