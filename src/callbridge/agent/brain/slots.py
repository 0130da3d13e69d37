"""Slot values from what the caller said.

Speech recognisers return numbers either as numerals ("Order 4572?") or as
words ("four five seven two", "forty five seventy two", "double five"), so
the parsers accept both and any mix of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SLOT_TYPES = ("digits", "number")

_UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4,
    "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    # Spanish digits, for callers who chose Spanish: read one by one, the way order numbers are said
    "cero": 0, "uno": 1, "una": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5, "seis": 6,
    "siete": 7, "ocho": 8, "nueve": 9,
}
_TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_REPEAT = {"double": 2, "triple": 3}
_SCALE = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = set(_UNITS) | set(_TEENS) | set(_TENS) | set(_REPEAT) | set(_SCALE)
_TOKEN = re.compile(r"[a-z]+|\d+")


@dataclass(frozen=True, slots=True)
class SlotSpec:
    name: str
    type: str = "digits"
    min_length: int = 1
    max_length: int = 20
    prompt: str | None = None
    required: bool = True


def _number_runs(text: str) -> list[list[str]]:
    """Maximal runs of consecutive number tokens; other words split runs.

    Punctuation is dropped first, so "4,572", "45-72" and "forty-five" join up.
    "and" stays inside a run only right after "hundred"/"thousand".
    """
    runs: list[list[str]] = []
    current: list[str] = []
    for token in _TOKEN.findall(text.lower()):
        if token.isdigit() or token in _NUMBER_WORDS:
            current.append(token)
        elif token == "and" and current and current[-1] in _SCALE:
            continue
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


class _Reader:
    """Reads spoken-number chunks from one run of tokens."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def below_hundred(self) -> int | None:
        token = self.peek()
        if token in _UNITS:
            self.i += 1
            return _UNITS[token]
        if token in _TEENS:
            self.i += 1
            return _TEENS[token]
        if token in _TENS:
            self.i += 1
            unit = self.peek()
            # "forty five" is 45, but "forty oh" is 40 then 0 (as in 4 0 0).
            if unit in _UNITS and _UNITS[unit] != 0:
                self.i += 1
                return _TENS[token] + _UNITS[unit]
            return _TENS[token]
        return None

    def below_thousand(self) -> int | None:
        start = self.i
        value = self.below_hundred()
        if self.peek() == "hundred":
            self.i += 1
            value = (value if value is not None else 1) * 100
            rest = self.below_hundred()
            return value + (rest or 0)
        if value is None:
            self.i = start
        return value

    def chunk(self) -> str:
        """One spoken chunk as digits ('' if the token carries no digits)."""
        token = self.peek()
        assert token is not None
        if token.isdigit():
            self.i += 1
            return token
        if token in _REPEAT:
            self.i += 1
            following = self.peek()
            if following in _UNITS:
                self.i += 1
                return str(_UNITS[following]) * _REPEAT[token]
            if following is not None and following.isdigit() and len(following) == 1:
                self.i += 1
                return following * _REPEAT[token]
            return ""
        value = self.below_thousand()
        if self.peek() == "thousand":
            self.i += 1
            value = (value if value is not None else 1) * 1000
            rest = self.below_thousand()
            return str(value + (rest or 0))
        if value is None:  # a stray scale word such as "thousand" on its own
            self.i += 1
            return ""
        # A unit word is a digit, so "oh" keeps its place: "one oh one" is 101.
        return str(value)

    def chunks(self) -> list[str]:
        out = []
        while self.peek() is not None:
            out.append(self.chunk())
        return [c for c in out if c]


def parse_digits(text: str, min_length: int = 1, max_length: int = 20) -> str | None:
    """The first run of spoken or written digits whose length fits, as a string.

    Chunks are concatenated, so "forty five seventy two" is "4572" and
    "twelve thirty four" is "1234"; leading zeros are kept ("oh seven" is "07").
    """
    for run in _number_runs(text):
        digits = "".join(_Reader(run).chunks())
        if min_length <= len(digits) <= max_length:
            return digits
    return None


def parse_number(text: str) -> str | None:
    """The first cardinal number ("two hundred and five" -> "205"), as a string."""
    for run in _number_runs(text):
        if all(token.isdigit() for token in run):
            return str(int("".join(run)))  # "4,572" is one number, not 4 then 572
        chunks = _Reader(run).chunks()
        if chunks:
            return str(int(chunks[0]))
    return None


def extract(spec: SlotSpec, text: str) -> str | None:
    if spec.type == "digits":
        return parse_digits(text, spec.min_length, spec.max_length)
    if spec.type == "number":
        return parse_number(text)
    raise ValueError(f"unknown slot type {spec.type!r}")
