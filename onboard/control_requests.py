"""Operator requests off the wire, checked before anything acts on them.

A request is one flat JSON object on one line (at most MAX_LINE_BYTES, the stream reader's limit): its values
are strings, numbers, booleans or null, and every string is valid Unicode (JSON's `\\ud800` escape decodes to a
lone surrogate, which cannot be logged or encoded later). Free text (an instruction, an e-stop reason) is at
most MAX_TEXT_CHARS printable characters. Anything else is a `BadRequest` whose message goes back as the reply.
"""

from __future__ import annotations

import json

from anchorvla.errors import UserError

MAX_LINE_BYTES = 4096
MAX_TEXT_CHARS = 500
EXAMPLE = 'a request is one JSON object per line, e.g. {"cmd": "status"}'


class BadRequest(UserError):
    """A request that is refused as it stands; the message says why and goes back to the client."""


def _valid_unicode(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{what}: not valid Unicode (a lone surrogate such as \\ud800)") from None
    return text


def parse_request(line: bytes) -> dict:
    """The request on `line` (bytes, UTF-8). Raises BadRequest."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's recursion limit
        raise BadRequest(EXAMPLE) from None
    if not isinstance(request, dict):
        raise BadRequest(EXAMPLE)
    for key, value in request.items():
        name = ascii(_valid_unicode(key, "a key"))
        if isinstance(value, str):
            _valid_unicode(value, name)
        elif value is not None and not isinstance(value, (int, float, bool)):
            raise BadRequest(f"{name}: a request's values are strings, numbers or booleans (not nested)")
    return request


def text_field(request: dict, key: str) -> str | None:
    """An optional free-text field (instruction, reason): a string of printable characters, bounded."""
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise BadRequest(f"{key} is {len(value)} characters long; at most {MAX_TEXT_CHARS}")
    if not value.isprintable():
        raise BadRequest(f"{key} must be printable text (no newlines or control characters)")
    return value
