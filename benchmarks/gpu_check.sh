#!/usr/bin/env bash
# Every convlens method once on the ImageNet SqueezeNet of ../shared, on a GPU, timed per method.
#   benchmarks/gpu_check.sh                 # --device cuda
#   benchmarks/gpu_check.sh --device cuda:1 --images 32
#   benchmarks/gpu_check.sh --device cpu    # the same path on the CPU
# Needs a CUDA build of torch for cuda (convlens' own pin, torch 2.13, is CPU-only on PyPI's
# default index: install the CUDA wheel of the same version first). Exit status: 0 all methods
# ran, 1 some failed (their rows say why), 2 bad arguments (e.g. no CUDA here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
args=("$@")
case " ${args[*]-} " in *" --device "*|*" --device="*) ;; *) args=(--device cuda "${args[@]}") ;; esac
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi
PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" benchmarks/gpu_check.py "${args[@]}"
