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


# Bounds for a broken or hostile file. Real configs and flows nest under 10 deep and
# hold a few thousand values; past these, an error beats a hang or a RecursionError.
MAX_DEPTH = 64
MAX_VALUES = 100_000  # after alias expansion: "billion laughs" stops here


def load_yaml_text(text: str, file: str) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SourceError(Position(file, line, column), f"YAML syntax error: {exc.problem or exc}") from None
    except yaml.reader.ReaderError as exc:
        # A control character YAML forbids (YAML 1.1 §5.1), found before any mark exists.
        raise SourceError(_offset_position(text, exc.position, file),
                          f"YAML syntax error: character #x{exc.character:x} is not allowed") from None
    except RecursionError:
        # PyYAML's composer recurses once per nesting level: "[[[[..." exhausts the stack.
        raise SourceError(Position(file, 1, 1), "YAML syntax error: nested too deeply") from None
    builder = _Builder(file)
    value = {} if node is None else builder.construct(node, ())
    return Located(value, builder.positions, file)


def _offset_position(text: str, offset: int, file: str) -> Position:
    line_start = text.rfind("\n", 0, offset) + 1
    return Position(file, text.count("\n", 0, offset) + 1, offset - line_start + 1)


_STR_TAG = "tag:yaml.org,2002:str"


class _Builder:
    """Plain Python values from a node tree, recording each value's position by its path."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[Path_, Position] = {}
        self.values = 0
        self.building: set[int] = set()  # collections being built: an alias back into one is a cycle
        # A fresh constructor per file: PyYAML's caches every node it constructed.
        self.scalars = yaml.SafeLoader("")

    def where(self, node: yaml.Node) -> Position:
        return Position(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def construct(self, node: yaml.Node, path: Path_) -> Any:
        self.positions[path] = self.where(node)
        self.values += 1
        if self.values > MAX_VALUES:
            raise SourceError(self.where(node), f"more than {MAX_VALUES} values (aliases expanding?)")
        if len(path) > MAX_DEPTH:
            raise SourceError(self.where(node), f"nested more than {MAX_DEPTH} deep")
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.scalar(node)
        if id(node) in self.building:
            raise SourceError(self.where(node), "an alias refers to a value that contains it")
        self.building.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.construct(item, path + (index,)) for index, item in enumerate(node.value)]
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node)
                if key in result:
                    raise SourceError(self.where(key_node), f"duplicate key {key!r}")
                result[key] = self.construct(value_node, path + (key,))
                # Point errors about a key at the key itself, not its value.
                self.positions[path + (key,)] = self.where(key_node)
            return result
        finally:
            self.building.discard(id(node))

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise SourceError(self.where(node), "a key must be a plain value, not a list or mapping")
        # Only the types plain YAML gives a value, or !!str: PyYAML's constructors for other
        # explicit tags fail on values not written for them (!!float "", !!timestamp x, !!set k).
        implicit = _STR_TAG if node.style else self.scalars.resolve(yaml.ScalarNode, node.value, (True, False))
        if node.tag not in (implicit, _STR_TAG):
            raise SourceError(self.where(node), f"unsupported YAML tag {node.tag}")
        try:
            return self.scalars.construct_object(node)
        except yaml.constructor.ConstructorError as exc:
            raise SourceError(self.where(node), f"bad value: {exc.problem}") from None
        except ValueError as exc:
            # A date that does not exist (2024-02-30), an int of more than 4300 digits.
            raise SourceError(self.where(node), f"bad value: {exc}") from None
