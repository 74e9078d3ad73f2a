"""The Go2's wireless remote as the controller reads it: the robot publishes the remote's sticks and keys on
`rt/wirelesscontroller` (unitree_go WirelessController_), one bit per key in `keys`, in the vendor SDK's order.

Two combinations are the controller's (deploy/GO2.md): L2+B latches an e-stop, L1+A pauses or resumes. A
combination counts once when its last key goes down, and again only after one of its keys was released, so a
held combination does not repeat. No DDS here: `Go2Base` takes the samples and feeds `RemoteDecoder`.
"""

from __future__ import annotations

TOPIC_REMOTE = "rt/wirelesscontroller"

# Bit of each key in WirelessController_.keys (the vendor SDK's wireless-controller example lists them in this order).
KEY_BITS: dict[str, int] = {
    "R1": 0, "L1": 1, "start": 2, "select": 3, "R2": 4, "L2": 5, "F1": 6, "F2": 7,
    "A": 8, "B": 9, "X": 10, "Y": 11, "up": 12, "right": 13, "down": 14, "left": 15,
}  # fmt: skip


def keys_mask(*names: str) -> int:
    """The `keys` bitfield with `names` pressed."""
    return sum(1 << KEY_BITS[name] for name in names)


ESTOP = "estop"
PAUSE_RESUME = "pause_resume"
# Combination -> keys, the e-stop first: pressed together, it wins.
COMBINATIONS: dict[str, tuple[str, ...]] = {ESTOP: ("L2", "B"), PAUSE_RESUME: ("L1", "A")}


def held(keys: int) -> frozenset[str]:
    """The names of the keys down in a `keys` bitfield."""
    return frozenset(name for name, bit in KEY_BITS.items() if keys >> bit & 1)


def describe(combination: str) -> str:
    """'L2+B' for 'estop'."""
    return "+".join(COMBINATIONS[combination])


class RemoteDecoder:
    """Turns successive `keys` samples into presses of the controller's combinations (rising edges)."""

    def __init__(self):
        self._masks = {name: keys_mask(*keys) for name, keys in COMBINATIONS.items()}
        self._down: set[str] = set()

    def presses(self, keys: int) -> list[str]:
        pressed = []
        for name, mask in self._masks.items():
            if keys & mask == mask:
                if name not in self._down:
                    self._down.add(name)
                    pressed.append(name)
            else:
                self._down.discard(name)
        return pressed
