"""Log lines journald reads well: one line per event, a syslog priority prefix, structured key=value fields.

Under systemd (JOURNAL_STREAM is set) each line starts with `<N>` so journald files it at the right level
(`journalctl -p warning` works) and drops the timestamp journald adds itself. Fields passed as
`extra={"fields": {...}}` (or through `event()`) are appended as `key=value`, values with spaces quoted.
"""

from __future__ import annotations

import logging
import os
import sys

_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _quote(value) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class JournalFormatter(logging.Formatter):
    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\n", " | ")
        fields = getattr(record, "fields", None) or {}
        parts = [f"{record.levelname} {record.name}: {message}"]
        parts += [f"{key}={_quote(value)}" for key, value in fields.items()]
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            parts.append(f"exception={_quote(f'{type(exc).__name__}: {exc}')}")
        line = " ".join(parts)
        if self.journal:
            return f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>{line}"
        return f"{self.formatTime(record, '%H:%M:%S')} {line}"


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not the stream it was made with: a handler
    that kept a replaced stderr (pytest's capture, a redirect) would fail with 'I/O operation on closed file'."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str | int) -> None:
    """Replace the root handlers with one journald-friendly stderr handler."""
    handler = StderrHandler()
    handler.setFormatter(JournalFormatter(journal="JOURNAL_STREAM" in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def event(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log one event with structured fields."""
    logger.log(level, message, extra={"fields": fields})
