"""The rerun live view writes what the controller sees and plans; without rerun-sdk it says how to get it."""

from __future__ import annotations

import sys

import pytest

from anchorvla.errors import UserError
from tests.service_helpers import run_serve, short_dir, sim_config


def test_liveview_records_cameras_plan_joints_base_and_timing():
    pytest.importorskip("rerun", reason="rerun-sdk is the optional extra 'liveview'")
    d = short_dir()
    rrd = d / "live.rrd"
    config = sim_config(
        d,
        service={"start_idle": False, "control": {"enabled": False}},
        telemetry={"liveview": {"enabled": True, "save": str(rrd)}},
    )
    result = run_serve(config, 1.5)
    assert result["chunks"] > 0
    data = rrd.read_bytes()
    for entity in (
        b"cameras/third_person",
        b"cameras/wrist",
        b"plan/chunk",
        b"joints/commanded",
        b"joints/measured",
        b"base/commanded",
        b"timing/lateness_ms",
    ):
        assert entity in data, entity


def test_liveview_without_rerun_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "rerun", None)  # as if rerun-sdk were not installed
    from onboard.liveview import _import_rerun

    with pytest.raises(UserError, match=r"pip install 'anchorvla-onboard\[liveview\]'"):
        _import_rerun()
