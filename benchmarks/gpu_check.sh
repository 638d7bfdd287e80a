#!/usr/bin/env bash
# The GPU configurations in one script, for a lent H100 (device tool):
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
# Writes benchmarks/results/*_gpu.{json,md} and copies them to $OUT when set.
# Not yet run: the sessions so far had no GPU lent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=.venv/bin/python
nvidia-smi --query-gpu=name,memory.total --format=csv || true
timeout 150 $PY -m benchmarks.fisher_speed_accuracy --config gpu || echo "fisher gpu: failed or timed out"
timeout 90 $PY -m benchmarks.data_throughput --config gpu || echo "data gpu: failed or timed out"
timeout 280 $PY -m benchmarks.reproduce --config gpu || echo "reproduce gpu: failed or timed out"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*gpu* "$OUT"/ 2>/dev/null || true; fi
