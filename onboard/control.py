"""Operator control: who may command the robot, and what each command does.

Wire format: one JSON object per line each way. Request `{"cmd": "start", "instruction": "...", "token": "..."}`,
reply `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.

Who may connect: on the Unix socket (the default), the peer's credentials (SO_PEERCRED: pid, uid, gid, plus
the supplementary groups of that pid) must include the configured group or an allowed uid; the socket file
itself is mode 0660 owned by that group. TCP is only opened when configured and every request must carry
the token from `token_file`. Refused clients get one reply naming why and are disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import hmac
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from anchorvla.errors import UserError
from onboard.config import ControlEndpointConfig
from onboard.journal import event
from onboard.runtime import Runtime

log = logging.getLogger("anchorvla.control")

MOTION_COMMANDS = ("start", "pause", "resume", "stop", "estop", "reset-fault")
COMMANDS = ("status", *MOTION_COMMANDS)
REFUSAL_READ_TIMEOUT_S = 2.0


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
        """Run one command; raises UserError (sent back as the error) when it cannot be done now."""
        if cmd == "status":
            return self.status()
        if cmd not in MOTION_COMMANDS:
            raise UserError(f"unknown command {cmd!r} (one of: {', '.join(COMMANDS)})")
        r = self.runtime
        args: dict = {}
        if cmd == "start":
            instruction = request.get("instruction")
            if instruction is not None and not isinstance(instruction, str):
                raise UserError("instruction must be a string")
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
            r.pause()
            r.safe_stop()
        elif cmd == "estop":
            args["reason"] = str(request.get("reason") or f"operator ({peer.description})")
            r.estop(args["reason"])
        elif cmd == "reset-fault":
            args["cleared"] = ",".join(f.name for f in r.safety.faults)
            r.reset_faults()
        level = logging.WARNING if cmd == "estop" else logging.INFO
        event(log, level, "operator command", command=cmd, peer=peer.description, state=self.state(), **args)
        for listener in self.listeners:
            listener(cmd, {**args, "instruction": r.fast.instruction})
        return {"state": self.state()}


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
        self.token: str | None = None
        if config.tcp_port is not None:
            if config.token_file is None:
                raise UserError(
                    "service.control.tcp_port needs service.control.token_file (TCP is only served with a token)"
                )
            try:
                self.token = config.token_file.read_text().strip()
            except OSError as exc:
                raise UserError(f"service.control.token_file {config.token_file}: {exc.strerror}") from None
            if len(self.token) < 16:
                raise UserError(
                    f"service.control.token_file {config.token_file}: the token must be at least 16 characters"
                )
            if config.token_file.stat().st_mode & 0o077:
                event(
                    log,
                    logging.WARNING,
                    "the control token file is readable by others: chmod 600 it",
                    path=config.token_file,
                )
        self._servers: list[asyncio.AbstractServer] = []

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
                self._servers.append(await asyncio.start_unix_server(self._serve_unix, path=str(path)))
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
                    self._serve_tcp, self.config.tcp_host, self.config.tcp_port
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
        """Stop listening; remove the socket file if this endpoint created it."""
        if not self._servers:
            return
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers.clear()
        with contextlib.suppress(FileNotFoundError):
            self.config.socket.unlink()

    async def _serve_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        refusal, peer = self._unix_refusal(writer.get_extra_info("socket"))
        await self._session(reader, writer, peer, refusal, check_token=False)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        await self._session(reader, writer, Peer(f"tcp={host}:{port}"), None, check_token=True)

    async def _session(self, reader, writer, peer: Peer, refusal: str | None, check_token: bool) -> None:
        try:
            if refusal is not None:
                event(log, logging.WARNING, "control client refused", peer=peer.description, reason=refusal)
                with contextlib.suppress(
                    asyncio.TimeoutError
                ):  # let the client send its request, then answer
                    await asyncio.wait_for(reader.readline(), REFUSAL_READ_TIMEOUT_S)
                await self._reply(writer, {"ok": False, "error": f"refused: {refusal}"})
                return
            while line := await reader.readline():
                reply, keep_open = self._handle(line, peer, check_token)
                await self._reply(writer, reply)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _handle(self, line: bytes, peer: Peer, check_token: bool) -> tuple[dict, bool]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            return {
                "ok": False,
                "error": 'a request is one JSON object per line, e.g. {"cmd": "status"}',
            }, True
        if check_token:
            given = request.get("token")
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
                event(
                    log,
                    logging.WARNING,
                    "control client refused",
                    peer=peer.description,
                    reason="missing or wrong token",
                )
                return {"ok": False, "error": "refused: missing or wrong token"}, False
        try:
            return {"ok": True, **self.operator.apply(str(request.get("cmd")), request, peer)}, True
        except UserError as exc:
            return {"ok": False, "error": str(exc)}, True

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict) -> None:
        writer.write((json.dumps(reply) + "\n").encode())
        await writer.drain()
