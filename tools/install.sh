#!/usr/bin/env bash
# Creates .venv and installs the package with the extras named (default: robot + onnx, enough to run the
# controller). torch is pinned first to the CPU build so nothing pulls a CUDA build; on the Jetson use
# NVIDIA's torch instead (deploy/JETSON.md).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-robot,onnx}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
case ",$extras," in
  *,dev,*|*,train,*) .venv/bin/python -m pip install -q "torch==2.13.0" ;;
esac
.venv/bin/python -m pip install -q -e ".[$extras]"
