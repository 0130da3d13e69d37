"""Cut streamed LLM text into sentences so speech synthesis can start early.

A boundary is a run of ``.``, ``!`` or ``?`` (optionally followed by closing
quotes or brackets) that is followed by whitespace. Requiring the whitespace
means "3.5" never splits, and a sentence is only released once the next
token proves it is finished. A lone ``.`` after a known abbreviation, an
initial ("J."), a dotted acronym ("U.S.") or a leading list number ("1.")
is not a boundary. Whatever remains at the end of the reply is flushed.
"""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter"]

_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)")
_LAST_WORD = re.compile(r"(\S+)$")
_DOTTED_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")

# Compared lower-case, without the final dot.
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc",
    "approx", "dept", "est", "inc", "ltd", "co", "corp", "jan", "feb", "mar",
    "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "ave",
    "blvd", "rd", "fig", "no", "tel", "ext",
})


class SentenceSplitter:
    def __init__(self) -> None:
        self._pending = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; return every sentence it completed."""
        self._pending += text
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._pending):
            if self._is_false_boundary(self._pending[start:match.start()], match.group()):
                continue
            sentence = self._pending[start:match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self._pending = self._pending[start:]
        return sentences

    def flush(self) -> str | None:
        """The reply ended: return the unterminated tail, if any."""
        tail, self._pending = self._pending.strip(), ""
        return tail or None

    @staticmethod
    def _is_false_boundary(before: str, terminator: str) -> bool:
        if terminator.rstrip("\"'”’)]") != ".":
            return False  # "!", "?" and "..." always end a sentence
        found = _LAST_WORD.search(before)
        if found is None:
            return False
        word = found.group(1).lstrip("\"'“‘([")
        if word.lower() in _ABBREVIATIONS and terminator == ".":
            # "No." is both an abbreviation and a whole answer; only "No. 5" style
            # is ambiguous enough to matter, so keep splitting a bare "No."
            return not (word.lower() == "no" and before.strip() == word)
        if len(word) == 1 and word.isupper() and word != "I":
            return True  # an initial, as in "J. Smith"
        if _DOTTED_ACRONYM.fullmatch(word):
            return True
        return word.isdigit() and before.strip() == word  # "1. First item"
