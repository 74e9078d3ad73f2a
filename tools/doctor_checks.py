"""What `anchorvla doctor` reports: one `Check` per thing looked at, and imports that cannot raise.

A package that is installed but broken (a missing shared library, an ABI mismatch) is one line naming the error,
never a traceback: `import_check` imports the module and turns any exception into its check.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | missing | optional
    detail: str
    fix: str = ""


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_check(name: str, module: str, dist: str, needed: bool, fix: str) -> Check:
    """Import `module`: ok with its version, or missing/optional (as `needed`) saying it is absent or broken."""
    status = "missing" if needed else "optional"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name == module or module.startswith(exc.name + "."):
            return Check(name, status, f"python module '{module}' not importable", fix)
        return Check(name, status, f"installed but broken: {_first_line(exc)}", f"reinstall {dist}: {fix}")
    except Exception as exc:  # a broken install: one line, not a traceback
        return Check(name, status, f"installed but broken: {_first_line(exc)}", f"reinstall {dist}: {fix}")
    return Check(name, "ok", f"{dist} {version(dist) or '(version unknown)'}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
