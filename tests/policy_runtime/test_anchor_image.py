"""AnchorVLA4D's anchor image: the episode's first frame of each camera beside the current one, in training (the
dataset), inference (torch engine, ONNX bundle), the slow loop (kept per episode, reset at operator start) and the
recorder."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import UserError
from drivers.types import ArmState, Frame
from onboard.config import Config
from onboard.control import Operator, Peer
from onboard.devices import build_engine
from onboard.loops import TickSnapshot
from onboard.runtime import Devices, Runtime
from onboard.standins import StandinArm, StandinCamera
from policy_runtime.dataset import EpisodeRecord, load_dataset, write_dataset
from policy_runtime.types import Observation
from tests.options_helpers import options_bundle
from tools.demo_checkpoint import CAMERAS, build_random_checkpoint


@pytest.fixture(scope="module")
def anchor_checkpoint():
    return options_bundle()[0]


def _frame(camera: str, value: int, t_ns: int = 0) -> Frame:
    rng = np.random.default_rng(value)
    return Frame(t_ns, camera, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _obs(current: int, anchor: int | None) -> Observation:
    joints = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
    arm = ArmState(0, joints, np.zeros(6), np.zeros(6))
    from drivers.types import BaseState

    base = BaseState(0, np.zeros(3), 0.0, np.zeros(3), 0.0)
    frames = {c: _frame(c, current + k) for k, c in enumerate(CAMERAS)}
    anchors = {} if anchor is None else {c: _frame(c, anchor + k) for k, c in enumerate(CAMERAS)}
    return Observation(0, arm, base, frames, "pick up the cup", anchors)


def test_dataset_gives_each_sample_its_episodes_first_frame_after_the_current_ones(tmp_path):
    frames, cams = 4, ["front", "wrist"]
    episodes = [
        EpisodeRecord(
            states=np.zeros((frames, 2)),
            actions=np.zeros((frames, 1)),
            task="t",
            # image value = 100*episode + 10*camera + frame, so every image says where it came from
            images={
                c: np.full((frames, 8, 8, 3), 0, np.uint8)
                + (100 * e + 10 * k + np.arange(frames))[:, None, None, None].astype(np.uint8)
                for k, c in enumerate(cams)
            },
        )  # fmt: skip
        for e in range(2)
    ]
    root = write_dataset(tmp_path, episodes, 15.0, ["base.vx"], ["arm.gripper", "arm.elbow_flex"])
    data = load_dataset(root, horizon=2)
    sample = int(np.flatnonzero((data.episode == 1) & (data.frame == 3))[0])
    images = data.policy_images(np.array([sample]), ("wrist", "front"), anchor_image=True)[0]
    # current wrist, front; then frame 0 (within H.264's rounding of a flat grey)
    assert np.allclose([int(im[0, 0, 0]) for im in images], [113, 103, 110, 100], atol=2)
    plain = data.policy_images(np.array([sample]), ("wrist", "front"), anchor_image=False)[0]
    assert np.allclose([int(im[0, 0, 0]) for im in plain], [113, 103], atol=2)


def test_torch_engine_reads_the_anchor_frames_and_refuses_an_observation_without_them(anchor_checkpoint):
    from policy_runtime.engines.torch_engine import TorchEngine

    def chunk(obs):
        return TorchEngine(anchor_checkpoint, seed=0).infer(obs).actions

    same_current = chunk(_obs(1, 50)), chunk(_obs(1, 50)), chunk(_obs(1, 70))
    assert np.array_equal(same_current[0], same_current[1])
    assert not np.allclose(same_current[0], same_current[2])  # only the anchor frames differ
    with pytest.raises(UserError, match="anchor image"):
        TorchEngine(anchor_checkpoint).infer(_obs(1, None))


def test_a_checkpoint_without_the_flag_ignores_anchor_frames(tmp_path):
    from policy_runtime.engines.torch_engine import TorchEngine

    plain = build_random_checkpoint(tmp_path / "plain", seed=3, inference_steps=3)
    a = TorchEngine(plain, seed=0).infer(_obs(1, 50)).actions
    b = TorchEngine(plain, seed=0).infer(_obs(1, None)).actions
    assert np.array_equal(a, b)


def test_onnx_bundle_takes_the_extra_images():
    from policy_runtime.bundle import read_manifest
    from policy_runtime.engines.onnx_engine import OnnxEngine
    from tools.bundle_samples import HELD_OUT_SEED, synthetic_samples

    _checkpoint, bundle = options_bundle()
    manifest = read_manifest(bundle)
    assert manifest.runtime.image.anchor_image and manifest.runtime.image.images_per_observation == 4
    assert synthetic_samples(manifest.runtime, bundle, 1, HELD_OUT_SEED)[0].images.shape[1] == 4
    assert manifest.variants["fp32"].status == "passed"  # verified against torch on 4-image inputs
    engine = OnnxEngine(bundle, precision="fp32", providers="cpu")
    engine.warmup()
    feed = engine.inputs.images(_obs(1, 50))
    assert feed.shape == (1, 4, 3, 32, 32)
    other = engine.inputs.images(_obs(1, 70))
    assert np.array_equal(feed[:, :2], other[:, :2]) and not np.array_equal(feed[:, 2:], other[:, 2:])
    assert not np.array_equal(engine.infer(_obs(1, 50)).actions, engine.infer(_obs(1, 70)).actions)
    with pytest.raises(UserError, match="anchor image"):
        engine.infer(_obs(1, None))


def _standin_runtime(engine=None) -> Runtime:
    config = Config.model_validate({"policy": {"standin": {"compute_ms": 0}}})
    joints = tuple(config.robot.arm.joint_names)
    cameras = [StandinCamera(c.name, fps=1000) for c in config.robot.cameras]
    return Runtime(config, Devices(StandinArm(joints), None, cameras), engine or build_engine(config))


def _observe(runtime: Runtime) -> Observation:
    arm = runtime.devices.arm
    arm.start()
    tick = max(f.t_ns for f in runtime.fast.frames().values())
    runtime.fast.latest = TickSnapshot(tick, arm.read_state(), None)
    obs = runtime.slow.observe()
    assert obs is not None
    return obs


def test_slow_loop_keeps_the_first_frame_until_an_operator_start_begins_a_new_episode():
    import time

    runtime = _standin_runtime()
    first = _observe(runtime)
    assert {n: f.t_ns for n, f in first.anchor_frames.items()} == {n: f.t_ns for n, f in first.frames.items()}
    time.sleep(0.005)  # the stand-in cameras make a new frame every millisecond
    later = _observe(runtime)
    assert later.frames["third_person"].t_ns > first.frames["third_person"].t_ns
    assert later.anchor_frames == first.anchor_frames  # the episode's anchor stays
    Operator(runtime).apply("start", {}, Peer("test"))  # a new episode, even without a new instruction
    time.sleep(0.005)
    after = _observe(runtime)
    assert after.anchor_frames["third_person"].t_ns == after.frames["third_person"].t_ns
    assert after.anchor_frames["third_person"].t_ns > first.anchor_frames["third_person"].t_ns


def test_recorder_stores_the_anchor_frames_once_per_episode(tmp_path):
    import time

    from onboard.recorder import EpisodeRecorder, ResidualTap, episode_paths, read_episode
    from onboard.standins import StandinEngine

    config = Config.model_validate({"recording": {"root": str(tmp_path), "images": True}})
    joints = tuple(config.robot.arm.joint_names)
    tap = ResidualTap(StandinEngine(joints, round(1e9 / 15), compute_ms=0))
    runtime = _standin_runtime(tap)
    recorder = EpisodeRecorder(config, runtime, tap)
    operator = Operator(runtime)
    operator.listeners.append(recorder.on_operator)
    for episode in range(2):
        operator.apply("start", {"instruction": f"task {episode}"}, Peer("test"))
        for _ in range(3):
            obs = _observe(runtime)
            chunk = tap.infer(obs)
            for listener in runtime.slow.chunk_listeners:
                listener(obs, chunk)
            time.sleep(0.003)
        operator.apply("stop", {}, Peer("test"))
    recorder.close()
    for episode in range(2):
        _meta, _frames, events = read_episode(episode_paths(tmp_path, episode)[1])
        chunks = [e for e in events if e["kind"] == "chunk"]
        stored = [e["anchor_images"] for e in chunks]
        assert stored[0] is not None and all(s is None for s in stored[1:])
        assert {i["camera"] for i in stored[0]} == {c.name for c in config.robot.cameras}
        first_images = {i["camera"]: i["t_ns"] for i in chunks[0]["images"]}
        assert {i["camera"]: i["t_ns"] for i in stored[0]} == first_images


def test_each_emulated_task_episode_starts_with_its_own_anchor_frames():
    """`anchorvla eval` runs the controller's loops per episode on one emulated robot: the task reset (a new
    episode) gives new anchor frames, and within an episode they stay the first ones."""
    from onboard.config import load_config
    from onboard.standins import StandinEngine
    from sim.eval import run_episode, sim_cameras
    from sim.lockstep import SimRobot
    from tests.conftest import REPO

    config = load_config(REPO / "configs" / "sim.yaml")
    seen: list[tuple[dict, dict]] = []

    class Watching(StandinEngine):
        def infer(self, obs):
            seen.append(
                (
                    {n: f.t_ns for n, f in obs.anchor_frames.items()},
                    {n: f.t_ns for n, f in obs.frames.items()},
                )
            )
            return super().infer(obs)

    class ShortEpisodes(SimRobot):
        def start_episode(self, task_name, seed):
            task = super().start_episode(task_name, seed)
            task.max_steps = 45  # 3 s of virtual time: enough for several chunks
            return task

    robot = ShortEpisodes(sim_cameras(config))
    engine = Watching(tuple(robot.arm.joint_names), round(1e9 / 15), compute_ms=0)
    per_episode = []
    for seed in (1, 2):
        start = len(seen)
        run_episode(config, engine, robot, "touch", seed, latency_ms=60)
        per_episode.append(seen[start:])
    for calls in per_episode:
        assert len(calls) > 3
        assert calls[0][0] == calls[0][1]  # the first observation's frames are the anchors
        assert all(anchors == calls[0][0] for anchors, _ in calls)  # and stay so
        assert calls[-1][1] != calls[0][1]
    assert per_episode[1][0][0] != per_episode[0][0][0]  # the next episode keeps its own first frames
