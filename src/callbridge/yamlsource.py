"""YAML loading that remembers where every value came from.

Config and flow files are written by people; an error must name the file,
line and column. PyYAML's composer keeps marks on nodes, so we build plain
Python values from the node tree and record each value's position by its
path (a tuple of keys and indexes), which is also how pydantic reports errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SourceError(Exception):
    """A problem in a user-written file, located precisely."""

    def __init__(self, position: Position, reason: str) -> None:
        super().__init__(f"{position}: {reason}")
        self.position = position
        self.reason = reason


@dataclass(slots=True)
class Located:
    """Values parsed from a file plus a position for every path within them."""

    value: Any
    positions: dict[Path_, Position]
    file: str

    def position(self, path: Path_) -> Position:
        """The closest recorded position for ``path`` (falls back to parents)."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Position(self.file, 1, 1))

    def error(self, path: Path_, reason: str) -> SourceError:
        return SourceError(self.position(path), reason)


def read_source_text(path: Path, what: str = "file") -> str:
    """A user-written file's text; unreadable or non-UTF-8 is a located error."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(Position(str(path), 1, 1), f"cannot read {what}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SourceError(Position(str(path), 1, 1), f"{what} is not UTF-8 text") from None


def load_yaml(path: str | Path) -> Located:
    path = Path(path)
    return load_yaml_text(read_source_text(path), str(path))


def load_yaml_text(text: str, file: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SourceError(Position(file, line, column), f"YAML syntax error: {exc.problem or exc}") from None
    positions: dict[Path_, Position] = {}
    value = {} if node is None else _construct(node, (), positions, file)
    return Located(value, positions, file)


def _construct(node: yaml.Node, path: Path_, positions: dict[Path_, Position], file: str) -> Any:
    positions[path] = Position(file, node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node, file)
            if key in result:
                where = Position(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                raise SourceError(where, f"duplicate key {key!r}")
            result[key] = _construct(value_node, path + (key,), positions, file)
            # Point errors about a key at the key itself, not its value.
            positions[path + (key,)] = Position(file, key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (index,), positions, file) for index, item in enumerate(node.value)]
    return _scalar(node, file)


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.Node, file: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        where = Position(file, node.start_mark.line + 1, node.start_mark.column + 1)
        raise SourceError(where, "a key must be a plain value, not a list or mapping")
    try:
        return _SCALAR_LOADER.construct_object(node)
    except yaml.constructor.ConstructorError as exc:
        where = Position(file, node.start_mark.line + 1, node.start_mark.column + 1)
        raise SourceError(where, f"bad value: {exc.problem}") from None
