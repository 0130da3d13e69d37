"""Spoken and written numbers to slot values."""

from __future__ import annotations

import pytest

from callbridge.agent.brain.slots import SlotSpec, extract, parse_digits, parse_number


@pytest.mark.parametrize(("said", "digits"), [
    ("four five seven two", "4572"),
    ("order 4572", "4572"),
    ("Order 4572?", "4572"),
    ("It's order number 4 5 7 2.", "4572"),
    ("forty five seventy two", "4572"),
    ("forty-five seventy-two", "4572"),
    ("twelve thirty four", "1234"),
    ("ninety nine eighty one", "9981"),
    ("nine nine eight one", "9981"),
    ("four thousand five hundred seventy two", "4572"),
    ("one hundred and five", "105"),
    ("one oh one", "101"),
    ("oh one two three", "0123"),
    ("zero seven seven", "077"),
    ("double five two", "552"),
    ("triple seven one", "7771"),
    ("four double one two", "4112"),
    ("4,572", "4572"),
    ("45-72", "4572"),
    ("12 34", "1234"),
    ("one two 3 4", "1234"),
])
def test_digits(said, digits):
    assert parse_digits(said, min_length=3, max_length=8) == digits


@pytest.mark.parametrize(("said", "expected"), [
    ("where is my order", None),          # no number at all
    ("oh, where is my order", None),      # interjection "oh" is too short to be an id
    ("double five", None),                # 2 digits < min_length 3
    ("one two three four five six seven eight nine", None),  # too long
    ("I ordered 2 things, order 9981", "9981"),  # the first run that fits wins
])
def test_digits_length_bounds(said, expected):
    assert parse_digits(said, min_length=3, max_length=8) == expected


@pytest.mark.parametrize(("said", "number"), [
    ("two hundred and five", "205"),
    ("I need 3 of them", "3"),
    ("twenty one please", "21"),
    ("4,572", "4572"),
    ("nothing here", None),
])
def test_number(said, number):
    assert parse_number(said) == number


def test_extract_uses_slot_type_and_bounds():
    assert extract(SlotSpec("order_id", "digits", 3, 8), "order four five seven two") == "4572"
    assert extract(SlotSpec("qty", "number"), "two hundred") == "200"
    with pytest.raises(ValueError):
        extract(SlotSpec("x", "colour"), "red")
