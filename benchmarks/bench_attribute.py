"""Attribution benchmarks (plain script; prints ratios against peers measured in the same run).

1. LIME: convlens' ``lime`` vs the ``lime`` package (0.2) on the same model, images,
   superpixels (SLIC, handed to both), number of samples, batch size and hidden colour (each
   superpixel's mean): wall time and the deletion area of each explanation's ranking. Two
   models: the built-in LeNet on digits (the network's forward passes dominate both), and a
   cheap linear read-out of a 224 px image (LIME's own work dominates: building the perturbed
   images and fitting). Target: >= 3x faster, area no worse. Times are CPU seconds
   of this process (one torch thread), steadier than wall time on a shared machine.
2. Top images: the k strongest images of every unit of a layer over 10 000 images (MNIST test
   from ../shared when present, else the built-in digits repeated) in one pass, against one
   pass per unit.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from convlens import load_dataset, load_model
from convlens.attribute import deletion_curve, lime, superpixels, top_images

torch.set_num_threads(1)


def _clock() -> float:
    """CPU time of this process: on a shared machine, wall time measures the neighbours."""
    return time.process_time()
_HERE = Path(__file__).resolve()
# ../shared beside the repository (or beside the folder of worktrees)
SHARED = next((p / "shared" for p in (_HERE.parents[2], _HERE.parents[3]) if (p / "shared").is_dir()),
              _HERE.parents[2] / "shared")
SAMPLES, BATCH, IMAGES = 1000, 64, 3


class Readout(torch.nn.Module):
    """A cheap 'model' on 224 px RGB: 10 classes read from 10 fixed random pixel weightings."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(10, 3 * 224 * 224, generator=g) / 300, requires_grad=False)

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def lime_package(model, x, segments, label, seed):
    from lime import lime_image

    grey = x.shape[0] == 1

    def classify(batch):  # the package passes (N, H, W, 3) RGB
        t = torch.as_tensor(batch[..., :1] if grey else batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(model(t), 1).numpy()

    img = x.numpy().transpose(1, 2, 0)
    rgb = np.repeat(img, 3, axis=2) if grey else img
    exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
        rgb.astype(np.float64), classify, labels=(label,), top_labels=None, hide_color=None,
        num_samples=SAMPLES, batch_size=BATCH, segmentation_fn=lambda _: segments, random_seed=seed)
    weights = np.zeros(segments.max() + 1)
    for s, w in exp.local_exp[label]:
        weights[s] = w
    return weights[segments]


def _compare(title, m, images):
    ours_t = theirs_t = 0.0
    ours_a, theirs_a = [], []
    for j, x in enumerate(images):
        seg = superpixels(x, "slic", n_segments=40)
        with torch.no_grad():
            label = int(m(x[None]).argmax(1))
        t0 = _clock()
        r = lime(m, x, labels=[label], segments=seg, num_samples=SAMPLES, batch_size=BATCH, hide="mean", seed=j)
        ours_t += _clock() - t0
        t0 = _clock()
        theirs = lime_package(m, x, seg, label, j)
        theirs_t += _clock() - t0
        ours_a.append(deletion_curve(m, x, r.heatmap(label), label, steps=50).area)
        theirs_a.append(deletion_curve(m, x, theirs, label, steps=50).area)
    n = len(images)
    print(f"LIME, {title}: {n} images x {SAMPLES} samples, batch {BATCH}, same SLIC superpixels")
    print(f"  convlens lime : {ours_t / n:.3f} s/image, deletion area {np.mean(ours_a):.4f}")
    print(f"  lime package  : {theirs_t / n:.3f} s/image, deletion area {np.mean(theirs_a):.4f}")
    print(f"  speed-up {theirs_t / ours_t:.1f}x (target >= 3x); area ratio ours/theirs "
          f"{np.mean(ours_a) / np.mean(theirs_a):.3f} (target <= 1)")


def bench_lime():
    m = load_model("lenet-digits")
    ds = load_dataset("digits")
    _compare("LeNet on digits (forward-bound)", m, [ds.image(i) for i in range(0, 50 * IMAGES, 50)])
    photos = sorted((SHARED / "data" / "photos").glob("*.jpg"))[:IMAGES]
    from convlens.data import Resize, read_image

    images = [Resize((224, 224))(read_image(p)) for p in photos] or \
        [torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(i)) for i in range(IMAGES)]
    _compare("linear read-out on 224 px photos (LIME-bound)", load_model(Readout()), images)


def bench_top_images():
    m = load_model("lenet-digits")
    mnist = SHARED / "data" / "mnist.npz"
    if mnist.is_file():
        from convlens.data import conform

        ds = conform(load_dataset(f"{mnist}:test"), m)
    else:
        d = load_dataset("digits")
        ds = d.subset([i % len(d) for i in range(10000)])
    x, _ = ds.tensors()  # in memory, so both sides time the network and the bookkeeping only
    from convlens.data import ImageDataset

    mem = ImageDataset([str(i) for i in range(len(x))], lambda i: x[i], name="mem")
    layer, k = "conv2", 9
    t0 = _clock()
    top = top_images(m, mem, layer, k=k, batch_size=256)
    all_t = _clock() - t0
    t0 = _clock()
    single = [top_images(m, mem, layer, k=k, units=[u], batch_size=256) for u in top.units]
    one_t = _clock() - t0
    same = all((s.indices[0] == top.indices[r]).all() for r, s in enumerate(single))
    print(f"Top {k} images of all {len(top.units)} units of {layer} over {len(mem)} images "
          f"({'MNIST test' if mnist.is_file() else 'digits repeated'})")
    print(f"  one pass for all units : {all_t:.2f} s")
    print(f"  one pass per unit      : {one_t:.2f} s  ({one_t / all_t:.1f}x slower; same result: {same})")


if __name__ == "__main__":
    import sys

    if "--top-only" not in sys.argv:
        bench_lime()
    if "--lime-only" not in sys.argv:
        bench_top_images()
