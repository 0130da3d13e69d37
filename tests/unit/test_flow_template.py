"""Flow templates: plain ``{{ name }}`` substitution and nothing more."""

from __future__ import annotations

import pytest

from callbridge.ivr.template import TemplateError, check, render, template_names

VARIABLES = {"caller.number": "+15551230000", "sip.x-lang": "es", "name": "Ada", "count": 3}


def test_substitutes_dotted_and_hyphenated_names():
    text = "Hi {{name}}, calling from {{ caller.number }} in {{ sip.x-lang }} ({{count}})"
    assert render(text, VARIABLES) == "Hi Ada, calling from +15551230000 in es (3)"
    assert template_names(text) == {"name", "caller.number", "sip.x-lang", "count"}


def test_missing_variables_render_empty():
    assert render("[{{ nobody }}]", VARIABLES) == "[]"
    assert render("[{{ x }}]", {"x": None}) == "[]"


def test_text_without_placeholders_is_unchanged():
    assert render("Press # or * now. {not a tag} }}", {}) == "Press # or * now. {not a tag} }}"
    assert template_names("plain") == set()


@pytest.mark.parametrize("template", [
    "{{ __class__ }}",
    "{{ name.__class__ }}",
    "{{ name.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ name() }}",
    "{{ name | upper }}",
    "{{ 7*7 }}",
    "{{ names[0] }}",
    "{{ import os }}",
    "{{ }}",
    "Hello {{ name",
])
def test_anything_but_a_name_is_rejected(template):
    with pytest.raises(TemplateError):
        check(template)
    with pytest.raises(TemplateError):
        render(template, VARIABLES)


def test_lookup_never_touches_attributes():
    class Sneaky:
        secret = "leaked"

    assert render("{{ obj.secret }}", {"obj": Sneaky()}) == ""


def test_values_are_never_rendered_twice():
    # A caller-controlled header must not be able to pull other variables in.
    assert render("{{ sip.x-reason }}", {"sip.x-reason": "{{ api_token }}", "api_token": "s3cret"}) \
        == "{{ api_token }}"
