"""`bench faults`' process-level control and config scenarios: they pass on this build, and the config one fails
a file the controller accepts (a scenario that cannot fail proves nothing)."""

from __future__ import annotations

from tools import config_faults
from tools.control_flood import control_flood


def test_control_flood_leaves_every_unix_estop_served():
    row = control_flood(tcp_clients=24, trials=5)
    # The latency bound is the benchmark's to judge (timing is not asserted in tests); the rest must hold.
    assert [p for p in row["problems"] if not p.startswith("p99")] == [], row["reaction"]
    assert row["reaction"].startswith("5/5 e-stops served") and "SIGTERM exit 0" in row["reaction"]


def test_config_errors_scenario_fails_a_file_that_is_accepted(monkeypatch):
    monkeypatch.setattr(
        config_faults,
        "BAD_CONFIGS",
        {
            "NaN rest pose": config_faults.BAD_CONFIGS["NaN rest pose"],
            "a good file": (b"robot: {arm: {driver: standin}}\n", "anything"),
        },
    )
    row = config_faults.config_errors()
    assert row["ok"] is False and row["reaction"] == "a good file: exit 0"
