"""Controller configuration: one pydantic model per section, loaded from YAML.

Unknown keys, wrong types, out-of-range and non-finite numbers (.inf, .nan) are errors; `load_config` turns
the first one into a `ConfigError` whose one-line message names the file, the line, the key path and what is
accepted. How the file itself is read (UTF-8, duplicate keys, an empty file) is onboard/config_file.py.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.types import SO101_JOINTS
from onboard.config_file import ConfigError, line_of, read_config_file
from safety.config import SafetyConfig

# The slowest fast loop accepted: a tick of at most 200 ms keeps a fault's reaction within 0.6 s (the monitors
# detect within 3 ticks), renews the base's Move well inside the ~1 s the Go2 holds it, and pings the systemd
# watchdog (WatchdogSec=2) several times per period. The safety layer's per-tick step bound is its own.
MIN_RATE_HZ = 5.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ArmConfig(_Section):
    driver: Literal["standin", "feetech", "emulated"] = "standin"
    port: str | None = Field(default=None, description="serial device of the servo adapter (feetech)")
    baudrate: Literal[1_000_000, 500_000, 250_000, 128_000, 115_200, 76_800, 57_600, 38_400] = 1_000_000
    ids: list[int] = Field(default=[1, 2, 3, 4, 5, 6], min_length=1, max_length=253)
    joint_names: list[str] = Field(default=list(SO101_JOINTS), min_length=1)
    calibration: Path | None = None
    health_period_s: float = Field(default=0.2, gt=0, le=10, description="period of the slower health reads")
    retries: int = Field(
        default=3, ge=0, le=10, description="retries of a missing servo answer inside one tick"
    )


class BaseConfig(_Section):
    driver: Literal["standin", "go2", "emulated", "none"] = "standin"
    interface: str = Field(default="lo", min_length=1, description="network interface wired to the Go2")
    domain_id: int = Field(default=0, ge=0, le=232)
    state_timeout_s: float = Field(default=2.0, gt=0, le=60, description="start-up wait for the first state")
    max_state_age_s: float = Field(
        default=0.1,
        gt=0,
        le=5,
        description="read_state fails (fault base_comms) when the newest state is older",
    )
    rpc_timeout_s: float = Field(
        default=0.5, gt=0, le=10, description="wait for a sport RPC reply (start-up, StopMove)"
    )
    stand_up_on_start: bool = Field(default=False, description="StandUp at start-up when the Go2 lies down")
    remote_buttons: bool = Field(
        default=True,
        description="go2/emulated: the Go2 remote's L2+B latches an e-stop, L1+A pauses/resumes (deploy/GO2.md)",
    )
    emulator_rate_hz: float = Field(
        default=100.0, gt=0, le=1000, description="driver 'emulated': state rate (on lo)"
    )


class CameraConfig(_Section):
    name: str = Field(min_length=1)
    driver: Literal["standin", "realsense", "bag", "synthetic", "uvc"] = "standin"
    serial: str | None = None
    path: Path | None = Field(default=None, description="recording (.db3, or legacy .bag) for driver 'bag'")
    device: str | None = Field(
        default=None,
        description="uvc: V4L2 device or video file (default: /dev/v4l/by-id/*<serial>*-video-index0)",
    )
    width: int = Field(default=224, gt=0, le=4096)
    height: int = Field(default=224, gt=0, le=4096)
    fps: int = Field(default=30, gt=0, le=300)
    realtime: bool = Field(
        default=True, description="bag: play at the recorded rate (false: as fast as read)"
    )
    loop: bool = Field(default=False, description="bag: start over at the end of the recording")
    record: Path | None = Field(
        default=None, description="realsense: also record the stream to this .db3 file"
    )
    reconnect_after_s: float = Field(
        default=1.0, gt=0, le=60, description="realsense, uvc: reopen after this long without frames"
    )
    view: Literal["third_person", "wrist"] | None = Field(
        default=None, description="synthetic: which view to render (default: the camera's name)"
    )


def _default_cameras() -> list[CameraConfig]:
    return [CameraConfig(name="third_person"), CameraConfig(name="wrist")]


class RobotConfig(_Section):
    arm: ArmConfig = Field(default_factory=ArmConfig)
    base: BaseConfig = Field(default_factory=BaseConfig)
    cameras: list[CameraConfig] = Field(default_factory=_default_cameras)


class BlendingConfig(_Section):
    """How two overlapping chunks are merged where they cover the same ticks."""

    mode: Literal["none", "linear", "exponential"] = "linear"
    ticks: int = Field(default=3, ge=1, le=100, description="linear: cross-fade length in ticks")
    decay: float = Field(
        default=0.5, gt=0, le=10, description="exponential: weight of the newer chunk is 1-exp(-decay*(i+1))"
    )


class StandinEngineConfig(_Section):
    """The stand-in engine: a smooth trajectory with configurable compute time and failures (tests, bring-up)."""

    compute_ms: float = Field(default=100.0, ge=0, le=10_000)
    compute: Literal["sleep", "cpu"] = Field(
        default="sleep",
        description="sleep: GIL-free wait; cpu: burn a core with numpy like a real CPU engine",
    )
    chunk_length: int = Field(default=10, ge=1, le=1000)
    amplitude: float = Field(default=0.3, ge=0, le=1.5, description="rad of the joint sine waves")
    period_s: float = Field(default=4.0, gt=0)
    base_speed: float = Field(default=0.2, ge=0, le=1.0, description="m/s forward amplitude")
    fail_every: int = Field(default=0, ge=0, description="raise on every Nth call (0: never)")
    nan_every: int = Field(default=0, ge=0, description="return NaN on every Nth call (0: never)")


class PolicyConfig(_Section):
    engine: Literal["standin", "torch", "onnxruntime", "tensorrt"] = "standin"
    bundle: Path | None = None
    instruction: str = ""
    execute_horizon: int = Field(
        default=5, ge=1, le=1000, description="actions of a chunk served (the paper's H)"
    )
    blending: BlendingConfig = Field(default_factory=BlendingConfig)
    roll_forward: bool = Field(
        default=False,
        description="infer from the state the queued actions will have reached when the chunk starts to run, one "
        "latency ahead (VLASH), instead of the state measured now",
    )
    late_chunks: Literal["drop", "shift"] = Field(
        default="drop",
        description="a chunk arriving with fewer than execute_horizon fresh actions: serve what is left on time "
        "(drop) or serve it late from the next tick, covering the inference latency (shift; onboard/schedule.py)",
    )
    prefix_conditioning: bool = Field(
        default=False,
        description="real-time chunking: each chunk's first actions are in-painted to the ones the plan runs while "
        "it is computed, and it runs on from there without blending (an anchored head exported with prefix inputs)",
    )
    prefix_score_weight: float = Field(
        default=5.0,
        ge=0,
        le=1000,
        description="with prefix_conditioning: logits taken off a candidate's score per unit of its mean L1 distance "
        "(normalised actions) from the prefix",
    )
    residual: bool = True
    force_unverified: bool = False
    precision: Literal["auto", "fp32", "fp16", "int8", "int4"] = Field(
        default="auto", description="bundle variant to run ('auto': the fastest that passed its gates)"
    )
    threads: int = Field(
        default=0, ge=0, le=256, description="intra-op threads of the engine (0: its default)"
    )
    cpus: list[int] | None = Field(
        default=None,
        description="onnxruntime: CPUs the backbone and head run on (keep the fast loop's core out); threads 0 "
        "then means one per CPU",
    )
    providers: Literal["auto", "cpu"] = Field(
        default="auto", description="onnxruntime: 'auto' uses TensorRT/CUDA execution providers where present"
    )
    checkpoint_sha256: str | None = Field(
        default=None, description="refuse a bundle not made from the checkpoint with this hash"
    )
    standin: StandinEngineConfig = Field(default_factory=StandinEngineConfig)


class ControlConfig(_Section):
    rate_hz: float = Field(
        default=15.0,
        ge=MIN_RATE_HZ,
        le=1000,
        description="fast-loop rate; at least 5 Hz (a fault's reaction within 0.6 s, the Go2's Move renewed)",
    )
    fine_wait_ms: float = Field(
        default=2.0, ge=0, le=20, description="last part of each wait done with a precise blocking sleep"
    )
    gil_switch_interval_ms: float = Field(
        default=0.5,
        gt=0,
        le=5,
        description="how long another thread may hold the GIL while the fast loop waits",
    )
    start_margin_ticks: float = Field(
        default=1.0, ge=0, le=100, description="slack when planning the next inference"
    )
    max_frame_age_s: float = Field(default=0.25, gt=0, le=10)


class LiveViewConfig(_Section):
    """The rerun live view (optional extra `liveview`: pip install rerun-sdk)."""

    enabled: bool = False
    connect: str | None = Field(
        default=None,
        description="rerun viewer gRPC URL on the laptop, e.g. rerun+http://192.168.1.20:9876/proxy",
    )
    save: Path | None = Field(default=None, description="write an .rrd file here instead of streaming")
    image_every: int = Field(default=1, ge=1, le=1000, description="log the camera images of every Nth chunk")


class TelemetryConfig(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    report_every_s: float = Field(default=10.0, gt=0)
    liveview: LiveViewConfig = Field(default_factory=LiveViewConfig)


class ControlEndpointConfig(_Section):
    """Operator control: a Unix socket for one group (default), TCP on request with a token."""

    enabled: bool = True
    socket: Path = Field(default=Path("/run/anchorvla/control.sock"), description="Unix socket path")
    group: str | None = Field(
        default="anchorvla", description="clients whose uid or groups include this group may connect"
    )
    allowed_uids: list[int] = Field(
        default=[], description="further uids allowed besides the group's members"
    )
    tcp_port: int | None = Field(
        default=None, ge=1, le=65535, description="also listen on TCP (token required)"
    )
    tcp_host: str = Field(default="127.0.0.1", min_length=1)
    token_file: Path | None = Field(
        default=None, description="file holding the TCP token (required with tcp_port)"
    )
    max_clients: int = Field(
        default=8,
        ge=1,
        le=64,
        description="connections per transport; TCP refuses more, the Unix socket drops its longest-open one",
    )
    idle_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="a connection that sends no request this long is closed"
    )
    read_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="a request line, once begun, must end within this"
    )


class ServiceConfig(_Section):
    notify: bool = Field(
        default=True, description="sd_notify READY/WATCHDOG/STOPPING when NOTIFY_SOCKET is set"
    )
    realtime_priority: int = Field(
        default=0,
        ge=0,
        le=98,
        description="SCHED_FIFO priority of the fast loop (0: normal scheduling); inference runs one below",
    )
    cpu_affinity: list[int] | None = Field(default=None, description="CPUs the controller may run on")
    start_idle: bool = Field(
        default=True, description="service run: hold still until the operator sends start"
    )
    control: ControlEndpointConfig = Field(default_factory=ControlEndpointConfig)


class RecordingConfig(_Section):
    """Episode recording (training dataset format, see onboard/episode_schema.py)."""

    enabled: bool = False
    root: Path = Field(default=Path("/var/lib/anchorvla/episodes"), description="dataset directory")
    images: bool = Field(
        default=False,
        description="also store camera images: each tick's (video, dataset/) and each chunk's (replay log)",
    )
    max_episode_s: float = Field(
        default=600.0, gt=0, description="recording of an episode stops after this long, until the next start"
    )
    max_total_mb: float = Field(
        default=20_000.0, gt=0, description="oldest episodes are deleted above this size"
    )
    flush_every: int = Field(default=150, ge=1, le=100_000, description="frames per parquet row group")


class SimConfig(_Section):
    """The emulated robot's task for `anchorvla run` (sim/tasks.py); `anchorvla eval` picks its own."""

    task: Literal["touch", "reach", "lift", "touch_color", "reach_color", "lift_color"] | None = Field(
        default=None,
        description="place this task in the emulated world and stop when it ends (None: no task)",
    )
    seed: int = Field(default=0, ge=0, description="where the task's objects go")


class LeaderArmConfig(_Section):
    """`teleop.leader`: the SO-101 leader arm on its own servo bus (torque off, moved by hand)."""

    driver: Literal["none", "feetech", "emulated"] = "none"
    port: str | None = Field(default=None, description="serial device of the leader's servo adapter (feetech)")
    baudrate: Literal[1_000_000, 500_000, 250_000, 128_000, 115_200, 76_800, 57_600, 38_400] = 1_000_000
    ids: list[int] = Field(default=[1, 2, 3, 4, 5, 6], min_length=1, max_length=253)
    calibration: Path | None = Field(default=None, description="the leader's own calibration file")


class BaseTeleopConfig(_Section):
    """`teleop.base`: what drives the base: a Linux gamepad (evdev) or the Go2's wireless remote (DDS)."""

    driver: Literal["none", "gamepad", "remote"] = "none"
    device: str | None = Field(default=None, description="gamepad: evdev device (e.g. /dev/input/by-id/...-event-joystick)")
    max_vx: float = Field(default=0.3, gt=0, le=1.5, description="m/s at full forward stick")
    max_vy: float = Field(default=0.2, gt=0, le=1.0, description="m/s at full sideways stick")
    max_wz: float = Field(default=0.6, gt=0, le=3.0, description="rad/s at full turning stick")
    deadzone: float = Field(default=0.08, ge=0, lt=1, description="stick travel (fraction) read as zero")


class TeleopConfig(_Section):
    """`anchorvla record`: teleoperated demonstrations (onboard/teleop.py)."""

    leader: LeaderArmConfig = Field(default_factory=LeaderArmConfig)
    base: BaseTeleopConfig = Field(default_factory=BaseTeleopConfig)


class Config(_Section):
    robot: RobotConfig = Field(default_factory=RobotConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    teleop: TeleopConfig = Field(default_factory=TeleopConfig)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the field at `loc` (for listing accepted keys)."""
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return model


def describe_validation_error(err: ValidationError) -> str:
    """One line for the first error: key path, problem, what is accepted."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    if first["type"] == "extra_forbidden":
        owner = _model_at(loc)
        accepted = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), accepted, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: unknown key{hint} (accepted here: {', '.join(accepted)})"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    if first["type"] == "finite_number":
        return f"{path}: must be a finite number{got_text}; write a number (.inf and .nan are refused)"
    if loc == ("control", "rate_hz") and first["type"] == "greater_than_equal":
        return (
            f"{path}: at least {MIN_RATE_HZ:g} Hz{got_text}: a slower tick would react to a fault more than "
            "0.6 s late and let the Go2's last Move lapse between ticks; raise control.rate_hz"
        )
    return f"{path}: {first['msg']}{got_text}"


def _resolve_paths(raw: dict, base_dir: Path) -> dict:
    """Relative file paths in the config are relative to the config file's directory."""

    def fix(value):
        if isinstance(value, str) and (value.startswith("./") or value.startswith("../")):
            return str((base_dir / value).resolve())
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(raw)


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Read and validate a YAML config. Raises ConfigError with one line on any problem."""
    path = Path(path)
    raw, lines = read_config_file(path)
    raw = _resolve_paths(raw, path.parent)
    if overrides:
        raw = _merge(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        line = line_of(lines, tuple(err.errors()[0]["loc"]))
        where = "" if line is None else f" line {line}:"
        raise ConfigError(f"{path}:{where} {describe_validation_error(err)}") from None


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out.get(key, {}), value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out
