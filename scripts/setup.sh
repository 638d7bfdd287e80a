#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with t2v-hub and its extras.
# torch is pinned to the release that pip finds in this machine's local package
# cache (a CUDA build that also runs on the CPU); timm needs the matching torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install -q -e ".[dev,offline-weights,plots,fast]"
echo "t2v-hub installed in .venv ($(.venv/bin/t2v-hub --version))" >&2
