#!/usr/bin/env bash
# GPU check: bf16 extraction throughput, probe step time (eager / torch.compile, with / without gradient
# checkpointing), peak memory against `vidprobe plan`'s model, the loader's data-wait fraction.
# Writes benchmarks/GPU_RESULTS.md. Needs a CUDA GPU (CI never runs it); downloads nothing; < 8 minutes.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from anywhere
#   bash benchmarks/gpu_check.sh --cpu-smoke     # tiny models on the CPU: the script works (< 60 s)
#
# Python: the first of $PYTHON, ./.venv/bin/python, python3, python whose torch sees CUDA (with --cpu-smoke:
# any torch). vidprobe runs from src/ (PYTHONPATH), so nothing is installed when its dependencies are present;
# otherwise a venv sharing that python's packages (its torch included) gets `pip install -e .[hf]`, bounded in time
# (it needs an index; offline, put wheels in benchmarks/wheels/ and they are used instead).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
BUDGET=${GPU_CHECK_BUDGET:-420}   # seconds the Python part may start sections in (the rest is margin to 8 min)
SMOKE=0
for a in "$@"; do [ "$a" = "--cpu-smoke" ] && SMOKE=1; done
if [ "$SMOKE" = 1 ]; then
  WANT='import torch'
else
  WANT='import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'
fi
PY=""
for cand in "${PYTHON:-}" ./.venv/bin/python python3 python; do
  [ -n "$cand" ] || continue
  command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ] || continue
  if timeout 120 "$cand" -c "$WANT" >/dev/null 2>&1; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no python whose torch sees a CUDA device (set PYTHON=...)" >&2
  exit 2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
DEPS='import numpy, safetensors, roma, yaml, tqdm, filelock, scipy, PIL, diffusers, transformers'
if ! timeout 300 "$PY" -c "$DEPS" >/dev/null 2>&1; then
  echo "gpu_check: some dependencies are missing for $PY; making .gpu_check_venv (shares its torch)" >&2
  timeout 120 "$PY" -m venv --system-site-packages .gpu_check_venv || exit 2
  VPY=.gpu_check_venv/bin/python
  if [ -d benchmarks/wheels ]; then
    timeout 300 "$VPY" -m pip install -q --no-index --find-links benchmarks/wheels -e ".[hf]" || true
  else
    timeout 300 "$VPY" -m pip install -q -e ".[hf]" || true
  fi
  PY=$VPY
  timeout 300 "$PY" -c "$DEPS" >/dev/null 2>&1 || echo "gpu_check: still missing some (sections needing them report it)" >&2
fi
echo "gpu_check: $PY ($("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
exec timeout $((BUDGET + 60)) "$PY" benchmarks/gpu_check.py --budget-s "$BUDGET" "$@"
