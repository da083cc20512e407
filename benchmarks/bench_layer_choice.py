"""How far the label-free layer pick falls from the labelled best layer (issue 17).

For each data set, every block output is extracted in one pass (cached), Table 1 runs on every
layer (``run_layers``, the path of ``convlens embed --layer auto``) whitened and not, with as many
clusters as classes and one more; for every pipeline and every label-free criterion
(``convlens.embed.CRITERIA``) it prints the layer the criterion picks and the points of accuracy
it loses against the labelled best (one-to-one accuracy at k = classes, many-to-one above), then
the worst and mean loss of each criterion over everything. Target: within 2 points.

Data sets: the built-in ``digits`` through the built-in ``lenet-digits``; the built-in
``textures`` and, when ``../shared`` is present, 2 000 CIFAR-10 test images, both through the
Caffe SqueezeNet 1.1. CPU seconds (one BLAS thread), wall seconds, load average and peak memory.

Run: ``python benchmarks/bench_layer_choice.py [--data digits,textures,cifar] [--seeds 3]
[--json out.json]`` (digits about 2 CPU minutes, textures about 8, CIFAR about 20).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

SHARED = Path(os.environ.get("CONVLENS_SHARED") or Path(__file__).resolve().parents[2] / "shared")
CACHE = Path(os.environ.get("CONVLENS_BENCH_CACHE", Path.home() / ".cache" / "convlens" / "features"))


def features(name: str) -> dict:
    from convlens import load_dataset, load_model
    from convlens.data import conform
    from convlens.embed import candidate_layers, extract_layers

    if name == "digits":
        model, data = load_model("lenet-digits"), load_dataset("digits")
    else:
        weights = SHARED / "models" / "squeezenet1_1-caffe.pth"
        model = load_model("squeezenet1_1", weights=weights, input_spec="caffe")
        data = (load_dataset("textures") if name == "textures"
                else load_dataset(f"{SHARED / 'data' / 'cifar10-small.npz'}:test", limit=2000, seed=0))
    layers = [b.name for b in candidate_layers(model)]
    return extract_layers(model, conform(data, model), layers, cache_dir=CACHE)


def gaps(lt) -> list[dict]:
    """For every pipeline and criterion: the pick, the labelled best, the points lost."""
    from convlens.embed import CRITERIA

    rows = []
    for p in lt.pipelines:
        acc = lt.scores(p, f"{lt.metric()}_mean")
        best = lt.best(p)
        for c in CRITERIA:
            pick = lt.pick(p, c)
            rows.append({"pipeline": p, "criterion": c, "best": best, "pick": pick,
                         "best_accuracy": 100 * acc[best], "gap": 100 * (acc[best] - acc[pick])})
    return rows


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from convlens.embed import CRITERIA, run_layers

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits,textures,cifar")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [d for d in args.data.split(",") if d]
    if not (SHARED / "models" / "squeezenet1_1-caffe.pth").is_file():
        names = [d for d in names if d == "digits"]  # the SqueezeNet is in ../shared
    results = []
    for name in names:
        feats = features(name)
        k = len(set(next(iter(feats.values())).labels.tolist()))
        for whiten in (False, True):
            for clusters in (k, k + 1):
                print(f"{name}: {len(feats)} layers, k = {clusters}, whitened {whiten}; load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                t0, c0 = time.perf_counter(), time.process_time()
                with threadpool_limits(1):
                    lt = run_layers(feats, None, clusters, seeds=args.seeds, whiten=whiten)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                for r in gaps(lt):
                    r.update(data=name, k=clusters, whiten=whiten)
                    results.append(r)
                    print(f"  {r['pipeline']:28s} {r['criterion']:18s} pick {r['pick']:13s} best "
                          f"{r['best']:13s} ({r['best_accuracy']:5.1f} %)  lost {r['gap']:5.1f} points")
                print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    print("\ncriterion            worst   mean   within 2 points")
    for c in CRITERIA:
        g = [r["gap"] for r in results if r["criterion"] == c]
        if g:
            print(f"{c:18s} {max(g):7.1f} {sum(g) / len(g):6.2f}   {sum(x <= 2 for x in g)}/{len(g)}")
    print(f"load average {os.getloadavg()[0]:.1f}; peak resident memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
