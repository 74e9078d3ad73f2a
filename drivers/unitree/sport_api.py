"""The Go2 sport service as the vendor SDK defines it: topics, API ids, Move limits, modes, error codes."""

from __future__ import annotations

TOPIC_REQUEST = "rt/api/sport/request"
TOPIC_RESPONSE = "rt/api/sport/response"
TOPIC_STATE = "rt/sportmodestate"
TOPIC_STATE_LOW_RATE = "rt/lf/sportmodestate"

# API ids (unitree_sdk2py go2/sport/sport_api.py; 1 is the RPC framework's own, answered by every service)
API_VERSION = 1  # read-only: the service's API version string
SPORT_API_VERSION = "1.0.0.1"
DAMP = 1001  # emergency: the joints go limp, the body sags
BALANCE_STAND = 1002
STOP_MOVE = 1003
STAND_UP = 1004  # ends standing with the joints locked: Move has no effect until BalanceStand
STAND_DOWN = 1005
RECOVERY_STAND = 1006
EULER = 1007
MOVE = 1008  # parameter {"x": vx, "y": vy, "z": vyaw}, body frame, sent with noreply
SIT = 1009
RISE_SIT = 1010
SPEED_LEVEL = 1015  # parameter {"data": level}, level -1 slow, 0 normal, 1 fast

API_NAMES = {
    API_VERSION: "GetApiVersion",
    DAMP: "Damp",
    BALANCE_STAND: "BalanceStand",
    STOP_MOVE: "StopMove",
    STAND_UP: "StandUp",
    STAND_DOWN: "StandDown",
    RECOVERY_STAND: "RecoveryStand",
    EULER: "Euler",
    MOVE: "Move",
    SIT: "Sit",
    RISE_SIT: "RiseSit",
    SPEED_LEVEL: "SpeedLevel",
}

# Move limits (body frame): the robot clips to these.
VX_RANGE = (-2.5, 3.8)  # m/s
VY_RANGE = (-1.0, 1.0)  # m/s
VYAW_RANGE = (-4.0, 4.0)  # rad/s
MOVE_HOLD_S = 1.0  # the robot keeps executing the last Move for about this long

# RPC status codes
OK = 0
ERR_SEND_FAILED = 3102  # no matched reader
ERR_TIMEOUT = 3104
ERR_API_NOT_IMPLEMENTED = 3203
ERR_API_PARAMETER = 3204
ERR_LEASE_DENIED = 3205

CODE_MEANINGS = {
    ERR_SEND_FAILED: "send failed (no matched reader)",
    ERR_TIMEOUT: "timeout",
    ERR_API_NOT_IMPLEMENTED: "API not implemented",
    ERR_API_PARAMETER: "bad parameter",
    ERR_LEASE_DENIED: "lease denied",
}

# SportModeState_.mode, as the vendor's sport-service documentation lists them.
MODE_IDLE = 0  # default stand
MODE_BALANCE_STAND = 1
MODE_POSE = 2
MODE_LOCOMOTION = 3
MODE_LIE_DOWN = 5
MODE_JOINT_LOCK = 6  # standing, joints locked (after StandUp)
MODE_DAMPING = 7
MODE_RECOVERY_STAND = 8
MODE_SIT = 10

MODE_NAMES = {
    MODE_IDLE: "idle (default stand)",
    MODE_BALANCE_STAND: "balance stand",
    MODE_POSE: "pose",
    MODE_LOCOMOTION: "locomotion",
    MODE_LIE_DOWN: "lie down",
    MODE_JOINT_LOCK: "standing, joints locked",
    MODE_DAMPING: "damping",
    MODE_RECOVERY_STAND: "recovery stand",
    MODE_SIT: "sit",
}

MOVABLE_MODES = (MODE_BALANCE_STAND, MODE_LOCOMOTION)  # modes in which Move is executed


def mode_name(mode: int) -> str:
    return f"{MODE_NAMES.get(mode, 'unknown')} (mode {mode})"


def describe_code(code: int) -> str:
    return f"code {code}" + (f": {CODE_MEANINGS[code]}" if code in CODE_MEANINGS else "")
