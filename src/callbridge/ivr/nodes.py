"""The flow's nodes, as the loader builds them and the runner reads them.

Every node knows its ``successors()`` (the node ids it can lead to) so the
loader can check targets and find unreachable nodes without knowing each
node type's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .conditions import Test


@dataclass(frozen=True)
class Text:
    """A prompt: one text for any language, or one per language code."""

    neutral: str | None = None
    by_language: dict[str, str] = field(default_factory=dict)

    def pick(self, language: str, default_language: str) -> tuple[str, str]:
        """(language to speak in, text) for a call in ``language``.

        A text missing the call's language falls back to the default
        language's text, spoken in the default language.
        """
        if language in self.by_language:
            return language, self.by_language[language]
        if self.neutral is not None:
            return language, self.neutral
        return default_language, self.by_language.get(default_language, "")

    def variants(self) -> list[tuple[str | None, str]]:
        """(language or None for neutral, text) pairs."""
        pairs: list[tuple[str | None, str]] = list(self.by_language.items())
        if self.neutral is not None:
            pairs.append((None, self.neutral))
        return pairs


def _targets(*ids: str | None) -> tuple[str, ...]:
    return tuple(node_id for node_id in ids if node_id)


@dataclass(frozen=True)
class SayNode:
    id: str
    text: Text
    next: str
    language: str | None = None
    voice: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next)


@dataclass(frozen=True)
class PlayNode:
    id: str
    file: Path
    next: str

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next)


@dataclass(frozen=True)
class GatherNode:
    id: str
    input: str  # dtmf | speech | both
    into: str
    next: str
    prompt: Text | None = None
    num_digits: int | None = None
    finish_on_key: str | None = "#"
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 3.0
    timeout: float = 5.0  # speech
    choices: dict[str, str] = field(default_factory=dict)  # phrase or digits -> value
    hints: tuple[str, ...] = ()
    retries: int = 1
    on_timeout: str | None = None
    on_no_match: str | None = None
    voice: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next, self.on_timeout, self.on_no_match)


@dataclass(frozen=True)
class MenuOption:
    digit: str
    next: str
    label: str
    set: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MenuNode:
    id: str
    prompt: Text
    options: dict[str, MenuOption]
    retries: int = 3
    timeout: float = 5.0
    invalid_prompt: Text | None = None
    timeout_prompt: Text | None = None
    default: str | None = None  # after the last failed try; None hangs up
    prompt_on_entry: bool = True
    voice: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(*(option.next for option in self.options.values()), self.default)


@dataclass(frozen=True)
class SetNode:
    id: str
    values: dict[str, str]  # name -> template
    next: str

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next)


@dataclass(frozen=True)
class BranchRule:
    test: Test
    next: str


@dataclass(frozen=True)
class BranchNode:
    id: str
    rules: tuple[BranchRule, ...]
    otherwise: str

    def successors(self) -> tuple[str, ...]:
        return _targets(*(rule.next for rule in self.rules), self.otherwise)


@dataclass(frozen=True)
class HttpNode:
    id: str
    url: str
    next: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None  # JSON value whose strings are templates
    timeout: float = 5.0
    into_prefix: str | None = None
    into_map: dict[str, str] = field(default_factory=dict)  # variable -> dotted path in the reply
    on_error: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next, self.on_error)


@dataclass(frozen=True)
class TransferNode:
    id: str
    target: str
    method: str = "refer"
    trunk: str | None = None
    on_failure: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(self.on_failure)


@dataclass(frozen=True)
class AgentNode:
    id: str
    agent: str
    reason: str
    context: dict[str, str] = field(default_factory=dict)
    next: str | None = None

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next)


@dataclass(frozen=True)
class HangupNode:
    id: str
    reason: str = "normal"

    def successors(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class GotoNode:
    id: str
    next: str

    def successors(self) -> tuple[str, ...]:
        return _targets(self.next)


Node = (SayNode | PlayNode | GatherNode | MenuNode | SetNode | BranchNode | HttpNode
        | TransferNode | AgentNode | HangupNode | GotoNode)
