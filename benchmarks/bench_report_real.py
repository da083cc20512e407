"""``convlens report`` on a real network: the Caffe SqueezeNet 1.1 over CIFAR-10 test images
and over the shared photos, with wall seconds, CPU seconds and peak resident memory per section
and in total.

The command runs in this process exactly as a user types it (the CLI's ``report`` command); a
sampler thread reads the resident set size every 50 ms and each section's window comes from the
``seconds`` and ``finished`` its ``_done.json`` records, so the per-section peak is the highest
sample inside that window. The hardware limit printed beside the total is the multiply-adds the
sections' plan counted, divided by the wall time. Run:

    PYTHONPATH=src python benchmarks/bench_report_real.py [--limit 2000] [--threads 2] [--only cifar]
        [--sections data,compare]

It needs ``../shared`` (skips with a message when it is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path | None:
    for p in (ROOT.parent / "shared", Path("/work/shared")):
        if (p / "models" / "squeezenet1_1-caffe.pth").is_file():
            return p
    return None


class RssSampler(threading.Thread):
    """Samples this process's resident set size (bytes) every ``period`` seconds."""

    def __init__(self, period: float = 0.05):
        super().__init__(daemon=True)
        self.period, self.samples, self._halt = period, [], threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), self.rss()))
            time.sleep(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak(self, t0: float, t1: float) -> int:
        inside = [r for t, r in self.samples if t0 <= t <= t1]
        return max(inside) if inside else 0


def run_case(name: str, card: Path, data: str, out: Path, limit: int | None,
             sections: str | None = None) -> list[tuple]:
    from convlens.cli import app

    args = ["report", str(card), data, "--out", str(out)]
    if limit:
        args += ["--limit", str(limit)]
    if sections:
        args += ["--only", sections]
    sampler = RssSampler()
    sampler.start()
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        app(args, standalone_mode=False)
    finally:
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        sampler.stop()
    rows = []
    for done in sorted(out.glob("*/_done.json")):
        d = json.loads(done.read_text())
        t1 = d["finished"]
        rows.append((done.parent.name, d["seconds"], d["cpu_seconds"], sampler.peak(t1 - d["seconds"], t1)))
    rows.sort(key=lambda r: -r[1])
    peak_total = max(r for _, r in sampler.samples) if sampler.samples else 0
    rows.append(("total", wall, cpu, peak_total))
    rep = json.loads((out / "report.json").read_text())
    print(f"\n{name}: {data}" + (f" (--limit {limit})" if limit else ""))
    print(f"  {'section':14s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS MB':>12s}")
    for sec, w, c, r in rows:
        print(f"  {sec:14s} {w:8.1f} {c:8.1f} {r / 2**20:12.0f}")
    if rep.get("failed"):
        print(f"  FAILED: {rep['failed']}")
    print(f"  budget: {rep['budget']}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=2000, help="CIFAR test images (default 2000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["cifar", "photos"], default=None)
    ap.add_argument("--sections", default=None,
                    help="only these report sections, comma-separated (e.g. data,compare; default all)")
    ap.add_argument("--out", type=Path, default=None, help="keep the reports here (default: a temp dir)")
    args = ap.parse_args()
    shared = _shared()
    if shared is None:
        print("skipped: ../shared (SqueezeNet weights and data) is absent")
        return
    import torch

    torch.set_num_threads(args.threads)
    base = args.out or Path(tempfile.mkdtemp(prefix="bench-report-real-"))
    base.mkdir(parents=True, exist_ok=True)
    card = base / "squeezenet.yaml"
    card.write_text(f"arch: squeezenet1_1\nweights: {shared}/models/squeezenet1_1-caffe.pth\n"
                    f"input_spec: caffe\nclasses: {shared}/models/imagenet_classes.txt\n")
    print(f"CPU: {os.cpu_count()} cores, torch threads {args.threads}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    cases = [("cifar", f"{shared}/data/cifar10-small.npz:test", args.limit),
             ("photos", f"{shared}/data/photos", None)]
    for name, data, limit in cases:
        if args.only and name != args.only:
            continue
        run_case(name, card, data, base / name, limit, args.sections)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\npeak RSS of the whole run (ru_maxrss) {ru.ru_maxrss / 2**10:.0f} MB; load average now "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; reports in {base}")


if __name__ == "__main__":
    main()
