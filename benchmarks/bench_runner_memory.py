"""Peak memory of the one evaluation path (convlens.runner) on the SqueezeNet.

Each case runs in its own process, so its peak resident memory (``ru_maxrss``) is its own:

- ``extract N``: features of ``features.12`` (global-average pooled, 512 values) for ``N`` CIFAR-10
  test images resized to ``--size`` px, under the memory budget ``--memory``. The peak must be
  flat in ``N`` (2 000 vs 10 000): only the budget-sized batch and the N x 512 result grow.
- ``classes K``: class models (Simonyan) for the first ``K`` ImageNet classes at 128 px, a few
  steps, under ``--memory``: the classes run in chunks that fit; one batch of all 1 000 would
  need what the runner's measurement says (printed).

Prints wall and CPU seconds (``time.process_time``), the load average, the peak resident memory,
the resident memory after loading (baseline) and the growth over it, against the budget.

    python benchmarks/bench_runner_memory.py --memory 1GB --size 227
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
for candidate in (SHARED, Path("/work/shared")):
    if (candidate / "models" / "squeezenet1_1-caffe.pth").is_file():
        SHARED = candidate
        break


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model():
    from convlens import load_model

    return load_model("squeezenet1_1", weights=SHARED / "models/squeezenet1_1-caffe.pth", input_spec="caffe",
                      classes=SHARED / "models/imagenet_classes.txt")


def case(kind: str, n: int, memory: str, size: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    from convlens.runner import Runner, format_bytes, parse_memory

    m = _model()
    budget = parse_memory(memory)
    out: dict = {"case": f"{kind} {n}", "memory": format_bytes(budget)}
    if kind == "extract":
        from convlens.data import conform, load_dataset
        from convlens.embed import extract_features

        ds = conform(load_dataset(f"{SHARED}/data/cifar10-small.npz:test", limit=n, seed=0), m, resize=size)
        base = _rss_now()
        t0, c0 = time.perf_counter(), time.process_time()
        f = extract_features(m, ds, "features.12", pooling="avg", memory=budget, batch_size=10**6)
        out.update(shape=list(f.shape), batch=Runner(m, ["features.12"], memory=budget).batch_size((3, size, size)))
    else:
        from convlens.optimize import images_per_render, objectives
        from convlens.visualize import class_model

        shape = (3, 128, 128)
        per, const, _ = Runner(m, output=True, grad=True).cost(shape)
        out["all_1000_at_once"] = format_bytes(1000 * per + const)
        out["chunk"] = images_per_render(m, objectives.class_logit([0]), shape, memory=budget)
        n = n or 2 * out["chunk"]
        out["case"] = f"classes {n}"
        base = _rss_now()
        t0, c0 = time.perf_counter(), time.process_time()
        c = class_model(m, list(range(n)), size=128, steps=steps, memory=budget)
        out.update(classes=len(c.classes), chunks=-(-n // out["chunk"]))
    out.update(wall_s=round(time.perf_counter() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
               baseline=format_bytes(base), peak=format_bytes(_peak()), growth=format_bytes(_peak() - base),
               within_budget=bool(_peak() - base <= budget), load=os.getloadavg()[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memory", default="auto", help="the budget (default: convlens' default)")
    ap.add_argument("--size", type=int, default=227, help="image size for the extraction (px)")
    ap.add_argument("--steps", type=int, default=2, help="class-model steps (the memory is per step)")
    ap.add_argument("--cases", default="extract:2000,extract:10000,classes:2chunks")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        kind, n = a.case.split(":")
        print(json.dumps(case(kind, int(n), a.memory, a.size, a.steps)))
        return
    if not (SHARED / "models" / "squeezenet1_1-caffe.pth").is_file():
        sys.exit(f"needs {SHARED}/models/squeezenet1_1-caffe.pth and data/cifar10-small.npz")
    rows = []
    for spec in a.cases.split(","):
        kind, n = spec.split(":")
        n = "0" if n == "2chunks" else n  # 0: two chunks of what fits the budget
        res = subprocess.run([sys.executable, __file__, "--case", f"{kind}:{n}", "--memory", a.memory,
                              "--size", str(a.size), "--steps", str(a.steps)], capture_output=True, text=True)
        if res.returncode:
            sys.exit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
