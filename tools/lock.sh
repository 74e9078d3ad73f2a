#!/usr/bin/env bash
# The locked versions, and a look at what the newest ones would do.
#
#   bash tools/lock.sh                   regenerates requirements/lock.txt (every extra, CPython 3.10+, Linux and
#                                        macOS, x86_64 and aarch64) and requirements/jetpack6.txt (the robot's
#                                        install on JetPack 6) from pyproject.toml with `uv pip compile`
#   bash tools/lock.sh --upgrade-check   installs the dev extras at the newest versions the registry serves (torch
#                                        stays at lock.in's CPU pin) into .venv-upgrade and runs the test suite there
#
# tools/install.sh and .ci/run install with `pip install -c requirements/lock.txt`, so a new machine gets the
# versions the tests passed on. Regenerate after changing a dependency in pyproject.toml, run the suite, commit both.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
UV_VERSION="0.13.9"

quiet_pip() {  # pip, without the machine's notes about index folders and setuptools' editable-install notice
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" \
    | sed '/BuildBackendWarning: Editable installation/,/with strategy, WheelFile/d' >&2)
}

if [ "${1:-}" = "--upgrade-check" ]; then
  rm -rf .venv-upgrade
  "$PY" -m venv .venv-upgrade
  quiet_pip .venv-upgrade/bin/python -m pip install -q --upgrade pip
  quiet_pip .venv-upgrade/bin/python -m pip install -q "$(grep -E '^torch==' requirements/lock.in)"
  quiet_pip .venv-upgrade/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" \
    -c <(grep -E '^torch==' requirements/lock.in)
  .venv-upgrade/bin/python -m pip freeze --exclude-editable > .venv-upgrade/freeze.txt
  echo "newer than the lock:"
  .venv-upgrade/bin/python - <<'PY'
import re
lock = {}
for line in open("requirements/lock.txt"):
    m = re.match(r"([A-Za-z0-9_.-]+)==([^ ;]+)", line.strip())
    if m:
        lock.setdefault(m[1].lower().replace("_", "-"), []).append(m[2])
for line in open(".venv-upgrade/freeze.txt"):
    name, _, version = line.strip().partition("==")
    key = name.lower().replace("_", "-")
    if version and key in lock and version.split("+")[0] not in [v.split("+")[0] for v in lock[key]]:
        print(f"  {name} {' / '.join(lock[key])} -> {version}")
PY
  exec .venv-upgrade/bin/python -m pytest -q
fi

[ $# -eq 0 ] || { echo "usage: bash tools/lock.sh [--upgrade-check]" >&2; exit 2; }
if [ ! -x .venv-lock/bin/uv ] || [ "$(.venv-lock/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PY" -m venv .venv-lock
  quiet_pip .venv-lock/bin/python -m pip install -q "uv==$UV_VERSION"
fi
compile() { .venv-lock/bin/uv pip compile -q --no-header --python-version 3.10 "$@"; }
{
  echo "# The locked versions of every extra (bash tools/lock.sh regenerates this file; do not edit it by hand)."
  compile --universal --all-extras pyproject.toml requirements/lock.in
} > requirements/lock.txt
{
  echo "# The robot's install on JetPack 6: Python 3.10, aarch64 (bash tools/lock.sh regenerates this file)."
  echo "# NVIDIA's torch and onnxruntime-gpu: requirements/jetpack6-nvidia.txt; walk-through: deploy/JETSON.md."
  compile --python-platform aarch64-manylinux_2_35 --extra robot pyproject.toml requirements/jetpack6.in
} > requirements/jetpack6.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pins) and requirements/jetpack6.txt ($(grep -c '==' requirements/jetpack6.txt) pins)"
