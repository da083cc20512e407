"""Report time on the built-in default (lenet-digits on digits), fresh and resumed.

The peer is the same report rebuilt in the same run from its saved results: the ratio says how
much of the time is computation (reused on resume) versus rendering. Run:

    PYTHONPATH=src python benchmarks/bench_report.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from convlens import build_report, load_dataset, load_model

    model, ds = load_model("lenet-digits"), load_dataset("digits")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t0 = time.perf_counter()
        build_report(model, ds, out)
        fresh = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_report(model, ds, out)
        resumed = time.perf_counter() - t0
        rep = json.loads((out / "report.json").read_text())
        per, cpu = rep["seconds"], rep["cpu_seconds"]
    print(f"report on lenet-digits/digits, {args.threads} torch threads")
    print(f"  {'section':24s} {'wall':>8s} {'CPU':>8s}")
    for name, sec in sorted(per.items(), key=lambda kv: -(kv[1] or 0)):
        print(f"  {name:24s} {sec:8.2f} {cpu.get(name) or 0:8.2f}")
    print(f"  {'total':24s} {sum(per.values()):8.2f} {sum(v or 0 for v in cpu.values()):8.2f}")
    print(f"fresh {fresh:.1f} s (target < 180 s), resumed {resumed:.1f} s, "
          f"fresh/resumed {fresh / resumed:.1f}x")


if __name__ == "__main__":
    main()
