"""`anchorvla ctl COMMAND`: the operator's client for a running controller's control endpoint."""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

from anchorvla.errors import UserError
from onboard.config import load_config
from onboard.control_requests import MAX_LINE_BYTES, MAX_TEXT_CHARS

COMMANDS = ("status", "start", "pause", "resume", "stop", "estop", "reset-fault")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=COMMANDS, metavar="ACTION", help=f"one of: {', '.join(COMMANDS)}")
    parser.add_argument("instruction", nargs="*", help="start: the task instruction; estop: the reason")
    parser.add_argument(
        "--config", type=Path, default=None, help="take the socket/TCP settings from this config"
    )
    parser.add_argument(
        "--socket", type=Path, default=None, help="Unix socket (default: service.control.socket)"
    )
    parser.add_argument(
        "--tcp", default=None, metavar="HOST:PORT", help="connect over TCP instead (needs --token-file)"
    )
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the TCP token")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the controller")
    parser.add_argument("--json", action="store_true", help="print the raw reply")


def _connect(args: argparse.Namespace) -> tuple[socket.socket, bytes | None, str]:
    control = load_config(args.config).service.control if args.config else None
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--tcp {args.tcp!r}: expected HOST:PORT, e.g. 127.0.0.1:7300")
        token_file = args.token_file or (control.token_file if control else None)
        if token_file is None:
            raise UserError("--tcp needs --token-file (the controller only serves TCP with a token)")
        try:
            token = token_file.read_bytes().strip()
        except OSError as exc:
            raise UserError(f"--token-file {token_file}: {exc.strerror}") from None
        if not token or b"\n" in token:
            raise UserError(f"--token-file {token_file}: expected the token alone on one line")
        sock = socket.create_connection((host, int(port)), timeout=args.timeout)
        return sock, token, f"{host}:{port}"
    path = args.socket or (control.socket if control else None)
    if path is None:
        raise UserError(
            "say where the controller listens: --socket PATH, --config CONFIG, or --tcp HOST:PORT"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise UserError(
            f"no controller socket at {path} (is the service running? `systemctl status anchorvla-onboard`)"
        ) from None
    except PermissionError:
        sock.close()
        raise UserError(
            f"no permission to open {path} (add yourself to the controller's group, e.g. `sudo usermod -aG anchorvla $USER`)"
        ) from None
    return sock, None, str(path)


def request(args: argparse.Namespace, payload: dict) -> dict:
    try:
        sock, token, where = _connect(args)
    except (TimeoutError, ConnectionRefusedError) as exc:
        raise UserError(f"cannot reach the controller: {exc}") from None
    with sock, sock.makefile("rwb") as stream:
        try:
            if token is not None:  # TCP: the token first, alone on its line (checked before any JSON)
                stream.write(token + b"\n")
            stream.write((json.dumps(payload) + "\n").encode())
            stream.flush()
            line = stream.readline(MAX_LINE_BYTES)
        except (TimeoutError, OSError) as exc:
            raise UserError(f"controller at {where} did not answer: {exc}") from None
    if not line:
        raise UserError(f"controller at {where} closed the connection without a reply")
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        raise UserError(f"controller at {where} sent an unreadable reply: {line[:80]!r}")
    return reply


def main(args: argparse.Namespace) -> int:
    payload: dict = {"cmd": args.action}
    text = " ".join(args.instruction)
    if args.action == "start" and text:
        payload["instruction"] = text
    elif args.action == "estop" and text:
        payload["reason"] = text
    elif text:
        raise UserError(f"'{args.action}' takes no further words (got {text!r})")
    if len(text) > MAX_TEXT_CHARS:
        raise UserError(f"the {args.action} text is {len(text)} characters long; at most {MAX_TEXT_CHARS}")
    reply = request(args, payload)
    if args.json:
        print(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        raise UserError(f"controller: {reply.get('error', 'refused')}")
    if not args.json:
        for key, value in reply.items():
            if key != "ok":
                print(f"{key}: {value}")
    return 0
