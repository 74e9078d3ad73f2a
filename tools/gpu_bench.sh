#!/usr/bin/env bash
# The paper-size TensorRT benchmark in one command, on a machine with an NVIDIA GPU, TensorRT and cuda-python:
#   bash tools/gpu_bench.sh [WORK] [--repeats N] [--json PATH]
# builds the bundle, FP16 and INT8 engines, verifies them against the stored references and times them (with
# CUDA graphs); tools/gpu_bench.py says how. NOT RUN ON A GPU YET. It is stopped after 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout --signal=INT 480 "${PYTHON:-.venv/bin/python}" -m tools.gpu_bench "$@"
