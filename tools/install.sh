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
# pyrealsense2 loads libusb-1.0 at import; its wheel does not bundle it.
case ",$extras," in
  *,robot,*|*,dev,*)
    if ! .venv/bin/python -c "import pyrealsense2" 2>/dev/null && command -v apt-get >/dev/null; then
      echo "installing libusb-1.0-0 for pyrealsense2 (apt)"
      if [ "$(id -u)" = 0 ]; then apt-get install -y -q libusb-1.0-0; else sudo apt-get install -y -q libusb-1.0-0; fi
    fi ;;
esac
