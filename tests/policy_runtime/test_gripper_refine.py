"""AnchorRefine's gripper refinement: the head's loss and learned margin, the fast loop's hysteresis on the
decision, the bundle's extra output, and the holding-torque cap while the decision is 'closed'."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.emulated.world import World
from onboard.gripper import GripperHysteresis
from onboard.loops import FastLoop
from onboard.schedule import ChunkSchedule
from onboard.telemetry import RunStats
from policy_runtime.model.config import GripperHeadConfig, HeadConfig
from policy_runtime.model.gripper import GripperHead, closed_labels, gripper_loss
from policy_runtime.types import ActionChunk, GripperPlan
from safety.config import SafetyConfig
from safety.envelope import SafetyLayer
from safety.limits import Limits, Previous, limit_command
from sim.lockstep import SimArm, VirtualClock
from tools.demo_checkpoint import ACTION_LAYOUT

GRIPPER_CFG = GripperHeadConfig(channel_index=0, hidden=16, margin_weight=1.0, band_quantile=0.2)


# -- hysteresis -------------------------------------------------------------------------------------------------
def _decisions(logits, margin):
    h = GripperHysteresis()
    return [h.update(float(v), margin) for v in logits]


def _switches(decisions) -> int:
    return sum(a != b for a, b in zip(decisions, decisions[1:]))


def test_noisy_logit_at_the_boundary_does_not_chatter():
    rng = np.random.default_rng(0)
    noisy = rng.uniform(-0.9, 0.9, 300)  # crosses 0 about every other tick, never leaves the band of 1.0
    assert _switches([v > 0 for v in noisy]) > 100  # a plain sign decision chatters
    assert _switches(_decisions(noisy, margin=1.0)) == 0


def test_clear_crossing_switches_once_each_way():
    rng = np.random.default_rng(1)
    logits = np.r_[np.full(20, -3.0), np.full(20, 3.0), np.full(20, -3.0)] + rng.uniform(-0.5, 0.5, 60)
    decisions = _decisions(logits, margin=1.0)
    assert (
        decisions[:20] == [False] * 20 and decisions[20:40] == [True] * 20 and decisions[40:] == [False] * 20
    )
    # a slow ramp through the band switches once, when it leaves the band, not when it crosses zero
    ramp = _decisions(np.linspace(-2, 2, 41), margin=1.0)
    assert _switches(ramp) == 1 and ramp.index(True) == 31  # first value above +1.0


def test_nonfinite_logits_never_switch():
    h = GripperHysteresis()
    assert h.update(float("nan"), 1.0) is None  # no decision yet
    assert h.update(2.0, 1.0) is True
    for bad in (float("nan"), float("-inf"), float("inf")):
        assert h.update(bad, 1.0) is True
    h.reset()
    assert h.update(-0.1, 1.0) is False  # a new episode decides afresh from the sign


def test_open_decision_runs_the_plans_channel_when_the_plan_has_no_open_goal():
    from onboard.schedule import PlannedAction

    fast = FastLoop.__new__(FastLoop)  # only the decision's state is needed here
    fast.gripper = GripperHysteresis()
    action = np.arange(9, dtype=np.float64) / 10
    action[8] = 0.55  # the plan's gripper value
    for open_value, logit, expected, closed in [
        (0.8, -3.0, 0.8, False),  # the open goal replaces the plan's value
        (None, -3.0, 0.55, False),  # open: the plan's own value runs
        (None, 0.5, 0.55, False),  # inside the band: still open
        (None, 3.0, 0.0, True),  # closed: the closed goal
        (None, -0.5, 0.0, True),  # inside the band: still closed
    ]:
        plan = GripperPlan(8, np.full(4, logit), 1.0, 0.0, open_value)
        chunk = ActionChunk(0, 1, tuple(ACTION_LAYOUT), np.zeros((4, 9)), gripper=plan)
        out, is_closed = fast._gripper_decision(PlannedAction(0, action, chunk, 1), action)
        assert (out[8], is_closed) == (expected, closed)
        assert np.array_equal(out[:8], action[:8])


# -- the head's loss and its learned margin ----------------------------------------------------------------------
def test_labels_threshold_the_demonstrated_gripper_at_the_middle_of_its_range():
    actions = torch.tensor([[-1.0, -0.2, 0.0, 0.3, 1.0]])
    assert closed_labels(actions).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]


def test_loss_is_bce_plus_the_margin_term():
    logits = torch.tensor([[2.0, -0.5, 0.3]], requires_grad=True)
    actions = torch.tensor([[-1.0, -1.0, 1.0]])  # closed, closed, open
    margin = torch.tensor(1.0, requires_grad=True)
    loss, logs = gripper_loss(logits, margin, actions, GRIPPER_CFG)
    y, labels = torch.tensor([1.0, 1.0, -1.0]), torch.tensor([1.0, 1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0].detach(), labels)
    hinge = torch.relu(1.0 - y * logits[0].detach()).mean()
    assert float(loss.detach()) == pytest.approx(float(bce + 1.0 * (hinge - 0.2 * 1.0)), rel=1e-6)
    assert logs["grip_acc"] == pytest.approx(1 / 3)
    # the logits learn from the cross-entropy alone (the margin term would pin ambiguous ones at the band's edge);
    # the margin's gradient is w * (share of steps inside the band or on the wrong side - q) = 2/3 - 0.2
    loss.backward()
    assert torch.allclose(logits.grad, (torch.sigmoid(logits.detach()) - labels) / 3)
    assert float(margin.grad) == pytest.approx(2 / 3 - 0.2)


def test_learned_margin_settles_where_the_band_covers_its_quantile_of_steps():
    """With the logits fixed, descending the loss in the margin alone puts it at the band_quantile of y*logit."""
    rng = np.random.default_rng(2)
    signed = torch.tensor(np.abs(rng.normal(2.0, 1.5, (64, 8))), dtype=torch.float32)
    actions = -torch.ones(64, 8)  # all closed: y = +1, so y*logit = signed
    head = GripperHead(GRIPPER_CFG, HeadConfig(horizon=8, action_dim=1, proprio_dim=1, cond_dim=4, dim=8))
    opt = torch.optim.SGD([head.raw_margin], lr=1.0)
    for _ in range(200):
        loss, _ = gripper_loss(signed, head.margin, actions, GRIPPER_CFG)
        opt.zero_grad()
        loss.backward()
        opt.step()
    inside = float((signed < head.margin).float().mean())
    assert inside == pytest.approx(GRIPPER_CFG.band_quantile, abs=0.03)


def test_head_learns_open_close_from_the_plan():
    torch.manual_seed(0)
    cfg = HeadConfig(horizon=4, action_dim=2, proprio_dim=3, cond_dim=4, dim=8)
    head = GripperHead(GRIPPER_CFG, cfg)
    context, proprio = torch.randn(256, 8), torch.randn(256, 3)
    plan = torch.randn(256, 4, 2)
    gripper = torch.tanh(3 * plan[..., 0] + proprio[:, :1])  # closed where the planned channel is low
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss, logs = gripper_loss(head(context, proprio, plan), head.margin, gripper, GRIPPER_CFG)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first and logs["grip_acc"] > 0.9


# -- the holding-torque cap -------------------------------------------------------------------------------------
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
LIMITS = Limits.from_config(SafetyConfig(), JOINTS)
G = JOINTS.index("gripper")
SQUEEZE = SafetyConfig().gripper.max_squeeze


@settings(max_examples=300, deadline=None)
@given(
    measured=st.floats(-0.1, 1.6),
    lead=st.floats(-SQUEEZE, SQUEEZE),
    desired=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-100, 100)),
    speed=st.floats(-2.0, 2.0),
)
def test_closed_decision_keeps_the_gripper_goal_within_the_squeeze_whatever_the_policy_asks(
    measured, lead, desired, speed
):
    """No load reading (the arm reports loads only at its health rate; the lockstep arm never): the decision alone
    keeps the goal within max_squeeze of the measured gripper, so the servo's holding torque stays capped."""
    measured = float(np.clip(measured, LIMITS.soft_lo[G], LIMITS.soft_hi[G]))
    m = np.zeros(6)
    m[G] = measured
    prev_goal = m.copy()
    prev_goal[G] = float(np.clip(measured + lead, LIMITS.soft_lo[G], LIMITS.soft_hi[G]))
    velocity = np.zeros(6)
    velocity[G] = speed
    goal = m.copy()
    goal[G] = desired
    previous = Previous(prev_goal, velocity, np.zeros(3))
    out = limit_command(goal, np.zeros(3), m, None, previous, 1 / 15, LIMITS, gripper_closed=True)
    assert abs(out.arm[G] - measured) <= SQUEEZE + 1e-9
    unknown = m.copy()
    unknown[G] = np.nan  # the gripper's position not read this tick: its goal stays put
    out = limit_command(goal, np.zeros(3), unknown, None, previous, 1 / 15, LIMITS, gripper_closed=True)
    assert out.arm[G] == prev_goal[G]


class _ScriptedEngine:
    """A policy that outputs whatever the test says: gripper values (NaN included) and logits."""

    channels = tuple(ACTION_LAYOUT)
    dt_ns = round(1e9 / 15)

    def residual(self, obs, chunk, j, planned):
        return None


def _lockstep(decide: bool, seed: int, object_width: float = 0.4):
    """The fast loop on the lockstep arm for 12 chunks of 8 ticks; the gripper's horn blocks at `object_width` (an
    object in the jaws). Returns the gripper servo's load each tick (fraction of max torque), the servo, the loop."""
    world, clock = World(), VirtualClock()
    arm = SimArm(world, clock)
    start = np.zeros(6)
    start[G] = 0.8  # open
    arm.place(start)
    safety = SafetyLayer(SafetyConfig(), JOINTS, 1 / 15, 8)
    safety.seed(arm.read_state())
    engine = _ScriptedEngine()
    fast = FastLoop(
        arm=arm, base=None, cameras=[], engine=engine, schedule=ChunkSchedule(8, "none"), safety=safety,
        stats=RunStats(), rate_hz=15, fine_wait_ms=0.0, instruction="", use_residual=False,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    servo, loads = arm.servos[G], []
    for _ in range(12):
        actions = np.zeros((8, len(ACTION_LAYOUT)))
        actions[:, 3:8] = start[:5]
        # the policy's gripper channel: anything, including commands to crush the object and NaN
        actions[:, 8] = rng.choice([-5.0, 0.0, 0.3, 1.5, np.nan], 8)
        logits = rng.normal(4.0, 3.0, 8)  # mostly 'closed', sometimes dipping into or below the band
        logits[rng.random(8) < 0.1] = np.nan
        plan = GripperPlan(8, logits, 1.0, 0.0, 0.8) if decide else None
        fast.schedule.push(
            ActionChunk(clock.now_ns, engine.dt_ns, engine.channels, actions, gripper=plan), clock.now_ns
        )
        for _ in range(8):
            fast.tick(clock.now_ns)
            # the object stops the jaws closing past its width; they open freely
            closing = fast.last_command.arm_positions[G] < arm.read_state().positions[G]
            servo.faults.stalled = closing and arm.read_state().positions[G] <= object_width
            clock.advance(fast.period_ns)
            loads.append(abs(servo.load) / 1000.0)
    return loads, servo, fast


def test_servo_holding_torque_stays_under_the_cap_while_the_decision_is_closed():
    """Lockstep emulated STS3215 servos (the pty emulator's physics) under the fast loop and the envelope: an
    object blocks the jaws at 0.4 rad; the policy's gripper channel and logits are random (NaN included)."""
    for seed in range(3):
        loads, servo, fast = _lockstep(decide=True, seed=seed)
        p_gain = servo.value("P_Coefficient")
        squeeze_ticks = SQUEEZE / (2 * math.pi / 4096)
        cap = (
            p_gain * 0.5 * (squeeze_ticks + 1) / 1000.0
        )  # the emulator's P effort at max_squeeze (+1 tick rounding)
        assert max(loads) > 0.3, "the jaws closed on the object and squeezed it"
        assert max(loads) <= cap < servo.value("Torque_Limit") / 1000.0
        assert fast.gripper.closed is not None
    # Without the head, the continuous channel (clipped to the soft limit) squeezes up to the servo's Torque_Limit.
    loads, servo, _ = _lockstep(decide=False, seed=0)
    assert max(loads) == pytest.approx(servo.value("Torque_Limit") / 1000.0)


# -- bundle ----------------------------------------------------------------------------------------------------
def test_bundle_exports_the_logits_and_the_margin_and_the_engines_agree():
    from policy_runtime.bundle import read_manifest
    from policy_runtime.engines.onnx_engine import OnnxEngine
    from policy_runtime.engines.torch_engine import TorchEngine
    from policy_runtime.model.checkpoint import load_checkpoint
    from tests.options_helpers import options_bundle
    from tests.policy_runtime.test_anchor_image import _obs

    checkpoint, bundle = options_bundle()
    policy, config = load_checkpoint(checkpoint)
    manifest = read_manifest(bundle)
    spec = manifest.runtime.gripper
    assert spec.channel == ACTION_LAYOUT.index("arm.gripper")
    assert spec.margin == pytest.approx(float(policy.gripper_head.margin.detach()))
    assert manifest.graphs["head.onnx"].verification["export_check_gripper_logits_max_abs"] < 1e-4
    assert manifest.variants["fp32"].verification["gripper_sign_agreement"] == 1.0
    obs = _obs(1, 50)
    ours = OnnxEngine(bundle, precision="fp32", providers="cpu").infer(obs).gripper
    reference = TorchEngine(checkpoint, seed=0).infer(obs).gripper
    assert ours.channel == reference.channel and ours.margin == pytest.approx(reference.margin)
    assert (ours.closed_value, ours.open_value) == (config.normalization.action_low[spec.channel],
                                                    config.normalization.action_high[spec.channel])  # fmt: skip
    assert ours.logits.shape == (8,) and np.isfinite(ours.logits).all()


def test_verify_gates_the_gripper_sign_agreement():
    """A variant that flips the gripper's open/close decision fails verification (it would open or close the
    gripper where the reference does not); here the reference's logits are negated to stand for such a variant."""
    from policy_runtime.bundle import GRIPPER_AGREEMENT_GATE, read_manifest
    from policy_runtime.model.checkpoint import load_checkpoint
    from tests.options_helpers import options_bundle
    from tools.bundle_samples import synthetic_samples
    from tools.verify import _variant_engine, torch_reference, verify_variant

    checkpoint, bundle = options_bundle()
    policy, _ = load_checkpoint(checkpoint)
    manifest = read_manifest(bundle)
    samples = synthetic_samples(manifest.runtime, bundle, 4, seed=11)
    ref = torch_reference(policy, samples)
    engine = _variant_engine(bundle, manifest, "fp32", threads=1)
    try:
        _, figures, gates, passed = verify_variant(engine, manifest, samples, ref, "fp32")
        assert passed and gates["gripper_sign_agreement"] == GRIPPER_AGREEMENT_GATE
        assert figures["gripper_sign_agreement"] == 1.0
        ref.gripper = [-logits for logits in ref.gripper]
        _, figures, _, passed = verify_variant(engine, manifest, samples, ref, "fp32")
        assert not passed and figures["gripper_sign_agreement"] < GRIPPER_AGREEMENT_GATE
    finally:
        engine.close()


# -- trainer ---------------------------------------------------------------------------------------------------
def test_train_turns_both_options_on_and_refuses_an_unknown_gripper_channel(tmp_path, capsys):
    from safetensors.torch import load_file

    from anchorvla.cli import main as cli
    from policy_runtime.model.checkpoint import load_checkpoint
    from tests.bundle_helpers import write_demo_dataset

    data = write_demo_dataset(tmp_path / "data", seed=5, episodes=2, frames=6)
    common = ["train", "--dataset", str(data), "--horizon", "4", "--num-anchors", "2", "--steps", "3",
              "--residual-steps", "1", "--batch", "4", "--threads", "1", "--no-progress"]  # fmt: skip
    out = tmp_path / "ckpt"
    assert cli([*common, "--out", str(out), "--anchor-image", "--gripper-head", "arm.gripper"]) == 0
    assert cli([*common, "--out", str(tmp_path / "plain"), "--anchor-image"]) == 0
    with_head, without = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "plain" / "model.safetensors")),
    )
    # the head learns in a stage of its own, after the main model's (same seed: the same main weights)
    assert {k for k in with_head if not k.startswith("gripper_head.")} == set(without)
    assert all(torch.equal(with_head[k], without[k]) for k in without)
    policy, config = load_checkpoint(out)
    assert config.architecture.backbone.anchor_image
    assert config.architecture.gripper_head.channel_index == ACTION_LAYOUT.index("arm.gripper")
    assert policy.gripper_head is not None and float(policy.gripper_head.margin) > 0
    assert cli([*common, "--out", str(tmp_path / "bad"), "--gripper-head", "arm.claw"]) == 2
    assert "--gripper-head arm.claw: not an action channel" in capsys.readouterr().err
    assert (
        cli(
            [*common, "--out", str(tmp_path / "bad"), "--gripper-head", "arm.gripper", "--gripper-steps", "0"]
        )
        == 2
    )
    assert "give --gripper-steps >= 1" in capsys.readouterr().err


def test_gripper_from_puts_a_trained_head_on_a_finished_checkpoint_and_changes_nothing_else(tmp_path, capsys):
    from safetensors.torch import load_file

    from anchorvla.cli import main as cli
    from policy_runtime.model.checkpoint import load_checkpoint
    from tests.bundle_helpers import write_demo_dataset

    data = write_demo_dataset(tmp_path / "data", seed=5, episodes=2, frames=6)
    common = ["train", "--dataset", str(data), "--horizon", "4", "--num-anchors", "2", "--batch", "4",
              "--threads", "1", "--no-progress"]  # fmt: skip
    base = tmp_path / "base"
    assert cli([*common, "--out", str(base), "--steps", "3", "--residual-steps", "1"]) == 0
    out = tmp_path / "with_head"
    grip = ["--gripper-from", str(base), "--gripper-head", "arm.gripper", "--gripper-steps", "4"]
    assert cli([*common, "--out", str(out), *grip]) == 0
    for name in ("model.safetensors", "residual.safetensors"):
        before, after = load_file(str(base / name)), load_file(str(out / name))
        assert {k for k in after if not k.startswith("gripper_head.")} == set(before)
        assert all(torch.equal(after[k], before[k]) for k in before), name
    policy, config = load_checkpoint(out)
    assert policy.gripper_head is not None and config.provenance["gripper_from"] == str(base)
    fresh = GripperHead(config.architecture.gripper_head, config.architecture.head)
    assert not torch.equal(policy.gripper_head.raw_margin, fresh.raw_margin)  # it trained
    assert cli([*common, "--out", str(tmp_path / "bad"), "--gripper-from", str(base)]) == 2
    assert "give --gripper-head CHANNEL" in capsys.readouterr().err
