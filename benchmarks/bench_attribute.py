"""Attribution benchmarks (plain script; prints ratios against peers measured in the same run).

1. LIME time: convlens' ``lime`` against the ``lime`` package (0.2) on the same model, image,
   superpixels (handed to both), number of samples (1000) and hidden colour (each
   superpixel's mean). Main case: the ImageNet SqueezeNet 1.1 of ../shared at 227 px on photos
   from ../shared (skipped when absent), with lime's default quickshift superpixels; also the
   built-in LeNet on digits (SLIC). The package gets a classifier_fn as a user writes it
   (float32, torch.no_grad, numpy -> tensor -> model -> softmax -> numpy) and its default
   batch_size=10; it is also given the classifier we use (convlens.fast: channels-last,
   bfloat16, fused conv+ReLU), which shows how much of the gain is the model evaluation and how
   much LIME's own work. Wall time (time.perf_counter), one torch thread, the variants
   interleaved and the best of ``--repeat`` (3) kept; the first (cold) round is printed too.
   Target: >= 3x faster.
2. LIME deletion area (``--areas``): ours (default precision and float32) and the package's on
   30 digits (``--digits`` per class) and ``--photos`` photos, ``--seeds`` seeds each, paired per image and seed;
   deletion curves in float32 for all. Target: area no worse.
3. Top images: the k strongest images of every unit of a layer over 10 000 images (MNIST test
   from ../shared when present, else the built-in digits repeated) in one pass, against one
   pass per unit.

    python benchmarks/bench_attribute.py              # 1 and 3
    python benchmarks/bench_attribute.py --areas      # 2 (about 10 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from convlens import load_dataset, load_model
from convlens.attribute import deletion_curve, lime, superpixels, top_images
from convlens.fast import bf16_native, fast
from convlens.probe import frozen

torch.set_num_threads(1)
_HERE = Path(__file__).resolve()
# ../shared beside the repository (or beside the folder of worktrees)
SHARED = next((p / "shared" for p in (_HERE.parents[2], _HERE.parents[3]) if (p / "shared").is_dir()),
              _HERE.parents[2] / "shared")
SAMPLES = 1000
TIMED_PHOTOS = ("elephant.jpg", "cat_dog.png")


def _clock() -> float:
    """CPU time of this process (top-images part)."""
    return time.process_time()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} cores"


def squeezenet():
    weights = SHARED / "models" / "squeezenet1_1-caffe.pth"
    if not weights.is_file():
        return None
    return load_model("squeezenet1_1", weights=str(weights), input_spec="caffe",
                      classes=str(SHARED / "models" / "imagenet_classes.txt"))


def photos(names=None):
    from convlens.data import Resize, read_image

    folder = SHARED / "data" / "photos"
    files = [folder / n for n in names] if names else sorted(
        p for p in folder.glob("*.*") if "segmentation" not in p.name)
    return {p.name: Resize((227, 227))(read_image(p)) for p in files if p.is_file()}


def classifier(model):
    """The classifier_fn handed to the lime package, as a user writes it."""
    grey = model.spec.channels == 1

    def classify(batch):  # the package passes (N, H, W, 3) float64 RGB
        t = torch.as_tensor(batch[..., :1] if grey else batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(model(t).float(), 1).numpy()

    return classify


def lime_package(model, x, segments, label, seed, how="plain", batch_size=10):
    """The lime package's superpixel weights (its LimeImageExplainer defaults). ``how``:
    ``plain``, or ``fast32`` / ``fast16``: the same classifier run inside convlens.fast
    (channels-last; bfloat16 with fused conv+ReLU), entered once around the whole call."""
    from lime import lime_image

    img = x.numpy().transpose(1, 2, 0)
    rgb = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img
    speed = (contextlib.nullcontext() if how == "plain" else
             fast(model.net, "float32" if how == "fast32" else "bfloat16", fuse=how == "fast16"))
    with frozen(model.net), speed:
        exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            rgb.astype(np.float64), classifier(model), labels=(label,), top_labels=None, hide_color=None,
            num_samples=SAMPLES, batch_size=batch_size, segmentation_fn=lambda _: segments, random_seed=seed)
    weights = np.zeros(segments.max() + 1)
    for s, w in exp.local_exp[label]:
        weights[s] = w
    return weights


def segments_for(x):
    """lime's default superpixels (quickshift 4 / 200 / 0.2) for photos, SLIC for digits."""
    if x.shape[0] == 1:
        return superpixels(x, "slic", n_segments=40)
    return superpixels(x, "quickshift", kernel_size=4, max_dist=200, ratio=0.2)


def _top(model, x):
    with torch.no_grad():
        return int(model(x[None]).argmax(1))


VARIANTS = {
    "convlens lime, precision=auto": lambda m, x, seg, lab: lime(m, x, labels=[lab], segments=seg, num_samples=SAMPLES),
    "convlens lime, float32": lambda m, x, seg, lab: lime(m, x, labels=[lab], segments=seg, num_samples=SAMPLES,
                                                          precision="float32"),
    "lime package, user classifier_fn": lambda m, x, seg, lab: lime_package(m, x, seg, lab, 0),
    "lime package + our fast fp32 classifier": lambda m, x, seg, lab: lime_package(m, x, seg, lab, 0, "fast32"),
    "lime package + our fast bf16 classifier": lambda m, x, seg, lab: lime_package(m, x, seg, lab, 0, "fast16"),
}


def time_lime(title, model, images, repeat):
    """Best-of-``repeat`` wall time per image of every variant, interleaved."""
    names = list(VARIANTS)
    if not bf16_native():
        names = [n for n in names if "bf16" not in n]
    cases = [(x, segments_for(x), _top(model, x)) for x in images.values()]
    best = {n: [np.inf] * len(cases) for n in names}
    cold = {n: 0.0 for n in names}
    for r in range(repeat):
        for n in (names if r % 2 == 0 else names[::-1]):  # alternate the order between rounds
            for j, (x, seg, lab) in enumerate(cases):
                t0 = time.perf_counter()
                VARIANTS[n](model, x, seg, lab)
                t = time.perf_counter() - t0
                best[n][j] = min(best[n][j], t)
                cold[n] += t if r == 0 else 0.0
    per = {n: float(np.mean(best[n])) for n in names}
    segs = [int(c[1].max()) + 1 for c in cases]
    print(f"\nLIME time, {title}: {', '.join(images)} ({', '.join(map(str, segs))} superpixels), "
          f"{SAMPLES} samples; wall s per image, best of {repeat} (first round); speed-up = time of the "
          "lime package with the user's classifier / with our fast fp32 one / with our fast bf16 one, "
          "divided by this row's")
    peers = [m for m in names if m.startswith("lime package")]
    for n in names:
        print(f"  {n:42s} {per[n]:7.3f} s ({cold[n] / len(cases):7.3f})   "
              + " / ".join(f"{per[m] / per[n]:.2f}x" for m in peers))
    plain, ours = per["lime package, user classifier_fn"], per[names[0]]
    print(f"  => speed-up of convlens (auto) over the lime package as users run it: {plain / ours:.2f}x "
          f"(target >= 3x); float32: {plain / per[names[1]]:.2f}x; first round: "
          f"{cold['lime package, user classifier_fn'] / cold[names[0]]:.2f}x")
    return per


def bench_lime(repeat):
    print(_load())
    print(f"torch {torch.__version__}, 1 thread, bfloat16 native: {bf16_native()}")
    sq = squeezenet()
    if sq is None:
        print(f"SqueezeNet case skipped: {SHARED / 'models'} is absent")
    else:
        time_lime("SqueezeNet 1.1 at 227 px", sq, photos(TIMED_PHOTOS), repeat)
    ds = load_dataset("digits")
    time_lime("LeNet on digits", load_model("lenet-digits"), {f"digit {i}": ds.image(i) for i in (0, 50, 100)},
              repeat)
    print(_load())


def _agreement(a, b):
    """Pearson correlation, same top superpixel, overlap of the top 5 of two weight vectors."""
    ta, tb = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
    return np.corrcoef(a, b)[0, 1], float(ta[0] == tb[0]), len(set(ta[:5]) & set(tb[:5])) / 5


def package_samples(seed: int, n: int, s: int) -> np.ndarray:
    """The on/off patterns lime 0.2's LimeImageExplainer(random_state=seed) draws."""
    z = np.random.RandomState(seed).randint(0, 2, n * s).reshape(n, s).astype(float)
    z[0] = 1
    return z


def _area_rows(model, images, seeds, package_how):
    """Per (image, seed): deletion areas (float32 curves) of ours (auto, float32) and the package's,
    and the weights of ours for the precision comparison."""
    rows = []
    for name, x in images.items():
        seg, lab = segments_for(x), _top(model, x)
        for seed in range(seeds):
            w = {"auto": lime(model, x, labels=[lab], segments=seg, num_samples=SAMPLES, seed=seed).weights(lab),
                 "float32": lime(model, x, labels=[lab], segments=seg, num_samples=SAMPLES, seed=seed,
                                 precision="float32").weights(lab),
                 "package": lime_package(model, x, seg, lab, seed, package_how),
                 # ours on the very samples the package drew (its RandomState stream): what is left
                 # of the difference once the sampling noise is taken out
                 "paired": lime(model, x, labels=[lab], segments=seg, seed=seed,
                                samples=package_samples(seed, SAMPLES, int(seg.max()) + 1)).weights(lab)}
            areas = {k: deletion_curve(model, x, v[seg], lab, precision="float32").area for k, v in w.items()}
            rows.append({"image": name, "seed": seed, "weights": w, "areas": areas})
    return rows


def _report_areas(title, rows):
    a = {k: np.array([r["areas"][k] for r in rows]) for k in ("auto", "float32", "package", "paired")}
    print(f"\nLIME deletion area (lower is better), {title}: {len(rows)} image x seed pairs")
    for k, label in (("auto", "convlens, precision=auto"), ("float32", "convlens, float32"),
                     ("package", "lime package")):
        print(f"  {label:26s} mean {a[k].mean():.4f}  sd {a[k].std(ddof=1):.4f}")
    for k in ("auto", "float32"):
        d = a[k] - a["package"]
        se = d.std(ddof=1) / np.sqrt(len(d))
        print(f"  ours ({k}) - package: mean {d.mean():+.4f} +- {1.96 * se:.4f} (95% CI), sd {d.std(ddof=1):.4f}; "
              f"ours lower in {np.mean(d < 0):.0%}, higher in {np.mean(d > 0):.0%}; ratio of means "
              f"{a[k].mean() / a['package'].mean():.3f} -> {'significantly worse' if d.mean() - 1.96 * se > 0 else 'not significantly worse'}")
    d = a["paired"] - a["package"]
    pair = np.array([_agreement(r["weights"]["paired"], r["weights"]["package"]) for r in rows])
    print(f"  ours (auto) on the package's own samples - package: mean {d.mean():+.4f}, max |diff| "
          f"{np.abs(d).max():.4f}; weight correlation {pair[:, 0].mean():.4f} (min {pair[:, 0].min():.4f}), "
          f"same top superpixel {pair[:, 1].mean():.0%}")
    same = np.array([_agreement(r["weights"]["auto"], r["weights"]["float32"]) for r in rows])
    by_image = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r["weights"]["float32"])
    seeds = np.array([_agreement(v[0], v[1]) for v in by_image.values() if len(v) > 1])
    print(f"  bfloat16 vs float32, same seed: weight correlation {same[:, 0].mean():.3f} (min {same[:, 0].min():.3f}), "
          f"same top superpixel {same[:, 1].mean():.0%}, top-5 overlap {same[:, 2].mean():.0%}; "
          f"auto - float32 area {np.mean(a['auto'] - a['float32']):+.4f}")
    if len(seeds):
        print(f"  float32, seed 0 vs seed 1 (LIME's own sampling noise): weight correlation {seeds[:, 0].mean():.3f}, "
              f"same top superpixel {seeds[:, 1].mean():.0%}, top-5 overlap {seeds[:, 2].mean():.0%}")


def bench_areas(n_photos, seeds, per_class=3):
    print(_load())
    t0 = time.perf_counter()
    ds = load_dataset("digits")
    picks = [i for c in range(10) for i in np.flatnonzero(np.asarray(ds.labels) == c)[:per_class]]
    lenet = load_model("lenet-digits")
    _report_areas(f"LeNet on {len(picks)} digits ({per_class} per class), SLIC ~40 superpixels",
                  _area_rows(lenet, {f"digit {i}": ds.image(int(i)) for i in picks}, max(seeds, 3), "plain"))
    sq = squeezenet()
    if sq is None:
        print(f"SqueezeNet case skipped: {SHARED / 'models'} is absent")
    else:
        pics = dict(list(photos().items())[:n_photos])
        # the package's classifier runs inside fast(net, "float32") here: the user's classifier's
        # probabilities up to float rounding (tests/test_fast.py); no faster, as the timing shows
        _report_areas(f"SqueezeNet on {len(pics)} photos ({', '.join(pics)}), quickshift",
                      _area_rows(sq, pics, seeds, "fast32"))
    print(f"{time.perf_counter() - t0:.0f} s; {_load()}")


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lime-only", action="store_true")
    ap.add_argument("--top-only", action="store_true")
    ap.add_argument("--areas", action="store_true", help="only the deletion-area study")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--photos", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=SAMPLES, help="LIME samples (1000 for the targets)")
    ap.add_argument("--digits", type=int, default=3, help="digits per class in the area study")
    args = ap.parse_args()
    SAMPLES = args.samples
    if args.areas:
        bench_areas(args.photos, args.seeds, args.digits)
    else:
        if not args.top_only:
            bench_lime(args.repeat)
        if not args.lime_only:
            bench_top_images()
