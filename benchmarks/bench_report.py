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
        per = json.loads((out / "report.json").read_text())["seconds"]
    print(f"report on lenet-digits/digits, {args.threads} torch threads")
    for name, sec in sorted(per.items(), key=lambda kv: -(kv[1] or 0)):
        print(f"  {name:24s} {sec:8.2f} s")
    print(f"fresh {fresh:.1f} s (target < 180 s), resumed {resumed:.1f} s, "
          f"fresh/resumed {fresh / resumed:.1f}x")


if __name__ == "__main__":
    main()
