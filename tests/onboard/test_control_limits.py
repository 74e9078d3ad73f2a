"""Operator control that cannot be starved or crashed, against a running controller over real sockets (the Unix
socket and TCP on 127.0.0.1): connection caps with the Unix e-stop always served, idle and read timeouts,
malformed input answered with one error line and the connection closed, the TCP token checked before any JSON,
stop/estop device calls off the event loop, and reset-fault back to paused."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

import pytest

from onboard.config import load_config
from onboard.control_requests import MAX_LINE_BYTES, MAX_TEXT_CHARS
from onboard.devices import build_arm, build_cameras
from onboard.runtime import Devices
from onboard.standins import StandinBase
from tests.service_helpers import (
    devices_and_engine,
    run_serve,
    short_dir,
    sim_config,
    wait_for_socket,
    wait_for_tcp,
)

TOKEN = "flood-test-token-0123456789"


def unix(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def lines_until_closed(s: socket.socket) -> list[bytes]:
    """Every line the controller sends until it closes the connection."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data.splitlines()


def ask(s: socket.socket, payload: dict | bytes) -> dict:
    s.sendall(payload if isinstance(payload, bytes) else (json.dumps(payload) + "\n").encode())
    line = s.makefile("rb").readline()
    return json.loads(line) if line else {}


def status(path) -> dict:
    with unix(path) as s:
        return ask(s, {"cmd": "status"})


def tcp_config(d, port: int, tmp_path, **control):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return sim_config(d, service={"control": {"tcp_port": port, "token_file": str(token), **control}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_tcp_flood_leaves_the_unix_estop_served(tmp_path, caplog):
    d = short_dir()
    port = free_port()
    config = tcp_config(d, port, tmp_path, max_clients=4)
    sock = d / "control.sock"
    seen: dict = {}

    def client():
        wait_for_socket(sock)
        wait_for_tcp(port)
        fds_before = open_fds()
        flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(40)]
        for s in flood[:4]:
            s.sendall(b"garbage")  # the admitted ones idle mid-line
        seen["refused"] = [lines_until_closed(s) for s in flood[4:]]
        seen["fd_growth"] = open_fds() - fds_before  # ours: 40 client sockets; the controller's: its 4 slots
        # The Unix socket is full of idle clients too: a new one still gets in, the longest-open one goes.
        idle_unix = [unix(sock) for _ in range(4)]
        seen["estop"] = ask(unix(sock), {"cmd": "estop", "reason": "flood test"})
        seen["dropped"] = lines_until_closed(idle_unix[0])
        seen["status"] = status(sock)
        for s in [*flood, *idle_unix]:
            s.close()

    with caplog.at_level(logging.INFO, logger="anchorvla.control"):
        run_serve(config, 4.0, client=client)
    refusal = b'{"ok": false, "error": "refused: busy: 4 tcp control connections are open (service.control.max_clients)"}'
    assert seen["refused"] == [[refusal]] * 36
    assert seen["fd_growth"] <= 40 + 4 + 2  # two spare for the runtime's own files meanwhile
    assert seen["estop"] == {"ok": True, "state": "estopped"}
    assert seen["dropped"] == []  # closed without a word: it had sent nothing
    assert seen["status"]["faults"] == ["operator_estop: flood test"]
    # 36 refusals of one kind within 10 s: one journal line, not 36.
    assert len([r for r in caplog.records if r.getMessage() == "control client refused"]) == 1


def test_idle_and_slow_clients_are_closed(caplog):
    d = short_dir()
    config = sim_config(d, service={"control": {"idle_timeout_s": 0.3, "read_timeout_s": 0.3}})
    sock = d / "control.sock"
    seen: dict = {}

    def client():
        wait_for_socket(sock)
        with unix(sock) as idle:
            seen["idle"] = lines_until_closed(idle)
        with unix(sock) as slow:
            slow.sendall(b'{"cmd": "sta')  # and never the rest of the line
            seen["slow"] = lines_until_closed(slow)
        with unix(sock) as ok:
            seen["status"] = ask(ok, {"cmd": "status"})
            seen["then"] = lines_until_closed(ok)  # then idle: closed as well

    run_serve(config, 2.5, client=client)
    assert [json.loads(x) for x in seen["idle"]] == [
        {"ok": False, "error": "no request for 0.3 s: closing (connect again)"}
    ]
    assert [json.loads(x) for x in seen["slow"]] == [
        {"ok": False, "error": "a request line must end within 0.3 s"}
    ]
    assert seen["status"]["state"] == "paused" and len(seen["then"]) == 1


EXAMPLE = 'a request is one JSON object per line, e.g. {"cmd": "status"}'
MALFORMED = {
    "not JSON": (b"start please\n", EXAMPLE),
    "a JSON list": (b'["start"]\n', EXAMPLE),
    "not UTF-8": (b'{"cmd": "start", "instruction": "\xff\xfe"}\n', EXAMPLE),
    "deep nesting": (b"[" * 2000 + b"]" * 2000 + b"\n", EXAMPLE),
    "nested value": (b'{"cmd": "start", "instruction": {"a": [1]}}\n', "'instruction': a request's values"),
    "a list as cmd": (b'{"cmd": ["start"]}\n', "'cmd': a request's values are strings"),
    "lone surrogate": (
        b'{"cmd": "start", "instruction": "pick \\ud800"}\n',
        "'instruction': not valid Unicode",
    ),
    "surrogate key": (b'{"cmd": "start", "\\udfff": 1}\n', "a key: not valid Unicode"),
    "over-long line": (b'{"cmd": "' + b"x" * MAX_LINE_BYTES + b'"}\n', f"at most {MAX_LINE_BYTES} bytes"),
    "blank line": (b"\n", EXAMPLE),
}


def test_malformed_input_is_one_error_line_and_a_clean_close(caplog):
    d = short_dir()
    config = sim_config(d)
    sock = d / "control.sock"
    seen: dict = {}

    def client():
        wait_for_socket(sock)
        for name, (data, _) in MALFORMED.items():
            with unix(sock) as s:
                s.sendall(data + b'{"cmd": "start"}\n')  # a valid request after it is not run
                seen[name] = lines_until_closed(s)
        seen["status"] = status(sock)

    with caplog.at_level(logging.DEBUG):
        run_serve(config, 2.5, client=client)
    for name, (_, fragment) in MALFORMED.items():
        replies = [json.loads(x) for x in seen[name]]
        assert len(replies) == 1 and replies[0]["ok"] is False and fragment in replies[0]["error"], name
    assert seen["status"]["state"] == "paused" and seen["status"]["chunks"] == 0  # no start got through
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an unhandled exception was logged"


@pytest.mark.parametrize(
    "request_, fragment",
    [
        ({"cmd": "start", "instruction": "x" * (MAX_TEXT_CHARS + 1)}, f"at most {MAX_TEXT_CHARS}"),
        ({"cmd": "start", "instruction": "pick\nthe cup"}, "must be printable text"),
        ({"cmd": "estop", "reason": 7}, "reason must be a string"),
        ({"cmd": "launch"}, "unknown command 'launch'"),
    ],
)
def test_bad_fields_are_refused_and_the_connection_stays(request_, fragment):
    d = short_dir()
    config = sim_config(d)
    sock = d / "control.sock"
    seen: dict = {}

    def client():
        wait_for_socket(sock)
        with unix(sock) as s:
            seen["reply"] = ask(s, request_)
            seen["status"] = ask(s, {"cmd": "status"})

    run_serve(config, 1.5, client=client)
    assert seen["reply"]["ok"] is False and fragment in seen["reply"]["error"]
    assert seen["status"]["state"] == "paused"


def test_the_tcp_token_comes_first_and_is_checked_before_any_json(tmp_path):
    d = short_dir()
    port = free_port()
    config = tcp_config(d, port, tmp_path)
    seen: dict = {}
    wrong = {"ok": False, "error": "refused: missing or wrong token (the first line on TCP is the token)"}

    def client():
        wait_for_socket(d / "control.sock")
        wait_for_tcp(port)
        cases = {
            "nested garbage": b"[" * 3000 + b"\n",
            "token inside JSON": (json.dumps({"cmd": "start", "token": TOKEN}) + "\n").encode(),
            "surrogate": b'"\\ud800"\n',
            "prefix of the token": TOKEN[:-1].encode() + b"\n",
        }
        for name, data in cases.items():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(data)
                seen[name] = lines_until_closed(s)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(TOKEN.encode() + b"\n")
            seen["status"] = ask(s, {"cmd": "status"})
            seen["start"] = ask(s, {"cmd": "start", "instruction": "wave"})

    run_serve(config, 2.5, client=client)
    for name in ("nested garbage", "token inside JSON", "surrogate", "prefix of the token"):
        assert [json.loads(x) for x in seen[name]] == [wrong], name
    assert seen["status"]["state"] == "paused"
    assert seen["start"] == {"ok": True, "state": "running"}


class SlowStopBase(StandinBase):
    """A base whose stop calls take a while (a Go2 answering late); records when each ran."""

    STOP_S = 1.2

    def __init__(self):
        super().__init__()
        self.stop_calls: list[tuple[float, float]] = []

    def _slow(self, call) -> None:
        t0 = time.monotonic()
        time.sleep(self.STOP_S)
        call()
        self.stop_calls.append((t0, time.monotonic()))

    def stop_move(self) -> None:
        self._slow(super().stop_move)


@pytest.mark.parametrize("command", ["stop", "estop"])
def test_stop_and_estop_device_calls_run_off_the_event_loop(command):
    d = short_dir()
    config = sim_config(d, safety={"stop": {"step_timeout_s": 3.0}})
    sock = d / "control.sock"
    base = SlowStopBase()
    _, engine = devices_and_engine(config)
    devices = Devices(build_arm(config), base, build_cameras(config))
    seen: dict = {"polls": []}

    def client():
        wait_for_socket(sock)
        status(sock)
        with unix(sock) as s:
            assert ask(s, {"cmd": "start"})["ok"]
        time.sleep(0.3)
        sender = threading.Thread(
            target=lambda: seen.update(reply=ask(unix(sock), {"cmd": command}), replied=time.monotonic())
        )
        sender.start()
        while "replied" not in seen:  # the controller answers and ticks while the base takes its time
            seen["polls"].append((time.monotonic(), status(sock)))
            time.sleep(0.05)
        sender.join()

    run_serve(config, 4.0, client=client, devices=devices, engine=engine)
    assert seen["reply"]["ok"] is True
    (stop_started, stop_ended), *_ = base.stop_calls
    during = [p for t, p in seen["polls"] if stop_started < t and t + 0.05 < stop_ended]
    assert len(during) >= 2, "no status was answered while the base's StopMove ran"
    assert during[-1]["ticks"] > during[0]["ticks"]  # the fast loop went on (holding the arm)
    assert all(p["state"] == ("paused" if command == "stop" else "estopped") for p in during)
    assert seen["replied"] >= stop_ended  # the reply says the sequence is done


def test_reset_fault_goes_to_paused_not_running(capsys):
    d = short_dir()
    # Every chunk NaN: the policy_nonfinite fault latches while running, with the operator's pause not set.
    config = sim_config(d, policy={"standin": {"compute_ms": 10, "nan_every": 1}})
    sock = d / "control.sock"
    seen: dict = {}

    def client():
        wait_for_socket(sock)
        with unix(sock) as s:
            seen["start"] = ask(s, {"cmd": "start"})
        for _ in range(100):
            if status(sock)["state"] == "faulted":
                break
            time.sleep(0.05)
        with unix(sock) as s:
            seen["reset"] = ask(s, {"cmd": "reset-fault"})
        seen["after"] = status(sock)
        time.sleep(0.5)
        seen["later"] = status(sock)

    run_serve(config, 3.5, client=client)
    assert seen["start"]["state"] == "running"
    assert seen["reset"] == {"ok": True, "state": "paused"}
    assert seen["after"]["faults"] == [] and seen["later"]["state"] == "paused"
    assert seen["later"]["chunks"] == seen["after"]["chunks"]  # nothing inferred until start


def test_ctl_sends_the_token_line_first(capsys, tmp_path):
    from anchorvla.cli import main as anchorvla

    d = short_dir()
    port = free_port()
    config = tcp_config(d, port, tmp_path)
    seen: dict = {}

    def client():
        wait_for_socket(d / "control.sock")
        wait_for_tcp(port)
        capsys.readouterr()
        seen["rc"] = anchorvla(
            ["ctl", "--tcp", f"127.0.0.1:{port}", "--token-file", str(tmp_path / "token"), "--json", "status"]
        )
        seen["out"] = capsys.readouterr().out

    run_serve(config, 1.5, client=client)
    assert seen["rc"] == 0 and json.loads(seen["out"])["state"] == "paused"


def test_config_bounds_the_limits(tmp_path):
    from onboard.config import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("service:\n  control:\n    max_clients: 0\n")
    with pytest.raises(ConfigError, match="service.control.max_clients"):
        load_config(path)


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, False), (0o644, True)])
def test_a_token_open_to_every_user_is_warned_about(tmp_path, caplog, mode, warned):
    from onboard.control import ControlEndpoint

    config = tcp_config(short_dir(), free_port(), tmp_path)
    (tmp_path / "token").chmod(mode)  # 0640: what `service install` gives the service's group
    with caplog.at_level(logging.WARNING, logger="anchorvla.control"):
        ControlEndpoint(config.service.control, operator=None)
    assert any("open to every user" in r.getMessage() for r in caplog.records) == warned


def test_a_token_that_is_not_one_ascii_word_is_one_clear_line(tmp_path):
    from anchorvla.errors import UserError
    from onboard.control import ControlEndpoint

    config = tcp_config(short_dir(), free_port(), tmp_path)
    (tmp_path / "token").write_bytes("sécret token with spaces\n".encode())
    with pytest.raises(UserError, match="one word of at least 16 printable ASCII characters"):
        ControlEndpoint(config.service.control, operator=None)
