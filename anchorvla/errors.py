"""Errors a user can act on. Their message is one line naming the problem and the fix; the CLI prints it
and exits 2 without a traceback."""


class UserError(Exception):
    """Bad input or a missing/wrong device or file: one clear line, exit code 2."""

    exit_code = 2


class DeviceError(UserError):
    """A device could not be reached or answered wrongly."""


class LinkLost(DeviceError):
    """A device's link itself is gone (adapter unplugged, device node removed): no retry can bring it back in
    this process. The runtime latches the device's comms fault at once and ends the run."""
