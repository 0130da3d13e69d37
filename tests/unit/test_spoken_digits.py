"""The tests' transcript normaliser: every way whisper writes a number gives the same digits."""

from __future__ import annotations

import pytest

from tests.support.spoken import spoken_digits


@pytest.mark.parametrize("text", [
    "What is the status of order 4572?",
    "What is the status of order 4,572?",
    "What is the status of order 4-5-7-2?",
    "What is the status of order 45 72?",
    "What is the status of order four five seven two?",
    "What is the status of order Four, five, seven, two?",
    "What is the status of order forty-five seventy-two?",
    "Order four thousand five hundred and seventy-two is shipped.",
    "Order four thousand five hundred seventy two is shipped.",
])
def test_one_number_written_every_way(text):
    assert spoken_digits(text) == "4572"


@pytest.mark.parametrize("text, digits", [
    ("What is the status of order four?", "4"),  # a part of the number is not the number
    ("order four five seven three", "4573"),
    ("Order 1234 is processing. It ships tomorrow.", "1234"),
    ("twenty twenty", "2020"),
    ("nineteen hundred and five", "1905"),
    ("I have a question about my bill.", ""),
    ("press one and then two", "12"),  # "and" joins only a number with hundreds in it
])
def test_other_numbers_stay_different(text, digits):
    assert spoken_digits(text) == digits
