"""What `service install` carries: every path the config names, made absolute and placed where the service can
read or write it, and the installed config that names those places.

Files the controller reads (the arm's calibration, the policy bundle, the control token, a camera recording) are
copied into the unit's directories: /etc/anchorvla (ConfigurationDirectory) and /var/lib/anchorvla
(StateDirectory). Paths it writes (episodes, the control socket, a live-view file, camera recordings) stay as
configured. Under `--root DIR` every path, copied or written, is placed inside DIR, so the installed tree runs on
its own with nothing outside it. A path field this module does not know is refused rather than left pointing at
the checkout.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from anchorvla.errors import UserError
from onboard.config import Config

ETC = PurePosixPath("/etc/anchorvla")
STATE = PurePosixPath("/var/lib/anchorvla")
RUNTIME = PurePosixPath("/run/anchorvla")
# The directories the unit lets the service write (ProtectSystem=strict makes the rest read-only).
WRITABLE = (STATE, RUNTIME)

# Inputs: key (list items as [*]) -> (what, where it goes on the robot; {name} is the list item's name).
INPUTS: dict[str, tuple[str, PurePosixPath]] = {
    "robot.arm.calibration": ("arm calibration", ETC / "arm-calibration.json"),
    "policy.bundle": ("policy bundle", STATE / "policy"),
    "service.control.token_file": ("control token (kept secret: mode 0640)", ETC / "control.token"),
    "robot.cameras[*].path": ("camera recording", STATE / "recordings" / "{name}"),
    "teleop.leader.calibration": ("leader arm calibration", ETC / "leader-calibration.json"),
}
OUTPUTS = (
    "recording.root",
    "service.control.socket",
    "telemetry.liveview.save",
    "robot.cameras[*].record",
)
SECRET_KEYS = ("service.control.token_file",)
# Parts that stand in for the robot: refused by `service install` unless --allow-emulated.
_STANDIN_DRIVERS = {
    "robot.arm.driver": ("standin", "emulated"),
    "robot.base.driver": ("standin", "emulated"),
    "robot.cameras[*].driver": ("standin", "synthetic", "bag"),
    "policy.engine": ("standin",),
}


@dataclass(frozen=True)
class Carried:
    """One file or directory copied into the service's directories."""

    key: str  # where the config names it, e.g. robot.arm.calibration
    what: str
    source: Path
    target: PurePosixPath  # on the robot (under --root: inside DIR)
    secret: bool = False


@dataclass(frozen=True)
class InstallPlan:
    carried: list[Carried]
    config: dict  # the installed config: the file's settings with every path replaced
    outside_writable: list[str]  # output paths the unit will not let the service write


def _paths(model: BaseModel, prefix: str = ""):
    """(key, pattern, value, list item) for every Path-valued field that is set, depth first."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _paths(value, key + ".")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for i, item in enumerate(value):
                for sub_key, pattern, sub_value, _ in _paths(item, ""):
                    yield f"{key}[{i}].{sub_key}", f"{key}[*].{pattern}", sub_value, item
        elif isinstance(value, Path):
            yield key, key, value, None


def standin_parts(config: Config) -> list[str]:
    """The stand-in, emulated or simulated parts of a config, as `key 'value'` phrases."""
    parts = []
    for key, drivers in _STANDIN_DRIVERS.items():
        head, _, field = key.partition("[*].")
        if field:
            for cam in config.robot.cameras:
                if cam.driver in drivers:
                    parts.append(f"robot.cameras[{cam.name}].{field} '{cam.driver}'")
            continue
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value in drivers:
            parts.append(f"{key} '{value}'")
    if config.sim.task is not None:
        parts.append(f"sim.task '{config.sim.task}'")
    return parts


def under_root(root: Path, path: PurePosixPath | Path) -> PurePosixPath:
    """`path` (absolute, as on the robot) inside the install root."""
    return PurePosixPath(root.resolve()) / PurePosixPath(path).relative_to("/")


def _set(tree: dict, key: str, value: str) -> None:
    """Set a dotted key (list items as [i]) in the config dict, creating the sections it lacks."""
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        name, _, index = part.partition("[")
        node = node[name][int(index.rstrip("]"))] if index else node.setdefault(name, {})
    node[parts[-1]] = value


def plan_install(config: Config, config_path: Path, root: Path) -> InstallPlan:
    """Where each path of `config` goes; refuses an input that does not exist or a path field it does not know."""
    tree = config.model_dump(mode="json", exclude_unset=True)
    carried, outside = [], []
    for key, pattern, value, item in _paths(config):
        if pattern in INPUTS:
            source = value if value.is_absolute() else config_path.parent / value
            if not source.exists():
                raise UserError(
                    f"{key}: {source} not found; service install copies it to the robot's service"
                )
            what, target = INPUTS[pattern]
            if item is not None:
                target = PurePosixPath(str(target).format(name=item.name + source.suffix))
            placed = under_root(root, target)
            carried.append(Carried(key, what, source.resolve(), placed, key in SECRET_KEYS))
            _set(tree, key, str(placed))
        elif pattern in OUTPUTS:
            absolute = value if value.is_absolute() else (config_path.parent / value).resolve()
            if not any(PurePosixPath(absolute).is_relative_to(d) for d in WRITABLE):
                outside.append(f"{key} {absolute}")
            _set(tree, key, str(under_root(root, absolute)))
        else:
            raise UserError(
                f"{key}: service install does not know whether {value} is read or written by the service; "
                "report it (anchorvla/commands/install_files.py lists the known paths)"
            )
    return InstallPlan(carried, tree, outside)


def copy_carried(item: Carried, replace: bool) -> None:
    """Copy one carried file or directory into place (a directory is replaced whole when `replace`)."""
    target = Path(item.target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if item.source.is_dir():
        if target.exists() and replace:
            shutil.rmtree(target)
        shutil.copytree(item.source, target, dirs_exist_ok=True)
        return
    shutil.copyfile(item.source, target)
    target.chmod(0o640 if item.secret else 0o644)
