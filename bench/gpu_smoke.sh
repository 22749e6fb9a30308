#!/usr/bin/env bash
# One short training run of every shipped experiment on one GPU: step time, peak GPU memory and
# dtype into bench/results/gpu_smoke.json (docs/benchmarks.md, "GPU smoke test"). Arguments go to
# bench/gpu_smoke.py (--only NAME..., --steps N, --preset NAME, --out FILE). Exits 2 without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's softprompt
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
exec "${PYTHON:-python}" bench/gpu_smoke.py "$@"
