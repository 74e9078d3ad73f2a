"""Reading a YAML config file strictly, before its sections are validated (onboard/config.py).

Refused with one line naming the file, the line and the fix: an unreadable or non-UTF-8 file, invalid YAML,
a file with no sections (empty or only comments: it would run every default, the stand-ins included), and a
key given twice in one mapping (PyYAML keeps the last one silently, so a second `safety:` block would drop the
first one's limits). The line of every key is kept so that later errors can name it too.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from anchorvla.errors import UserError

# A key path as pydantic reports it: mapping keys as strings, list positions as ints.
KeyPath = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


class ConfigError(UserError):
    pass


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror} (check its permissions)") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _key_lines(root: yaml.Node, path: Path) -> dict[KeyPath, int]:
    """The 1-based line of every mapping key and list item; refuses a key repeated in one mapping."""
    lines: dict[KeyPath, int] = {}
    seen: set[int] = set()  # an alias repeats a node (even inside itself): walk each once
    stack: list[tuple[KeyPath, yaml.Node]] = [((), root)]
    while stack:
        where, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *defaults`: keys given here override the merged ones, as YAML means
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
                line = key_node.start_mark.line + 1
                if key in first:
                    dotted = ".".join(map(str, (*where, key)))
                    raise ConfigError(
                        f"{path}: line {line}: key '{dotted}' is given twice (first on line {first[key]}); "
                        "YAML would keep only the last one: merge the two into one"
                    )
                first[key] = line
                lines[(*where, key)] = line
                stack.append(((*where, key), value_node))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*where, index)] = item.start_mark.line + 1
                stack.append(((*where, index), item))
    return lines


def read_config_file(path: Path) -> tuple[dict, dict[KeyPath, int]]:
    """The file's top-level mapping and the line of each key path. Raises ConfigError with one line."""
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (pass --config with a YAML file, e.g. configs/sim.yaml)"
        )
    loader = yaml.SafeLoader(_text(path))
    try:
        node = loader.get_single_node()
        lines = _key_lines(node, path) if node is not None else {}
        raw = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    finally:
        loader.dispose()
    if raw is None or raw == {}:
        raise ConfigError(
            f"{path}: the file has no sections (empty, or only comments); it would run every default, the "
            "stand-in devices included: start from configs/standin.yaml or configs/sim.yaml"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (robot, policy, control, ...)"
        )
    return raw, lines


def line_of(lines: dict[KeyPath, int], loc: KeyPath) -> int | None:
    """The line of `loc`, or of its nearest enclosing key that the file has (a missing key's parent)."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
