#!/usr/bin/env bash
# .venv-lerobot: LeRobot's own dataset code, for the format compatibility tests
# (tests/policy_runtime/test_lerobot_format.py): a dataset we write loads with LeRobotDataset, and one LeRobot
# writes trains here.
#
#   bash tools/lerobot_venv.sh      builds it (about a minute); again: nothing to do while this script is unchanged
#
# lerobot 0.4.4 pins torch<2.11 and torchvision<0.26, which clash with our torch, so it lives in a venv of its own,
# installed with --no-deps beside torch 2.14.1 and torchvision 0.29.1 (both in this machine's wheel store) and only
# the packages its dataset module imports (found by importing lerobot.datasets.lerobot_dataset until it worked),
# plus the Feetech SDK and deepdiff its motor bus imports (a test has LeRobot's own bus normalise servo ticks).
# Video: LeRobot 0.4.4 decodes with torchcodec (its "pyav" backend needs torchvision.io.VideoReader, which
# torchvision 0.28+ no longer has). torchcodec opens FFmpeg's shared libraries by their usual names; the FFmpeg
# that PyAV's wheel bundles has them under other names, so .venv-lerobot/ffmpeg links the usual names to them:
# run LeRobot with LD_LIBRARY_PATH=.venv-lerobot/ffmpeg (the tests do). No system FFmpeg needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv-lerobot
STAMP="$VENV/.built-$(sha256sum tools/lerobot_venv.sh | cut -c1-16)"
[ -e "$STAMP" ] && exit 0

quiet_pip() {  # pip, without the machine's notes about index folders and lerobot's pins we override on purpose
  "$@" 2> >(grep -v -E "is ignored: it is neither a file nor a directory|^lerobot 0.4.4 requires|dependency resolver does not" >&2)
}

rm -rf "$VENV"
"$PY" -m venv "$VENV"
quiet_pip "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0
quiet_pip "$VENV/bin/python" -m pip install -q --no-deps lerobot==0.4.4
quiet_pip "$VENV/bin/python" -m pip install -q datasets==5.2.0 accelerate==1.16.0 av==18.1.0 feetech-servo-sdk==1.0.0 deepdiff==8.6.2
mkdir -p "$VENV/ffmpeg"
for lib in "$VENV"/lib/python3*/site-packages/av.libs/lib{avcodec,avdevice,avfilter,avformat,avutil,swresample,swscale}-*.so.*; do
  base=$(basename "$lib")                                        # libavcodec-5e6b81c2.so.62.28.102
  major=$(sed -E 's/.*\.so\.([0-9]+).*/\1/' <<<"$base")
  ln -sf "$(realpath "$lib")" "$VENV/ffmpeg/${base%%-*}.so.$major"  # libavcodec.so.62
done
HF_HUB_OFFLINE=1 LD_LIBRARY_PATH="$VENV/ffmpeg" "$VENV/bin/python" -c \
  "import lerobot.datasets.lerobot_dataset, torchcodec.decoders" || { echo "lerobot_venv.sh: $VENV does not import LeRobot's dataset code" >&2; exit 1; }
touch "$STAMP"
echo "built $VENV (lerobot 0.4.4, torch 2.14.1, torchcodec 0.17.0 on PyAV's FFmpeg)"
