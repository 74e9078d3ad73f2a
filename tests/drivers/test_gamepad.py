"""The gamepad's event handling (python-evdev's event and code names): axes scaled by their own range with up
positive, buttons and the d-pad onto the Go2 remote's names. Reading a real /dev/input device needs a pad (or
/dev/uinput, which test machines lack), so the device thread itself is not exercised here."""

from __future__ import annotations

import pytest

from drivers.gamepad import StickState, scaled


def test_axes_scale_by_their_own_range_with_up_positive():
    state = StickState({"ABS_X": (0, 255), "ABS_Y": (0, 255), "ABS_RX": (-32768, 32767), "ABS_RY": (-32768, 32767)})
    state.apply("EV_ABS", "ABS_X", 255)
    state.apply("EV_ABS", "ABS_Y", 0)  # evdev: pushed up is the minimum
    state.apply("EV_ABS", "ABS_RX", -32768)
    sticks = state.sticks()
    assert (sticks.lx, sticks.ly, sticks.rx, sticks.ry) == (1.0, 1.0, -1.0, 0.0)
    assert scaled(128, 0, 256) == pytest.approx(0.0)
    assert scaled(7, 5, 5) == 0.0  # an axis with no range reads as centred


def test_buttons_and_dpad_map_to_the_remote_names_while_held():
    state = StickState({})
    state.apply("EV_KEY", "BTN_START", 1)
    state.apply("EV_KEY", "BTN_WEST", 1)
    state.apply("EV_ABS", "ABS_HAT0Y", -1)
    assert state.sticks().buttons == {"start", "Y", "up"}
    state.apply("EV_KEY", "BTN_START", 0)
    state.apply("EV_ABS", "ABS_HAT0Y", 0)
    assert state.sticks().buttons == {"Y"}
    state.apply("EV_ABS", "ABS_X", 100)  # an axis whose range the device did not report is ignored
    assert state.sticks().lx == 0.0


def test_evdev_events_update_the_sticks_through_their_codes():
    from evdev import InputEvent, ecodes

    from drivers.gamepad import apply_event

    state = StickState({"ABS_X": (-32768, 32767), "ABS_Y": (-32768, 32767), "ABS_RX": (-32768, 32767)})
    for type_, code, value in [
        (ecodes.EV_ABS, ecodes.ABS_Y, -32768),  # left stick pushed fully up
        (ecodes.EV_ABS, ecodes.ABS_RX, 32767),
        (ecodes.EV_KEY, ecodes.BTN_SOUTH, 1),  # evdev names it BTN_A and BTN_SOUTH (and BTN_GAMEPAD)
        (ecodes.EV_KEY, ecodes.BTN_SELECT, 1),
        (ecodes.EV_KEY, ecodes.BTN_SELECT, 0),
        (ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
    ]:
        apply_event(state, InputEvent(0, 0, type_, code, value))
    sticks = state.sticks()
    assert sticks.ly == 1.0 and sticks.rx == 1.0 and sticks.lx == 0.0
    assert sticks.buttons == {"A"}
