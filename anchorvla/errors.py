"""Errors a user can act on. Their message is one line naming the problem and the fix; the CLI prints it
and exits 2 without a traceback."""


class UserError(Exception):
    """Bad input or a missing/wrong device or file: one clear line, exit code 2."""

    exit_code = 2


class DeviceError(UserError):
    """A device could not be reached or answered wrongly."""
