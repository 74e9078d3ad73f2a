"""LeRobot's own dataset code, run by .venv-lerobot's Python (tools/lerobot_venv.sh) for
test_lerobot_format.py; pytest does not collect this file and our venv cannot import lerobot.

    load ROOT OUT.npz           LeRobotDataset("local/...", root=ROOT): every item's indices, task, vectors and
                                decoded frames (uint8, H x W x 3), and the dataset stats LeRobot read
    create ROOT CALIBRATION     an SO-101 dataset made with LeRobotDataset.create: joints in LeRobot's units (degrees,
                                gripper 0..100), normalised by LeRobot's Feetech bus from raw ticks with CALIBRATION
                                (a LeRobot calibration JSON); the ticks behind each row go to ROOT.ticks.npy
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def load(root: str, out: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/anchorvla", root=root, video_backend="torchcodec")
    items = [ds[i] for i in range(len(ds))]
    arrays = {k: np.stack([it[k].numpy() for it in items]) for k in ("episode_index", "frame_index", "index")}
    for key in ("observation.state", "action"):
        arrays[key] = np.stack([it[key].numpy() for it in items])
    for key in ds.meta.video_keys:  # float (3, H, W) in [0, 1] -> uint8 (H, W, 3)
        arrays[key] = np.stack(
            [np.rint(it[key].numpy().transpose(1, 2, 0) * 255).astype(np.uint8) for it in items]
        )
    arrays["task"] = np.array([it["task"] for it in items])
    arrays["stats.observation.state.mean"] = ds.meta.stats["observation.state"]["mean"]
    arrays["total_episodes"] = np.array(ds.meta.total_episodes)
    np.savez(out, **arrays)


def create(root: str, calibration_path: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.motors import Motor, MotorCalibration, MotorNormMode
    from lerobot.motors.feetech import FeetechMotorsBus

    calibration = {
        n: MotorCalibration(**c) for n, c in json.loads(Path(calibration_path).read_text()).items()
    }
    modes = {n: MotorNormMode.RANGE_0_100 if n == "gripper" else MotorNormMode.DEGREES for n in calibration}
    motors = {n: Motor(c.id, "sts3215", modes[n]) for n, c in calibration.items()}
    bus = FeetechMotorsBus("/dev/null", motors, calibration)  # never connected: only its normalisation runs
    names = [f"{n}.pos" for n in calibration]
    vector = {"dtype": "float32", "shape": (len(names),), "names": names}
    image = {"dtype": "video", "shape": (32, 32, 3), "names": ["height", "width", "channels"]}
    features = {"action": vector, "observation.state": vector}
    features |= {"observation.images.front": image, "observation.images.wrist": image}
    ds = LeRobotDataset.create(
        "local/so101", 15, features, root=root, robot_type="so101_follower", vcodec="h264"
    )
    rng = np.random.default_rng(0)
    ticks_log = []

    def lerobot_units(ticks: list[int]) -> np.ndarray:
        values = bus._normalize({c.id: t for c, t in zip(calibration.values(), ticks)})
        return np.array([values[c.id] for c in calibration.values()], np.float32)

    for e in range(3):
        ticks = [int(rng.integers(c.range_min, c.range_max + 1)) for c in calibration.values()]
        for k in range(12):
            goal = [int(np.clip(t + rng.integers(-40, 41), c.range_min, c.range_max))
                    for t, c in zip(ticks, calibration.values())]  # fmt: skip
            shade = np.uint8(20 * e + 5 * k)
            ds.add_frame({
                "observation.state": lerobot_units(ticks), "action": lerobot_units(goal),
                "observation.images.front": np.full((32, 32, 3), shade, np.uint8),
                "observation.images.wrist": np.full((32, 32, 3), 255 - shade, np.uint8),
                "task": ["pick up the cube", "put it in the box"][e % 2],
            })  # fmt: skip
            ticks_log.append(ticks + goal)
            ticks = goal
        ds.save_episode()
    ds.finalize()
    np.save(f"{root}.ticks.npy", np.array(ticks_log))


if __name__ == "__main__":
    {"load": load, "create": create}[sys.argv[1]](*sys.argv[2:])
