"""What a transcript says, in a form tests can compare exactly.

Whisper writes one spoken number many ways: "4572", "4,572", "4-5-7-2",
"four five seven two", "forty-five seventy-two" or "four thousand five
hundred and seventy-two". Tests compare the digit strings, so a wrong
number fails instead of any transcript that happens to contain "four".
"""

from __future__ import annotations

import re

_UNITS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine".split())}
_TEENS = {word: 10 + value for value, word in enumerate(
    "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {word: 20 + 10 * value for value, word in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())}
_SCALES = {"hundred": 100, "thousand": 1000}
_NUMBER_WORDS = _UNITS.keys() | _TEENS.keys() | _TENS.keys() | _SCALES.keys()
_TOKEN = re.compile(r"[a-z]+|\d[\d,]*")


def spoken_digits(text: str) -> str:
    """Every number in ``text`` as digits, in order and run together.

    >>> spoken_digits("Order four thousand five hundred and seventy-two is shipped")
    '4572'
    """
    out: list[str] = []
    run: list[str] = []  # consecutive number words, not yet converted

    def flush() -> None:
        if run:
            out.append(_words_to_digits(run))
            run.clear()

    tokens = _TOKEN.findall(text.lower().replace("-", " "))
    for index, token in enumerate(tokens):
        if token[0].isdigit():
            flush()
            out.append(token.replace(",", ""))
        elif token in _NUMBER_WORDS:
            run.append(token)
        elif token == "and" and any(w in _SCALES for w in run) and index + 1 < len(tokens) \
                and tokens[index + 1] in _NUMBER_WORDS:
            continue  # "five hundred and seventy-two": one number
        else:
            flush()
    flush()
    return "".join(out)


def _words_to_digits(words: list[str]) -> str:
    if any(word in _SCALES for word in words):  # a whole number: "four thousand five hundred ..."
        total = current = 0
        for word in words:
            if word == "thousand":
                total, current = total + max(current, 1) * 1000, 0
            elif word == "hundred":
                current = max(current, 1) * 100
            else:
                current += _UNITS.get(word) or _TEENS.get(word) or _TENS.get(word, 0)
        return str(total + current)
    digits = []  # read out in digits or pairs: "four five seven two", "forty-five seventy-two"
    for index, word in enumerate(words):
        if word in _TENS:
            follows_unit = index + 1 < len(words) and words[index + 1] in _UNITS and words[index + 1] != "zero"
            digits.append(str(_TENS[word] // 10) + ("" if follows_unit else "0"))
        elif word in _TEENS:
            digits.append(str(_TEENS[word]))
        else:
            digits.append(str(_UNITS[word]))
    return "".join(digits)
