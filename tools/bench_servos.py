"""`anchorvla bench servos --port PORT`: scan the bus, dump each servo's table, check EEPROM against the
calibration, sweep one joint slowly under guard, and time the bus cycle (sync write + sync read of the
positions) against the byte-time minimum at that baud rate, measured in the same run."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", required=True, help="serial device of the servo adapter (or an emulator link)"
    )
    parser.add_argument("--baudrate", type=int, default=1_000_000)
    parser.add_argument(
        "--scan", type=int, nargs=2, default=[0, 20], metavar=("FIRST", "LAST"), help="ids to scan"
    )
    parser.add_argument("--calibration", type=Path, default=None, help="check the EEPROM against this file")
    parser.add_argument("--sweep", default=None, help="joint to sweep slowly (needs --calibration)")
    parser.add_argument(
        "--sweep-deg", type=float, default=10.0, help="sweep amplitude either side of the start pose"
    )
    parser.add_argument(
        "--max-load", type=float, default=0.5, help="abort the sweep above this load fraction"
    )
    parser.add_argument("--cycles", type=int, default=500, help="bus cycles to time")
    parser.add_argument(
        "--max-ratio", type=float, default=1.5, help="fail if median cycle / byte-time minimum exceeds this"
    )
    parser.add_argument("--no-dump", action="store_true", help="skip the register dump")


def cycle_min_s(n_servos: int, baudrate: int) -> float:
    """Wire time of SYNC_WRITE Goal_Position + SYNC_READ Present_Position of n servos, 10 bits a byte."""
    sync_write = 8 + 3 * n_servos  # FF FF FE LEN INST ADDR L (id lo hi)*n CHK
    sync_read = 8 + n_servos  # FF FF FE LEN INST ADDR L ids CHK
    replies = 8 * n_servos  # FF FF ID LEN ERR lo hi CHK each
    return (sync_write + sync_read + replies) * 10.0 / baudrate


def return_delays_s(bus, ids: list[int]) -> float:
    """The servos' Return_Delay summed: each answer of a sync read waits that long before it starts."""
    from drivers.feetech.table import RETURN_DELAY_UNIT_S

    return sum(bus.read(i, "Return_Delay") for i in ids) * RETURN_DELAY_UNIT_S


def histogram(samples_ms: np.ndarray, bins: int = 10, width: int = 40) -> list[str]:
    hi = float(np.percentile(samples_ms, 99))
    counts, edges = np.histogram(np.clip(samples_ms, None, hi), bins=bins)
    top = max(counts.max(), 1)
    return [
        f"  {edges[i]:6.2f}-{edges[i + 1]:6.2f} ms {'#' * round(width * c / top):<{width}} {c}"
        for i, c in enumerate(counts)
    ]


def scan(bus, first: int, last: int) -> list[tuple[int, int, str]]:
    import scservo_sdk as scs

    found = []
    for i in range(first, last + 1):
        model, result = bus.ping(i)
        if result == scs.COMM_SUCCESS:
            fw = f"{bus.read(i, 'Firmware_Major')}.{bus.read(i, 'Firmware_Minor')}"
            found.append((i, model, fw))
        elif result == scs.COMM_RX_CORRUPT:
            found.append((i, -1, "corrupted reply: duplicate id?"))
    return found


def dump(bus, ids: list[int]) -> None:
    from drivers.feetech.table import REGISTERS

    print(
        f"\n{'register':<30}{'addr':>5}{'area':>7}{'unit':>14}" + "".join(f"{'id ' + str(i):>8}" for i in ids)
    )
    for r in REGISTERS.values():
        values = "".join(f"{bus.read(i, r):>8}" for i in ids)
        print(f"{r.name:<30}{r.address:>5}{r.area:>7}{r.unit:>14}{values}")


def sweep(bus, calibration, joint: str, amplitude_deg: float, max_load: float) -> str:
    """Torque on for the chosen joint only, goal stepped slowly from the present pose and back."""
    from anchorvla.errors import UserError
    from drivers.feetech.table import RAD_PER_TICK, describe_errors

    if joint not in calibration.joints:
        raise UserError(
            f"--sweep {joint}: no such joint in the calibration ({', '.join(calibration.joints)})"
        )
    j = calibration.joints[joint]
    start = bus.read(j.id, "Present_Position")
    amp = round(np.radians(amplitude_deg) / RAD_PER_TICK)
    lo, hi = max(j.range_min, start - amp), min(j.range_max, start + amp)
    n = max(4, round(2 * amplitude_deg))  # goal steps of about half a degree, one every 25 ms
    path = np.concatenate(
        [np.linspace(start, hi, n), np.linspace(hi, lo, 2 * n), np.linspace(lo, start, n)]
    ).round()
    bus.write(j.id, "Goal_Position", start)
    bus.write(j.id, "Goal_Velocity", 20)  # 1000 ticks/s cap
    bus.write(j.id, "Torque_Enable", 1)
    worst_err, worst_load = 0, 0.0
    try:
        for goal in path:
            bus.write(j.id, "Goal_Position", int(goal))
            time.sleep(0.025)
            pos = bus.read(j.id, "Present_Position")
            load = abs(bus.read(j.id, "Present_Load")) / 1000.0
            status = bus.read(j.id, "Status")
            worst_err, worst_load = max(worst_err, abs(int(goal) - pos)), max(worst_load, load)
            if load > max_load or status:
                return f"ABORTED at goal {int(goal)}: load {load:.2f}, status {describe_errors(status)}"
    finally:
        bus.write(j.id, "Goal_Velocity", 0)
    return f"ok: {lo}..{hi} ticks, worst tracking error {worst_err} ticks, worst load {worst_load:.2f}"


def time_cycles(bus, ids: list[int], cycles: int) -> np.ndarray:
    from drivers.feetech.table import reg

    pos = reg("Present_Position")
    goals = {i: bus.read(i, "Goal_Position") for i in ids}
    samples = np.empty(cycles)
    for k in range(cycles):
        t = time.perf_counter()
        bus.sync_write_register("Goal_Position", goals)
        bus.sync_read(pos.address, pos.size, ids, "position read")
        samples[k] = time.perf_counter() - t
    return samples * 1e3


def main(args: argparse.Namespace) -> tuple[dict, bool]:
    from anchorvla.errors import UserError
    from drivers.feetech.bus import FeetechBus
    from drivers.feetech.calibration import load_calibration
    from drivers.feetech.so101 import eeprom_mismatches

    bus = FeetechBus(args.port, args.baudrate)
    bus.open()
    figures: dict = {"port": args.port, "baudrate": args.baudrate}
    ok = True
    try:
        found = scan(bus, args.scan[0], args.scan[1])
        print(f"scan of ids {args.scan[0]}..{args.scan[1]} on {args.port} at {args.baudrate} baud")
        print(f"{'id':>4} {'model':>6} firmware")
        for i, model, fw in found:
            print(f"{i:>4} {model:>6} {fw}")
        ids = [i for i, model, _ in found if model > 0]
        figures["ids"] = ids
        if not ids:
            raise UserError(
                f"no servo answered on {args.port} at {args.baudrate} baud: check power, cable and baud rate"
            )
        if not args.no_dump:
            dump(bus, ids)
        calibration = load_calibration(args.calibration) if args.calibration else None
        if calibration is not None:
            mismatches = eeprom_mismatches(bus, calibration)
            print(
                f"\nEEPROM vs {args.calibration}: " + ("matches" if not mismatches else "; ".join(mismatches))
            )
            figures["eeprom_mismatches"] = mismatches
            ok &= not mismatches
        if args.sweep:
            if calibration is None:
                raise UserError("--sweep needs --calibration (the sweep stays inside the calibrated range)")
            result = sweep(bus, calibration, args.sweep, args.sweep_deg, args.max_load)
            print(f"\nsweep of {args.sweep}: {result}")
            figures["sweep"] = result
            ok &= result.startswith("ok")
        retries_before = bus.stats.retries
        samples = time_cycles(bus, ids, args.cycles)
        return_delay_ms = return_delays_s(bus, ids) * 1e3
        minimum_ms = cycle_min_s(len(ids), args.baudrate) * 1e3 + return_delay_ms
        median = float(np.median(samples))
        figures.update(
            cycle_median_ms=median,
            cycle_p99_ms=float(np.percentile(samples, 99)),
            cycle_byte_time_min_ms=minimum_ms,
            cycle_return_delays_ms=return_delay_ms,
            cycle_ratio=median / minimum_ms,
            cycle_retries=bus.stats.retries - retries_before,
        )
        print(f"\nbus cycle (sync write + sync read of {len(ids)} positions), {args.cycles} cycles:")
        if return_delay_ms:
            print(
                f"  (the minimum includes the servos' Return_Delay, {return_delay_ms:.3f} ms in all; the arm sets it to 0)"
            )
        print("\n".join(histogram(samples)))
        print(f"{'':2}{'median':>10}{'p99':>10}{'byte-time min':>15}{'ratio':>8}{'retries':>9}")
        print(
            f"{'':2}{median:>8.3f}ms{figures['cycle_p99_ms']:>8.3f}ms{minimum_ms:>13.3f}ms"
            f"{figures['cycle_ratio']:>8.2f}{figures['cycle_retries']:>9}"
        )
        ok &= figures["cycle_ratio"] <= args.max_ratio
    finally:
        bus.close()
    return figures, bool(ok)
