"""Operator control against a running controller (configs/standin.yaml stand-ins): start/stop/estop through
`anchorvla ctl`, and refusals: a TCP client without the token, a Unix-socket client outside the group."""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
import yaml

from anchorvla.cli import main as anchorvla
from tests.service_helpers import SIM, run_serve, short_dir, sim_config, wait_for_socket, wait_for_tcp


def ctl(capsys, sock, *words) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = anchorvla(["ctl", "--socket", str(sock), *words])
    out, err = capsys.readouterr()
    return rc, out, err


def status(capsys, sock) -> dict:
    capsys.readouterr()
    assert anchorvla(["ctl", "--socket", str(sock), "--json", "status"]) == 0
    return json.loads(capsys.readouterr().out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_file(d, control: dict):
    """configs/standin.yaml with `service.control` replaced (one `service:` block: a second is refused)."""
    config = yaml.safe_load(SIM.read_text())
    config["service"] = {**config.get("service", {}), "control": control}
    path = d / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def raw_request(sock: socket.socket, payload: dict) -> dict:
    sock.sendall((json.dumps(payload) + "\n").encode())
    line = sock.makefile("rb").readline()
    return json.loads(line) if line else {}


def test_ctl_drives_start_stop_estop(capsys, caplog):
    d = short_dir()
    config = sim_config(d)
    sock = d / "control.sock"
    seen: dict = {}

    def operator():
        wait_for_socket(sock)
        time.sleep(0.3)
        seen["idle"] = status(capsys, sock)
        seen["start"] = ctl(capsys, sock, "start", "pick", "the", "cup")
        time.sleep(1.0)
        seen["running"] = status(capsys, sock)
        seen["stop"] = ctl(capsys, sock, "stop")
        seen["stopped"] = status(capsys, sock)
        time.sleep(0.2)  # an inference in flight at stop may still finish
        seen["stopped_later"] = status(capsys, sock)
        time.sleep(0.4)
        seen["stopped_much_later"] = status(capsys, sock)
        seen["start2"] = ctl(capsys, sock, "start")
        time.sleep(0.5)
        seen["estop"] = ctl(capsys, sock, "estop", "hand", "in", "the", "way")
        seen["start_refused"] = ctl(capsys, sock, "start")
        seen["estopped"] = status(capsys, sock)
        seen["reset"] = ctl(capsys, sock, "reset-fault")
        seen["after_reset"] = status(capsys, sock)
        seen["start3"] = ctl(capsys, sock, "start")
        seen["final"] = status(capsys, sock)
        seen["bad"] = ctl(capsys, sock, "pause", "now")

    with caplog.at_level(logging.INFO, logger="anchorvla.control"):
        result = run_serve(config, 5.0, client=operator)
    assert seen["idle"]["state"] == "paused" and seen["idle"]["chunks"] == 0  # the service starts idle
    assert seen["start"][0] == 0 and "state: running" in seen["start"][1]
    assert seen["running"]["state"] == "running" and seen["running"]["instruction"] == "pick the cup"
    assert seen["running"]["chunks"] > 0
    assert seen["stop"][0] == 0 and seen["stopped"]["state"] == "paused"
    assert seen["stopped"]["safety"]["safe_stops"] == 1
    assert (
        seen["stopped_much_later"]["chunks"] == seen["stopped_later"]["chunks"]
    )  # no inference while stopped
    assert seen["estop"][0] == 0 and seen["estopped"]["state"] == "estopped"
    assert seen["estopped"]["faults"] == ["operator_estop: hand in the way"]
    assert seen["start_refused"][0] == 2 and "reset-fault first" in seen["start_refused"][2]
    assert seen["after_reset"]["state"] == "paused"  # reset does not restart motion by itself
    assert seen["start3"][0] == 0 and seen["final"]["state"] == "running"
    assert seen["bad"][0] == 2 and "takes no further words" in seen["bad"][2]
    assert result["safety"]["safe_stops"] >= 3  # stop, estop, shutdown
    logged = [r.fields for r in caplog.records if r.getMessage() == "operator command"]
    assert [f["command"] for f in logged] == ["start", "stop", "start", "estop", "reset-fault", "start"]
    assert all(f["peer"].startswith("uid=0 pid=") for f in logged)


def test_tcp_needs_the_token(capsys, tmp_path):
    d = short_dir()
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    port = free_port()
    config = sim_config(d, service={"control": {"tcp_port": port, "token_file": str(token)}})
    seen: dict = {}

    def client():
        wait_for_socket(d / "control.sock")
        wait_for_tcp(port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            seen["no_token"] = raw_request(s, {"cmd": "start"})
            seen["closed_after"] = s.recv(10)  # refused clients are disconnected
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            seen["wrong"] = raw_request(s, {"cmd": "estop", "token": "s3cret-token-0123456788"})
        wrong_file = tmp_path / "wrong"
        wrong_file.write_text("not-the-token-at-all")
        capsys.readouterr()
        seen["ctl_wrong"] = anchorvla(
            ["ctl", "--tcp", f"127.0.0.1:{port}", "--token-file", str(wrong_file), "start"]
        )
        seen["ctl_wrong_err"] = capsys.readouterr().err
        seen["status_after"] = status(capsys, d / "control.sock")
        seen["ctl_ok"] = anchorvla(
            ["ctl", "--tcp", f"127.0.0.1:{port}", "--token-file", str(token), "start", "wave"]
        )
        seen["status_ok"] = status(capsys, d / "control.sock")

    run_serve(config, 6.0, client=client)  # long enough for the client's steps on a loaded machine
    assert seen["no_token"] == {
        "ok": False,
        "error": "refused: missing or wrong token (the first line on TCP is the token)",
    }
    assert seen["closed_after"] == b""
    assert seen["wrong"]["ok"] is False
    assert seen["ctl_wrong"] == 2 and "refused: missing or wrong token" in seen["ctl_wrong_err"]
    assert seen["status_after"]["state"] == "paused"  # nothing the refused clients sent was applied
    assert seen["ctl_ok"] == 0 and seen["status_ok"]["state"] == "running"


def test_unix_client_outside_the_group_is_refused(capsys):
    d = short_dir()
    # The test runs as root: a group root is not in, and no allowed uid, must refuse it.
    config = sim_config(d, service={"control": {"group": "nogroup", "allowed_uids": []}})
    seen: dict = {}

    def client():
        wait_for_socket(d / "control.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(d / "control.sock"))
            seen["raw"] = raw_request(s, {"cmd": "start"})
        seen["ctl"] = ctl(capsys, d / "control.sock", "start")

    result = run_serve(config, 1.5, client=client)
    assert seen["raw"]["ok"] is False
    assert "uid 0 is not in group 'nogroup' nor in service.control.allowed_uids" in seen["raw"]["error"]
    assert seen["ctl"][0] == 2 and "refused" in seen["ctl"][2]
    assert result["chunks"] == 0  # still idle: the start never reached the runtime


def test_allowed_uid_admits_a_client_outside_the_group(capsys):
    d = short_dir()
    config = sim_config(d, service={"control": {"group": "nogroup", "allowed_uids": [0]}})
    seen: dict = {}

    def client():
        wait_for_socket(d / "control.sock")
        seen["status"] = status(capsys, d / "control.sock")

    run_serve(config, 1.0, client=client)
    assert seen["status"]["state"] == "paused"


def test_socket_file_is_group_only(capsys):
    d = short_dir()
    config = sim_config(d)
    seen: dict = {}

    def client():
        wait_for_socket(d / "control.sock")
        seen["mode"] = (d / "control.sock").stat().st_mode & 0o777

    run_serve(config, 0.8, client=client)
    assert seen["mode"] == 0o660
    assert not (d / "control.sock").exists()  # removed at shutdown


@pytest.mark.parametrize(
    ("control", "message"),
    [
        ({"group": "no-such-group-xyz"}, "service.control.group 'no-such-group-xyz' does not exist"),
        ({"group": "root", "tcp_port": 7300}, "service.control.tcp_port needs service.control.token_file"),
    ],
)
def test_bad_endpoint_config_is_one_clear_line(capsys, control, message):
    d = short_dir()
    config_path = config_file(d, {"socket": str(d / "c.sock"), **control})
    rc = anchorvla(["service", "run", "--config", str(config_path), "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_ctl_without_a_controller_says_so(capsys):
    d = short_dir()
    rc, _, err = ctl(capsys, d / "nothing.sock", "status")
    assert rc == 2 and "no controller socket at" in err


def test_unusable_socket_path_is_one_clear_line(capsys):
    d = short_dir()
    blocker = d / "file"
    blocker.write_text("not a directory")
    config_path = config_file(d, {"socket": str(blocker / "control.sock"), "group": "root"})
    rc = anchorvla(["service", "run", "--config", str(config_path), "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot listen on service.control.socket" in err and "Traceback" not in err
