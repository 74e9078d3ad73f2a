"""Shared by the tests/drivers/test_go2_*.py and tests/onboard/test_go2_runtime.py: loopback DDS for this process and its children."""

from __future__ import annotations

import os

import pytest

from drivers.unitree.dds_config import dds_config_xml


@pytest.fixture(autouse=True, scope="module")
def loopback_dds():
    """CYCLONEDDS_URI = the loopback config for every participant this test module (and its children) make."""
    old = os.environ.get("CYCLONEDDS_URI")
    os.environ["CYCLONEDDS_URI"] = dds_config_xml("lo")
    yield
    if old is None:
        os.environ.pop("CYCLONEDDS_URI", None)
    else:
        os.environ["CYCLONEDDS_URI"] = old
