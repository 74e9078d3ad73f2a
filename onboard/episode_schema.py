"""The recorded episode format, in one place.

Under the recording root, two things, each for its own use:
  dataset/                       for training: a LeRobotDataset v3 (policy_runtime/lerobot_format.py) that every
                                 episode is added to once joined (onboard/episode_dataset.py): observation.state,
                                 action, the task, and with `recording.images` each camera's frame of every tick
                                 as MP4 video. `anchorvla train --dataset <root>/dataset` and LeRobot read it.
  data/, events/, meta/          for `anchorvla replay`: the detailed per-tick log below (float64 decisions, the
                                 chunks with their observation's images, operator events), which no trainer reads.
  video/episode_NNNNNN.parts/    transient: the episode's per-tick frames, one MP4 per camera per part file
                                 (<camera>/000000.mp4, ...), until the episode is in dataset/; the folder (empty
                                 without images) marks an episode not yet added, which the next start adds.

The replay log's layout:
  data/episode_NNNNNN.parquet    a finished episode: one row per fast-loop tick (frame)
  events/episode_NNNNNN.parquet  its chunks and operator commands, in the order they happened
  meta/episodes.jsonl            one line per finished episode (index, task, length, chunks, end_reason, bytes)

While an episode is written, and after a crash cut it short, it is a folder of parts beside where the file
will be:
  data/episode_NNNNNN.parts/000000.parquet, 000001.parquet, ...    (events/ alike)
each part a complete parquet file (same schema and metadata) holding at most PART_S of frames and the events
of the same stretch; its video parts are written before it, so rows on disk always have their frames. A part
is written as a hidden `.NNNNNN.parquet.tmp`, fsynced and renamed, so every part present is readable: a
SIGKILL, watchdog abort or power cut loses at most the last PART_S (plus what the writer had not reached). When the episode ends its parts are joined into the one file (written hidden, then
renamed) and the folder is removed; an episode left as parts (the process died, or the disk filled) is joined
when the recorder next starts (end_reason "unfinished"), then added to dataset/ with its rows up to the kill,
and `read_episode` reads either form meanwhile.
Reading the parts in name order with any parquet reader gives the same rows as the joined file.

Frame columns. Those the dataset is made from: episode_index, frame_index, timestamp (s since the episode's
first frame, float32), task, `observation.state` (float32: arm joint positions in rad then base body velocity
vx, vy, wz; names in `anchorvla.state_names`) and `action` (float32: the command sent, in the policy's channel
order, names in `anchorvla.channels`).
The rest is exact float64 so `anchorvla replay` can re-run the schedule, residual and safety and compare
bit for bit: measured arm/base state, the planned action and its chunk, the residual, the desired and the
sent command, the faults latched at filtering, the pause flag, and timing.

File metadata (parquet key-value): `anchorvla.format` (FORMAT_VERSION), `anchorvla.config` (the config as
JSON), `anchorvla.channels`, `anchorvla.joint_names`, `anchorvla.state_names`, `anchorvla.fps`.
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = "anchorvla-episode/1"
PART_S = 1.0  # data per part file: at most this much is lost when the process dies

_f64s = pa.list_(pa.float64())
_f32s = pa.list_(pa.float32())

FRAME_SCHEMA = pa.schema(
    [
        ("episode_index", pa.int64()),
        ("frame_index", pa.int64()),
        ("timestamp", pa.float32()),
        ("task", pa.string()),
        ("observation.state", _f32s),
        ("action", _f32s),
        ("tick_ns", pa.int64()),
        ("arm.positions", _f64s),  # null: the arm did not answer this tick
        ("arm.velocities", _f64s),
        ("base.position", _f64s),  # null: no base, or it did not answer
        ("base.yaw", pa.float64()),
        ("base.velocity", _f64s),
        ("base.yaw_speed", pa.float64()),
        ("base.mode", pa.int64()),
        ("base.error_code", pa.int64()),
        ("plan.chunk_index", pa.int64()),  # null: nothing planned for this tick
        ("plan.j", pa.int64()),
        ("plan.action", _f64s),
        ("residual", _f64s),  # null: no correction applied
        ("desired.arm", _f64s),
        ("desired.base", _f64s),
        ("desired.hold", pa.bool_()),
        ("command.arm", _f64s),
        ("command.base", _f64s),
        ("command.hold", pa.bool_()),
        ("previous_command.arm", _f64s),  # the command before this tick (seeds the replay's safety layer)
        ("safety.faults", pa.list_(pa.string())),
        ("paused", pa.bool_()),
        ("timing.lateness_ms", pa.float32()),
        ("timing.compute_ms", pa.float32()),
    ]
)

IMAGE_TYPE = pa.struct(
    [
        ("camera", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("t_ns", pa.int64()),
        ("rgb", pa.binary()),
    ]
)

GRIPPER_TYPE = pa.struct(
    [
        ("channel", pa.int64()),
        ("logits", _f64s),
        ("margin", pa.float64()),
        ("closed_value", pa.float64()),
        ("open_value", pa.float64()),
    ]
)

EVENT_SCHEMA = pa.schema(
    [
        ("episode_index", pa.int64()),
        ("seq", pa.int64()),
        ("before_frame", pa.int64()),  # happened after frame before_frame-1 and before frame before_frame
        ("kind", pa.string()),  # chunk | start | pause | resume | stop | estop | reset-fault
        ("detail", pa.string()),
        ("chunk_index", pa.int64()),
        ("push_next_tick_ns", pa.int64()),  # the schedule's next tick when the chunk was pushed
        ("t_obs_ns", pa.int64()),
        ("dt_ns", pa.int64()),
        ("actions", _f64s),  # row-major (T, D)
        ("horizon", pa.int64()),  # T
        ("anchor_index", pa.int64()),
        ("scores", _f64s),
        ("inference_ms", pa.float32()),
        ("gripper", GRIPPER_TYPE),  # the chunk's discrete gripper decision (AnchorRefine); null without one
        ("images", pa.list_(IMAGE_TYPE)),  # the observation's frames, when recording.images is on
        # the episode's anchor frames (AnchorVLA4D: each camera's first frame), when recording.images is on and
        # they differ from the ones stored last in this episode (so once per episode): null otherwise
        ("anchor_images", pa.list_(IMAGE_TYPE)),
    ]
)
