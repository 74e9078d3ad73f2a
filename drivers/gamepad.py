"""A Linux gamepad through python-evdev, as `Sticks`: the base's teleoperation input beside the leader arm.

A reader thread follows the device's events; `latest()` returns the sticks as held now and never blocks. Axis
values are scaled by each axis's own range (the kernel's absinfo), so pads of other makers read the same; up is
positive (evdev's Y axes grow downwards). Buttons map onto the Go2 remote's names (drivers.types.Sticks).
A pad that is unplugged raises `DeviceError` on the next `latest()`.
"""

from __future__ import annotations

import threading
import time

from anchorvla.errors import DeviceError, UserError
from drivers.types import Sticks

# evdev key names -> the names Sticks uses (the Xbox/PlayStation layouts share these codes).
BUTTONS = {
    "BTN_SOUTH": "A", "BTN_EAST": "B", "BTN_NORTH": "X", "BTN_WEST": "Y",
    "BTN_TL": "L1", "BTN_TR": "R1", "BTN_TL2": "L2", "BTN_TR2": "R2",
    "BTN_START": "start", "BTN_SELECT": "select",
}  # fmt: skip
AXES = {"ABS_X": ("lx", 1.0), "ABS_Y": ("ly", -1.0), "ABS_RX": ("rx", 1.0), "ABS_RY": ("ry", -1.0)}
HAT = {("ABS_HAT0X", -1): "left", ("ABS_HAT0X", 1): "right", ("ABS_HAT0Y", -1): "up", ("ABS_HAT0Y", 1): "down"}


def scaled(value: int, minimum: int, maximum: int) -> float:
    """An axis reading in [minimum, maximum] as [-1, 1]."""
    span = maximum - minimum
    return 0.0 if span <= 0 else max(-1.0, min(1.0, 2.0 * (value - minimum) / span - 1.0))


class StickState:
    """The sticks and buttons as the events left them (thread-safe)."""

    def __init__(self, ranges: dict[str, tuple[int, int]]):
        self.ranges = ranges  # evdev axis name -> (min, max)
        self.axes = {name: 0.0 for name, _ in AXES.values()}
        self.held: set[str] = set()
        self.lock = threading.Lock()

    def apply(self, type_name: str, code_name: str, value: int) -> None:
        """One event: type 'EV_KEY' or 'EV_ABS', the code's evdev name, its value."""
        with self.lock:
            if type_name == "EV_KEY" and code_name in BUTTONS:
                (self.held.add if value else self.held.discard)(BUTTONS[code_name])
            elif type_name == "EV_ABS" and code_name in AXES and code_name in self.ranges:
                name, sign = AXES[code_name]
                self.axes[name] = sign * scaled(value, *self.ranges[code_name])
            elif type_name == "EV_ABS" and code_name in ("ABS_HAT0X", "ABS_HAT0Y"):
                for (code, direction), button in HAT.items():
                    if code == code_name:
                        (self.held.add if value == direction else self.held.discard)(button)

    def sticks(self) -> Sticks:
        with self.lock:
            return Sticks(time.monotonic_ns(), buttons=frozenset(self.held), **self.axes)


def apply_event(state: StickState, event) -> None:
    """One `evdev.InputEvent` into the state: keys by each of their names (evdev gives aliases, e.g. BTN_A and
    BTN_SOUTH, as a list), absolute axes by theirs; other event types are ignored."""
    from evdev import categorize, ecodes

    if event.type == ecodes.EV_KEY:
        names = categorize(event).keycode
    elif event.type == ecodes.EV_ABS:
        names = ecodes.ABS[event.code]
    else:
        return
    for code_name in [names] if isinstance(names, str) else names:
        state.apply(ecodes.EV[event.type], code_name, event.value)


class Gamepad:
    """The gamepad at `device` (an evdev node such as /dev/input/by-id/usb-...-event-joystick)."""

    def __init__(self, device: str):
        self.device_path = device
        self.state: StickState | None = None
        self._device = None
        self._thread: threading.Thread | None = None
        self._error: str | None = None

    def start(self) -> None:
        try:
            import evdev
        except ImportError:
            raise UserError("teleop.base.driver 'gamepad' needs python-evdev: pip install evdev") from None
        try:
            self._device = evdev.InputDevice(self.device_path)
        except OSError as exc:
            raise DeviceError(
                f"gamepad {self.device_path}: {exc.strerror or exc}; `ls -l /dev/input/by-id/` lists the pads "
                "(the service user needs group input)"
            ) from None
        ranges = {}
        for code, info in self._device.capabilities(absinfo=True).get(evdev.ecodes.EV_ABS, []):
            name = evdev.ecodes.ABS.get(code)
            if isinstance(name, str):
                ranges[name] = (info.min, info.max)
        self.state = StickState(ranges)
        self._thread = threading.Thread(target=self._follow, name="gamepad", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._device.read_loop():
                apply_event(self.state, event)
        except OSError as exc:  # unplugged
            self._error = f"gamepad {self.device_path} stopped answering ({exc.strerror or exc})"

    def latest(self) -> Sticks:
        if self._error is not None:
            raise DeviceError(self._error)
        assert self.state is not None, "start() first"
        return self.state.sticks()

    def stop(self) -> None:
        if self._device is not None:
            self._device.close()
