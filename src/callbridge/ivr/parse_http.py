"""Parsing ``http`` (webhook) nodes."""

from __future__ import annotations

from typing import Any

from ..yamlsource import Path_
from .fields import Fields, describe
from .loadcontext import LoadContext
from .nodes import HttpNode
from .template import has_placeholders, is_variable_name

HTTP_FIELDS = ("method", "url", "headers", "json", "timeout", "into", "next", "on_error")
METHODS = ("get", "post", "put", "patch", "delete")


def parse_http(ctx: LoadContext, node_id: str, f: Fields) -> HttpNode:
    url = f.template("url", required=True)
    assert url is not None
    if not has_placeholders(url.split("/")[0]) and not url.startswith(("http://", "https://")):
        raise f.error("url", f"url must start with http:// or https://, got {url!r}")
    method = f.choice("method", METHODS, default="get").upper()
    body = f.raw("json")
    if body is not None and method == "GET":
        raise f.error("json", "a GET request has no body: use method: POST (or drop json:)")
    _check_body(f, body, f.at("json"))
    prefix, mapping = _into(ctx, f)
    return HttpNode(
        node_id, url, ctx.ref(f, "next", required=True), method,
        headers=f.template_map("headers"),
        body=body,
        timeout=f.number("timeout", default=5.0, minimum=0.1, maximum=60),
        into_prefix=prefix,
        into_map=mapping,
        on_error=ctx.ref(f, "on_error"),
    )


def _check_body(f: Fields, value: Any, path: Path_) -> None:
    """Every string in the JSON body is a template; keys are kept as written."""
    if isinstance(value, str):
        f.check_template("json", value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_body(f, item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_body(f, item, path + (index,))
    elif value is not None and not isinstance(value, (int, float, bool)):
        raise f.source.error(path, f"json: {describe(value)} is not a JSON value (quote dates and times)")


def _into(ctx: LoadContext, f: Fields) -> tuple[str | None, dict[str, str]]:
    """``into: crm`` (every reply field as crm.<field>) or ``into: {var: path.in.reply}``."""
    value = f.raw("into")
    if value is None:
        return None, {}
    if isinstance(value, str):
        if not is_variable_name(value):
            raise f.error("into", f"into: {value!r} is not a variable name")
        ctx.assignable_prefix(f.at("into"), value)
        return value, {}
    if not isinstance(value, dict):
        raise f.error("into", f"into must be a variable prefix or a mapping variable -> reply field, "
                              f"got {describe(value)}")
    mapping: dict[str, str] = {}
    for variable, field in value.items():
        path = f.at("into") + (variable,)
        if not isinstance(field, str) or not field:
            raise f.source.error(path, f"into.{variable} must name a reply field like account.tier")
        ctx.assignable(path, str(variable))
        mapping[str(variable)] = field
    return None, mapping
