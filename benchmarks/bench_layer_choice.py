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

With both whitenings it also chooses whether to whiten without labels (``choose_whitening``:
the pair of whitening and layer whose clusters agree most with the network's predictions) and
prints the points that loses against the best pair.

Run: ``python benchmarks/bench_layer_choice.py [--data digits,textures,cifar] [--seeds 3]
[--whiten no,yes] [--k classes,classes+1] [--json out.json] [--out tables/]`` (5 seeds, one
BLAS thread: digits about 40 CPU s per configuration, textures about 40, CIFAR about 130; four
configurations each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

SHARED = Path(os.environ.get("CONVLENS_SHARED") or next(
    (p / "shared" for p in Path(__file__).resolve().parents if (p / "shared" / "models").is_dir()),
    Path(__file__).resolve().parents[2] / "shared"))
CACHE = Path(os.environ.get("CONVLENS_BENCH_CACHE", Path.home() / ".cache" / "convlens" / "features"))


def features(name: str) -> tuple[dict, object]:
    """``({layer: Features}, network predictions)`` of a data set, every block output in one pass
    (cached per layer)."""
    from convlens import load_dataset, load_model
    from convlens.data import conform
    from convlens.embed import candidate_layers, extract_layers, network_predictions

    if name == "digits":
        model, data = load_model("lenet-digits"), load_dataset("digits")
    else:
        weights = SHARED / "models" / "squeezenet1_1-caffe.pth"
        model = load_model("squeezenet1_1", weights=weights, input_spec="caffe")
        data = (load_dataset("textures") if name == "textures"
                else load_dataset(f"{SHARED / 'data' / 'cifar10-small.npz'}:test", limit=2000, seed=0))
    layers = [b.name for b in candidate_layers(model)]
    feats = extract_layers(model, conform(data, model), layers, cache_dir=CACHE)
    return feats, network_predictions(model, feats)


def depth_prior(lt, p: str, c: float) -> str:
    """The deepest layer whose excess silhouette is above ``c`` / sqrt(N) (the sampling spread of
    a mean over N silhouettes); the excess-silhouette pick when none is."""
    ex = lt.scores(p, "excess_silhouette")
    n = next(iter(lt.tables.values())).params["images"]
    deep = [layer for layer in lt.layers if ex[layer] > c / n ** 0.5]
    return deep[-1] if deep else lt.pick(p, "excess_silhouette")


def picks(lt, p: str) -> dict[str, str]:
    """Every candidate's pick: the library criteria, then ones measured here only."""
    from convlens.embed import CRITERIA

    out = {c: lt.pick(p, c) for c in CRITERIA if c in lt.tables[lt.layers[0]].criteria[p]}
    if "prediction_agreement" in out:
        own = lt.scores(p, "prediction_agreement")  # this pipeline's clusters only
        out["agreement, this pipeline's clusters only"] = max(lt.layers, key=lambda k: own[k])
        every = {k: sum(lt.scores(q, "prediction_agreement")[k] for q in lt.pipelines)
                 for k in lt.layers}  # the raw k-means' clusters too
        out["agreement, mean over all three pipelines"] = max(lt.layers, key=lambda k: every[k])
        pooled = lt.criterion_scores(p, "prediction_agreement")  # the library's
        out["agreement, output layer left out"] = max(lt.layers[:-1], key=lambda k: pooled[k])
    for c in (1, 2):
        out[f"depth prior, excess > {c}/sqrt(N)"] = depth_prior(lt, p, c)
    out["deepest layer but one (--layer default)"] = lt.layers[-2]
    return out


def gaps(lt) -> list[dict]:
    """For every pipeline and candidate: the pick, the labelled best, the points lost."""
    rows = []
    for p in lt.pipelines:
        acc = lt.scores(p, f"{lt.metric()}_mean")
        best = lt.best(p)
        for c, pick in picks(lt, p).items():
            rows.append({"pipeline": p, "criterion": c, "best": best, "pick": pick,
                         "best_accuracy": 100 * acc[best], "gap": 100 * (acc[best] - acc[pick])})
    return rows


def one_config(name, feats, pred, clusters, whiten, seeds, out: Path | None) -> tuple[list[dict], object]:
    from threadpoolctl import threadpool_limits

    from convlens.embed import run_layers

    print(f"{name}: {len(feats)} layers, k = {clusters}, whitened {whiten}, {seeds} seeds; load "
          f"average {os.getloadavg()[0]:.1f}", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(1):
        lt = run_layers(feats, None, clusters, seeds=seeds, whiten=whiten, predictions=pred)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if out is not None:
        lt.save(out / f"{name}-k{clusters}-{'whitened' if whiten else 'plain'}")
    rows = gaps(lt)
    for r in rows:
        r.update(data=name, k=clusters, whiten=whiten, wall=wall, cpu=cpu)
        print(f"  {r['pipeline']:28s} {r['criterion']:40s} pick {r['pick']:13s} best "
              f"{r['best']:13s} ({r['best_accuracy']:5.1f} %)  lost {r['gap']:5.1f} points")
    print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    return rows, lt


def whitening_row(name: str, k: int, tables: dict) -> dict:
    """Whether to whiten, chosen without labels (``choose_whitening``), against the best of the
    full pipeline over both tables."""
    from convlens.embed import choose_whitening
    from convlens.embed._layerpick import full_pipeline

    whiten, layer, _ = choose_whitening(tables)
    acc = {w: t.scores(full_pipeline(w), f"{t.metric()}_mean") for w, t in tables.items()}
    best = max((a, w, lay) for w in acc for lay, a in acc[w].items())
    row = {"data": name, "k": k, "whiten": whiten, "layer": layer, "accuracy": 100 * acc[whiten][layer],
           "best": f"{best[2]} {'whitened' if best[1] else 'not whitened'}", "best_accuracy": 100 * best[0]}
    row["gap"] = row["best_accuracy"] - row["accuracy"]
    print(f"  whitening chosen without labels: {'whitened' if whiten else 'not whitened'}, {layer} "
          f"({row['accuracy']:.1f} %); best {row['best']} ({row['best_accuracy']:.1f} %); lost "
          f"{row['gap']:.1f} points", flush=True)
    return row


def summarise(results: list[dict]) -> None:
    print("\ncriterion                                 worst   mean   within 2 points")
    for c in dict.fromkeys(r["criterion"] for r in results):
        for w in (False, True, None):
            g = [r["gap"] for r in results if r["criterion"] == c
                 and (r["whiten"] == w if c != "whitening chosen" else w is None)]
            if g:
                how = {False: "plain", True: "whitened", None: "chosen"}[w]
                print(f"{c:40s} {how:8s} {max(g):7.1f} {sum(g) / len(g):6.2f}"
                      f"   {sum(x <= 2 for x in g)}/{len(g)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits,textures,cifar")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--whiten", default="no,yes", help="no, yes or no,yes")
    ap.add_argument("--k", default="classes,classes+1", help="classes, classes+1 or both")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, help="save each per-layer table (LayerTable) here")
    args = ap.parse_args(argv)
    names = [d for d in args.data.split(",") if d]
    if not (SHARED / "models" / "squeezenet1_1-caffe.pth").is_file():
        names = [d for d in names if d == "digits"]  # the SqueezeNet is in ../shared
    results = []
    for name in names:
        feats, pred = features(name)
        k = len(set(next(iter(feats.values())).labels.tolist()))
        for clusters in [k + (c == "classes+1") for c in args.k.split(",")]:
            tables = {}
            for whiten in [w == "yes" for w in args.whiten.split(",")]:
                rows, tables[whiten] = one_config(name, feats, pred, clusters, whiten, args.seeds,
                                                  args.out)
                results += rows
            if len(tables) == 2:
                results.append({"criterion": "whitening chosen", **whitening_row(name, clusters, tables)})
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    summarise(results)
    print(f"load average {os.getloadavg()[0]:.1f}; peak resident memory "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
