"""Test-call scripts: the YAML a user writes to regression-test a phone line.

Everything is checked when the file loads, before a call is placed, so a
typo fails in a second with file:line:column instead of half-way through a
call. Each step becomes a small frozen dataclass that the runner
(:mod:`.runner`) dispatches on.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..media.dtmf.rfc4733 import MIN_DURATION_MS, plan_dial_string
from ..sip.errors import SipParseError
from ..sip.uri import SipUri, parse_uri
from ..yamlsource import Located, Path_, Position, SourceError, load_yaml, load_yaml_text

DEFAULT_CALL_TIMEOUT = 120.0
DEFAULT_ANSWER_TIMEOUT = 30.0
DEFAULT_PROMPT_TIMEOUT = 15.0
DEFAULT_QUIET_SECONDS = 1.0
DEFAULT_HEARD_TIMEOUT = 10.0
DEFAULT_EVENT_TIMEOUT = 10.0
DEFAULT_PRESS_MS = 100.0
MAX_PRESS_MS = 2000.0

# The UA writes these itself; a second copy would make the INVITE invalid.
RESERVED_HEADERS = frozenset(h.lower() for h in (
    "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Content-Type",
    "Content-Length", "Session-Expires", "Min-SE", "User-Agent", "Allow", "Supported"))
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!%'*+\-._`~]+$")  # RFC 3261 token
_CALLER = re.compile(r"^[A-Za-z0-9+\-_.!~*'()&=$,;?/]+$")  # RFC 3261 user part, unescaped


# -- the script model -------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    position: Position

    kind = "step"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class WaitForPrompt(Step):
    timeout: float = DEFAULT_PROMPT_TIMEOUT
    quiet: float = DEFAULT_QUIET_SECONDS  # this long without speech ends the prompt

    kind = "wait_for_prompt"


@dataclass(frozen=True)
class ExpectHeard(Step):
    texts: tuple[str, ...] = ()  # any one of them passes
    timeout: float = DEFAULT_HEARD_TIMEOUT

    kind = "expect_heard"

    def describe(self) -> str:
        return f"{self.kind} " + " | ".join(f'"{text}"' for text in self.texts)


@dataclass(frozen=True)
class Press(Step):
    digits: str = ""
    duration_ms: float = DEFAULT_PRESS_MS

    kind = "press"

    def describe(self) -> str:
        return f'{self.kind} "{self.digits}"'


@dataclass(frozen=True)
class Say(Step):
    text: str = ""

    kind = "say"

    def describe(self) -> str:
        return f'{self.kind} "{self.text}"'


@dataclass(frozen=True)
class Wait(Step):
    seconds: float = 0.0

    kind = "wait"

    def describe(self) -> str:
        return f"{self.kind} {self.seconds:g} s"


@dataclass(frozen=True)
class ExpectTransfer(Step):
    target: str | None = None  # None: any REFER passes; otherwise a substring of its target
    timeout: float = DEFAULT_EVENT_TIMEOUT

    kind = "expect_transfer"

    def describe(self) -> str:
        return f"{self.kind} {self.target}" if self.target else self.kind


@dataclass(frozen=True)
class ExpectHangup(Step):
    timeout: float = DEFAULT_EVENT_TIMEOUT

    kind = "expect_hangup"


@dataclass(frozen=True)
class Hangup(Step):
    kind = "hangup"


@dataclass(frozen=True)
class Script:
    file: str
    target: str
    steps: tuple[Step, ...]
    caller: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_CALL_TIMEOUT
    answer_timeout: float = DEFAULT_ANSWER_TIMEOUT
    language: str = "en"

    def has(self, kind: type[Step]) -> bool:
        return any(isinstance(step, kind) for step in self.steps)


# -- loading ------------------------------------------------------------------------------------

def load_script(path: str | Path, *, target: str | None = None) -> Script:
    """Read and check a script; ``target`` (from --target) replaces the file's."""
    return _Checker(load_yaml(path), target).script()


def load_script_text(text: str, file: str = "<script>", *, target: str | None = None) -> Script:
    return _Checker(load_yaml_text(text, file), target).script()


TOP_LEVEL_KEYS = ("target", "from", "headers", "timeout", "answer_timeout", "language", "steps")


class _Checker:
    """Turns located YAML values into a :class:`Script`, or raises the first problem found."""

    def __init__(self, located: Located, target_override: str | None) -> None:
        self.located = located
        self.target_override = target_override

    def error(self, path: Path_, reason: str) -> SourceError:
        return self.located.error(path, reason)

    def script(self) -> Script:
        top = self.located.value
        if not isinstance(top, dict):
            raise self.error((), "a test-call script must be a mapping (target:, steps:, ...)")
        self._no_unknown_keys(top, (), TOP_LEVEL_KEYS, "script key")
        if "steps" not in top:
            raise self.error((), "the script has no steps: add `steps:` with a list of steps")
        steps = top["steps"]
        if not isinstance(steps, list) or not steps:
            raise self.error(("steps",), "`steps` must be a non-empty list")
        return Script(
            file=self.located.file,
            target=self._target(top),
            caller=self._caller(top),
            headers=self._headers(top),
            timeout=self._seconds(top, ("timeout",), DEFAULT_CALL_TIMEOUT, positive=True),
            answer_timeout=self._seconds(top, ("answer_timeout",), DEFAULT_ANSWER_TIMEOUT, positive=True),
            language=self._language(top),
            steps=tuple(self._step(item, ("steps", index)) for index, item in enumerate(steps)),
        )

    # -- top level ------------------------------------------------------------------------

    def _target(self, top: dict) -> str:
        if self.target_override is not None:
            return _check_target(self.target_override, lambda reason: SourceError(
                Position("<command line>", 1, 1), f"--target: {reason}"))
        if "target" not in top:
            raise self.error((), "no target: add `target: sip:user@host:port` or pass --target")
        value = top["target"]
        if not isinstance(value, str):
            raise self.error(("target",), "`target` must be a SIP URI such as sip:demo@127.0.0.1:5060")
        return _check_target(value, lambda reason: self.error(("target",), reason))

    def _caller(self, top: dict) -> str | None:
        if "from" not in top or top["from"] is None:
            return None
        value = top["from"]
        if not isinstance(value, str):
            # YAML reads +15551230000 as a number and drops the plus: insist on quotes.
            raise self.error(("from",), 'write the caller number as a quoted string, e.g. from: "+15551230000"')
        if not _CALLER.match(value):
            raise self.error(("from",), f"`from` {value!r} is not a valid SIP user part (letters, digits, +-_.)")
        return value

    def _headers(self, top: dict) -> tuple[tuple[str, str], ...]:
        value = top.get("headers")
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise self.error(("headers",), "`headers` must be a mapping of header name to value")
        headers = []
        for name, content in value.items():
            path = ("headers", name)
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise self.error(path, f"{name!r} is not a valid SIP header name")
            if name.lower() in RESERVED_HEADERS:
                raise self.error(path, f"{name} is set by callbridge itself and cannot be overridden")
            if isinstance(content, bool) or not isinstance(content, (str, int, float)):
                raise self.error(path, f"header {name} needs a plain text value")
            text = str(content)
            if "\r" in text or "\n" in text:
                raise self.error(path, f"header {name} must fit on one line")
            headers.append((name, text))
        return tuple(headers)

    def _language(self, top: dict) -> str:
        value = top.get("language", "en")
        if not isinstance(value, str) or not re.match(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$", value):
            raise self.error(("language",), "`language` must be a language code such as en or fr")
        return value

    # -- steps -------------------------------------------------------------------------------

    def _step(self, item: Any, path: Path_) -> Step:
        if isinstance(item, str):
            kind, value = item, None
        elif isinstance(item, dict) and len(item) == 1:
            kind, value = next(iter(item.items()))
        elif isinstance(item, dict):
            raise self.error(path, "each step has exactly one kind, e.g. `- press: \"1\"`; "
                                   f"this one has {len(item)}: {', '.join(map(str, item))}")
        else:
            raise self.error(path, "a step is a step name or a mapping such as `- press: \"1\"`")
        builder = _STEP_BUILDERS.get(kind) if isinstance(kind, str) else None
        step_path = path + (kind,) if isinstance(item, dict) else path
        if builder is None:
            raise self.error(step_path, f"unknown step {kind!r}" + _suggest(str(kind), _STEP_BUILDERS))
        position = self.located.position(step_path)
        return builder(self, value, step_path, position)

    def _fields(self, value: Any, path: Path_, kind: str, allowed: tuple[str, ...],
                shorthand: str | None) -> dict[str, Any]:
        """The step's options as a dict: from a mapping, a bare value (its ``shorthand`` field), or nothing."""
        if value is None:
            return {}
        if isinstance(value, dict):
            self._no_unknown_keys(value, path, allowed, f"{kind} option")
            return value
        if shorthand is None:
            raise self.error(path, f"{kind} takes options as a mapping: {', '.join(allowed)}")
        return {shorthand: value}

    def _no_unknown_keys(self, mapping: dict, path: Path_, allowed: tuple[str, ...], what: str) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.error(path + (key,), f"unknown {what} {key!r}" + _suggest(str(key), allowed)
                                 + f" (expected one of: {', '.join(allowed)})")

    def _seconds(self, mapping: dict, path: Path_, default: float, *, positive: bool = False) -> float:
        value = mapping.get(path[-1], default)
        # "expect_hangup timeout", or just "wait" for wait's seconds
        name = " ".join(part for part in path if isinstance(part, str) and part not in ("steps", "seconds"))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(path, f"{name} must be a number of seconds, not {value!r}")
        if value < 0 or (positive and value == 0):
            raise self.error(path, f"{name} must be {'more than' if positive else 'at least'} 0 seconds")
        if value > 3600:
            raise self.error(path, f"{name} of {value} s is more than an hour; is that a typo?")
        return float(value)

    def _texts(self, value: Any, path: Path_) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.error(path, "expect_heard needs at least one text")
        texts = []
        for index, item in enumerate(items):
            where = path + (index,) if isinstance(value, list) else path
            if isinstance(item, bool) or not isinstance(item, (str, int, float)) or not normalize_text(str(item)):
                raise self.error(where, "expect_heard needs words to listen for, e.g. expect_heard: \"press 1\"")
            texts.append(str(item))
        return tuple(texts)

    # -- one builder per step kind ----------------------------------------------------------------

    def _wait_for_prompt(self, value: Any, path: Path_, position: Position) -> Step:
        fields = self._fields(value, path, "wait_for_prompt", ("timeout", "quiet"), "timeout")
        return WaitForPrompt(position, timeout=self._seconds(fields, path + ("timeout",), DEFAULT_PROMPT_TIMEOUT,
                                                             positive=True),
                             quiet=self._seconds(fields, path + ("quiet",), DEFAULT_QUIET_SECONDS, positive=True))

    def _expect_heard(self, value: Any, path: Path_, position: Position) -> Step:
        if value is None:
            raise self.error(path, "expect_heard needs the words to listen for, e.g. expect_heard: \"press 1\"")
        if isinstance(value, dict):
            fields = self._fields(value, path, "expect_heard", ("text", "timeout"), None)
            if "text" not in fields:
                raise self.error(path, "expect_heard needs `text:` (a phrase or a list of alternatives)")
            texts = self._texts(fields["text"], path + ("text",))
        else:
            fields, texts = {}, self._texts(value, path)
        return ExpectHeard(position, texts=texts,
                           timeout=self._seconds(fields, path + ("timeout",), DEFAULT_HEARD_TIMEOUT))

    def _press(self, value: Any, path: Path_, position: Position) -> Step:
        if isinstance(value, dict):
            fields = self._fields(value, path, "press", ("digits", "duration_ms"), None)
            if "digits" not in fields:
                raise self.error(path, "press needs `digits:`")
            digits_path = path + ("digits",)
            digits = fields["digits"]
        else:
            fields, digits_path, digits = {}, path, value
        if isinstance(digits, int) and not isinstance(digits, bool) and 0 <= digits <= 9:
            digits = str(digits)  # `press: 1` is clearly the key 1
        if not isinstance(digits, str) or not digits.strip():
            # YAML reads 0123 as an octal number: only quoted strings keep every key.
            raise self.error(digits_path, 'press needs the keys as a quoted string, e.g. press: "1" or press: "0123#"')
        duration = fields.get("duration_ms", DEFAULT_PRESS_MS)
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) \
                or not MIN_DURATION_MS <= duration <= MAX_PRESS_MS:
            raise self.error(path + ("duration_ms",),
                             f"duration_ms must be a number from {MIN_DURATION_MS} to {MAX_PRESS_MS:g}")
        try:
            plan = plan_dial_string(digits, duration)
        except ValueError:
            bad = next((c for c in digits if c not in "0123456789*#ABCDabcdwW -"), digits)
            raise self.error(digits_path, f"{bad!r} is not a key: press takes 0-9, *, #, A-D "
                                          "(and w for a half-second pause)") from None
        if not plan:
            raise self.error(digits_path, "press needs at least one key")
        return Press(position, digits=digits, duration_ms=float(duration))

    def _say(self, value: Any, path: Path_, position: Position) -> Step:
        if isinstance(value, dict):
            fields = self._fields(value, path, "say", ("text",), None)
            value, path = fields.get("text"), path + ("text",)
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, 'say needs the sentence to speak, e.g. say: "I want to check my order"')
        return Say(position, text=value.strip())

    def _wait(self, value: Any, path: Path_, position: Position) -> Step:
        if value is None:
            raise self.error(path, "wait needs a number of seconds, e.g. wait: 2")
        fields = self._fields(value, path, "wait", ("seconds",), "seconds")
        if "seconds" not in fields:
            raise self.error(path, "wait needs `seconds:`")
        return Wait(position, seconds=self._seconds(fields, path + ("seconds",), 0.0, positive=True))

    def _expect_transfer(self, value: Any, path: Path_, position: Position) -> Step:
        fields = self._fields(value, path, "expect_transfer", ("target", "timeout"), "target")
        target = fields.get("target")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            raise self.error(path + ("target",), "expect_transfer target must be text, e.g. sip:operator@host "
                                                 "or just operator")
        return ExpectTransfer(position, target=target.strip() if target else None,
                              timeout=self._seconds(fields, path + ("timeout",), DEFAULT_EVENT_TIMEOUT, positive=True))

    def _expect_hangup(self, value: Any, path: Path_, position: Position) -> Step:
        fields = self._fields(value, path, "expect_hangup", ("timeout",), "timeout")
        return ExpectHangup(position, timeout=self._seconds(fields, path + ("timeout",), DEFAULT_EVENT_TIMEOUT,
                                                            positive=True))

    def _hangup(self, value: Any, path: Path_, position: Position) -> Step:
        if value is not None:
            raise self.error(path, "hangup takes no options: write `- hangup`")
        return Hangup(position)


_STEP_BUILDERS = {
    "wait_for_prompt": _Checker._wait_for_prompt,
    "expect_heard": _Checker._expect_heard,
    "press": _Checker._press,
    "say": _Checker._say,
    "wait": _Checker._wait,
    "expect_transfer": _Checker._expect_transfer,
    "expect_hangup": _Checker._expect_hangup,
    "hangup": _Checker._hangup,
}


def _check_target(value: str, error) -> str:
    value = value.strip()
    try:
        uri = parse_uri(value)
    except SipParseError as exc:
        raise error(f"target is not a SIP URI ({exc}); write it like sip:demo@127.0.0.1:5060") from None
    if not isinstance(uri, SipUri):
        raise error(f"target must be a sip: or sips: URI, not {value!r}")
    return value


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- matching what was heard ---------------------------------------------------------------------

_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "star": "*", "pound": "#",
                 "hash": "#"}


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, number words as digits: "Press One." and "press 1" compare equal.

    Speech recognisers write digits either way, so both sides go through this.
    """
    words = re.findall(r"[\w'*#]+", text.lower())
    return " ".join(_NUMBER_WORDS.get(word.strip("'"), word.strip("'")) for word in words if word.strip("'"))


def heard_matches(transcript: str, expected: str) -> bool:
    """Whole-word containment after :func:`normalize_text` ("press 1" is not found in "press 10")."""
    wanted = normalize_text(expected)
    return bool(wanted) and f" {wanted} " in f" {normalize_text(transcript)} "
