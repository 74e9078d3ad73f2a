"""Operator control: who may command the robot, and what each command does.

Wire format: one JSON object per line each way (onboard/control_requests.py checks them). Request
`{"cmd": "start", "instruction": "..."}`, reply `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.

Who may connect: on the Unix socket (the default), the peer's credentials (SO_PEERCRED: pid, uid, gid, plus
the supplementary groups of that pid) must include the configured group or an allowed uid; the socket file
itself is mode 0660 owned by that group. TCP is only opened when configured; its first line is the token from
`token_file`, compared (in constant time) before any JSON is parsed. Refused clients get one reply naming why
and are disconnected.

Nobody can starve the e-stop: each transport holds at most `max_clients` connections (TCP refuses more; the
Unix socket drops its longest-open one, so a local e-stop always gets in however many TCP clients wait), a
connection idle for `idle_timeout_s` is closed, a request line must end within `read_timeout_s` and
MAX_LINE_BYTES, and malformed input gets one error line and the connection closed. `stop` and `estop` take
effect at once on the event-loop thread (pause, latch), and their device calls (the base's Move 0/StopMove/Damp,
each up to the step timeout) run on a worker thread while the fast loop goes on ticking and holding the arm.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from anchorvla.errors import UserError
from onboard.config import ControlEndpointConfig
from onboard.control_requests import MAX_LINE_BYTES, BadRequest, parse_request, text_field
from onboard.journal import event
from onboard.runtime import Runtime

log = logging.getLogger("anchorvla.control")

MOTION_COMMANDS = ("start", "pause", "resume", "stop", "estop", "reset-fault")
COMMANDS = ("status", *MOTION_COMMANDS)
WRITE_TIMEOUT_S = 2.0  # a client that does not read its reply is dropped after this
REFUSAL_LOG_EVERY_S = 10.0  # a flood of refused clients is one journal line per kind this often, with a count


@dataclass(frozen=True)
class Peer:
    """Who sent a command, for the log: `uid=.. pid=..` on the Unix socket, `tcp=host:port` on TCP."""

    description: str


class Operator:
    """Applies operator commands to the runtime and tells listeners (the recorder) what was done."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.listeners: list[Callable[[str, dict], None]] = []
        self.recording_status: Callable[[], dict] = lambda: {"state": "disabled"}  # the recorder's, if any

    def state(self) -> str:
        r = self.runtime
        if any(f.name == "operator_estop" for f in r.safety.faults):
            return "estopped"
        if r.safety.faulted:
            return "faulted"
        return "paused" if r.fast.paused else "running"

    def status(self) -> dict:
        r = self.runtime
        return {
            "state": self.state(),
            "instruction": r.fast.instruction,
            "faults": [f"{f.name}: {f.detail}" for f in r.safety.faults],
            "ticks": r.stats.ticks,
            "chunks": r.stats.chunks,
            "underruns": r.stats.underruns,
            "overruns": r.stats.overruns,
            "inference_failures": r.stats.inference_failures,
            "safety": r.safety.counters.as_dict(),
            "recording": self.recording_status(),
        }

    def apply(self, cmd: str, request: dict, peer: Peer) -> dict:
        """Run one command to its end on this thread (replay, tests); see `begin`."""
        reply, device_calls = self.begin(cmd, request, peer)
        if device_calls is not None:
            device_calls()
        return reply

    def begin(self, cmd: str, request: dict, peer: Peer) -> tuple[dict, Callable[[], object] | None]:
        """Apply a command's immediate part (on the event-loop thread, between ticks) and return the reply with
        the part that waits on devices (stop, estop: the base's stop calls), which the caller runs off the event
        loop. Raises UserError (sent back as the error) when it cannot be done now."""
        if cmd == "status":
            return self.status(), None
        if cmd not in MOTION_COMMANDS:
            raise UserError(f"unknown command {ascii(cmd)} (one of: {', '.join(COMMANDS)})")
        r = self.runtime
        args: dict = {}
        device_calls = None
        if cmd == "start":
            instruction = text_field(request, "instruction")
            if r.safety.faulted:
                r.resume()  # raises the 'faults latched' error before anything changes
            if instruction:
                r.set_instruction(instruction)
                args["instruction"] = instruction
            r.new_episode()
            r.resume()
        elif cmd == "pause":
            r.pause()
        elif cmd == "resume":
            r.resume()
        elif cmd == "stop":
            r.pause()  # from the next tick: the arm holds, the base gets Move 0
            device_calls = r.safe_stop
        elif cmd == "estop":
            args["reason"] = text_field(request, "reason") or f"operator ({peer.description})"
            device_calls = r.estop(args["reason"])
        elif cmd == "reset-fault":
            args["cleared"] = ",".join(f.name for f in r.safety.faults)
            r.pause()  # motion needs start (or resume) again
            r.reset_faults()
        level = logging.WARNING if cmd == "estop" else logging.INFO
        event(log, level, "operator command", command=cmd, peer=peer.description, state=self.state(), **args)
        for listener in self.listeners:
            listener(cmd, {**args, "instruction": r.fast.instruction})
        return {"state": self.state()}, device_calls


def _peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", data)  # pid, uid, gid


def _groups_of(pid: int, gid: int) -> set[int]:
    """The peer's primary and supplementary groups, read from /proc (the process's actual credentials)."""
    groups = {gid}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    groups.update(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return groups


class ControlEndpoint:
    def __init__(self, config: ControlEndpointConfig, operator: Operator):
        self.config = config
        self.operator = operator
        self.group_gid: int | None = None
        if config.group is not None:
            try:
                self.group_gid = grp.getgrnam(config.group).gr_gid
            except KeyError:
                raise UserError(
                    f"service.control.group '{config.group}' does not exist on this machine "
                    "(`anchorvla service install` creates it, or set service.control.group / allowed_uids)"
                ) from None
        if config.group is None and not config.allowed_uids:
            raise UserError(
                "service.control: set group or allowed_uids (as configured, no client may connect)"
            )
        self._token_digest: bytes | None = None
        if config.tcp_port is not None:
            self._token_digest = hashlib.sha256(_read_token(config)).digest()
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: dict[str, list[_Session]] = {"unix": [], "tcp": []}
        self._refusals: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, refused since)
        self._motion_lock = asyncio.Lock()  # one motion command at a time (estop never waits for it)
        # Device calls of stop/estop; two workers, so an estop never queues behind a stop's stuck StopMove.
        self._device_calls = ThreadPoolExecutor(max_workers=2, thread_name_prefix="control-stop")

    def _unix_refusal(self, sock: socket.socket) -> tuple[str | None, Peer]:
        pid, uid, gid = _peer_credentials(sock)
        peer = Peer(f"uid={uid} pid={pid}")
        if uid in self.config.allowed_uids:
            return None, peer
        if self.group_gid is not None and self.group_gid in _groups_of(pid, gid):
            return None, peer
        group = f"group '{self.config.group}'" if self.config.group else "no group"
        return f"uid {uid} is not in {group} nor in service.control.allowed_uids", peer

    def _prepare_socket_path(self) -> None:
        path = self.config.socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # a stale socket from a controller that did not exit cleanly
            else:
                raise UserError(
                    f"another controller is listening on {path} (stop it, or set service.control.socket)"
                )
            finally:
                probe.close()

    async def start(self) -> None:
        path = self.config.socket
        try:
            self._prepare_socket_path()
            old_umask = os.umask(0o117)  # the socket is created 0660, never briefly world-writable
            try:
                server = await asyncio.start_unix_server(
                    self._serve_unix, path=str(path), limit=MAX_LINE_BYTES
                )
                self._servers.append(server)
            finally:
                os.umask(old_umask)
        except OSError as exc:
            raise UserError(
                f"cannot listen on service.control.socket {path}: {exc.strerror} "
                "(the unit's RuntimeDirectory= provides /run/anchorvla; elsewhere set service.control.socket)"
            ) from None
        if self.group_gid is not None:
            with contextlib.suppress(PermissionError):  # not root: the file keeps our group
                os.chown(path, -1, self.group_gid)
        event(log, logging.INFO, "control socket listening", path=path, group=self.config.group or "-")
        if self.config.tcp_port is not None:
            try:
                server = await asyncio.start_server(
                    self._serve_tcp, self.config.tcp_host, self.config.tcp_port, limit=MAX_LINE_BYTES
                )
            except OSError as exc:
                await self.close()
                raise UserError(
                    f"cannot listen on TCP {self.config.tcp_host}:{self.config.tcp_port}: {exc.strerror} "
                    "(another process on that port? set service.control.tcp_port)"
                ) from None
            self._servers.append(server)
            event(
                log,
                logging.INFO,
                "control TCP listening (token required)",
                host=self.config.tcp_host,
                port=self.config.tcp_port,
            )

    @property
    def tcp_port(self) -> int | None:
        """The bound TCP port (useful when configured as an ephemeral one)."""
        for server in self._servers[1:]:
            return server.sockets[0].getsockname()[1]
        return None

    async def close(self) -> None:
        """Stop listening, drop open connections; remove the socket file if this endpoint created it."""
        self._device_calls.shutdown(wait=False)
        if not self._servers:
            return
        for server in self._servers:
            server.close()
        for session in [*self._sessions["unix"], *self._sessions["tcp"]]:
            session.writer.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.config.socket.unlink()

    async def _serve_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refusal, peer = self._unix_refusal(writer.get_extra_info("socket"))
        await self._session("unix", reader, writer, peer, refusal)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        await self._session("tcp", reader, writer, Peer(f"tcp={host}:{port}"), None)

    def _admit(self, transport: str, session: _Session) -> str | None:
        """Take a connection slot; the refusal when TCP has none left. The Unix socket always admits: it drops
        its longest-open connection that is not running a command."""
        sessions = self._sessions[transport]
        if len(sessions) >= self.config.max_clients:
            idle = next((s for s in sessions if not s.busy), None)
            if transport == "tcp" or idle is None:
                return f"busy: {len(sessions)} {transport} control connections are open (service.control.max_clients)"
            event(
                log, logging.WARNING, "control connection dropped for a newer one", peer=idle.peer.description
            )
            idle.writer.close()
            sessions.remove(idle)
        sessions.append(session)
        return None

    async def _session(self, transport: str, reader, writer, peer: Peer, refusal: str | None) -> None:
        session = _Session(peer, writer)
        busy = self._admit(transport, session)  # answered at once: no slot, so no wait for the request
        try:
            if busy is None and refusal is not None:
                with contextlib.suppress(
                    _Closing, TimeoutError
                ):  # let the client send its request, then answer
                    await asyncio.wait_for(self._read_line(reader), self.config.read_timeout_s)
            elif busy is None and transport == "tcp":
                token = await self._read_line(reader)
                if token is None:
                    return
                if not self._token_ok(token):
                    refusal = "missing or wrong token (the first line on TCP is the token)"
            if busy or refusal:
                reason = busy or refusal
                self._log_limited(logging.WARNING, "control client refused", peer, reason)
                await self._reply(writer, {"ok": False, "error": f"refused: {reason}"})
                return
            while (line := await self._read_line(reader)) is not None:
                session.busy = True
                reply, keep_open = await self._handle(line, peer)
                await self._reply(writer, reply)
                session.busy = False
                if not keep_open:
                    return
        except _Closing as closing:
            self._log_limited(logging.INFO, "control connection closed", peer, str(closing))
            with contextlib.suppress(ConnectionError, TimeoutError):
                await self._reply(writer, {"ok": False, "error": str(closing)})
        except (ConnectionError, TimeoutError):
            pass
        except Exception as exc:  # a bug must not take the endpoint down: log it, drop this client
            log.exception("control session %s failed: %s", peer.description, exc)
        finally:
            with contextlib.suppress(ValueError):
                self._sessions[transport].remove(session)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)
            except (ConnectionError, TimeoutError):
                writer.transport.abort()

    def _log_limited(self, level: int, message: str, peer: Peer, reason: str) -> None:
        """One journal line per kind of refusal or closing every REFUSAL_LOG_EVERY_S, counting those between
        (a flood of clients must not flood the journal too)."""
        kind = f"{message}: {reason.split(':')[0]}"
        now = time.monotonic()
        last, count = self._refusals.get(kind, (-REFUSAL_LOG_EVERY_S, 0))
        if now - last < REFUSAL_LOG_EVERY_S:
            self._refusals[kind] = (last, count + 1)
            return
        self._refusals[kind] = (now, 0)
        fields = {"same_since_last": count} if count else {}
        event(log, level, message, peer=peer.description, reason=reason, **fields)

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next line; None at the end of the stream. Raises _Closing when the client idles too long, takes
        too long to finish a line, or sends one longer than MAX_LINE_BYTES."""
        c = self.config
        try:
            first = await asyncio.wait_for(reader.read(1), c.idle_timeout_s)
        except TimeoutError:
            raise _Closing(f"no request for {c.idle_timeout_s:g} s: closing (connect again)") from None
        if first in (b"", b"\n"):
            return first or None
        try:
            return first + await asyncio.wait_for(reader.readuntil(b"\n"), c.read_timeout_s)
        except TimeoutError:
            raise _Closing(f"a request line must end within {c.read_timeout_s:g} s") from None
        except asyncio.LimitOverrunError:
            raise _Closing(f"a request line is at most {MAX_LINE_BYTES} bytes") from None
        except asyncio.IncompleteReadError:
            return None  # the client left mid-line

    def _token_ok(self, line: bytes) -> bool:
        """Constant time: both sides are hashed first, so neither the content nor the length leaks."""
        given = hashlib.sha256(line.strip()).digest()
        return self._token_digest is not None and hmac.compare_digest(given, self._token_digest)

    async def _handle(self, line: bytes, peer: Peer) -> tuple[dict, bool]:
        """The reply to one request line, and whether the connection stays open (not after malformed input)."""
        try:
            request = parse_request(line)
        except BadRequest as exc:
            return {"ok": False, "error": str(exc)}, False
        cmd = str(request.get("cmd"))
        try:
            if cmd in MOTION_COMMANDS and cmd != "estop":
                async with self._motion_lock:  # e.g. a start waits until a stop's StopMove is done
                    return {"ok": True, **await self._apply(cmd, request, peer)}, True
            return {"ok": True, **await self._apply(cmd, request, peer)}, True
        except UserError as exc:
            return {"ok": False, "error": str(exc)}, True

    async def _apply(self, cmd: str, request: dict, peer: Peer) -> dict:
        reply, device_calls = self.operator.begin(cmd, request, peer)
        if device_calls is not None:
            await asyncio.get_running_loop().run_in_executor(self._device_calls, device_calls)
        return reply

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict) -> None:
        writer.write((json.dumps(reply) + "\n").encode())
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)


@dataclass(eq=False)
class _Session:
    """One open control connection; `busy` while it runs a command (not dropped for a newer one then)."""

    peer: Peer
    writer: asyncio.StreamWriter
    busy: bool = field(default=False)


class _Closing(Exception):
    """The connection is closed after this message (sent as the error)."""


def _read_token(config: ControlEndpointConfig) -> bytes:
    """The TCP token from `token_file`: one line of at least 16 printable ASCII characters."""
    path = config.token_file
    if path is None:
        raise UserError(
            "service.control.tcp_port needs service.control.token_file (TCP is only served with a token)"
        )
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise UserError(f"service.control.token_file {path}: {exc.strerror}") from None
    if len(token) < 16 or not all(33 <= b < 127 for b in token):
        raise UserError(
            f"service.control.token_file {path}: the token must be one word of at least 16 printable ASCII characters"
        )
    if (
        path.stat().st_mode & 0o007
    ):  # the group may read it: `service install` gives it to the service's group
        event(log, logging.WARNING, "the control token file is open to every user: chmod o-rwx it", path=path)
    return token
