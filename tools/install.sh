#!/usr/bin/env bash
# Creates .venv and installs the package with the extras named (default: robot + onnx, enough to run the
# controller), at the locked versions of requirements/lock.txt (bash tools/lock.sh regenerates it). torch is the
# CPU build the lock pins; on the Jetson use NVIDIA's torch and requirements/jetpack6.txt instead
# (deploy/JETSON.md). Running it again changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-robot,onnx}"
PY="${PYTHON:-python3}"
LOCK=requirements/lock.txt
# The venv's pip at the locked versions. Left out of its output: this machine's notes about index folders that
# lack a package, and setuptools' notice that an editable install resolves the top-level folders (drivers/,
# tools/, ...) from the checkout (docs/architecture.md, conventions: it runs in its own venv).
pip() {
  .venv/bin/python -m pip -q "$@" -c "$LOCK" 2> >(grep -v "is ignored: it is neither a file nor a directory" \
    | sed '/BuildBackendWarning: Editable installation/,/with strategy, WheelFile/d' >&2)
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip install pip
pip install -e ".[$extras]"
# pyrealsense2 loads libusb-1.0 at import; its wheel does not bundle it.
case ",$extras," in
  *,robot,*|*,dev,*)
    if ! .venv/bin/python -c "import pyrealsense2" 2>/dev/null && command -v apt-get >/dev/null; then
      echo "installing libusb-1.0-0 for pyrealsense2 (apt)"
      sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
      apt() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o=Dpkg::Use-Pty=0 "$@" >/dev/null; }
      apt install -y libusb-1.0-0 || { apt update && apt install -y libusb-1.0-0; }
    fi ;;
esac
