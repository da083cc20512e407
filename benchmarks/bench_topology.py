"""The study step against a bare PyTorch step, and filtration + Mapper + barcodes on 6 400 and
204 800 nine-dimensional points (the sizes of the paper's first- and second-layer clouds), next
to KeplerMapper and ripser called directly, in one run.

    python benchmarks/bench_topology.py            # study step, both sizes
    python benchmarks/bench_topology.py --quick    # study step, 6 400 only
    python benchmarks/bench_topology.py --no-study # skip the study step

Study step: a bare PyTorch training step of M(64,0,64) at batch 128 with one torch thread (the
issue's reference: forward, cross-entropy, backward, Adam), timed in this process, against the
step of ``train_study`` on a local Dask cluster of one single-threaded worker per core, each
training one network (snapshots every 20 steps, progress files, held-out evaluation at the end):
CPU seconds per step measured inside the workers, and the study's throughput (steps per second
over all workers, startup and data loading included) against cores x the bare rate.

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
from pathlib import Path

import numpy as np


def cloud(n: int, seed: int = 0) -> np.ndarray:
    from convlens.topology import gaussian_patches, primary_circle_patches

    return np.r_[primary_circle_patches(n // 2, 3, noise=0.3, seed=seed), gaussian_patches(n - n // 2, 3, seed=seed + 1)]


def ours(x: np.ndarray, k: int, p: float, resolution: int, gain: float) -> dict:
    from convlens.topology import Mapper, barcodes, density_filtration

    t, c = {}, {}
    cpu0 = time.process_time()

    def timed(name, fn):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        t[name], c[name] = time.perf_counter() - t0, time.process_time() - c0
        return out

    keep = timed("filtration", lambda: density_filtration(x, k, p, workers=-1))
    core = x[keep]
    g = timed("mapper", lambda: Mapper(resolution=resolution, gain=gain).fit(core).graph_)
    bc = timed("barcodes", lambda: barcodes(core, n_landmarks=100))
    bars = [round(b.length, 3) for b in bc.long_bars(1, 3)]
    return {"seconds": t, "cpu_parts": c, "total": sum(t.values()), "cpu": time.process_time() - cpu0,
            "kept": len(core), "core": core, "nodes": g.n_nodes, "loops": g.betti_numbers()[1], "h1": bars}


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


def bare_step(arch: str, batch: int, steps: int) -> dict:
    """A bare PyTorch step of ``arch``: one torch thread, fixed random batch, Adam."""
    import torch
    import torch.nn.functional as F

    from convlens.model import load_model

    torch.manual_seed(0)
    m = load_model(arch)
    net = m.net.train()
    h, w = m.spec.size
    x, y = torch.rand(batch, m.spec.channels, h, w), torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    return {"cpu": (time.process_time() - c0) / steps, "wall": (time.perf_counter() - t0) / steps}


def study_step(arch: str, data: str, batch: int, steps: int, workers: int) -> dict:
    import tempfile
    from pathlib import Path

    from convlens.topology import StudyConfig, train_study

    with tempfile.TemporaryDirectory() as tmp:
        cfg = StudyConfig(arch, data, networks=workers, steps=steps, snapshot_every=20, batch_size=batch)
        t0 = time.perf_counter()
        st = train_study(cfg, Path(tmp) / "study", workers=workers)
        wall = time.perf_counter() - t0
    cpu = [n["cpu_per_step"] for n in st.networks]
    return {"cpu": sum(cpu) / len(cpu), "wall": sum(n["wall_per_step"] for n in st.networks) / len(cpu),
            "throughput": workers * steps / wall, "total_wall": wall}


def bench_study(steps: int) -> None:
    import os

    from convlens.parallel import _check_workers

    arch, batch, workers = "M(64,0,64)", 128, _check_workers(None)
    found = [p / "shared" / "data" / "mnist.npz" for p in Path(__file__).resolve().parents]
    data = next((str(p) for p in found if p.is_file()), "digits")
    print(f"\n== study step: {arch}, batch {batch}, {workers} workers (= cores), {steps} steps each, data {data} ==")
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    b = bare_step(arch, batch, steps)
    print(f"bare PyTorch step (1 thread): {1e3 * b['cpu']:.1f} ms CPU, {1e3 * b['wall']:.1f} ms wall")
    s = study_step(arch, data, batch, steps, workers)
    print(f"study step in a worker: {1e3 * s['cpu']:.1f} ms CPU, {1e3 * s['wall']:.1f} ms wall; "
          f"study throughput {s['throughput']:.2f} steps/s over {s['total_wall']:.1f} s incl. startup and data")
    print(f"   ratio study/bare CPU per step: {s['cpu'] / b['cpu']:.2f} (target <= 1.2)")
    print(f"   ratio cores x bare rate / study throughput (wall, incl. startup): "
          f"{workers / b['wall'] / s['throughput']:.2f}")
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="6 400 points only")
    ap.add_argument("--no-study", action="store_true", help="skip the study-step comparison")
    ap.add_argument("--no-points", action="store_true", help="skip the point-cloud comparison")
    ap.add_argument("--study-steps", type=int, default=60, help="steps per network in the study-step comparison")
    ap.add_argument("--limit", type=float, default=180, help="seconds allowed to each peer run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if not args.no_study:
        bench_study(args.study_steps)
    if args.no_points:
        return
    sizes = [(6400, 200, 0.3, 30, 3.0)] if args.quick else [(6400, 200, 0.3, 30, 3.0), (204800, 15, 0.1, 30, 3.0)]
    for n, k, p, res, gain in sizes:
        import os
        import resource

        x = cloud(n)
        print(f"\n== {n} points x 9 == (load average {' '.join(f'{v:.1f}' for v in os.getloadavg())})")
        r = ours(x, k, p, res, gain)
        s = r["seconds"]
        print(f"convlens rho({k}, {p}) + Mapper({res}, {gain:g}) + barcodes(100 landmarks): {r['total']:.2f} s "
              f"wall, {r['cpu']:.2f} s CPU "
              f"(wall / CPU: filtration {s['filtration']:.2f} / {r['cpu_parts']['filtration']:.2f}, "
              f"Mapper {s['mapper']:.2f} / {r['cpu_parts']['mapper']:.2f}, "
              f"barcodes {s['barcodes']:.2f} / {r['cpu_parts']['barcodes']:.2f}; KD-tree query on all cores); "
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
            print(f"   ratio KeplerMapper / convlens Mapper: {kp['seconds'] / s['mapper']:.2f} wall, "
                  f"{kp['cpu'] / r['cpu_parts']['mapper']:.2f} CPU")
        print(f"   peak resident memory of this process so far: "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
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
