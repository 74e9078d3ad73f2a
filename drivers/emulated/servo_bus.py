"""An STS3215 bus on a pseudo-terminal: any serial client (scservo_sdk, pyserial) opens `port` and talks
to N emulated servos as it would to the real half-duplex line.

Timing follows the wire: each byte takes 10 bit-times at the configured baud rate, an instruction is
processed when its last byte would have arrived, a servo answers after its Return_Delay, and the servos of
a SYNC_READ answer one after another. The kernel does not pace a pty, so the serving thread does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import threading
import time
import tty
from pathlib import Path

from drivers.emulated.sts_servo import EmulatedServo
from drivers.feetech.calibration import ArmCalibration
from drivers.feetech.table import BROADCAST_ID, RETURN_DELAY_UNIT_S

log = logging.getLogger(__name__)

PING, READ, WRITE, REG_WRITE, ACTION, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x82, 0x83
_SPIN_S = 150e-6  # the last part of a wait is spun, the rest slept


def checksum(body: bytes) -> int:
    return ~sum(body) & 0xFF


def status_packet(servo_id: int, error: int, params: bytes = b"") -> bytes:
    body = bytes([servo_id, len(params) + 2, error]) + params
    return b"\xff\xff" + body + bytes([checksum(body)])


def _wait_until(deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining > _SPIN_S:
        time.sleep(remaining - _SPIN_S)
    while time.perf_counter() < deadline:
        pass


class ServoBusEmulator:
    """N servos behind one pty. Use as a context manager, or `start()` / `close()`.

    `close()` while a client has the port open is the adapter pulled out: the pty goes and the client's next
    flush, read or write fails (EIO, or an empty read). `start()` again is the replug: a new pty, the same servos
    in the state they were in, and the `link` (a stable name, as the udev rule's /dev/so101) pointing at it.

    `world` + `calibration`: after every instruction the joints' positions (rad, through the calibration)
    are written into the world, so cameras and the simulator see the arm move.
    """

    def __init__(
        self,
        servos: list[EmulatedServo] | None = None,
        ids: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
        baudrate: int = 1_000_000,
        calibration: ArmCalibration | None = None,
        world=None,
        link: str | Path | None = None,
        seed: int = 0,
    ):
        if servos is None:
            servos = [EmulatedServo(i) for i in ids]
            if calibration is not None:
                self.apply_calibration(servos, calibration)
        self.servos = servos
        self.baudrate = baudrate
        self.byte_s = 10.0 / baudrate
        self.calibration = calibration
        self.world = world
        self.link = Path(link) if link else None
        self.rng = random.Random(seed)
        self.lock = threading.RLock()  # guards servo state against test threads poking it
        self.port: str = ""
        self.packets = 0
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wire_free = 0.0  # when the line is next idle (perf_counter seconds)
        self._last_rx = 0.0
        self.idle_reset_s = max(1e-3, 50 * self.byte_s)

    @staticmethod
    def apply_calibration(servos: list[EmulatedServo], calibration: ArmCalibration) -> None:
        """Write a calibration into the servos' EEPROM (as `anchorvla calibrate arm` would) and park them mid-range."""
        by_id = {s.id: s for s in servos}
        for joint in calibration.joints.values():
            s = by_id.get(joint.id)
            if s is None:
                continue
            s.set_value("Homing_Offset", joint.homing_offset)
            s.set_value("Min_Position_Limit", joint.range_min)
            s.set_value("Max_Position_Limit", joint.range_max)
            s.move_by_hand((joint.range_min + joint.range_max) / 2)

    def servo(self, servo_id: int) -> EmulatedServo:
        return next(s for s in self.servos if s.id == servo_id)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ServoBusEmulator:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as they are
        self.port = os.ttyname(self._slave)
        if self.link is not None:
            if self.link.is_symlink() or self.link.exists():
                self.link.unlink()
            self.link.symlink_to(self.port)
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="servo-bus-emulator", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> ServoBusEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def path(self) -> str:
        """What a client opens: the symlink if one was asked for, else the pty itself."""
        return str(self.link) if self.link is not None else self.port

    # -- serving ---------------------------------------------------------------------------------------
    def _serve(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.05)
            if self._wake_r in ready or not ready:
                with self.lock:
                    now = time.perf_counter()
                    for s in self.servos:
                        s.advance(now)
                    self._update_world()
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:  # the last client closed the slave side
                time.sleep(0.005)
                continue
            now = time.perf_counter()
            if buf and now - self._last_rx > self.idle_reset_s:
                buf.clear()  # a servo drops a half-received packet after the line went quiet
            self._last_rx = now
            self._wire_free = max(self._wire_free, now) + len(data) * self.byte_s
            buf.extend(data)
            with self.lock:
                self._handle_buffer(buf)
                self._update_world()

    def _handle_buffer(self, buf: bytearray) -> None:
        while True:
            start = buf.find(b"\xff\xff")
            if start < 0:
                del buf[:-1]
                return
            del buf[:start]
            if len(buf) < 4:
                return
            if buf[2] == 0xFF:  # a third 0xFF: header is shifted by one
                del buf[0]
                continue
            total = buf[3] + 4
            if len(buf) < total:
                return
            packet = bytes(buf[:total])
            del buf[:total]
            if checksum(packet[2:-1]) != packet[-1]:
                continue  # a servo ignores a corrupted instruction
            self.packets += 1
            try:
                self._execute(packet[2], packet[4], packet[5:-1])
            except IndexError:  # too few parameters for the instruction: a servo ignores it
                log.debug("ignored a malformed instruction packet %s", packet.hex())

    def _execute(self, target: int, inst: int, params: bytes) -> None:
        now = self._wire_free
        for s in self.servos:
            s.advance(time.perf_counter())
        if inst == SYNC_WRITE:
            addr, length = params[0], params[1]
            for i in range(2, len(params) - length, length + 1):
                for s in self._addressed(params[i]):
                    s.write(addr, params[i + 1 : i + 1 + length])
            return
        if inst == SYNC_READ:
            addr, length = params[0], params[1]
            for servo_id in params[2:]:
                now = self._reply(self._addressed(servo_id), now, lambda s, a=addr, n=length: s.read(a, n))
            return
        servos = self._addressed(target)
        if inst == WRITE:
            for s in servos:
                s.write(params[0], params[1:])
        elif inst == REG_WRITE:
            for s in servos:
                s.pending = (params[0], bytes(params[1:]))
        elif inst == ACTION:
            for s in servos:
                if s.pending is not None:
                    s.write(*s.pending)
                    s.pending = None
        elif inst not in (PING, READ):
            return  # unknown instruction: no answer, like the real servo
        if target == BROADCAST_ID:
            return
        if inst == READ:
            self._reply(servos, now, lambda s: s.read(params[0], params[1]))
        else:
            self._reply(servos, now, lambda s: b"")

    def _addressed(self, servo_id: int) -> list[EmulatedServo]:
        if servo_id == BROADCAST_ID:
            return list(self.servos)
        return [s for s in self.servos if s.id == servo_id]

    def _reply(self, servos: list[EmulatedServo], start: float, params_of) -> float:
        """Send the status packet(s) for one answer slot; returns when the line is free again."""
        answering = [s for s in servos if not s.faults.silent]
        if not answering:
            return start
        packets = []
        for s in answering:
            if s.faults.drop_reply and self.rng.random() < s.faults.drop_reply:
                s.faults.dropped += 1
                continue
            pkt = bytearray(status_packet(s.id, s.error_bits(), params_of(s)))
            if s.faults.corrupt_checksum and self.rng.random() < s.faults.corrupt_checksum:
                pkt[-1] ^= 0x5A
                s.faults.corrupted += 1
            packets.append(pkt)
        if not packets:
            return start
        s0 = answering[0]
        start += s0.value("Return_Delay") * RETURN_DELAY_UNIT_S + s0.faults.delay_s
        wire = packets[0]
        for other in packets[1:]:  # two servos with one id: their answers collide on the line
            shifted = b"\xff" + other
            wire = bytearray(a & b for a, b in zip(wire + b"\xff", shifted, strict=True))
        end = start + len(wire) * self.byte_s
        _wait_until(end)
        with contextlib.suppress(OSError):
            os.write(self._master, bytes(wire))
        self._wire_free = end
        return end

    def _update_world(self) -> None:
        if self.world is None or self.calibration is None:
            return
        with self.lock:
            now = time.perf_counter()
            ticks = []
            for joint in self.calibration.joints.values():
                s = self.servo(joint.id)
                s.advance(now)
                ticks.append(s.present_ticks())
        rad = self.calibration.ticks_to_rad(ticks)
        index = {n: i for i, n in enumerate(self.world.joint_names)}
        with self.world.lock:
            for name, value in zip(self.calibration.joint_names, rad, strict=True):
                if name in index:
                    self.world.joint_positions[index[name]] = value
