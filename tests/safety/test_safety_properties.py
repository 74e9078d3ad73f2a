"""Property tests of the envelope: whatever the policy outputs and whatever the state, the command sent is
inside every limit and its step from the previous command is within the rate limits; so for any tick length
(dt far outside the usual 10..200 ms) and any valid limits, and for the park steps of the exit sequence.

CI runs a few hundred examples per property; the full run (10,000 each) is
`HYPOTHESIS_PROFILE=full pytest tests/safety/test_safety_properties.py`.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.types import SO101_JOINTS, ArmState, BaseVelocity, Command
from safety.config import BaseLimits, JointLimit, SafetyConfig
from safety.envelope import SafetyLayer
from safety.limits import Limits, Previous, cap_residual, limit_command

FULL = os.environ.get("HYPOTHESIS_PROFILE") == "full"
PROFILE = settings(
    max_examples=10_000 if FULL else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EPS = 1e-9
N = len(SO101_JOINTS)

CONFIGS = {
    "default": SafetyConfig(),
    "no_relative": SafetyConfig(
        joints={
            n: j.model_copy(update={"max_relative_target": None}) for n, j in SafetyConfig().joints.items()
        }
    ),
}
LIMITS = {name: Limits.from_config(c, SO101_JOINTS) for name, c in CONFIGS.items()}

# Policy output: anything a float64 can hold (NaN, +-inf, huge, subnormal) beside plausible values.
anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 0.0]),
    st.floats(-4.0, 4.0),
)
fraction = st.floats(0.0, 1.0)
maybe_measured = st.one_of(st.floats(-4.0, 4.0), st.floats(allow_nan=True, allow_infinity=True))
dts = st.floats(0.002, 0.2)
# Tick lengths no configured rate gives (the layer's bounds must not depend on it): microseconds to hours.
odd_dts = st.one_of(st.floats(1e-6, 0.002), st.floats(0.2, 1e4))


@st.composite
def joint_limits(draw) -> JointLimit:
    """Any limits the config accepts, far from the defaults."""
    lo = draw(st.floats(-3.0, 3.0))
    width = draw(st.floats(0.05, 6.0))
    return JointLimit(
        min=lo,
        max=lo + width,
        soft_margin=draw(st.floats(0.0, 0.99)) * min(0.5, width / 2),
        max_velocity=draw(st.floats(0.01, 10.0)),
        max_step=draw(st.floats(1e-3, 1.0)),
        max_acceleration=draw(st.floats(0.01, 500.0)),
        max_relative_target=draw(st.one_of(st.none(), st.floats(1e-3, 3.14))),
    )


@st.composite
def safety_configs(draw) -> SafetyConfig:
    base = BaseLimits(
        max_vx=draw(st.floats(0.01, 3.8)),
        min_vx=-draw(st.floats(0.01, 2.5)),
        max_vy=draw(st.floats(0.01, 1.0)),
        max_wz=draw(st.floats(0.01, 4.0)),
        max_linear_acceleration=draw(st.floats(0.01, 10.0)),
        max_angular_acceleration=draw(st.floats(0.01, 20.0)),
    )
    return SafetyConfig(joints={n: draw(joint_limits()) for n in SO101_JOINTS}, base=base)


def vec(elements, n=N):
    return st.lists(elements, min_size=n, max_size=n).map(lambda x: np.array(x, dtype=np.float64))


@st.composite
def previous_commands(draw, limits: Limits) -> Previous:
    """A previous command inside the envelope (the layer only ever holds such a one)."""
    f = draw(vec(fraction))
    arm = limits.soft_lo + f * (limits.soft_hi - limits.soft_lo)
    v = (2 * draw(vec(fraction)) - 1) * limits.max_velocity
    bf = draw(vec(fraction, 3))
    base = limits.base_lo + bf * (limits.base_hi - limits.base_lo)
    return Previous(arm, v, base)


def speed_bounds(v_prev, v_max, a_max, dt):
    return np.maximum(np.minimum(v_prev - a_max * dt, 0), -v_max), np.minimum(
        np.maximum(v_prev + a_max * dt, 0), v_max
    )


def assert_inside(limits: Limits, arm, base, previous: Previous, dt: float):
    assert np.all(np.isfinite(arm)) and np.all(np.isfinite(base))
    assert np.all(arm >= limits.hard_lo - EPS) and np.all(arm <= limits.hard_hi + EPS)
    assert np.all(arm >= limits.soft_lo - EPS) and np.all(arm <= limits.soft_hi + EPS)
    step = arm - previous.arm
    assert np.all(np.abs(step) <= limits.max_velocity * dt + EPS)
    assert np.all(np.abs(step) <= limits.max_step + EPS)  # whatever dt
    lo, hi = speed_bounds(previous.arm_velocity, limits.max_velocity, limits.max_acceleration, dt)
    assert np.all(step >= lo * dt - EPS) and np.all(step <= hi * dt + EPS)
    assert np.all(base >= limits.base_lo - EPS) and np.all(base <= limits.base_hi + EPS)
    vmax = np.maximum(-limits.base_lo, limits.base_hi)
    blo, bhi = speed_bounds(previous.base, vmax, limits.base_acceleration, dt)
    assert np.all(base >= blo - EPS) and np.all(base <= bhi + EPS)


@PROFILE
@given(data=st.data(), name=st.sampled_from(sorted(LIMITS)))
def test_any_policy_output_and_state_gives_a_command_inside_the_envelope(data, name):
    limits = LIMITS[name]
    previous = data.draw(previous_commands(limits))
    desired = data.draw(vec(anything))
    desired_base = data.draw(vec(anything, 3))
    measured = data.draw(st.one_of(st.none(), vec(maybe_measured)))
    loads = data.draw(st.one_of(st.none(), vec(st.one_of(st.floats(-1.5, 1.5), st.just(np.nan)))))
    dt = data.draw(dts)

    out = limit_command(desired, desired_base, measured, loads, previous, dt, limits)

    assert_inside(limits, out.arm, out.base, previous, dt)
    if measured is not None:
        # The goal stays within reach of the measured position, or closes in on it from the previous goal.
        reach = limits.max_relative.copy()
        g = limits.gripper
        if loads is not None and np.isfinite(loads[g]) and abs(loads[g]) > limits.gripper_loaded_above:
            reach[g] = min(reach[g], limits.gripper_max_squeeze)
        known = np.isfinite(measured)
        m = np.where(known, measured, 0.0)
        outside = np.maximum(limits.soft_lo - m, 0) + np.maximum(m - limits.soft_hi, 0)
        bound = np.maximum.reduce([reach, np.abs(previous.arm - m), outside])
        assert np.all(np.abs(out.arm - m)[known] <= bound[known] + EPS)
    if np.all(np.isfinite(desired)) and np.all(np.isfinite(desired_base)):
        unchanged = np.array_equal(out.arm, desired) and np.array_equal(out.base, desired_base)
        assert unchanged == (out.reasons == ())


@PROFILE
@given(data=st.data(), config=safety_configs(), dt=st.one_of(odd_dts, dts))
def test_any_tick_length_and_any_limits_give_a_command_inside_the_envelope(data, config, dt):
    """A very low control rate (dt of seconds) does not let one tick's step grow with dt: it stays within
    max_step, so within every joint's range; a very short tick (microseconds) does not divide anything away."""
    limits = Limits.from_config(config, SO101_JOINTS)
    previous = data.draw(previous_commands(limits))
    desired = data.draw(vec(anything))
    measured = data.draw(st.one_of(st.none(), vec(maybe_measured)))
    loads = data.draw(st.one_of(st.none(), vec(st.floats(-1.5, 1.5))))

    out = limit_command(desired, data.draw(vec(anything, 3)), measured, loads, previous, dt, limits)

    assert_inside(limits, out.arm, out.base, previous, dt)
    assert np.all(np.abs(out.arm - previous.arm) <= limits.hard_hi - limits.hard_lo)


@PROFILE
@given(
    data=st.data(),
    config=safety_configs(),
    dt=st.one_of(odd_dts, dts),
    speed=st.floats(0.01, 2.0),
    ticks=st.integers(1, 40),
)
def test_park_steps_stay_inside_the_envelope_and_never_move_away_from_the_rest_pose(
    data, config, dt, speed, ticks
):
    """SafetyLayer.park (the exit sequence's steps, faulted or not), any limits and tick length: every step
    passes the envelope and stops the base; with the arm following its goals it moves at most the park speed
    and closes in on the rest pose (clipped into the soft limits), never overshooting or backing off. (With a
    measured pose far from the goal, max_relative_target pulls the goal toward the arm faster than the park
    speed, within the rate limits.)"""
    layer = SafetyLayer(config, SO101_JOINTS, dt)
    limits = layer.limits
    start = limits.soft_lo + data.draw(vec(fraction)) * (limits.soft_hi - limits.soft_lo)
    layer.seed(ArmState(0, SO101_JOINTS, start, np.zeros(N)))
    if data.draw(st.booleans()):
        layer.report_fault("test", "injected", 0)
    rest = data.draw(vec(st.floats(-4.0, 4.0)))
    target = np.clip(rest, limits.soft_lo, limits.soft_hi)
    follows = data.draw(st.booleans())  # else: measured positions are anything, or missing
    previous = Previous(layer.previous_goal, np.zeros(N), np.zeros(3))
    for i in range(ticks):
        measured = previous.arm if follows else data.draw(st.one_of(st.none(), vec(maybe_measured)))
        arm = None if measured is None else ArmState(i, SO101_JOINTS, measured, np.zeros(N))
        cmd = layer.park(rest, arm, dt, speed)
        base = cmd.base.as_array()
        assert cmd.hold and np.all(base == 0.0)
        assert_inside(limits, cmd.arm_positions, base, previous, dt)
        step = cmd.arm_positions - previous.arm
        if follows:
            assert np.all(np.abs(step) <= speed * dt + EPS)
            before, after = np.abs(previous.arm - target), np.abs(cmd.arm_positions - target)
            assert np.all(after <= before + EPS)
            assert np.all(np.sign(step) * np.sign(target - previous.arm) >= 0)  # no overshoot, no backing off
        previous = Previous(cmd.arm_positions, step / dt, base)


@PROFILE
@given(correction=vec(anything, 9), caps=vec(st.floats(0.0, 1.0), 9))
def test_residual_correction_is_capped_and_finite(correction, caps):
    capped, changed = cap_residual(correction, caps)
    assert np.all(np.isfinite(capped)) and np.all(np.abs(capped) <= caps)
    assert changed == (not np.array_equal(capped, correction))


SPECIAL = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 0.0, 1e6, -1e6])


def adversarial(rng: np.random.Generator, n: int) -> np.ndarray:
    """n values: plausible joint targets, mixed with specials (NaN, inf, huge, subnormal) and wild floats."""
    out = rng.uniform(-4.0, 4.0, n)
    kind = rng.integers(0, 4, n)
    out[kind == 1] = rng.choice(SPECIAL, int((kind == 1).sum()))
    out[kind == 2] = rng.normal(0.0, 1e3, int((kind == 2).sum()))
    return out


def episode(seed: int, ticks: int):
    """A run of ticks from a seed: policy outputs, measured states (sometimes missing or non-finite),
    loads, and events (fault, operator reset, hold). Drawn with numpy from a hypothesis-chosen seed: a
    long episode costs one draw, so the full profile's 10,000 episodes run in minutes."""
    rng = np.random.default_rng(seed)
    lim = LIMITS["default"]
    start = lim.hard_lo + rng.random(N) * (lim.hard_hi - lim.hard_lo)
    steps = []
    for _ in range(ticks):
        measured = (
            None
            if rng.random() < 0.2
            else np.where(rng.random(N) < 0.9, rng.uniform(-3, 3, N), adversarial(rng, N))
        )
        steps.append(
            {
                "desired": adversarial(rng, N),
                "base": adversarial(rng, 3),
                "measured": measured,
                "loads": None if rng.random() < 0.3 else rng.uniform(-1.2, 1.2, N),
                "event": rng.choice(["none", "none", "none", "none", "fault", "reset", "hold"]),
            }
        )
    return start, steps


@PROFILE
@given(
    seed=st.integers(0, 2**32 - 1),
    ticks=st.integers(1, 30),
    dt=st.sampled_from([1e-4, 1 / 100, 1 / 50, 1 / 15, 1 / 5, 2.0, 600.0]),
)
def test_every_command_the_layer_sends_passes_the_envelope_across_faults_and_holds(seed, ticks, dt):
    start, steps = episode(seed, ticks)
    layer = SafetyLayer(CONFIGS["default"], SO101_JOINTS, dt)
    limits = layer.limits
    layer.seed(ArmState(0, SO101_JOINTS, start, np.zeros(N)))
    previous = Previous(layer.previous_goal, np.zeros(N), np.zeros(3))
    for i, s in enumerate(steps):
        t = (i + 1) * int(dt * 1e9)
        arm = (
            None
            if s["measured"] is None
            else ArmState(t, SO101_JOINTS, s["measured"], np.zeros(N), loads=s["loads"])
        )
        if s["event"] == "fault":
            layer.report_fault("test", "injected", t)
        elif s["event"] == "reset":
            layer.reset()
        desired = (
            layer.hold(arm, t)
            if s["event"] == "hold"
            else Command(t, SO101_JOINTS, s["desired"], BaseVelocity(*s["base"]))
        )
        cmd = layer.filter(desired, arm, dt)
        base = cmd.base.as_array()
        assert_inside(limits, cmd.arm_positions, base, previous, dt)
        if layer.faulted:
            assert cmd.hold and np.all(base == 0.0)
        previous = Previous(cmd.arm_positions, (cmd.arm_positions - previous.arm) / dt, base)
