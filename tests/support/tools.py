"""Tests that need an installed tool fail when it is missing, never skip: CI installs them all."""

from __future__ import annotations

import functools

import pytest


def must_have(available: bool, what: str):
    def decorate(test):
        if available:
            return test

        @functools.wraps(test)
        def missing(*args, **kwargs):
            pytest.fail(f"{what} is not installed; scripts/setup.sh --test installs it")

        return missing

    return decorate
