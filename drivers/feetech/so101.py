"""The SO-101 arm (six STS3215 on one bus) as an `drivers.protocols.Arm`.

Per tick: one SYNC_READ of Present_Position and one SYNC_WRITE of Goal_Position. Every `health_period_s`
the tick's read is one wider SYNC_READ that also covers velocity, load, voltage and temperature. The error
bits come in the status byte of every answer, so they are fresh each tick. Velocities between health reads
are the finite difference of positions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scservo_sdk as scs

from anchorvla.errors import DeviceError
from drivers.feetech.bus import FeetechBus
from drivers.feetech.calibration import ArmCalibration
from drivers.feetech.table import (
    MODEL_STS3215,
    RAD_PER_TICK,
    SPEED_UNIT_TICKS_S,
    decode,
    describe_errors,
    from_bytes,
    reg,
)
from drivers.types import ArmState

log = logging.getLogger(__name__)

_POS = reg("Present_Position")
_HEALTH_FIRST, _HEALTH_LAST = reg("Present_Position"), reg("Present_Temperature")  # 56..63 in one read
_HEALTH_LEN = _HEALTH_LAST.address + _HEALTH_LAST.size - _HEALTH_FIRST.address


@dataclass(frozen=True)
class ServoTuning:
    """What `configure()` writes. Defaults: LeRobot's SO-101 follower settings."""

    acceleration: int = 254  # 100 ticks/s^2 units; 254 = near the motor's maximum
    p_coefficient: int = 16  # lower than the factory 32 to avoid shakiness
    i_coefficient: int = 0
    d_coefficient: int = 32
    gripper_torque_limit: int = 500  # 0.1 %: the gripper overheats holding objects at full torque
    gripper_protection_current: int = 250  # 6.5 mA units
    gripper_overload_torque: int = 25  # %


def check_servos(bus: FeetechBus, ids: tuple[int, ...]) -> None:
    """Every id answers once, as an STS3215; else one line saying which and what to do."""
    for servo_id in ids:
        model, result = bus.ping(servo_id)
        if result == scs.COMM_RX_CORRUPT:
            raise DeviceError(
                f"servo id {servo_id} answers with corrupted packets: two servos probably share id {servo_id} "
                "(connect them one at a time and give each its own id)"
            )
        if result != scs.COMM_SUCCESS:
            raise DeviceError(
                f"servo id {servo_id} does not answer on {bus.port_name} at {bus.baudrate} baud: check its cable, "
                f"power and id (`anchorvla bench servos --port {bus.port_name}` lists the ids on the bus)"
            )
        if model != MODEL_STS3215:
            raise DeviceError(
                f"servo id {servo_id} is model {model}, not an STS3215 (model {MODEL_STS3215}): wrong servo or wrong id"
            )


_CALIBRATED = ("Homing_Offset", "Min_Position_Limit", "Max_Position_Limit")
_CAL_FIRST = min(reg(n).address for n in _CALIBRATED)
_CAL_LEN = max(reg(n).address + reg(n).size for n in _CALIBRATED) - _CAL_FIRST


def eeprom_mismatches(bus: FeetechBus, calibration: ArmCalibration) -> list[str]:
    """Differences between the servos' EEPROM and the calibration file, one phrase each (one read per servo)."""
    out = []
    for name, j in calibration.joints.items():
        block, _ = bus.read_raw(j.id, _CAL_FIRST, _CAL_LEN)
        expected = {
            "Homing_Offset": j.homing_offset,
            "Min_Position_Limit": j.range_min,
            "Max_Position_Limit": j.range_max,
        }
        for register, want in expected.items():
            r = reg(register)
            off = r.address - _CAL_FIRST
            actual = decode(from_bytes(block[off : off + r.size], r.size), r)
            if actual != want:
                out.append(f"{name} (id {j.id}) {register} is {actual}, file says {want}")
    return out


class SO101Arm:
    def __init__(
        self,
        port: str,
        calibration: ArmCalibration,
        baudrate: int = 1_000_000,
        joint_names: tuple[str, ...] | None = None,
        health_period_s: float = 0.2,
        retries: int = 3,
        tuning: ServoTuning | None = None,
        calibration_path: str = "the calibration file",
        period_s: float | None = None,
    ):
        """`period_s`: the control period the arm is read and written at; each bus transaction then gets half
        of it (the tick's read, with its retries, leaves the other half to the write, the base and the envelope)
        and `retries` is lowered, with a log line, to what fits there on a silent bus."""
        self.calibration = calibration
        self.joint_names = tuple(joint_names) if joint_names else calibration.joint_names
        unknown = [n for n in self.joint_names if n not in calibration.joints]
        if unknown:
            raise DeviceError(
                f"{calibration_path} has no joint {unknown[0]} (it has {', '.join(calibration.joint_names)})"
            )
        self.ids = tuple(calibration.joints[n].id for n in self.joint_names)
        # Conversions follow `joint_names`; a calibration with the joints in that order does it.
        self._cal = ArmCalibration({n: calibration.joints[n] for n in self.joint_names})
        self.bus = FeetechBus(
            port, baudrate, retries=retries, time_limit_s=None if period_s is None else period_s / 2
        )
        if period_s is not None:
            self._fit_retries()
        self.health_period_s = health_period_s
        self.tuning = tuning or ServoTuning()
        self.calibration_path = calibration_path
        self.comm_failures = 0
        self._last_health_ns: int | None = None
        self._health: dict[str, np.ndarray] = {}
        self._prev: tuple[int, np.ndarray] | None = None
        self._velocities = np.zeros(len(self.ids))
        self._logged_bits = np.zeros(len(self.ids), dtype=np.int64)

    def _fit_retries(self) -> None:
        """Lower `bus.retries` to what its time limit holds on a silent bus, for the longest per-tick transaction
        (the health read of every servo; configure() sets Return_Delay 0): one warning when it must."""
        bus = self.bus
        answer = len(self.ids) * (6 + _HEALTH_LEN)  # what the SDK waits for in a sync read
        fit = bus.retries
        while fit > 0 and bus.silent_bus_s(fit, answer) > bus.time_limit_s:
            fit -= 1
        if fit < bus.retries:
            log.warning(
                "robot.arm.retries %d cannot fit in half the %.1f ms control period: on a silent bus they take "
                "%.0f ms; using %d retries (%.0f ms)",
                bus.retries,
                2e3 * bus.time_limit_s,
                1e3 * bus.silent_bus_s(bus.retries, answer),
                fit,
                1e3 * bus.silent_bus_s(fit, answer),
            )
            bus.retries = fit

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.open_checked()
        try:
            self.configure()
            self.hold_present_pose()
        except BaseException:
            self.bus.close()
            raise

    def open_checked(self) -> None:
        """Open the bus and check every servo answers as an STS3215 whose EEPROM matches the calibration."""
        self.bus.open()
        try:
            check_servos(self.bus, self.ids)
            mismatches = eeprom_mismatches(self.bus, self._cal)
            if mismatches:
                raise DeviceError(
                    f"the arm's EEPROM disagrees with {self.calibration_path}: {mismatches[0]}"
                    + (f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else "")
                    + "; re-run `anchorvla calibrate arm` or point the config's calibration at this arm's file"
                )
        except BaseException:
            self.bus.close()
            raise

    def stop(self) -> None:
        st = self.bus.stats
        log.info(
            "servo bus %s: %d transactions, %d retries, %d failed",
            self.bus.port_name,
            st.transactions,
            st.retries,
            st.failures,
        )
        self.bus.close()

    def configure(self) -> None:
        """Return delay 0, acceleration, PID, and a gentler gripper. EEPROM is written only where it differs."""
        t = self.tuning
        gripper_id = self._cal.joints["gripper"].id if "gripper" in self._cal.joints else None
        for servo_id in self.ids:
            wanted = {
                "Return_Delay": 0,
                "P_Coefficient": t.p_coefficient,
                "I_Coefficient": t.i_coefficient,
                "D_Coefficient": t.d_coefficient,
                "Operating_Mode": 0,
            }
            if servo_id == gripper_id:
                wanted["Protection_Current"] = t.gripper_protection_current
                wanted["Overload_Torque"] = t.gripper_overload_torque
            changes = {k: v for k, v in wanted.items() if self.bus.read(servo_id, k) != v}
            if changes:
                self.bus.write(servo_id, "Lock", 0)
                for register, value in changes.items():
                    self.bus.write(servo_id, register, value)
                self.bus.write(servo_id, "Lock", 1)
                if self.bus.read(servo_id, "Return_Delay") != 0:
                    raise DeviceError(
                        f"servo id {servo_id} kept its Return_Delay after a write: its EEPROM may be worn"
                    )
            self.bus.write(servo_id, "Acceleration", t.acceleration)
            self.bus.write(servo_id, "Maximum_Acceleration", t.acceleration)
            self.bus.write(
                servo_id, "Torque_Limit", t.gripper_torque_limit if servo_id == gripper_id else 1000
            )
        self.bus.set_return_delay_s(0.0)

    def hold_present_pose(self) -> None:
        """Goal = present position, then torque on and Lock set: the arm stiffens where it is."""
        ticks = self._read_positions()
        self.bus.sync_write_register("Goal_Position", dict(zip(self.ids, ticks.tolist(), strict=True)))
        self.set_torque(True)

    def set_torque(self, enabled: bool) -> None:
        """Torque on locks the EEPROM (Lock 1); torque off unlocks it, as LeRobot does."""
        for servo_id in self.ids:
            self.bus.write(servo_id, "Torque_Enable", 1 if enabled else 0)
            self.bus.write(servo_id, "Lock", 1 if enabled else 0)

    def release_torque(self) -> None:
        """Torque off on every joint (`drivers.protocols.TorqueRelease`)."""
        self.set_torque(False)

    # -- per tick --------------------------------------------------------------------------------------
    def _read_positions(self) -> np.ndarray:
        data = self.bus.sync_read(_POS.address, _POS.size, self.ids, "position read")
        return np.array([decode(from_bytes(data[i], 2), _POS) for i in self.ids], dtype=np.int64)

    def _read_health(self) -> np.ndarray:
        """One wide sync read (Present_Position .. Present_Temperature); keeps the health fields, returns ticks."""
        data = self.bus.sync_read(_HEALTH_FIRST.address, _HEALTH_LEN, self.ids, "health read")

        def column(name: str) -> np.ndarray:
            r = reg(name)
            off = r.address - _HEALTH_FIRST.address
            return np.array([decode(from_bytes(data[i][off : off + r.size], r.size), r) for i in self.ids])

        sign = np.array([-1.0 if self._cal.joints[n].drive_mode else 1.0 for n in self.joint_names])
        self._health = {
            "velocities": sign * column("Present_Velocity") * SPEED_UNIT_TICKS_S * RAD_PER_TICK,
            "loads": sign * column("Present_Load") / 1000.0,
            "voltages_v": column("Present_Voltage") / 10.0,
            "temperatures_c": column("Present_Temperature").astype(np.float64),
        }
        return column("Present_Position").astype(np.int64)

    def read_state(self) -> ArmState:
        now = time.monotonic_ns()
        health_due = self._last_health_ns is None or now - self._last_health_ns >= self.health_period_s * 1e9
        try:
            ticks = self._read_health() if health_due else self._read_positions()
        except DeviceError:
            self.comm_failures += 1
            raise
        t_ns = time.monotonic_ns()
        positions = self._cal.ticks_to_rad(ticks)
        if health_due:
            self._last_health_ns = t_ns
            self._velocities = self._health["velocities"]
        elif self._prev is not None and t_ns > self._prev[0]:
            self._velocities = (positions - self._prev[1]) / ((t_ns - self._prev[0]) / 1e9)
        self._prev = (t_ns, positions)
        # Every answer's status byte carries the error bits: fresh each tick, not only at the health rate.
        error_bits = np.array([self.bus.last_errors.get(i, 0) for i in self.ids], dtype=np.int64)
        if error_bits.any() and not np.array_equal(error_bits, self._logged_bits):
            bad = [
                f"{n}: {describe_errors(int(b))}"
                for n, b in zip(self.joint_names, error_bits, strict=True)
                if b
            ]
            log.warning("servo error bits: %s", "; ".join(bad))
        self._logged_bits = error_bits
        h = self._health
        return ArmState(
            t_ns,
            self.joint_names,
            positions,
            self._velocities.copy(),
            loads=h.get("loads"),
            temperatures_c=h.get("temperatures_c"),
            voltages_v=h.get("voltages_v"),
            error_bits=error_bits,
            health_t_ns=self._last_health_ns,
            comm_failures=self.comm_failures,
        )

    def write_goal(self, positions: np.ndarray) -> None:
        ticks = self._cal.rad_to_ticks(np.asarray(positions, dtype=np.float64))
        try:
            self.bus.sync_write_register("Goal_Position", dict(zip(self.ids, ticks.tolist(), strict=True)))
        except DeviceError:
            self.comm_failures += 1
            raise
