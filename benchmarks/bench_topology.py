"""Filtration + Mapper + barcodes on 6 400 and 204 800 nine-dimensional points (the sizes of the
paper's first- and second-layer clouds), next to KeplerMapper and ripser called directly with
their defaults, in one run.

    python benchmarks/bench_topology.py            # both sizes
    python benchmarks/bench_topology.py --quick    # 6 400 only

The points are 3x3 patches near the primary circle mixed with Gaussian-noise patches (half and
half), mean-centred and normalised like filters. Peers run in a subprocess with a time limit:
ripser's default is a full Vietoris-Rips complex on every point (O(n^2) memory: 204 800 points
would need ~170 GB for the distance matrix alone, so it is not attempted there), and
KeplerMapper's defaults are a sum lens, 10 cubes, 10 % overlap and DBSCAN. Wall and CPU
seconds are both printed: on a shared machine the wall time mostly measures the other jobs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np


def cloud(n: int, seed: int = 0) -> np.ndarray:
    from convlens.topology import gaussian_patches, primary_circle_patches

    return np.r_[primary_circle_patches(n // 2, 3, noise=0.3, seed=seed), gaussian_patches(n - n // 2, 3, seed=seed + 1)]


def ours(x: np.ndarray, k: int, p: float, resolution: int, gain: float) -> dict:
    from convlens.topology import Mapper, barcodes, density_filtration

    t = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    keep = density_filtration(x, k, p)
    t["filtration"] = time.perf_counter() - t0
    core = x[keep]
    t0 = time.perf_counter()
    g = Mapper(resolution=resolution, gain=gain).fit(core).graph_
    t["mapper"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bc = barcodes(core, n_landmarks=100)
    t["barcodes"] = time.perf_counter() - t0
    bars = [round(b.length, 3) for b in bc.long_bars(1, 3)]
    return {"seconds": t, "total": sum(t.values()), "cpu": time.process_time() - cpu0, "kept": len(core),
            "core": core, "nodes": g.n_nodes,
            "loops": g.betti_numbers()[1], "h1": bars}


def _kmapper_default(x, q):
    import kmapper as km

    t0, c0 = time.perf_counter(), time.process_time()
    mapper = km.KeplerMapper(verbose=0)
    lens = mapper.fit_transform(x)
    graph = mapper.map(lens, x)
    q.put({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "nodes": len(graph["nodes"])})


def _kmapper_paper(x, q):
    """KeplerMapper with the paper's settings and our clusterer: its own nerve does the rest."""
    import kmapper as km
    from sklearn.decomposition import PCA

    from convlens.topology import GapSingleLinkage

    t0, c0 = time.perf_counter(), time.process_time()
    mapper = km.KeplerMapper(verbose=0)
    lens = PCA(2).fit_transform(x)
    graph = mapper.map(lens, x / x.std(0), clusterer=GapSingleLinkage(),
                       cover=km.Cover(n_cubes=30, perc_overlap=2 / 3))
    q.put({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "nodes": len(graph["nodes"])})


def _ripser_default(x, q):
    from ripser import ripser

    t0, c0 = time.perf_counter(), time.process_time()
    r = ripser(x)
    q.put({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "h1_bars": len(r["dgms"][1])})


def limited(fn, x, limit: float) -> dict:
    """Run ``fn(x)`` in a child process; give up after ``limit`` seconds."""
    q = mp.Queue()
    proc = mp.Process(target=fn, args=(x, q))
    t0 = time.perf_counter()
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return {"seconds": None, "note": f"did not finish in {limit:.0f} s"}
    try:
        return q.get(timeout=5)
    except Exception:  # the child died (e.g. out of memory)
        return {"seconds": None, "note": f"failed after {time.perf_counter() - t0:.0f} s (exit {proc.exitcode})"}


def fmt(s):
    return "—" if s is None else f"{s:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="6 400 points only")
    ap.add_argument("--limit", type=float, default=180, help="seconds allowed to each peer run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    sizes = [(6400, 200, 0.3, 30, 3.0)] if args.quick else [(6400, 200, 0.3, 30, 3.0), (204800, 15, 0.1, 30, 3.0)]
    for n, k, p, res, gain in sizes:
        x = cloud(n)
        print(f"\n== {n} points x 9 ==")
        r = ours(x, k, p, res, gain)
        s = r["seconds"]
        print(f"convlens rho({k}, {p}) + Mapper({res}, {gain:g}) + barcodes(100 landmarks): {r['total']:.2f} s "
              f"wall, {r['cpu']:.2f} s CPU "
              f"(filtration {s['filtration']:.2f}, Mapper {s['mapper']:.2f}, barcodes {s['barcodes']:.2f}); "
              f"{r['kept']} points kept, {r['nodes']} nodes, {r['loops']} loop(s), longest H1 bars {r['h1']}")
        km = limited(_kmapper_default, x, args.limit)
        print(f"KeplerMapper defaults (sum lens, 10 cubes, DBSCAN) on all {n}: {fmt(km['seconds'])} wall, {fmt(km.get('cpu'))} CPU "
              f"{km.get('note', '')} {km.get('nodes', '')} nodes")
        if km["seconds"]:
            print(f"   ratio KeplerMapper-defaults / convlens-total: {km['seconds'] / r['total']:.2f}")
        kp = limited(_kmapper_paper, r["core"], args.limit)
        print(f"KeplerMapper, paper settings, our clusterer, its own nerve, on the same {r['kept']} points: "
              f"{fmt(kp['seconds'])} wall, {fmt(kp.get('cpu'))} CPU {kp.get('note', '')} {kp.get('nodes', '')} nodes")
        if kp["seconds"]:
            print(f"   ratio KeplerMapper / convlens Mapper: {kp['seconds'] / s['mapper']:.2f}")
        if n <= 10000:
            rp = limited(_ripser_default, x, args.limit)
            print(f"ripser defaults (full Rips, maxdim 1) on all {n}: {fmt(rp['seconds'])} wall, {fmt(rp.get('cpu'))} CPU {rp.get('note', '')}")
            if rp["seconds"]:
                print(f"   ratio ripser-defaults / convlens barcodes: {rp['seconds'] / s['barcodes']:.2f}")
        else:
            print(f"ripser defaults on {n}: not attempted (a dense distance matrix of {n} points needs "
                  f"{n * n * 8 / 2**30:.0f} GiB)")


if __name__ == "__main__":
    main()
