"""The servo bus over scservo_sdk, with the timeouts, retries and quirk fixes the SDK lacks.

Quirks handled here (read in scservo_sdk 1.0.0's source):
- Packet timeout: the SDK waits `bytes * byte_time + 2 * 16 ms + 2 ms` for every answer, a 34 ms stall
  per missing reply at any baud rate. `_BusPort` sizes it from the baud rate, the servos' Return_Delay
  and an adapter latency margin that doubles on each retry, up to 4x (a late answer is usually a busy
  host, not a lost packet).
- Polling: the SDK spins on a non-blocking read; `_BusPort.readPort` blocks in select() until bytes arrive
  or the packet time is up, which frees the CPU and the GIL.
- Stale input: the SDK's `clearPort` flushes the *output* buffer, so a late reply to a timed-out request is
  read as the answer to the next one. `_BusPort.clearPort` drops pending input before every instruction.
- Busy flag: `is_using` is set by txPacket and cleared only on the normal paths; an exception in between
  (adapter unplugged) leaves the port "busy" for good. Every transaction here clears it in `finally`.
- Answers name no request: the SDK takes the first status packet from the id as the answer, so a late
  answer to an earlier request passes as this one's (and its `ping` raises IndexError on one without
  data). Here an answer must carry the expected number of bytes, and consecutive single reads ask for
  different sizes, so a late answer is skipped; after a retried sync read the line is left to settle.
- Stale sync-read data: GroupSyncRead keeps the previous answer of a servo that did not answer this time
  and `isAvailable` does not notice. The buffers are emptied before each sync read.
- Unplugged adapter: pyserial's input flush raises `termios.error` (not an OSError), a read raises OSError
  or returns nothing although select() said the line was readable, a write raises SerialException. Each
  becomes `LinkLost`; the port is closed and stays closed (a replugged adapter is not reopened behind the
  controller's back), and a failed transaction checks that the device node still exists.

Time per transaction: with `time_limit_s` (the runtime gives half the control period) no retry starts that
could not end, at its worst, inside the limit.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import scservo_sdk as scs
import serial

from anchorvla.errors import DeviceError, LinkLost
from drivers.feetech.table import TABLE_SIZE, Register, decode, encode, from_bytes, reg, to_bytes

log = logging.getLogger(__name__)

UDEV_HINT = "deploy/99-anchorvla-so101.rules"
MODEL = reg("Model_Number")
LINK_ERRORS = (OSError, serial.SerialException, termios.error)  # what a vanished adapter raises


class _BusPort(scs.PortHandler):
    """PortHandler with a timeout sized from the baud rate, a blocking read and an input flush."""

    def __init__(self, port_name: str, latency_ms: float, baudrate: int):
        super().__init__(port_name)
        self.baudrate = baudrate
        self.latency_ms = latency_ms
        self.return_delay_ms = 0.51  # the servos' Return_Delay; the factory 250 (x 2 us) until configured
        self.replies_expected = 1  # answers the next packet timeout covers (a sync read sets it)
        self.attempt = 0  # retry number: each retry waits twice as long for the latency part
        self.last_wait = (0, 0.0)  # (answer bytes, Return_Delay ms) the latest try waited for

    def clearPort(self):
        self.ser.reset_input_buffer()

    def timeout_ms(self, packet_length: int, delay_ms: float, attempt: int) -> float:
        """How long try number `attempt` (0: the first) waits for `packet_length` bytes that come after the
        servos' Return_Delays (`delay_ms` in all). The instruction itself is still on the wire when the timer
        starts: count a max-size one too."""
        return 10_000.0 / self.baudrate * (packet_length + 20) + delay_ms + self.latency_ms * 2 ** min(attempt, 2)

    def drain_ms(self, attempt: int) -> float:
        """The wait for a late answer after a failed try number `attempt` (FeetechBus._drain)."""
        return self.latency_ms / 2 * 2 ** min(attempt, 2)

    def setPacketTimeout(self, packet_length):
        self.packet_start_time = self.getCurrentTime()
        self.last_wait = (packet_length, self.replies_expected * self.return_delay_ms)
        self.packet_timeout = self.timeout_ms(*self.last_wait, self.attempt)

    def readPort(self, length):
        remaining_s = max(0.0, (self.packet_timeout - self.getTimeSinceStart()) / 1000.0)
        fd = self.ser.fileno()
        ready, _, _ = select.select([fd], [], [], remaining_s)
        if not ready:
            return b""
        data = os.read(fd, length)
        if not data:  # readable yet empty: the line hung up (a USB adapter that was pulled out)
            raise serial.SerialException("the port reports data to read but returns none")
        return data


@dataclass
class BusStats:
    transactions: int = 0
    retries: int = 0  # attempts repeated after a missing or bad reply
    failures: int = 0  # transactions that failed after all retries


def open_port_error(port: str, exc: BaseException) -> DeviceError:
    """One line for a port that would not open, naming the fix."""
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.EACCES or "Permission denied" in text:
        return DeviceError(
            f"permission denied on {port}: add yourself to the dialout group (sudo usermod -aG dialout $USER, "
            f"then log in again) or install the udev rule: sudo cp {UDEV_HINT} /etc/udev/rules.d/ && "
            "sudo udevadm control --reload && sudo udevadm trigger"
        )
    if err == errno.ENOENT or "No such file" in text or "could not open port" in text:
        return DeviceError(
            f"serial port {port} does not exist: check the adapter is plugged in and pass the right --port "
            "(ls /dev/serial/by-id/ /dev/ttyACM* /dev/ttyUSB*; with the udev rule: /dev/so101)"
        )
    if err == errno.EBUSY:
        return DeviceError(
            f"serial port {port} is busy: another program holds it (close it, e.g. lsof {port})"
        )
    return DeviceError(f"could not open serial port {port}: {text}")


class FeetechBus:
    """One serial line of STS servos. A call that gets no good answer is retried `retries` times, and more
    while it is younger than `budget_s` (half a 15 Hz tick by default): a busy host, not only a lost
    packet, makes an answer late. Without `time_limit_s` its worst case is about budget_s + 20 ms; with it,
    a retry starts only if it would end, at its worst, within `time_limit_s` of the call's start."""

    def __init__(
        self,
        port: str,
        baudrate: int = 1_000_000,
        retries: int = 3,
        latency_ms: float = 2.0,
        budget_s: float = 0.03,
        time_limit_s: float | None = None,
    ):
        self.port_name = port
        self.baudrate = baudrate
        self.retries = retries
        self.budget_s = budget_s  # retries continue past `retries` while a call is younger than this
        self.time_limit_s = time_limit_s
        self.stats = BusStats()
        self.lost: str | None = None  # why the link is gone, once it is
        self._port = _BusPort(port, latency_ms, baudrate)
        self._packets = scs.PacketHandler(0)
        self._read_seq = 0
        self.last_errors: dict[int, int] = {}  # status byte of each servo's latest sync-read answer
        self._sync_reads: dict[tuple[int, int, tuple[int, ...]], scs.GroupSyncRead] = {}

    @property
    def byte_time_s(self) -> float:
        return 10.0 / self.baudrate

    def set_return_delay_s(self, seconds: float) -> None:
        """Tell the timeouts what Return_Delay the servos were configured with."""
        self._port.return_delay_ms = seconds * 1e3

    def moved_to(self, port: str) -> FeetechBus:
        """A bus with the same settings on another port (the emulator's pty, known once it starts)."""
        return FeetechBus(
            port, self.baudrate, self.retries, self._port.latency_ms, self.budget_s, self.time_limit_s
        )

    def silent_bus_s(self, retries: int, packet_length: int, delay_ms: float = 0.0) -> float:
        """The longest a transaction waiting for `packet_length` answer bytes (after `delay_ms` of Return_Delay)
        takes with `retries` retries when nothing answers: its packet timeouts and the drains between them."""
        p = self._port
        ms = sum(p.timeout_ms(packet_length, delay_ms, n) for n in range(retries + 1))
        return (ms + sum(p.drain_ms(n) for n in range(retries))) / 1e3

    def open(self) -> None:
        try:
            ok = self._port.setupPort(self.baudrate)
        except (OSError, serial.SerialException) as exc:
            raise open_port_error(self.port_name, exc) from None
        if not ok:
            raise DeviceError(f"could not open serial port {self.port_name} at {self.baudrate} baud")

    def close(self) -> None:
        if self._port.is_open:
            self._port.closePort()

    # -- one transaction with the SDK's busy flag and link errors handled ----------------------------------
    def _call(self, fn: Callable):
        if self.lost is not None:
            raise LinkLost(self.lost)
        if not self._port.is_open:
            raise DeviceError(f"serial port {self.port_name} is not open (the arm did not start)")
        try:
            return fn()
        except LINK_ERRORS as exc:
            # termios.error carries (errno, text) without formatting them
            text = exc.args[1] if isinstance(exc, termios.error) and len(exc.args) == 2 else exc
            raise self._lose(f"serial link {self.port_name} failed: {text}") from None
        finally:
            self._port.is_using = False

    def _lose(self, what: str) -> LinkLost:
        """The link is gone: close the port for good and remember why; every later call raises at once."""
        self.lost = f"{what} (adapter unplugged or powered off?); restart the controller once it is back"
        with contextlib.suppress(*LINK_ERRORS):
            self._port.closePort()
        return LinkLost(self.lost)

    def _check_node(self) -> None:
        """After a failed transaction: a device node that vanished (the adapter pulled out) is a lost link."""
        if self.lost is None and not os.path.exists(self.port_name):
            raise self._lose(f"serial port {self.port_name} is gone")

    def _attempts(self, attempt: Callable[[], tuple[int, object]]) -> tuple[int, object, int]:
        """Run `attempt` (returns (sdk_result, value)) until it succeeds or the retries and the time budget are
        spent, draining the line between tries: (last result, value or None, tries made)."""
        self.stats.transactions += 1
        t0 = time.monotonic()
        n = 0
        while True:
            self._port.attempt = n
            result, value = attempt()
            if result == scs.COMM_SUCCESS:
                return result, value, n + 1
            if not self._may_retry(n, t0):
                break
            n += 1
            self.stats.retries += 1
            self._drain()
        self.stats.failures += 1
        self._check_node()
        return result, None, n + 1

    def _retry(self, what: str, attempt: Callable[[], tuple[int, object]]):
        """The value of the first successful `attempt`; one DeviceError line when every try failed."""
        result, value, tries = self._attempts(lambda: self._call(attempt))
        if result != scs.COMM_SUCCESS:
            raise DeviceError(f"{what}: {self._packets.getTxRxResult(result)} after {tries} tries")
        return value

    def _may_retry(self, n: int, t0: float) -> bool:
        """After try `n` (0: the first) failed: at least `retries` retries; more while the call is inside its
        time budget; none that could end past `time_limit_s` (the drain and the next try at their longest)."""
        elapsed = time.monotonic() - t0
        if self.time_limit_s is not None:
            p = self._port
            worst_ms = p.drain_ms(n) + p.timeout_ms(*p.last_wait, n + 1)
            if elapsed + worst_ms / 1e3 > self.time_limit_s:
                return False
        return n < self.retries or elapsed < self.budget_s

    def _drain(self) -> None:
        """After a missing or bad answer: let a late one arrive, then drop it, so it is not taken for the next."""
        time.sleep(self._port.drain_ms(self._port.attempt) / 1000.0)
        self._call(self._port.clearPort)

    def _settle_after_retry(self, attempt: int) -> None:
        """An answer that needed a retry may have a twin still on its way (the late answer to the first try):
        drop it before the next instruction. Status packets do not say which request they answer."""
        if attempt > 0:
            time.sleep(self._port.latency_ms / 2 / 1000.0)
            self._call(self._port.clearPort)

    # -- single servo ----------------------------------------------------------------------------------
    def _exchange(self, request: list[int], params: int) -> tuple[list[int], int, int]:
        """Send `request`; (packet, result, error) of the first answer from its id carrying `params` bytes.

        Answers of another size are late answers to earlier requests and are skipped inside the same
        timeout window (the SDK's txRxPacket takes the first answer from the id, whatever it is).
        """
        packet, result, error = self._packets.txRxPacket(self._port, request)
        while result == scs.COMM_SUCCESS and (packet[2] != request[2] or packet[3] != params + 2):
            packet, result = self._packets.rxPacket(self._port)
            error = packet[4] if result == scs.COMM_SUCCESS else 0
        return packet, result, error

    def _read_once(self, servo_id: int, address: int, length: int) -> tuple[int, tuple[bytes, int] | None]:
        # Consecutive reads ask for different sizes (1..3 bytes more than needed): a late answer to the
        # previous read can then never be taken for this one, even when it holds the same register.
        self._read_seq = self._read_seq % 3 + 1
        extra = max(0, min(self._read_seq, TABLE_SIZE - address - length))
        request = [0, 0, servo_id, 4, scs.INST_READ, address, length + extra, 0]
        packet, result, error = self._exchange(request, length + extra)
        if result != scs.COMM_SUCCESS:
            return result, None
        return result, (bytes(packet[5 : 5 + length]), error)

    def ping(self, servo_id: int) -> tuple[int, int]:
        """(model number, sdk result), without raising: for scans and start-up checks. PING, then a read of
        Model_Number, as the SDK's ping does. Retries a failed answer; the result is COMM_RX_CORRUPT if any
        try was corrupted and none succeeded (two servos answering at once: under load a collision can also
        read as a timeout, so a majority rule would hide it)."""
        results = []
        for n in range(self.retries + 1):
            self._port.attempt = n
            model, result = self._call(lambda: self._ping_once(servo_id))
            if result == scs.COMM_SUCCESS:
                return model, result
            results.append(result)
            self._drain()
        if scs.COMM_RX_CORRUPT in results:
            return 0, scs.COMM_RX_CORRUPT
        return 0, next(r for r in results if r != scs.COMM_RX_CORRUPT)

    def _ping_once(self, servo_id: int) -> tuple[int, int]:
        _, result, _ = self._exchange([0, 0, servo_id, 2, scs.INST_PING, 0], 0)
        if result != scs.COMM_SUCCESS:
            return 0, result
        result, answer = self._read_once(servo_id, MODEL.address, MODEL.size)
        return (from_bytes(answer[0], MODEL.size) if answer else 0), result

    def read_raw(self, servo_id: int, address: int, length: int) -> tuple[bytes, int]:
        """(bytes, error bits) of `length` bytes from `address`."""
        return self._retry(
            f"servo {servo_id}: read of address {address}", lambda: self._read_once(servo_id, address, length)
        )

    def read(self, servo_id: int, register: str | Register) -> int:
        r = reg(register) if isinstance(register, str) else register
        data, _ = self.read_raw(servo_id, r.address, r.size)
        return decode(from_bytes(data, r.size), r)

    def write(self, servo_id: int, register: str | Register, value: int) -> int:
        """Write one register and wait for the status; returns the servo's error bits."""
        r = reg(register) if isinstance(register, str) else register
        request = [
            0,
            0,
            servo_id,
            r.size + 3,
            scs.INST_WRITE,
            r.address,
            *to_bytes(encode(value, r), r.size),
            0,
        ]

        def attempt():
            _, result, error = self._exchange(list(request), 0)
            return result, error

        return self._retry(f"servo {servo_id}: write of {r.name}", attempt)

    # -- group transactions ----------------------------------------------------------------------------
    def _group(self, address: int, length: int, ids: tuple[int, ...]) -> scs.GroupSyncRead:
        key = (address, length, ids)
        group = self._sync_reads.get(key)
        if group is None:
            group = scs.GroupSyncRead(self._port, self._packets, address, length)
            for i in ids:
                group.addParam(i)
            self._sync_reads[key] = group
        return group

    def sync_read(
        self, address: int, length: int, ids: Iterable[int], what: str = "sync read"
    ) -> dict[int, bytes]:
        """{id: bytes} for every id; the ids that did not answer are asked again (only they) up to `retries` times.

        The answers are collected by the id in each status packet rather than GroupSyncRead.rxPacket's strict
        order: there, one silent servo also discards the answers of every servo after it. The status bytes
        of the answers are kept in `last_errors`.
        """
        got: dict[int, bytes] = {}
        missing = tuple(ids)

        def attempt() -> tuple[int, None]:
            nonlocal missing
            self._port.replies_expected = len(missing)
            try:
                result = self._call(lambda: self._sync_read_once(address, length, missing, got))
            finally:
                self._port.replies_expected = 1
            missing = tuple(i for i in missing if i not in got)
            if missing and result == scs.COMM_SUCCESS:
                result = scs.COMM_RX_TIMEOUT
            return result, None

        result, _, tries = self._attempts(attempt)
        if missing:
            raise DeviceError(
                f"servo id {', '.join(map(str, missing))} did not answer the {what} "
                f"({self._packets.getTxRxResult(result)} after {tries} tries)"
            )
        self._settle_after_retry(tries - 1)
        return got

    def _sync_read_once(self, address: int, length: int, ids: tuple[int, ...], got: dict[int, bytes]) -> int:
        group = self._group(address, length, ids)
        for i in ids:
            group.data_dict[i] = []  # drop the previous answer (stale-data quirk)
        result = group.txPacket()
        waiting = set(ids)
        while result == scs.COMM_SUCCESS and waiting:
            packet, result = self._packets.rxPacket(self._port)
            if result != scs.COMM_SUCCESS:
                break
            servo_id = packet[2]
            if (
                servo_id in waiting and packet[3] == length + 2
            ):  # a stale answer of another length is not this one
                group.data_dict[servo_id] = packet[5 : 5 + length]
                got[servo_id] = bytes(packet[5 : 5 + length])
                self.last_errors[servo_id] = packet[4]
                waiting.discard(servo_id)
        return result

    def sync_write(self, address: int, length: int, raw_by_id: dict[int, int]) -> None:
        """One SYNC_WRITE of `length`-byte raw values (no answer comes back, so nothing to retry)."""
        group = scs.GroupSyncWrite(self._port, self._packets, address, length)
        for servo_id, raw in raw_by_id.items():
            group.addParam(servo_id, to_bytes(int(raw), length))
        result = self._call(group.txPacket)
        if result != scs.COMM_SUCCESS:
            self.stats.failures += 1
            raise DeviceError(f"sync write to {self.port_name} failed: {self._packets.getTxRxResult(result)}")

    def sync_write_register(self, register: str, values_by_id: dict[int, int]) -> None:
        r = reg(register)
        self.sync_write(r.address, r.size, {i: encode(v, r) for i, v in values_by_id.items()})
